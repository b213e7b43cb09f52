//! Label store and review-queue tests: the store on SQLite and PostgreSQL, the winning-label
//! rule, and the routes through a live control plane (real sockets, real SQLite).

use super::store::{queue_page, QueueStatus};
use super::*;
use crate::api::tests::{admin, config, http, read_token, Answer};
use crate::server::{start, Running};
use crate::store::{apply_record, ApplyParams, Db};
use crate::testutil::{all_dbs, pcs_body, record};
use crate::wal::WalRecord;
use serde_json::json;
use sqlx::Connection;

const T: i64 = 1_700_000_000_000;
/// Existing queue tests see escalated decisions only.
const NO_AUDIT: ApplyParams = ApplyParams {
    dedup_ttl_ms: 60_000,
    audit_sample_rate: 0.0,
};

/// A PCS submission and the gate's verdict on it, escalated or not; returns it with its pcs_id.
pub(crate) fn decision(tenant: &str, shard: &str, escalated: bool, ts: i64) -> (WalRecord, String) {
    let body = pcs_body(shard);
    let pcs_id = kakeya_core::parse(body.as_bytes()).unwrap().pcs_id;
    let mut rec = record(tenant, &body, ts);
    let mut vr: serde_json::Value = serde_json::from_str(&rec.result).unwrap();
    vr["accepted"] = true.into();
    vr["escalated"] = escalated.into();
    if escalated {
        vr["reason"] = "hrs_high_risk".into();
        vr["risk"] = json!({"score": 0.91, "band": "high", "model_version": "lr-0123456789ab",
                            "arm": "champion", "bundle_version": 3});
    }
    rec.result = vr.to_string();
    (rec, pcs_id)
}

async fn log(db: &Db, tenant: &str, shard: &str, escalated: bool) -> String {
    log_at(db, tenant, shard, escalated, T).await
}

/// [`log`] at `ts`.
pub(crate) async fn log_at(db: &Db, tenant: &str, shard: &str, escalated: bool, ts: i64) -> String {
    let (rec, pcs_id) = decision(tenant, shard, escalated, ts);
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let a = apply_record(&mut tx, &format!("rec-{tenant}-{shard}"), &rec, &NO_AUDIT)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(a.fresh && a.escalated == escalated);
    pcs_id
}

fn row(labeller: &str, source: Source, label: Label, at: i64) -> LabelRow {
    LabelRow {
        tenant: "t".into(),
        pcs_id: "p".into(),
        labeller: labeller.into(),
        source,
        label,
        confidence: source.confidence(),
        comment: None,
        created_at_ms: at,
    }
}

#[test]
fn the_highest_source_wins_then_the_newest_then_hallucinated() {
    use Label::*;
    use Source::*;
    assert_eq!(effective_label(&[]), None);
    // Gold beats a newer silver and bronze.
    let ls = [
        row("alice", Gold, Faithful, 1),
        row("owner", Silver, Hallucinated, 5),
        row("rule", Bronze, Hallucinated, 9),
    ];
    assert_eq!(effective_label(&ls).unwrap().labeller, "alice");
    // Silver beats bronze whatever the order.
    let ls = [
        row("rule", Bronze, Faithful, 9),
        row("owner", Silver, Hallucinated, 1),
    ];
    assert_eq!(effective_label(&ls).unwrap().label, Hallucinated);
    // Same source: the most recent.
    let ls = [
        row("bob", Gold, Hallucinated, 2),
        row("alice", Gold, Faithful, 3),
    ];
    assert_eq!(effective_label(&ls).unwrap().labeller, "alice");
    // Exact tie: hallucinated, in either order.
    let a = [
        row("bob", Gold, Faithful, 3),
        row("alice", Gold, Hallucinated, 3),
    ];
    let b = [a[1].clone(), a[0].clone()];
    assert_eq!(effective_label(&a).unwrap().labeller, "alice");
    assert_eq!(effective_label(&b).unwrap().labeller, "alice");
    // Same label, same time: the first labeller name, in either order.
    let a = [
        row("bob", Gold, Faithful, 3),
        row("alice", Gold, Faithful, 3),
    ];
    let b = [a[1].clone(), a[0].clone()];
    assert_eq!(effective_label(&a).unwrap().labeller, "alice");
    assert_eq!(effective_label(&b).unwrap().labeller, "alice");
}

