//! Cost records through the apply path, fixtures → import → reconciliation, budgets and the
//! advisor's apply, on SQLite and PostgreSQL.

use super::billing::{Format, Provider};
use super::fixtures::{self, Plan};
use super::options::CostOptions;
use super::prices::{parse_day, DAY_MS};
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
        prices: fixtures::example_prices(),
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
        // The roll-up the apply path keeps equals the records summed from scratch.
        let kept = record::sums(db, &sel).await.unwrap();
        assert_eq!(kept.len(), 6, "{}", t.label);
        record::rebuild_daily(db, from, to).await.unwrap();
        assert_eq!(record::sums(db, &sel).await.unwrap(), kept, "{}", t.label);
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

/// A 2-of-4 policy for acme with the micro-vote and RAG grounding.
async fn set_acme_policy(db: &Db, now: i64) {
    use crate::ensemble::store::{set_policy, PolicyRow, Reason};
    let policy = vote_value::test_policy(&["pcs_recompute", "hrs", "micro_vote", "rag_grounding"]);
    let row = PolicyRow {
        tenant: "acme".into(),
        policy,
        arms: vec![],
        run_id: None,
        updated_at_ms: now,
    };
    let mut conn = db.pool.acquire().await.unwrap();
    set_policy(&mut conn, &row, Reason::Manual).await.unwrap();
}

/// The tenant's decision-log record ids, in order.
async fn record_ids(db: &Db, tenant: &str) -> Vec<String> {
    sqlx::query("SELECT record_id FROM decision_log WHERE tenant = $1 ORDER BY record_id")
        .bind(tenant)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("record_id").unwrap())
        .collect()
}

fn summary(policy_id: &str, votes: &[(&str, &str, f64)]) -> String {
    let votes: Vec<_> = votes
        .iter()
        .map(|(s, o, c)| serde_json::json!({"strategy": s, "outcome": o, "confidence": c, "reason": ""}))
        .collect();
    serde_json::json!({"policy_id": policy_id, "verdict": "accept", "votes": votes}).to_string()
}

/// Votes of policy `p` where every strategy accepts (dropping any one leaves three accepts).
fn all_accept() -> String {
    summary(
        "p",
        &[
            ("pcs_recompute", "accept", 1.0),
            ("hrs", "accept", 0.9),
            ("micro_vote", "accept", 0.8),
            ("rag_grounding", "accept", 0.7),
        ],
    )
}

