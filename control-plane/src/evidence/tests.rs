//! Evidence retention: sealing, the key file, and the store on SQLite and PostgreSQL (opt-in,
//! label deletion, TTL and opt-out purge, altered rows), then the whole path through a live
//! control plane (real sockets, real SQLite).

use super::crypto::{EvidenceKey, OpenError};
use super::*;
use crate::review::store::{queue_page, QueueStatus};
use crate::review::tests::decision;
use crate::review::{submit, Label, NewLabel};
use crate::store::apply_record;
use crate::testutil::{all_dbs, bind_evidence_hash};
use crate::wal::WalRecord;
use kakeya_core::evidence::Citation;
use sqlx::Connection;

/// Dedup for a minute, no audit sample: only escalations are queued in these tests.
const NO_AUDIT: crate::store::ApplyParams = crate::store::ApplyParams {
    dedup_ttl_ms: 60_000,
    audit_sample_rate: 0.0,
};

fn evidence(tag: &str) -> Evidence {
    Evidence {
        question: format!("Who wrote it? ({tag})"),
        context: format!("context-marker-{tag}: Ada Lovelace wrote it in 1843."),
        citations: vec![Citation {
            id: "c1".into(),
            text: format!("citation-marker-{tag}"),
            source: "https://example.org/ada".into(),
        }],
        response: format!("response-marker-{tag}: Alan Turing wrote it."),
        task: None,
    }
}

/// A submission of `tenant` carrying `ev`, bound as PCS v0.2, escalated or accepted by the
/// gate: (record, pcs_id).
pub(crate) fn submission(
    tenant: &str,
    shard: &str,
    escalated: bool,
    ev: &Evidence,
) -> (WalRecord, String) {
    let (mut rec, _) = decision(tenant, shard, escalated, crate::now_ms());
    let mut v: serde_json::Value = serde_json::from_str(&rec.body).unwrap();
    v["evidence"] = serde_json::to_value(ev).unwrap();
    bind_evidence_hash(&mut v, &kakeya_core::evidence::evidence_sha256(ev));
    rec.body = v.to_string();
    let pcs_id = v["pcs_id"].as_str().unwrap().to_string();
    (rec, pcs_id)
}

fn opted_in(names: &[&str]) -> EvidenceConfig {
    EvidenceConfig {
        tenants: Tenants::parse(names.iter().map(|n| n.to_string())).unwrap(),
        ..EvidenceConfig::default()
    }
}

fn vault(names: &[&str]) -> Vault {
    Vault::new(EvidenceKey::from_bytes(&[7; 32]), opted_in(names))
}

/// Applies the record as the committer does, then hands it to the retainer as ingest does.
async fn ingest(db: &Db, r: &Retainer, id: &str, rec: &WalRecord, ev: &Evidence) -> Applied {
    let pcs_id = kakeya_core::parse(rec.body.as_bytes()).unwrap().pcs_id;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let a = apply_record(&mut tx, id, rec, &NO_AUDIT).await.unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    r.keep_if_queued(&rec.tenant, &pcs_id, &a, ev.clone()).await;
    a
}

/// The whole queue (every status), with evidence attached through `v`.
async fn queue(db: &Db, v: Option<&Vault>, tenants: &Tenants) -> Vec<ReviewItem> {
    let mut items = queue_page(&db.pool, QueueStatus::All, None, None, None, 100)
        .await
        .unwrap();
    attach(&db.pool, v, tenants, &mut items, None, crate::now_ms())
        .await
        .unwrap();
    items
}

fn item<'a>(items: &'a [ReviewItem], pcs_id: &str) -> &'a ReviewItem {
    items.iter().find(|i| i.pcs_id == pcs_id).unwrap()
}