#[test]
fn bad_labels_are_refused_before_the_store() {
    let ok = NewLabel::review("t", "p", Label::Faithful, " alice ", Some("fine")).unwrap();
    assert_eq!((ok.labeller.as_str(), ok.source), ("alice", Source::Gold));
    let long = "x".repeat(MAX_COMMENT_CHARS + 1);
    for (reviewer, comment) in [
        ("", None),
        ("   ", None),
        ("a\nb", None),
        (OWNER_LABELLER, None),
        (&*"r".repeat(MAX_LABELLER_CHARS + 1), None),
        ("alice", Some(long.as_str())),
    ] {
        let e = NewLabel::review("t", "p", Label::Faithful, reviewer, comment);
        assert!(matches!(e, Err(LabelError::Invalid(_))), "{reviewer:?}");
    }
    // Exactly the limit is fine (characters, not bytes).
    let max = "é".repeat(MAX_COMMENT_CHARS);
    assert!(NewLabel::review("t", "p", Label::Faithful, "a", Some(&max)).is_ok());
    assert!(NewLabel::review("", "p", Label::Faithful, "a", None).is_err());
    assert!(NewLabel::review("t", "", Label::Faithful, "a", None).is_err());
    // Feedback: tenant default, silver default, gold refused.
    let f = NewLabel::feedback(None, "p", Label::Hallucinated, None).unwrap();
    assert_eq!(
        (f.tenant.as_str(), f.labeller.as_str(), f.source),
        (DEFAULT_TENANT, OWNER_LABELLER, Source::Silver)
    );
    assert!(NewLabel::feedback(None, "p", Label::Faithful, Some(Source::Gold)).is_err());
    assert!(NewLabel::feedback(Some(""), "p", Label::Faithful, None).is_err());
    assert!(NewLabel::feedback(None, "", Label::Faithful, None).is_err());
}