#[tokio::test]
async fn a_vote_that_never_changed_a_decision_is_turned_off_and_its_saving_measured() {
    for t in all_dbs("cost_vote_rule").await {
        let db = &t.db;
        let first = parse_day("2026-03-02").unwrap();
        let now = (first + 8) * DAY_MS;
        let mut o = opts();
        o.prices[0].per_model_call = 0.001;
        // Nothing carries votes yet: both vote rules say no_data.
        let r = advisor::recommend(db, &o, now).await.unwrap();
        let rules: Vec<_> = r.skipped.iter().map(|s| s.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "micro_vote_off",
                "rag_off",
                "micro_vote_deadline",
                "dedup_ttl"
            ],
            "{}",
            t.label
        );
        seed(db, 10).await;
        set_acme_policy(db, now).await;
        // acme's 30 decisions: 20 where every strategy accepts (dropping any one leaves three
        // accepts), 9 where hrs rejects and RAG's accept is the second one N = 2 needs while
        // the micro-vote abstains, 1 recorded under an older policy (not replayed).
        let ids = record_ids(db, "acme").await;
        assert_eq!(ids.len(), 30);
        let all = all_accept();
        let rag_needed = summary(
            "p",
            &[
                ("pcs_recompute", "accept", 1.0),
                ("hrs", "reject", 0.9),
                ("micro_vote", "abstain", 0.0),
                ("rag_grounding", "accept", 0.8),
            ],
        );
        let old = summary("old", &[("hrs", "accept", 0.9)]);
        for (i, id) in ids.iter().enumerate() {
            let v = match i {
                0..20 => &all,
                20..29 => &rag_needed,
                _ => &old,
            };
            sqlx::query("UPDATE decision_log SET votes = $1 WHERE record_id = $2")
                .bind(v)
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        // One micro-vote call per acme decision: 30 calls at 0.001 over the last 30 days.
        sqlx::query("UPDATE cost_records SET model_calls = 1 WHERE tenant = 'acme'")
            .execute(&db.pool)
            .await
            .unwrap();
        record::rebuild_daily(db, first, first + 3).await.unwrap();

        let r = advisor::recommend(db, &o, now).await.unwrap();
        assert_eq!(r.recommendations.len(), 1, "{}: {r:?}", t.label);
        let rec = &r.recommendations[0];
        assert_eq!(
            (rec.kind.as_str(), rec.tenant.as_deref()),
            ("micro_vote_off", Some("acme"))
        );
        assert!(
            (rec.projected_monthly_saving - 0.03).abs() < 1e-12,
            "{rec:?}"
        );
        assert_eq!(rec.risk, "low");
        assert!(
            rec.rationale.contains("voted in 20 of the 29 decisions")
                && rec.rationale.contains("1 decisions under other policies"),
            "{}",
            rec.rationale
        );
        assert_eq!(rec.diff["path"], "ensemble.acme.strategies.micro_vote");
        assert_eq!(rec.diff["policy_id"]["to"], "p-no-micro_vote");
        assert!(r.skipped.iter().all(|s| s.rule != "micro_vote_off"));

        let applied = advisor::apply(db, &rec.id, now).await.unwrap();
        assert_eq!(applied.status, "applied");
        let p = crate::ensemble::policy_view(db, "acme")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.policy_id, "p-no-micro_vote");
        assert!(!p.policy.strategies.contains_key("micro_vote"));
        assert_eq!(p.policy.strategies.len(), 3);
        assert!(matches!(
            advisor::apply(db, &rec.id, now).await,
            Err(CostError::Conflict(_))
        ));
        // After apply: the realised saving is measured (the same-length window before and
        // after the apply day; no decisions after it here, so the after side is 0).
        let r = advisor::recommend(db, &o, now).await.unwrap();
        let done = r.recommendations.iter().find(|x| x.id == rec.id).unwrap();
        let real = done.realised.clone().unwrap();
        assert_eq!((real.window_days, real.cost_per_day_after), (1, 0.0));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn rag_that_never_changed_a_decision_is_turned_off_saving_its_recorded_time() {
    for t in all_dbs("cost_rag_rule").await {
        let db = &t.db;
        let first = parse_day("2026-03-02").unwrap();
        let now = (first + 8) * DAY_MS;
        let mut o = opts();
        // 0.4 per CPU second for everyone; acme's own entry from the second day: 0.8.
        o.prices[0].per_cpu_second = 0.4;
        let acme = prices::PriceEntry {
            effective_from: "2026-03-03".into(),
            tenant: Some("acme".into()),
            per_cpu_second: 0.8,
            ..o.prices[0].clone()
        };
        o.prices.push(acme);
        // 10 acme decisions a day over three days, each with 1.5 ms of RAG time in its WAL
        // record (x-kakeya-rag-ns at ingest), and beta's without any.
        let mut conn = db.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for d in 0..3 {
            for (tenant, rag_ns) in [("acme", Some(1_500_000)), ("beta", None)] {
                for i in 0..10 {
                    let shard = format!("{tenant}-{d}-{i}");
                    let ts = (first + d) * DAY_MS + 1000 + i;
                    let mut rec = record(tenant, &pcs_body(&shard), ts);
                    rec.rag_ns = rag_ns;
                    apply_record(&mut tx, &format!("r:{shard}"), &rec, &PARAMS)
                        .await
                        .unwrap();
                }
            }
        }
        tx.commit().await.unwrap();
        drop(conn);
        let stored: i64 = sqlx::query(
            "SELECT CAST(SUM(rag_cpu_ns) AS BIGINT) AS ns, COUNT(rag_cpu_ns) AS n \
             FROM cost_records WHERE tenant = 'acme'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("ns")
        .unwrap();
        assert_eq!(stored, 45_000_000, "{}", t.label);
        set_acme_policy(db, now).await;
        // Every strategy accepts every acme decision: dropping RAG changes none of them.
        let all = all_accept();
        for id in record_ids(db, "acme").await {
            sqlx::query("UPDATE decision_log SET votes = $1 WHERE record_id = $2")
                .bind(&all)
                .bind(&id)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let r = advisor::recommend(db, &o, now).await.unwrap();
        let rag = r
            .recommendations
            .iter()
            .find(|x| x.kind == "rag_off")
            .unwrap_or_else(|| panic!("{}: no rag_off in {r:?}", t.label));
        assert_eq!(rag.tenant.as_deref(), Some("acme"));
        // Day 1: 10 × 1.5 ms = 0.015 s × 0.4 = 0.006; days 2–3 at acme's own price:
        // 0.030 s × 0.8 = 0.024. Modelled on 30 days, per month: 0.030.
        assert!(
            (rag.projected_monthly_saving - 0.030).abs() < 1e-12,
            "{}: {rag:?}",
            t.label
        );
        assert_eq!(rag.diff["path"], "ensemble.acme.strategies.rag_grounding");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_micro_vote_deadline_follows_the_recorded_waits() {
    for t in all_dbs("cost_deadline_rule").await {
        let db = &t.db;
        let first = parse_day("2026-03-02").unwrap();
        let now = (first + 8) * DAY_MS;
        seed(db, 10).await;
        set_acme_policy(db, now).await;
        // acme's 30 calls waited 0.5, 1.0, …, 15.0 ms under the default 30 ms deadline:
        // nearest-rank p99 = the 30th = 15 ms, × 1.25 = 18.75 → 19 ms, none above it.
        // beta's (default policy) include one call cut at 30 ms: its latency is unknown.
        for (tenant, cut) in [("acme", false), ("beta", true)] {
            for (i, id) in record_ids(db, tenant).await.iter().enumerate() {
                let ns = if cut && i == 0 {
                    30_000_000
                } else {
                    (i as i64 + 1) * 500_000
                };
                sqlx::query("UPDATE decision_log SET microvote_ns = $1 WHERE record_id = $2")
                    .bind(ns)
                    .bind(id)
                    .execute(&db.pool)
                    .await
                    .unwrap();
            }
        }
        let r = advisor::recommend(db, &opts(), now).await.unwrap();
        let recs: Vec<_> = r
            .recommendations
            .iter()
            .filter(|x| x.kind == "micro_vote_deadline")
            .collect();
        assert_eq!(recs.len(), 1, "{}: {r:?}", t.label);
        let rec = recs[0];
        assert_eq!(rec.tenant.as_deref(), Some("acme"));
        assert_eq!(
            (rec.diff["from"].clone(), rec.diff["to"].clone()),
            (30.into(), 19.into())
        );
        assert_eq!(rec.projected_monthly_saving, 0.0);
        assert_eq!(rec.risk, "low");
        assert!(
            rec.rationale.contains("30 micro-vote calls"),
            "{}",
            rec.rationale
        );
        assert!(r.skipped.iter().all(|s| s.rule != "micro_vote_deadline"));

        advisor::apply(db, &rec.id, now).await.unwrap();
        let p = crate::ensemble::policy_view(db, "acme")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.policy_id, "p-deadline-19ms");
        assert_eq!(p.policy.strategies["micro_vote"].deadline_ms, Some(19));
        // Under the 19 ms deadline the same waits propose 19 again: nothing more.
        let r = advisor::recommend(db, &opts(), now).await.unwrap();
        assert!(
            r.recommendations
                .iter()
                .all(|x| x.kind != "micro_vote_deadline" || x.status == "applied"),
            "{r:?}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_dedup_ttl_follows_the_ages_of_resubmissions() {
    const HOUR: i64 = 3_600_000;
    for t in all_dbs("cost_ttl_rule").await {
        let db = &t.db;
        let params = ApplyParams {
            dedup_ttl_ms: 10 * HOUR,
            audit_sample_rate: 0.0,
        };
        let first = parse_day("2026-03-02").unwrap();
        let base = first * DAY_MS;
        let now = (first + 3) * DAY_MS;
        let mut o = opts();
        o.dedup_ttl_ms = 10 * HOUR;
        // Every decision costs 0.001 (per request only), so the saving is counted decisions.
        o.prices[0].per_gib_stored = 0.0;
        o.prices[0].per_gib_transferred = 0.0;
        o.prices[0].per_request = 0.001;
        let r = advisor::recommend(db, &o, now).await.unwrap();
        let skip = r.skipped.iter().find(|s| s.rule == "dedup_ttl").unwrap();
        assert!(skip.reason.contains("0 resubmissions"), "{}", skip.reason);

        // 30 PCSs, each resubmitted k hours after its first answer (k = 1..=30) under a 10 h
        // TTL: k = 1..9 are dedup hits aged k h, k = 10..30 came after expiry (21 late).
        let mut conn = db.pool.acquire().await.unwrap();
        for k in 1..=30i64 {
            let body = pcs_body(&format!("ttl-{k}"));
            let first_rec = record("acme", &body, base + k);
            let a = apply_record(&mut conn, &format!("a{k}"), &first_rec, &params)
                .await
                .unwrap();
            assert!(!a.dedup_hit);
            let again = record("acme", &body, base + k + k * HOUR);
            let b = apply_record(&mut conn, &format!("b{k}"), &again, &params)
                .await
                .unwrap();
            assert_eq!(b.dedup_hit, k < 10, "{}: k = {k}", t.label);
            // A replay of the record adds no second hit.
            apply_record(&mut conn, &format!("b{k}"), &again, &params)
                .await
                .unwrap();
        }
        drop(conn);
        assert_eq!(count(db, "dedup_hits").await, 9, "{}", t.label);
        let ages: Vec<i64> = sqlx::query("SELECT age_ms FROM dedup_hits ORDER BY age_ms")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("age_ms").unwrap())
            .collect();
        assert_eq!(ages, (1..10).map(|k| k * HOUR).collect::<Vec<_>>());

        // Ages 1..=30 h: p99 = 30 h, × 1.25 = 37.5 → 38 h. It answers all 21 late ones and
        // loses no hit: 21 decisions × 0.001 over 30 days.
        let r = advisor::recommend(db, &o, now).await.unwrap();
        let rec = r
            .recommendations
            .iter()
            .find(|x| x.kind == "dedup_ttl")
            .unwrap_or_else(|| panic!("{}: {r:?}", t.label));
        assert_eq!(rec.tenant, None);
        assert_eq!(rec.diff["from"], 10 * 3600);
        assert_eq!(rec.diff["to"], 38 * 3600);
        assert!(
            (rec.projected_monthly_saving - 0.021).abs() < 1e-12,
            "{}: {rec:?}",
            t.label
        );
        assert_eq!(rec.risk, "low");
        assert!(
            rec.rationale
                .contains("9 answered from dedup, 21 after their answer expired"),
            "{}",
            rec.rationale
        );
        // The TTL is configuration: apply says where to set it and changes nothing.
        assert!(matches!(
            advisor::apply(db, &rec.id, now).await,
            Err(CostError::Conflict(m)) if m.contains("dedup_ttl_secs = 136800")
        ));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn upserts_in_full_and_partial_chunks_write_each_line_once() {
    use super::billing::BillingLine;
    for t in all_dbs("cost_upsert_chunks").await {
        let db = &t.db;
        // Two full statements and a partial one.
        let n = 2 * store::UPSERT_CHUNK + 7;
        let mut lines: Vec<BillingLine> = (0..n)
            .map(|i| BillingLine {
                line_id: format!("li-{i}"),
                day: 20_000 + (i % 3) as i64,
                tenant: (i % 2 == 0).then(|| "acme".to_string()),
                service: "compute".into(),
                provider_service: "AmazonEC2".into(),
                cost: 0.5,
                currency: "USD".into(),
            })
            .collect();
        let up = |l: Vec<BillingLine>| async move {
            store::upsert_lines(db, Provider::Aws, "job", &l)
                .await
                .unwrap()
        };
        assert_eq!(up(lines.clone()).await, n as u64, "{}", t.label);
        assert_eq!(count(db, "billing_lines").await, n as i64);
        assert_eq!(
            up(lines.clone()).await,
            0,
            "{}: a re-import writes nothing",
            t.label
        );
        lines[n - 1].cost = 0.75;
        lines[0].tenant = None;
        assert_eq!(up(lines).await, 2, "{}: only the changed lines", t.label);
        let sum: f64 = sqlx::query("SELECT SUM(cost) AS c FROM billing_lines")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("c")
            .unwrap();
        assert!((sum - (0.5 * n as f64 + 0.25)).abs() < 1e-9, "{sum}");
        t.cleanup().await;
    }
}