#[test]
fn a_sealed_record_opens_only_with_its_key_its_row_and_its_bytes() {
    let key = EvidenceKey::from_bytes(&[1; 32]);
    let ev = evidence("seal");
    let a = key.seal("acme", "p1", &ev).unwrap();
    let b = key.seal("acme", "p1", &ev).unwrap();
    assert_eq!(a.nonce.len(), 12);
    assert_ne!(a.nonce, b.nonce, "a fresh nonce per record");
    assert_ne!(a.ciphertext, b.ciphertext);
    let plain = serde_json::to_vec(&ev).unwrap();
    assert_eq!(a.ciphertext.len(), plain.len() + 16, "JSON + Poly1305 tag");
    assert!(!a.ciphertext.windows(14).any(|w| w == b"context-marker"));
    assert_eq!(key.open("acme", "p1", &a.nonce, &a.ciphertext).unwrap(), ev);
    // Moved to another row (tenant or pcs_id), including a shifted boundary between them.
    for (tenant, pcs_id) in [
        ("acme", "p2"),
        ("globex", "p1"),
        ("acmep", "1"),
        ("acm", "ep1"),
    ] {
        assert!(matches!(
            key.open(tenant, pcs_id, &a.nonce, &a.ciphertext),
            Err(OpenError::Unauthentic)
        ));
    }
    // Every single flipped bit of the ciphertext or the nonce, a cut tag, a wrong-size nonce.
    for i in 0..a.ciphertext.len() {
        let mut c = a.ciphertext.clone();
        c[i] ^= 0x01;
        assert!(key.open("acme", "p1", &a.nonce, &c).is_err(), "byte {i}");
    }
    for i in 0..a.nonce.len() {
        let mut n = a.nonce.clone();
        n[i] ^= 0x80;
        assert!(key.open("acme", "p1", &n, &a.ciphertext).is_err());
    }
    let cut = &a.ciphertext[..a.ciphertext.len() - 1];
    assert!(key.open("acme", "p1", &a.nonce, cut).is_err());
    assert!(key
        .open("acme", "p1", &a.nonce[..11], &a.ciphertext)
        .is_err());
    // Another key.
    let other = EvidenceKey::from_bytes(&[2; 32]);
    assert!(other.open("acme", "p1", &a.nonce, &a.ciphertext).is_err());
    assert_eq!(format!("{key:?}"), "EvidenceKey(<redacted>)");
}

#[test]
fn the_key_file_is_made_once_by_the_server_mode_0600_and_only_read_by_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("keys").join("evidence.key");
    let e = EvidenceKey::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("no evidence key at")
            && e.contains("only `kakeya serve` creates it")
            && e.contains("KAKEYA_EVIDENCE_KEY_FILE"),
        "{e}"
    );
    assert!(!path.exists(), "a client never creates the key");
    let served = EvidenceKey::load_or_create(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 44, "standard base64 of 32 bytes");
    // The server's next start and a client read the same key.
    let sealed = served.seal("t", "p", &evidence("k")).unwrap();
    for key in [
        EvidenceKey::load_or_create(&path).unwrap(),
        EvidenceKey::load(&path).unwrap(),
    ] {
        assert!(key
            .open("t", "p", &sealed.nonce, &sealed.ciphertext)
            .is_ok());
    }
    std::fs::write(&path, "not a key").unwrap();
    let e = EvidenceKey::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("the evidence key file") && e.contains("is malformed"),
        "{e}"
    );
}

