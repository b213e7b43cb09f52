//! Cost records through the apply path, fixtures → import → reconciliation, budgets and the
//! advisor's apply, on SQLite and PostgreSQL.

use super::billing::{Format, Provider};
use super::fixtures::{self, Plan};
use super::options::CostOptions;
use super::prices::{parse_day, PriceEntry, DAY_MS};
use super::reconcile::{drift_pct, Status};
use super::*;
use crate::store::{apply_record, ApplyParams, Db};
use crate::testutil::{all_dbs, pcs_body, record};
use sqlx::{Connection, Row};

const PARAMS: ApplyParams = ApplyParams {
    dedup_ttl_ms: 14 * 86_400_000,
    audit_sample_rate: 0.0,
};

fn opts() -> CostOptions {
    CostOptions {
        prices: vec![PriceEntry {
            effective_from: "2026-01-01".into(),
            tenant: None,
            per_request: 0.0002,
            per_cpu_second: 0.0,
            per_gib_stored: 40.0,
            per_gib_transferred: 90.0,
            per_model_call: 0.0,
        }],
        ..CostOptions::default()
    }
}

/// `n` decisions per tenant and day over three days from 2026-03-02.
async fn seed(db: &Db, n: usize) -> (i64, i64) {
    let first = parse_day("2026-03-02").unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for d in 0..3 {
        for t in ["acme", "beta"] {
            for i in 0..n {
                let shard = format!("{t}-{d}-{i}");
                let rec = record(t, &pcs_body(&shard), (first + d) * DAY_MS + 1000 + i as i64);
                apply_record(&mut tx, &format!("r:{shard}"), &rec, &PARAMS)
                    .await
                    .unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
    (first, first + 3)
}

async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test]
async fn every_fresh_decision_gets_one_cost_record_and_replay_adds_none() {
    for t in all_dbs("cost_records").await {
        let db = &t.db;
        let (from, to) = seed(db, 4).await;
        assert_eq!(count(db, "cost_records").await, 24, "{}", t.label);
        assert_eq!(
            count(db, "cost_records").await,
            count(db, "decision_log").await
        );
        // Replaying the same records changes nothing.
        seed(db, 4).await;
        assert_eq!(count(db, "cost_records").await, 24, "{}", t.label);
        let sel = record::Selection {
            from_day: from,
            to_day: to,
            ..Default::default()
        };
        let days = rollup(db, &opts(), &sel).await.unwrap();
        assert_eq!(days.len(), 6);
        let u = days[0].usage;
        assert_eq!((u.decisions, days[0].tenant.as_str()), (4, "acme"));
        assert!(u.request_bytes > 400 && u.response_bytes > 100 && u.wal_bytes > u.request_bytes);
        assert!(u.decision_log_bytes > 100, "{u:?}");
        let c = days[0].cost.unwrap();
        assert!((c.compute - 4.0 * 0.0002).abs() < 1e-12);
        assert_eq!(c.model_calls, 0.0);
        // The canary's view: one arm (none of these decisions was scored, so no cost).
        let champ = record::Selection {
            arm: Some("champion".into()),
            ..sel.clone()
        };
        assert_eq!(
            cost_per_trusted_task(db, &opts(), &champ).await.unwrap(),
            None
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn fixtures_of_every_format_reconcile_to_the_planted_drift() {
    for t in all_dbs("cost_fixtures").await {
        let db = &t.db;
        let (from, to) = seed(db, 5).await;
        let sel = record::Selection {
            from_day: from,
            to_day: to,
            ..Default::default()
        };
        let cells = fixtures::cells_of(&rollup(db, &opts(), &sel).await.unwrap());
        let plan = Plan {
            drift_pct: [("compute".to_string(), 2.0), ("storage".to_string(), -4.0)].into(),
            lines_per_cell: 3,
            corrupt_row: true,
        };
        let dir = tempfile::tempdir().unwrap();
        for (format, provider, name) in [
            (Format::CurLegacy, Provider::Aws, "cur.csv"),
            (Format::Cur2, Provider::Aws, "cur2.csv.gz"),
            (Format::Focus, Provider::Gcp, "focus-gcp.csv"),
            (Format::Focus, Provider::Azure, "focus-azure.csv"),
        ] {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).unwrap();
            if name.ends_with(".gz") {
                let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                fixtures::write(format, provider, "USD", &cells, &plan, &mut gz).unwrap();
                gz.finish().unwrap();
            } else {
                fixtures::write(format, provider, "USD", &cells, &plan, file).unwrap();
            }
            let mut o = opts();
            match provider {
                Provider::Aws => o.aws_exports = Some(path.clone()),
                Provider::Gcp => o.gcp_exports = Some(path.clone()),
                Provider::Azure => o.azure_exports = Some(path.clone()),
            }
            let job = import::job_id(provider, 1);
            store::insert_job(db, &job, provider, (from, to), 1)
                .await
                .unwrap();
            let r = import::run_job(db, &o, provider, (from, to), &job, &|_| {})
                .await
                .unwrap();
            let what = format!("{} {name}", t.label);
            assert_eq!(r.malformed, 1, "{what}");
            assert_eq!(r.bad_rows[0].1.line, 2, "{what}: the corrupt row is line 2");
            assert!(r.records > 0 && r.written == r.records, "{what}: {r:?}");
            let again = import::run_job(db, &o, provider, (from, to), &job, &|_| {})
                .await
                .unwrap();
            assert_eq!((again.written, again.unchanged), (0, r.records), "{what}");

            let rep = reconcile_window(db, &o, from, to).await.unwrap();
            assert_eq!(rep.status, Status::Alert, "{what}");
            let month = |s: &str| rep.months.iter().find(|c| c.service == s).unwrap();
            let want = |pct: f64| drift_pct(1.0, 1.0 + pct / 100.0);
            let got = month("compute").drift_pct.unwrap();
            assert!((got - want(2.0)).abs() < 1e-6, "{what}: compute {got}");
            assert_eq!(month("compute").status, Status::WithinTarget);
            let got = month("storage").drift_pct.unwrap();
            assert!((got - want(-4.0)).abs() < 1e-6, "{what}: storage {got}");
            assert_eq!(
                month("storage").status,
                Status::Alert,
                "{what}: −4 % alerts"
            );
            assert!(month("network").drift_pct.unwrap().abs() < 1e-6);
            assert_eq!(month("model_calls").status, Status::NoData);
            assert_eq!(
                rep.days.iter().filter(|c| c.service == "storage").count(),
                3
            );
            let latest = store::reconciliations(db, 1, None).await.unwrap();
            assert_eq!(latest[0]["id"], rep.id);
            assert_eq!(latest[0]["billed_sha256"], rep.billed_sha256.as_str());
            sqlx::query("DELETE FROM billing_lines")
                .execute(&db.pool)
                .await
                .unwrap();
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn budgets_pick_their_action_and_reach_the_bundle_section() {
    for t in all_dbs("cost_budgets").await {
        let db = &t.db;
        let (from, _) = seed(db, 3).await;
        let now = (from + 2) * DAY_MS + 5000;
        let b = |tenant: &str, soft: f64, hard: f64| budgets::Budget {
            tenant: tenant.into(),
            soft_cap: soft,
            hard_cap: hard,
            soft_action: "degrade".into(),
            hard_action: "deny".into(),
        };
        budgets::set(db, &b("acme", 0.0, 1e-9), now).await.unwrap();
        budgets::set(db, &b("beta", 1e-9, 1e6), now).await.unwrap();
        assert!(budgets::set(db, &b("x", 2.0, 1.0), now).await.is_err());
        let (list, changed) = budgets::recompute(db, &opts(), now).await.unwrap();
        assert!(changed);
        let act = |s: &str| {
            list.iter()
                .find(|b| b.budget.tenant == s)
                .unwrap()
                .action
                .clone()
        };
        assert_eq!(act("acme").as_deref(), Some("deny"));
        assert_eq!(act("beta").as_deref(), Some("degrade"));
        let (_, again) = budgets::recompute(db, &opts(), now).await.unwrap();
        assert!(!again, "same spend, same actions: nothing to publish");
        let mut conn = db.pool.acquire().await.unwrap();
        let s = budgets::section(&mut conn, now).await.unwrap();
        use kakeya_core::budget::BudgetAction;
        assert_eq!(s.action_for("acme"), BudgetAction::Deny);
        assert_eq!(s.action_for("beta"), BudgetAction::Degrade);
        assert_eq!(s.action_for("other"), BudgetAction::None);
        drop(conn);
        assert!(budgets::delete(db, "acme").await.unwrap());
        assert!(!budgets::delete(db, "acme").await.unwrap());
        t.cleanup().await;
    }
}

#[tokio::test]
async fn apply_is_refused_unless_pending() {
    for t in all_dbs("cost_advisor").await {
        let db = &t.db;
        let (from, _) = seed(db, 2).await;
        let now = (from + 1) * DAY_MS;
        budgets::set(
            db,
            &budgets::Budget {
                tenant: "acme".into(),
                soft_cap: 1.0,
                hard_cap: 2.0,
                soft_action: "alert".into(),
                hard_action: "alert".into(),
            },
            now,
        )
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO cost_recommendations (id, kind, tenant, status, created_at_ms, \
             projected_monthly_saving, body) VALUES ('r1', 'budget_cap', 'acme', 'pending', $1, 1.5, $2)",
        )
        .bind(now)
        .bind(r#"{"risk":"medium","rationale":"x","diff":{"path":"budgets.acme.hard_action","from":"alert","to":"throttle"}}"#)
        .execute(&db.pool)
        .await
        .unwrap();
        let r = advisor::apply(db, "r1", now).await.unwrap();
        assert_eq!(r.status, "applied");
        let b = budgets::list(db).await.unwrap();
        assert_eq!(b[0].budget.hard_action, "throttle");
        assert!(matches!(
            advisor::apply(db, "r1", now).await,
            Err(CostError::Conflict(_))
        ));
        assert!(matches!(
            advisor::apply(db, "nope", now).await,
            Err(CostError::NotFound(_))
        ));
        t.cleanup().await;
    }
}