#[tokio::test]
async fn one_immutable_label_per_decision_and_labeller() {
    for t in all_dbs("labels_immutable").await {
        let db = &t.db;
        let p = log(db, "acme", "s1", true).await;
        let gold =
            NewLabel::review("acme", &p, Label::Hallucinated, "alice", Some("made up")).unwrap();
        let first = submit(db, &gold, T + 10).await.unwrap();
        let Submitted::Created(stored) = &first else {
            panic!("{}: {first:?}", t.label)
        };
        assert_eq!(
            stored,
            &LabelRow {
                tenant: "acme".into(),
                pcs_id: p.clone(),
                labeller: "alice".into(),
                source: Source::Gold,
                label: Label::Hallucinated,
                confidence: 1.0,
                comment: Some("made up".into()),
                created_at_ms: T + 10,
            },
            "{}",
            t.label
        );
        // The same label again (another comment, later): the stored row, unchanged.
        let again = NewLabel::review("acme", &p, Label::Hallucinated, "alice", None).unwrap();
        assert_eq!(
            submit(db, &again, T + 20).await.unwrap(),
            Submitted::Existing(stored.clone()),
            "{}",
            t.label
        );
        // A different label from the same labeller: refused, nothing changes.
        let flip = NewLabel::review("acme", &p, Label::Faithful, "alice", None).unwrap();
        match submit(db, &flip, T + 30).await {
            Err(LabelError::Conflict(existing)) => assert_eq!(&*existing, stored),
            other => panic!("{}: {other:?}", t.label),
        }
        // Other labellers have their own label; the owner's source is part of the claim.
        let owner = NewLabel::feedback(Some("acme"), &p, Label::Faithful, None).unwrap();
        assert!(matches!(
            submit(db, &owner, T + 40).await.unwrap(),
            Submitted::Created(_)
        ));
        let bronze =
            NewLabel::feedback(Some("acme"), &p, Label::Faithful, Some(Source::Bronze)).unwrap();
        assert!(matches!(
            submit(db, &bronze, T + 50).await,
            Err(LabelError::Conflict(_))
        ));
        let labels = store::labels_of(&db.pool, "acme", &p).await.unwrap();
        assert_eq!(labels.len(), 2, "{}", t.label);
        assert_eq!(labels[0], *stored);
        assert_eq!(
            (labels[1].source, labels[1].confidence, labels[1].label),
            (Source::Silver, SILVER_CONFIDENCE, Label::Faithful)
        );
        assert_eq!(effective_label(&labels).unwrap().labeller, "alice");
        // No such decision (unknown pcs_id, or the right pcs_id under another tenant).
        for (tenant, pcs_id) in [("acme", "nope"), ("globex", p.as_str())] {
            let l = NewLabel::review(tenant, pcs_id, Label::Faithful, "alice", None).unwrap();
            assert!(
                matches!(submit(db, &l, T).await, Err(LabelError::NoDecision { .. })),
                "{}",
                t.label
            );
            assert!(store::labels_of(&db.pool, tenant, pcs_id)
                .await
                .unwrap()
                .is_empty());
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_queue_lists_escalated_decisions_by_status_and_tenant() {
    for t in all_dbs("review_queue").await {
        let db = &t.db;
        let e1 = log(db, "acme", "q1", true).await;
        let _accepted = log(db, "acme", "q2", false).await;
        let e3 = log(db, "acme", "q3", true).await;
        let g4 = log(db, "globex", "q4", true).await;
        let l = NewLabel::review("acme", &e1, Label::Faithful, "alice", None).unwrap();
        submit(db, &l, T + 1).await.unwrap();
        let l = NewLabel::feedback(Some("acme"), &e1, Label::Hallucinated, None).unwrap();
        submit(db, &l, T + 2).await.unwrap();
        let page = |status, tenant| async move {
            queue_page(&db.pool, status, None, tenant, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.tenant, i.pcs_id, i.labels.len(), i.effective_label))
                .collect::<Vec<_>>()
        };
        let s = |v: &str| v.to_string();
        assert_eq!(
            page(QueueStatus::All, None).await,
            [
                (s("globex"), g4.clone(), 0, None),
                (s("acme"), e3.clone(), 0, None),
                (s("acme"), e1.clone(), 2, Some(Label::Faithful)),
            ],
            "{}",
            t.label
        );
        assert_eq!(
            page(QueueStatus::Open, Some("acme")).await,
            [(s("acme"), e3.clone(), 0, None)]
        );
        assert_eq!(
            page(QueueStatus::Labelled, None).await,
            [(s("acme"), e1.clone(), 2, Some(Label::Faithful))]
        );
        assert!(page(QueueStatus::Labelled, Some("globex")).await.is_empty());
        // The decision's numbers come along.
        let items = queue_page(&db.pool, QueueStatus::Open, None, Some("globex"), None, 10)
            .await
            .unwrap();
        let i = &items[0];
        assert_eq!(
            (
                i.reason.as_deref(),
                i.risk,
                i.risk_band.as_deref(),
                i.model_version.as_deref(),
                i.created_at_ms
            ),
            (
                Some("hrs_high_risk"),
                Some(0.91),
                Some("high"),
                Some("lr-0123456789ab"),
                T
            )
        );
        // Paging by id: below the newest, one at a time.
        let all = queue_page(&db.pool, QueueStatus::All, None, None, None, 100)
            .await
            .unwrap();
        let next = queue_page(
            &db.pool,
            QueueStatus::All,
            None,
            None,
            Some(all[0].decision_id),
            1,
        )
        .await
        .unwrap();
        assert_eq!(next, all[1..2]);
        t.cleanup().await;
    }
}

// ---- the routes, through a live control plane ----

/// Submits an escalated (or accepted) decision through the ingest listener, as Envoy would.
async fn ingest(r: &Running, tenant: &str, shard: &str, escalated: bool) -> String {
    let (rec, pcs_id) = decision(tenant, shard, escalated, T);
    let a = http(
        "POST",
        format!("http://{}{}", r.ingest_addr, kakeya_core::SUBMIT_PATH),
        vec![
            ("x-kakeya-result".into(), rec.result),
            ("x-kakeya-cacheable".into(), rec.cacheable.to_string()),
            ("x-kakeya-tenant".into(), tenant.into()),
        ],
        rec.body,
    )
    .await;
    assert_eq!(a.status, if escalated { 202 } else { 200 }, "{}", a.body);
    pcs_id
}

async fn post(r: &Running, token: &str, path: &str, body: serde_json::Value) -> Answer {
    http(
        "POST",
        format!("http://{}{path}", r.admin_addr),
        crate::api::tests::bearer(token),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn reviews_and_feedback_answer_201_200_409_404_400() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let p = ingest(&r, "acme", "api1", true).await;
    let path = format!("/v1/reviews/acme/{p}");
    let body = json!({"label": "hallucinated", "reviewer": "alice", "comment": "no source"});
    let a = post(&r, &token, &path, body.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let stored = a.json();
    assert_eq!(
        (
            &stored["labeller"],
            &stored["source"],
            &stored["label"],
            &stored["confidence"]
        ),
        (
            &json!("alice"),
            &json!("gold"),
            &json!("hallucinated"),
            &json!(1.0)
        )
    );
    // Retry: 200 with the stored row.
    let a = post(&r, &token, &path, body).await;
    assert_eq!((a.status, a.json()), (200, stored.clone()), "{}", a.body);
    // Conflicting: 409 label_conflict, nothing changes.
    let a = post(
        &r,
        &token,
        &path,
        json!({"label": "faithful", "reviewer": "alice"}),
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.json()["code"], "label_conflict");
    // Unknown decision: 404 JSON.
    for bad in [
        "/v1/reviews/acme/no-such-pcs".to_string(),
        format!("/v1/reviews/globex/{p}"),
    ] {
        let a = post(
            &r,
            &token,
            &bad,
            json!({"label": "faithful", "reviewer": "bob"}),
        )
        .await;
        assert_eq!(a.status, 404, "{bad}: {}", a.body);
        assert_eq!(a.json()["code"], "not_found");
    }
    // Bad bodies: 400 JSON.
    for bad in [
        json!({"label": "maybe", "reviewer": "bob"}),
        json!({"label": "faithful", "reviewer": ""}),
        json!({"label": "faithful", "reviewer": "  "}),
        json!({"label": "faithful", "reviewer": "owner"}),
        json!({"label": "faithful"}),
        json!({"label": "faithful", "reviewer": "bob", "comment": "x".repeat(4097)}),
        json!({"label": "faithful", "reviewer": "bob", "extra": 1}),
        json!({"label": "faithful", "reviewer": 7}),
        json!([]),
    ] {
        let a = post(&r, &token, &path, bad.clone()).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{bad}");
    }
    // Feedback: silver by default, the owner as labeller.
    let fb = json!({"tenant_id": "acme", "pcs_id": p, "label": "faithful"});
    let a = post(&r, &token, "/v1/feedback", fb.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let owner = a.json();
    assert_eq!(
        (&owner["labeller"], &owner["source"], &owner["confidence"]),
        (&json!("owner"), &json!("silver"), &json!(0.8))
    );
    let a = post(&r, &token, "/v1/feedback", fb).await;
    assert_eq!((a.status, a.json()), (200, owner));
    let a = post(
        &r,
        &token,
        "/v1/feedback",
        json!({"tenant_id": "acme", "pcs_id": p, "label": "hallucinated"}),
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.json()["code"], "label_conflict");
    // The default tenant is "default": this decision is acme's.
    let a = post(
        &r,
        &token,
        "/v1/feedback",
        json!({"pcs_id": p, "label": "faithful"}),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);
    let d = ingest(&r, "default", "api2", false).await;
    let a = post(
        &r,
        &token,
        "/v1/feedback",
        json!({"pcs_id": d, "label": "faithful", "source": "bronze"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        (&a.json()["tenant"], &a.json()["confidence"]),
        (&json!("default"), &json!(0.5))
    );
    for bad in [
        json!({"pcs_id": d, "label": "faithful", "source": "gold"}),
        json!({"pcs_id": d, "label": "faithful", "source": "platinum"}),
        json!({"pcs_id": d, "label": "unsure"}),
        json!({"pcs_id": "", "label": "faithful"}),
        json!({"tenant_id": "", "pcs_id": d, "label": "faithful"}),
        json!({"label": "faithful"}),
    ] {
        let a = post(&r, &token, "/v1/feedback", bad.clone()).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{bad}");
    }
    // The queue shows both labels and the winner (gold beats silver).
    let a = admin(&r, "GET", "/v1/reviews?status=labelled", Some(&token)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let items = a.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["pcs_id"], json!(p));
    assert_eq!(items[0]["labels"].as_array().unwrap().len(), 2);
    assert_eq!(items[0]["effective_label"], "hallucinated");
    assert_eq!(items[0]["reason"], "hrs_high_risk");
    assert_eq!(items[0]["risk_band"], "high");
    // Without the token: 401.
    let a = http(
        "POST",
        format!("http://{}{path}", r.admin_addr),
        vec![],
        json!({"label": "faithful", "reviewer": "eve"}).to_string(),
    )
    .await;
    assert_eq!(a.status, 401);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_review_queue_paginates_with_a_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    // Escalations only: no accepted decision is drawn into the audit sample.
    let mut cfg = config(tmp.path());
    cfg.review.audit_sample_rate = 0.0;
    let r = start(&cfg).await.unwrap();
    let token = read_token(tmp.path());
    let mut escalated = Vec::new();
    for i in 0..5 {
        escalated.push(ingest(&r, "acme", &format!("pg{i}"), true).await);
        ingest(&r, "acme", &format!("ok{i}"), false).await;
    }
    ingest(&r, "globex", "pgx", true).await;
    // Label one: it leaves the open queue.
    let a = post(
        &r,
        &token,
        &format!("/v1/reviews/acme/{}", escalated[2]),
        json!({"label": "faithful", "reviewer": "alice"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let walk = |query: &'static str| {
        let (r, token) = (&r, &token);
        async move {
            let (mut seen, mut ids, mut pages) = (Vec::new(), Vec::new(), 0);
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/reviews?{query}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let a = admin(r, "GET", &path, Some(token)).await;
                assert_eq!(a.status, 200, "{}", a.body);
                let page = a.json();
                for item in page["items"].as_array().unwrap() {
                    seen.push(item["pcs_id"].as_str().unwrap().to_string());
                    ids.push(item["decision_id"].as_i64().unwrap());
                }
                pages += 1;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
            (seen, pages)
        }
    };
    let open: Vec<String> = [4, 3, 1, 0].iter().map(|&i| escalated[i].clone()).collect();
    assert_eq!(walk("tenant_id=acme&limit=2").await, (open.clone(), 2));
    assert_eq!(walk("tenant_id=acme&status=open&limit=3").await, (open, 2));
    let all: Vec<String> = escalated.iter().rev().cloned().collect();
    assert_eq!(walk("tenant_id=acme&status=all&limit=1").await, (all, 5));
    assert_eq!(
        walk("status=labelled").await,
        (vec![escalated[2].clone()], 1)
    );
    assert_eq!(walk("status=all").await.0.len(), 6);
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-3",
        "limit=x",
        "cursor=nope",
        "cursor=YmVmb3JlOi0x",
        "status=closed",
    ] {
        let a = admin(&r, "GET", &format!("/v1/reviews?{q}"), Some(&token)).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{q}");
    }
    let a = admin(&r, "GET", "/v1/reviews?limit=1000", Some(&token)).await;
    assert_eq!(a.status, 200);
    r.shutdown().await.unwrap();
}

/// `queued_for` through the API: with every accepted decision audit-sampled, the filter splits
/// the queue into the escalated and the sampled decisions, pages within its part, and refuses
/// any other value with a 400 JSON error.
#[tokio::test]
async fn the_review_queue_filters_by_the_reason_for_queueing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.review.audit_sample_rate = 1.0;
    let r = start(&cfg).await.unwrap();
    let token = read_token(tmp.path());
    let (mut escalated, mut sampled) = (Vec::new(), Vec::new());
    for i in 0..3 {
        escalated.push(ingest(&r, "acme", &format!("qe{i}"), true).await);
        sampled.push(ingest(&r, "acme", &format!("qa{i}"), false).await);
    }
    let list = |query: String| {
        let (r, token) = (&r, &token);
        async move {
            let a = admin(r, "GET", &format!("/v1/reviews?{query}"), Some(token)).await;
            assert_eq!(a.status, 200, "{query}: {}", a.body);
            let page = a.json();
            let items: Vec<(String, String)> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["pcs_id"].as_str().unwrap().to_string(),
                        i["queued_for"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (items, page["next_cursor"].as_str().map(String::from))
        }
    };
    let newest_first = |ids: &[String], why: &str| -> Vec<(String, String)> {
        ids.iter()
            .rev()
            .map(|p| (p.clone(), why.to_string()))
            .collect()
    };
    let (items, next) = list("queued_for=escalated".into()).await;
    assert_eq!(items, newest_first(&escalated, "escalated"));
    assert_eq!(next, None);
    // Two pages of the audit sample, tenant filter alongside.
    let (first, next) = list("queued_for=audit_sample&tenant_id=acme&limit=2".into()).await;
    let next = next.expect("a second page");
    let (rest, last) = list(format!(
        "queued_for=audit_sample&tenant_id=acme&limit=2&cursor={next}"
    ))
    .await;
    assert_eq!(last, None);
    assert_eq!(
        [first, rest].concat(),
        newest_first(&sampled, "audit_sample")
    );
    assert_eq!(list("status=open".into()).await.0.len(), 6);
    for q in [
        "queued_for=accepted",
        "queued_for=Escalated",
        "queued_for=audit-sample",
        "queued_for=",
    ] {
        let a = admin(&r, "GET", &format!("/v1/reviews?{q}"), Some(&token)).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{q}");
    }
    r.shutdown().await.unwrap();
}

/// The audit sample: accepted, non-escalated decisions whose (tenant, pcs_id) hash falls below
/// the rate are flagged at insert and queued with `queued_for: audit_sample`, next to the
/// escalated ones; labels on them work as on escalated ones.
#[tokio::test]
async fn audit_sampled_decisions_are_queued_beside_escalated_ones() {
    use super::store::QueuedFor;
    const RATE: f64 = 0.2;
    let params = ApplyParams {
        audit_sample_rate: RATE,
        ..NO_AUDIT
    };
    for t in all_dbs("audit_sample_queue").await {
        let mut expected: Vec<(String, QueuedFor)> = Vec::new();
        let mut conn = t.db.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for i in 0..120 {
            let escalated = i % 10 == 0;
            let (rec, pcs_id) = decision("acme", &format!("a{i}"), escalated, T + i);
            let a = apply_record(&mut tx, &format!("rec-a{i}"), &rec, &params)
                .await
                .unwrap();
            assert!(a.fresh, "{}", t.label);
            let sampled = audit::sampled(RATE, "acme", &pcs_id, true, escalated);
            assert_eq!(a.audit_sample, sampled, "{}", t.label);
            if escalated {
                expected.push((pcs_id, QueuedFor::Escalated));
            } else if sampled {
                expected.push((pcs_id, QueuedFor::AuditSample));
            }
        }
        tx.commit().await.unwrap();
        drop(conn);
        expected.reverse(); // newest first
        let n_audit = expected
            .iter()
            .filter(|(_, q)| *q == QueuedFor::AuditSample)
            .count();
        // 108 accepted at 20 %: some, not all (the exact count is the hash's).
        assert!((8..=40).contains(&n_audit), "{}: {n_audit}", t.label);
        let page = |status| queue_page(&t.db.pool, status, None, Some("acme"), None, 1000);
        let all = page(QueueStatus::All).await.unwrap();
        let got: Vec<(String, QueuedFor)> = all
            .iter()
            .map(|i| (i.pcs_id.clone(), i.queued_for))
            .collect();
        assert_eq!(got, expected, "{}", t.label);
        // Filtered by the reason for queueing: exactly the decisions of that reason, in
        // order, and pages of a filtered listing continue below the last id like the others.
        for why in [QueuedFor::Escalated, QueuedFor::AuditSample] {
            let only: Vec<(String, QueuedFor)> = expected
                .iter()
                .filter(|(_, q)| *q == why)
                .cloned()
                .collect();
            let filtered = queue_page(&t.db.pool, QueueStatus::All, Some(why), None, None, 1000)
                .await
                .unwrap();
            let got: Vec<(String, QueuedFor)> = filtered
                .iter()
                .map(|i| (i.pcs_id.clone(), i.queued_for))
                .collect();
            assert_eq!(got, only, "{} {why:?}", t.label);
            let second = queue_page(
                &t.db.pool,
                QueueStatus::All,
                Some(why),
                Some("acme"),
                Some(filtered[2].decision_id),
                3,
            )
            .await
            .unwrap();
            assert_eq!(second, filtered[3..6], "{} {why:?}", t.label);
        }
        for item in &all {
            match item.queued_for {
                QueuedFor::Escalated => assert_eq!(item.reason.as_deref(), Some("hrs_high_risk")),
                QueuedFor::AuditSample => assert_eq!(item.reason, None),
                // Only anomaly active learning queues these (anomaly::tests).
                QueuedFor::AnomalyUncertain | QueuedFor::AnomalyAudit => {
                    panic!("not queued by anomaly active learning here: {item:?}")
                }
            }
        }
        // The JSON names the reason for queueing.
        let v = serde_json::to_value(&all[0]).unwrap();
        assert!(v["queued_for"] == "escalated" || v["queued_for"] == "audit_sample");
        // A reviewer labels an audit-sampled decision: it leaves the open queue and shows up
        // labelled, with its effective label.
        let (pcs_id, _) = expected
            .iter()
            .find(|(_, q)| *q == QueuedFor::AuditSample)
            .unwrap()
            .clone();
        let l = NewLabel::review("acme", &pcs_id, Label::Faithful, "alice", None).unwrap();
        assert!(matches!(
            submit(&t.db, &l, T + 1000).await.unwrap(),
            Submitted::Created(_)
        ));
        let labelled = page(QueueStatus::Labelled).await.unwrap();
        assert_eq!(labelled.len(), 1, "{}", t.label);
        assert_eq!(
            (labelled[0].pcs_id.as_str(), labelled[0].queued_for),
            (pcs_id.as_str(), QueuedFor::AuditSample)
        );
        assert_eq!(labelled[0].effective_label, Some(Label::Faithful));
        assert_eq!(labelled[0].labels.len(), 1);
        let open = page(QueueStatus::Open).await.unwrap();
        assert_eq!(open.len(), expected.len() - 1, "{}", t.label);
        assert!(open.iter().all(|i| i.pcs_id != pcs_id));
        // The status filter and the reason filter combine, labels included.
        let labelled = |why| {
            queue_page(
                &t.db.pool,
                QueueStatus::Labelled,
                Some(why),
                None,
                None,
                1000,
            )
        };
        let audit = labelled(QueuedFor::AuditSample).await.unwrap();
        assert_eq!(audit.len(), 1, "{}", t.label);
        assert_eq!(audit[0].labels.len(), 1);
        assert!(labelled(QueuedFor::Escalated).await.unwrap().is_empty());
        t.cleanup().await;
    }
}