#[tokio::test]
async fn only_fresh_queued_decisions_of_opted_in_tenants_keep_their_evidence() {
    for t in all_dbs("evidence_opt_in").await {
        let db = &t.db;
        let metrics = Metrics::new().unwrap();
        assert!(Retainer::new(vault(&[]), db.clone(), metrics.clone()).is_none());
        let v = vault(&["acme"]);
        let r = Retainer::new(v.clone(), db.clone(), metrics.clone()).unwrap();
        let (ev1, ev2, ev3) = (evidence("e1"), evidence("a2"), evidence("b3"));
        let (e1, p1) = submission("acme", "e1", true, &ev1);
        let (a2, p2) = submission("acme", "a2", false, &ev2);
        let (b3, p3) = submission("beta", "b3", true, &ev3);
        assert!(ingest(db, &r, "r1", &e1, &ev1).await.escalated);
        assert!(!ingest(db, &r, "r2", &a2, &ev2).await.escalated);
        ingest(db, &r, "r3", &b3, &ev3).await;
        // A resubmission (dedup hit) and a replayed record (not fresh) keep nothing more.
        assert!(ingest(db, &r, "r4", &e1, &ev1).await.dedup_hit);
        assert!(!ingest(db, &r, "r1", &e1, &ev1).await.fresh);
        assert_eq!(store::count(&db.pool).await.unwrap(), 1, "{}", t.label);
        let retained = |tenant: &str| {
            metrics
                .evidence_retained_total
                .with_label_values(&[tenant])
                .get()
        };
        assert_eq!((retained("acme"), retained("beta")), (1, 0));
        let items = queue(db, Some(&v), &v.config.tenants).await;
        assert_eq!(
            items.len(),
            2,
            "{}: the accepted one is not queued",
            t.label
        );
        let i1 = item(&items, &p1);
        assert!(i1.evidence_retained, "{}", t.label);
        assert_eq!(i1.evidence, Some(ev1.into()), "{}", t.label);
        let i3 = item(&items, &p3);
        assert!(!i3.evidence_retained && i3.evidence.is_none());
        assert!(items.iter().all(|i| i.pcs_id != p2));
        // Without the key (the CLI without --evidence): retained, not shown.
        let items = queue(db, None, &v.config.tenants).await;
        let i1 = item(&items, &p1);
        assert!(i1.evidence_retained && i1.evidence.is_none());
        // A tenant no longer opted in shows nothing, even before the purge deletes its record.
        let items = queue(db, Some(&v), &Tenants::default()).await;
        assert!(items
            .iter()
            .all(|i| !i.evidence_retained && i.evidence.is_none()));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_first_label_deletes_the_evidence_and_a_labelled_decision_keeps_none() {
    for t in all_dbs("evidence_label_deletes").await {
        let db = &t.db;
        let v = vault(&["acme"]);
        let r = Retainer::new(v.clone(), db.clone(), Metrics::new().unwrap()).unwrap();
        let (ev1, ev2) = (evidence("l1"), evidence("l2"));
        let (rec1, p1) = submission("acme", "l1", true, &ev1);
        let (rec2, p2) = submission("acme", "l2", true, &ev2);
        ingest(db, &r, "r1", &rec1, &ev1).await;
        ingest(db, &r, "r2", &rec2, &ev2).await;
        assert_eq!(store::count(&db.pool).await.unwrap(), 2);
        // A reviewer's label of p1; the owner's feedback on p2: either ends retention.
        let gold = NewLabel::review("acme", &p1, Label::Hallucinated, "alice", None).unwrap();
        submit(db, &gold, crate::now_ms()).await.unwrap();
        assert_eq!(store::count(&db.pool).await.unwrap(), 1, "{}", t.label);
        let silver = NewLabel::feedback(Some("acme"), &p2, Label::Faithful, None).unwrap();
        submit(db, &silver, crate::now_ms()).await.unwrap();
        assert_eq!(store::count(&db.pool).await.unwrap(), 0, "{}", t.label);
        let items = queue(db, Some(&v), &v.config.tenants).await;
        assert!(items
            .iter()
            .all(|i| !i.evidence_retained && i.evidence.is_none()));
        // Evidence arriving for an already labelled decision is not stored.
        let sealed = v.key.seal("acme", &p1, &ev1).unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let now = crate::now_ms();
        assert!(
            !store::insert(&mut conn, "acme", &p1, &sealed, now, now + 1000)
                .await
                .unwrap()
        );
        drop(conn);
        assert_eq!(store::count(&db.pool).await.unwrap(), 0, "{}", t.label);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_purge_deletes_expired_records_and_those_of_tenants_no_longer_opted_in() {
    for t in all_dbs("evidence_purge").await {
        let db = &t.db;
        let v = vault(&["acme", "beta"]);
        let now = crate::now_ms();
        let mut conn = db.pool.acquire().await.unwrap();
        let put = |tenant: &'static str, shard: &'static str, expires: i64| {
            let ev = evidence(shard);
            let (rec, pcs_id) = submission(tenant, shard, true, &ev);
            let sealed = v.key.seal(tenant, &pcs_id, &ev).unwrap();
            (rec, pcs_id, sealed, expires)
        };
        let rows = [
            put("acme", "old", now - 1),
            put("acme", "new", now + 3_600_000),
            put("beta", "other", now + 3_600_000),
        ];
        for (i, (rec, pcs_id, sealed, expires)) in rows.iter().enumerate() {
            let mut tx = conn.begin().await.unwrap();
            apply_record(&mut tx, &format!("r{i}"), rec, &NO_AUDIT)
                .await
                .unwrap();
            assert!(
                store::insert(&mut tx, &rec.tenant, pcs_id, sealed, now - 10, *expires)
                    .await
                    .unwrap()
            );
            tx.commit().await.unwrap();
        }
        drop(conn);
        // Expired: not shown even before the purge.
        let items = queue(db, Some(&v), &v.config.tenants).await;
        let shown: Vec<bool> = rows
            .iter()
            .map(|r| item(&items, &r.1).evidence.is_some())
            .collect();
        assert_eq!(shown, [false, true, true], "{}", t.label);
        // beta is no longer opted in: its record goes with the expired one.
        let acme_only = opted_in(&["acme"]).tenants;
        let p = purge(&db.pool, &acme_only, now).await.unwrap();
        assert_eq!(
            p,
            Purged {
                expired: 1,
                not_opted_in: 1
            },
            "{}",
            t.label
        );
        assert_eq!(store::count(&db.pool).await.unwrap(), 1);
        assert_eq!(
            purge(&db.pool, &acme_only, now).await.unwrap(),
            Purged::default()
        );
        // At the TTL of the last one, or with nobody opted in (`purge-evidence --all`).
        let p = purge(&db.pool, &Tenants::All, now + 3_600_000)
            .await
            .unwrap();
        assert_eq!((p.expired, p.not_opted_in), (1, 0), "{}", t.label);
        let (_, pcs_id, sealed, _) = put("acme", "again", 0);
        let mut conn = db.pool.acquire().await.unwrap();
        store::insert(&mut conn, "acme", &pcs_id, &sealed, now, now + 1000)
            .await
            .unwrap();
        drop(conn);
        let p = purge(&db.pool, &Tenants::default(), now).await.unwrap();
        assert_eq!((p.expired, p.not_opted_in), (0, 1), "{}", t.label);
        assert_eq!(store::count(&db.pool).await.unwrap(), 0);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn altered_or_moved_records_show_no_evidence_are_counted_and_the_page_is_served() {
    for t in all_dbs("evidence_tampered").await {
        let db = &t.db;
        // A tenant of its own: the failure counter is process-wide.
        let tenant = format!("tamper-{}", t.label);
        let tenant = tenant.as_str();
        let v = vault(&[tenant]);
        let r = Retainer::new(v.clone(), db.clone(), Metrics::new().unwrap()).unwrap();
        let mut ids = Vec::new();
        for shard in ["x1", "x2", "x3"] {
            let ev = evidence(shard);
            let (rec, pcs_id) = submission(tenant, &format!("{shard}-{}", t.label), true, &ev);
            ingest(db, &r, &format!("r-{shard}"), &rec, &ev).await;
            ids.push((pcs_id, ev));
        }
        let read = |pcs_id: String| async move {
            let row: (Vec<u8>, Vec<u8>) = sqlx::query_as(
                "SELECT nonce, ciphertext FROM review_evidence WHERE tenant = $1 AND pcs_id = $2",
            )
            .bind(tenant)
            .bind(pcs_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            row
        };
        let write = |pcs_id: String, nonce: Vec<u8>, ciphertext: Vec<u8>| async move {
            sqlx::query(
                "UPDATE review_evidence SET nonce = $1, ciphertext = $2 WHERE tenant = $3 AND pcs_id = $4",
            )
            .bind(nonce)
            .bind(ciphertext)
            .bind(tenant)
            .bind(pcs_id)
            .execute(&db.pool)
            .await
            .unwrap();
        };
        // x1: one byte altered. x2: x3's record copied over it (a valid ciphertext, wrong row).
        let (n1, mut c1) = read(ids[0].0.clone()).await;
        c1[3] ^= 0x20;
        write(ids[0].0.clone(), n1, c1).await;
        let (n3, c3) = read(ids[2].0.clone()).await;
        write(ids[1].0.clone(), n3, c3).await;
        let failures = || decrypt_failures_total().with_label_values(&[tenant]).get();
        let before = failures();
        let items = queue(db, Some(&v), &v.config.tenants).await;
        assert_eq!(items.len(), 3, "{}: the page is served", t.label);
        for (pcs_id, _) in &ids[..2] {
            let i = item(&items, pcs_id);
            assert!(i.evidence_retained && i.evidence.is_none(), "{}", t.label);
        }
        assert_eq!(
            item(&items, &ids[2].0).evidence,
            Some(ids[2].1.clone().into())
        );
        assert_eq!(failures() - before, 2, "{}", t.label);
        // Another key (the key file was replaced): nothing opens, nothing fails the page.
        let other = Vault::new(EvidenceKey::from_bytes(&[8; 32]), (*v.config).clone());
        let items = queue(db, Some(&other), &v.config.tenants).await;
        assert!(items.iter().all(|i| i.evidence.is_none()));
        assert_eq!(failures() - before, 5);
        t.cleanup().await;
    }
}

// ---- through a live control plane ----

mod live {
    use super::*;
    use crate::api::tests::{bearer, config, http, read_token, Answer};
    use crate::server::{start, Running};

    async fn send(r: &Running, rec: &WalRecord) -> Answer {
        http(
            "POST",
            format!("http://{}{}", r.ingest_addr, kakeya_core::SUBMIT_PATH),
            vec![
                ("x-kakeya-result".into(), rec.result.clone()),
                ("x-kakeya-cacheable".into(), rec.cacheable.to_string()),
                ("x-kakeya-tenant".into(), rec.tenant.clone()),
            ],
            rec.body.clone(),
        )
        .await
    }

    async fn get(r: &Running, token: &str, path: &str) -> Answer {
        http(
            "GET",
            format!("http://{}{path}", r.admin_addr),
            bearer(token),
            String::new(),
        )
        .await
    }

    /// What `kakeya serve` wires: the key file, the opted-in tenant's escalated submission
    /// shown with its evidence until labelled, the other tenant's not kept, the counters. (The
    /// end-to-end test `e2e_evidence` also searches every file of the data dir for the text.)
    #[tokio::test]
    async fn serve_shows_an_opted_in_tenants_queued_evidence_until_labelled() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.review.evidence = opted_in(&["acme"]);
        let r = start(&cfg).await.unwrap();
        let key_path = tmp.path().join("keys").join("evidence.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "generated by serve, owner only");
        }
        let token = read_token(tmp.path());
        let (ev_a, ev_b) = (evidence("live-acme"), evidence("live-beta"));
        let (rec_a, p_a) = submission("acme", "live-a", true, &ev_a);
        let (rec_b, p_b) = submission("beta", "live-b", true, &ev_b);
        for rec in [&rec_a, &rec_b] {
            let a = send(&r, rec).await;
            assert_eq!(a.status, 202, "{}", a.body);
        }
        let page = get(&r, &token, "/v1/reviews?status=open").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        let find = |p: &str| {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["pcs_id"] == p)
                .unwrap()
                .clone()
        };
        let a = find(&p_a);
        assert_eq!(a["evidence_retained"], true);
        assert_eq!(a["evidence"]["question"], ev_a.question.as_str());
        assert_eq!(a["evidence"]["context"], ev_a.context.as_str());
        assert_eq!(a["evidence"]["response"], ev_a.response.as_str());
        assert_eq!(
            a["evidence"]["citations"][0]["text"],
            ev_a.citations[0].text.as_str()
        );
        let b = find(&p_b);
        assert_eq!(
            (&b["evidence_retained"], &b["evidence"]),
            (&false.into(), &serde_json::Value::Null)
        );
        let metrics = get(&r, &token, "/metrics").await.body;
        assert!(
            metrics.contains("kakeya_evidence_retained_total{tenant=\"acme\"} 1"),
            "{metrics}"
        );
        assert!(!metrics.contains("kakeya_evidence_retained_total{tenant=\"beta\"}"));
        // The decision log as served holds none of it either.
        let decisions = get(&r, &token, "/v1/decisions").await.body;
        for ev in [&ev_a, &ev_b] {
            for text in [&ev.context, &ev.response, &ev.citations[0].text] {
                assert!(!decisions.contains(text.as_str()));
            }
        }
        // Labelled: gone from the page and from the table.
        let label = http(
            "POST",
            format!("http://{}/v1/reviews/acme/{p_a}", r.admin_addr),
            bearer(&token),
            serde_json::json!({"label": "hallucinated", "reviewer": "alice"}).to_string(),
        )
        .await;
        assert_eq!(label.status, 201, "{}", label.body);
        let page = get(&r, &token, "/v1/reviews?status=labelled").await.json();
        let a = &page["items"][0];
        assert_eq!(a["pcs_id"], p_a.as_str());
        assert_eq!(
            (&a["evidence_retained"], &a["evidence"]),
            (&false.into(), &serde_json::Value::Null)
        );
        assert_eq!(store::count(&r.db.pool).await.unwrap(), 0);
        r.shutdown().await.unwrap();
    }
}
