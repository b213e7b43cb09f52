//! The KPIs against a hand-computed fixture on SQLite and PostgreSQL, the gauges they set, and
//! `GET /v1/kpis` through a live control plane.

use super::*;
use crate::cost::prices::day_of_ms;
use crate::testutil::all_dbs;

const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

/// (pcs_id, age, accepted, escalated, risk, model_version, arm, votes?, labels as (source, label))
type Row = (
    &'static str,
    i64,
    i64,
    i64,
    Option<f64>,
    &'static str,
    &'static str,
    bool,
    &'static [(&'static str, &'static str)],
);

/// Six decisions in the last hour, one 2 h old, one 2 days old (outside 24 h).
const ROWS: [Row; 8] = [
    (
        "d1",
        10 * MIN,
        1,
        0,
        Some(0.2),
        "v1",
        "champion",
        true,
        &[("gold", "faithful")],
    ),
    (
        "d2",
        10 * MIN,
        0,
        1,
        Some(0.9),
        "v1",
        "champion",
        true,
        &[("gold", "hallucinated")],
    ),
    (
        "d3",
        10 * MIN,
        1,
        0,
        Some(0.6),
        "v1",
        "champion",
        false,
        &[("gold", "hallucinated")],
    ),
    (
        "d4",
        10 * MIN,
        0,
        1,
        Some(0.8),
        "v2",
        "challenger",
        false,
        &[("silver", "hallucinated")],
    ),
    // Gold outranks bronze: the effective label is faithful.
    (
        "d5",
        10 * MIN,
        1,
        0,
        Some(0.75),
        "v2",
        "challenger",
        false,
        &[("bronze", "hallucinated"), ("gold", "faithful")],
    ),
    ("d6", 10 * MIN, 1, 0, None, "", "", false, &[]),
    (
        "d7",
        120 * MIN,
        0,
        1,
        Some(0.95),
        "v1",
        "champion",
        false,
        &[("gold", "hallucinated")],
    ),
    (
        "d8",
        2 * 24 * 60 * MIN,
        1,
        0,
        Some(0.1),
        "v1",
        "champion",
        false,
        &[],
    ),
];

async fn seed(db: &Db) {
    for (i, (pcs, age, acc, esc, risk, mv, arm, votes, labels)) in ROWS.iter().enumerate() {
        let at = NOW - age;
        sqlx::query(
            "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
             regime, accepted, escalated, status, cacheable, created_at_ms, risk, model_version, \
             arm, votes) VALUES ($1, 'acme', $2, 1.5, 0.7, 0.9, 0.1, 'sticky', $3, $4, 200, 1, \
             $5, $6, $7, $8, $9)",
        )
        .bind(format!("r{i}"))
        .bind(*pcs)
        .bind(*acc)
        .bind(*esc)
        .bind(at)
        .bind(*risk)
        .bind((!mv.is_empty()).then_some(*mv))
        .bind((!arm.is_empty()).then_some(*arm))
        .bind(votes.then_some("{}"))
        .execute(&db.pool)
        .await
        .unwrap();
        for (j, (source, label)) in labels.iter().enumerate() {
            sqlx::query(
                "INSERT INTO labels (tenant, pcs_id, labeller, source, label, confidence, \
                 created_at_ms) VALUES ('acme', $1, $2, $3, $4, 1.0, $5)",
            )
            .bind(*pcs)
            .bind(format!("l{j}"))
            .bind(*source)
            .bind(*label)
            .bind(at + 1000 + j as i64)
            .execute(&db.pool)
            .await
            .unwrap();
        }
    }
    sqlx::query(
        "INSERT INTO ensemble_disagreements (record_id, tenant, pcs_id, policy_id, verdict, kind, \
         votes, created_at_ms) VALUES ('x1', 'acme', 'd2', 'p', 'escalate', 'split', '[]', $1)",
    )
    .bind(NOW - 5 * MIN)
    .execute(&db.pool)
    .await
    .unwrap();
    // Cost roll-up rows: today (5 decisions, 4 trusted) and three days ago (7, 7).
    let today = day_of_ms(NOW);
    for (day, n, trusted) in [(today, 5, 4), (today - 3, 7, 7)] {
        sqlx::query(
            "INSERT INTO cost_daily (tenant, day, arm, model_version, decisions, trusted, \
             request_bytes, response_bytes, wal_bytes, decision_log_bytes, filter_cpu_ns, \
             model_calls) VALUES ('acme', $1, '', '', $2, $3, 1000, 500, 1200, 300, 2000000, 0)",
        )
        .bind(day)
        .bind(n as i64)
        .bind(trusted as i64)
        .execute(&db.pool)
        .await
        .unwrap();
    }
}

fn opts() -> CostOptions {
    CostOptions {
        prices: crate::cost::fixtures::example_prices(),
        ..CostOptions::default()
    }
}

fn close(a: Option<f64>, b: f64, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what}: none"));
    assert!((a - b).abs() < 1e-12, "{what}: {a} != {b}");
}

#[tokio::test]
async fn kpis_match_the_hand_computed_fixture() {
    for t in all_dbs("kpis_fixture").await {
        let db = &t.db;
        seed(db).await;
        let k = compute(db, &opts(), Window::H1, NOW).await.unwrap();
        let l = t.label;
        assert_eq!((k.decisions, k.escalated, k.scored), (6, 2, 5), "{l}");
        close(k.escalation_rate, 2.0 / 6.0, "escalation");
        // 0.9, 0.8, 0.75 of five scored.
        close(k.high_risk_rate, 3.0 / 5.0, "high risk");
        assert_eq!((k.labelled, k.hallucinated), (5, 3), "{l}");
        // d2 and d4 escalated, d3 let through.
        close(k.containment_rate, 2.0 / 3.0, "containment");
        close(
            k.containment_by_arm.get("champion").copied(),
            0.5,
            "champion",
        );
        close(
            k.containment_by_arm.get("challenger").copied(),
            1.0,
            "challenger",
        );
        close(
            k.containment_delta_vs_control.get("challenger").copied(),
            0.5,
            "delta",
        );
        // Positives 0.9, 0.6, 0.8 against negatives 0.2, 0.75: 5 of 6 pairs ordered.
        close(k.hrs_auroc.get("all").copied(), 5.0 / 6.0, "auroc");
        close(k.hrs_auroc.get("v1").copied(), 1.0, "auroc v1");
        close(k.hrs_auroc.get("v2").copied(), 1.0, "auroc v2");
        assert_eq!(k.roc.len(), THRESHOLDS.len());
        let at = |t: f64| {
            k.roc
                .iter()
                .find(|p| (p.threshold - t).abs() < 1e-9)
                .unwrap()
        };
        let p = at(0.7);
        close(Some(p.tpr), 2.0 / 3.0, "tpr@0.7");
        close(Some(p.fpr), 0.5, "fpr@0.7");
        close(p.precision, 2.0 / 3.0, "precision@0.7");
        let p = at(0.9);
        close(Some(p.tpr), 1.0 / 3.0, "tpr@0.9");
        close(Some(p.fpr), 0.0, "fpr@0.9");
        close(p.precision, 1.0, "precision@0.9");
        close(at(0.1).precision, 3.0 / 5.0, "precision@0.1");
        assert_eq!(k.ensemble.voted, 2, "{l}");
        assert_eq!(k.ensemble.disagreements.get("split"), Some(&1), "{l}");
        close(k.ensemble.agreement_rate, 0.5, "agreement");
        close(k.model_versions.get("v1").copied(), 3.0 / 5.0, "v1 share");
        close(k.model_versions.get("v2").copied(), 2.0 / 5.0, "v2 share");
        assert!(k.cost.is_none(), "cost is per day: none for 1 h");
        assert_eq!(k.savings.projected_monthly, 0.0);
        assert!(k.budgets.is_empty());

        let k = compute(db, &opts(), Window::H24, NOW).await.unwrap();
        assert_eq!((k.decisions, k.escalated), (7, 3), "{l}");
        close(k.containment_rate, 3.0 / 4.0, "containment 24h");
        let c = k.cost.as_ref().unwrap();
        assert_eq!(c.tenants.len(), 1, "{l}");
        assert_eq!(
            (c.tenants[0].decisions, c.tenants[0].trusted),
            (5, 4),
            "{l}"
        );
        close(
            c.tenants[0].cost_per_trusted_task,
            c.tenants[0].total / 4.0,
            "cost per trusted task",
        );
        assert!(c.tenants[0].total > 0.0, "{l}");

        let k = compute(db, &opts(), Window::D7, NOW).await.unwrap();
        assert_eq!(k.decisions, 8, "{l}");
        let c = k.cost.as_ref().unwrap();
        assert_eq!(
            (c.tenants[0].decisions, c.tenants[0].trusted),
            (12, 11),
            "{l}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn undefined_rates_are_none_and_no_series() {
    let t = crate::testutil::sqlite_db().await;
    let k = compute(&t.db, &opts(), Window::H1, NOW).await.unwrap();
    assert_eq!(k.decisions, 0);
    assert!(k.escalation_rate.is_none() && k.containment_rate.is_none());
    assert!(k.hrs_auroc.is_empty() && k.roc.is_empty() && k.ensemble.agreement_rate.is_none());
    t.cleanup().await;
}

#[tokio::test]
async fn the_gauges_carry_the_window_and_drop_undefined_figures() {
    let t = crate::testutil::sqlite_db().await;
    seed(&t.db).await;
    let mut all = Vec::new();
    for w in Window::ALL {
        all.push(compute(&t.db, &opts(), w, NOW).await.unwrap());
    }
    // Its own set: the process-wide one is refreshed by other tests' scrapes.
    let (reg, g) = (prometheus::Registry::new(), metrics::Gauges::new());
    g.register(&reg).unwrap();
    g.set(&all);
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&reg.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    for line in [
        "kakeya_kpi_escalation_rate{window=\"1h\"} 0.3333333333333333",
        "kakeya_kpi_containment_rate{window=\"24h\"} 0.75",
        "kakeya_kpi_hrs_roc_fpr{threshold=\"0.7\",window=\"1h\"} 0.5",
        "kakeya_kpi_containment_delta{arm=\"challenger\",window=\"1h\"} 0.5",
        "kakeya_kpi_model_version_share{model_version=\"v2\",window=\"1h\"} 0.4",
        "kakeya_kpi_savings_monthly{kind=\"projected\"} 0",
        "# TYPE kakeya_decision_risk histogram",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(
        !text.contains("kakeya_kpi_cost_per_trusted_task{tenant=\"acme\",window=\"1h\"}"),
        "no cost series below a day"
    );
    // An empty store: the rates disappear instead of keeping stale values.
    let empty = crate::testutil::sqlite_db().await;
    let none = compute(&empty.db, &opts(), Window::H1, NOW).await.unwrap();
    g.set(&[none]);
    let mut buf = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &reg.gather(), &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(!text.contains("kakeya_kpi_escalation_rate{"), "{text}");
    assert!(
        text.contains("kakeya_kpi_decisions{window=\"1h\"} 0"),
        "{text}"
    );
    t.cleanup().await;
    empty.cleanup().await;
}

#[tokio::test]
async fn the_route_answers_json_and_refuses_bad_windows() {
    use crate::api::tests::{admin, config, read_token};
    let tmp = tempfile::tempdir().unwrap();
    let r = crate::server::start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let a = admin(&r, "GET", "/v1/kpis?window=7d", Some(&token)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["window"], "7d");
    assert_eq!(j["decisions"], 0);
    assert!(j["escalation_rate"].is_null(), "{j}");
    for bad in ["/v1/kpis?window=2h", "/v1/kpis?window=", "/v1/kpis?span=1h"] {
        let a = admin(&r, "GET", bad, Some(&token)).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["code"].is_string(), "{}", a.body);
    }
    assert_eq!(admin(&r, "GET", "/v1/kpis", None).await.status, 401);
    let a = admin(&r, "GET", "/metrics", Some(&token)).await;
    // Refreshed on the scrape (possibly by another test's: the gauges are process-wide).
    assert!(
        a.body.contains("kakeya_kpi_decisions{window=\"30d\"}"),
        "{}",
        a.body
    );
}

#[test]
fn the_served_risk_is_read_from_the_gate_result() {
    use crate::testutil::{gate_result, pcs_body};
    let (unscored, _) = gate_result(&pcs_body("s"));
    assert_eq!(metrics::served_risk(&unscored), None, "{unscored}");
    let mut v: serde_json::Value = serde_json::from_str(&unscored).unwrap();
    v["risk"] = serde_json::json!({"score": 0.82, "band": "high", "model_version": "v1",
        "arm": "champion", "bundle_version": 3, "threshold": 0.5});
    assert_eq!(metrics::served_risk(&v.to_string()), Some(0.82));
    assert_eq!(metrics::served_risk("not json"), None);
}
