//! The anomaly stage in the pipeline: shadow records without changing the answer, blocking
//! answers 403 `anomaly_blocked`, guardrail votes in the ensemble (or escalates without one),
//! a new threshold changes the outcome, and an artifact of another schema is refused.

use super::*;
use crate::anomaly_policy::{AnomalySection, Mode, TenantAnomaly};
use crate::pipeline::anomaly::{self as stage, Action, H_ANOMALY, H_ANOMALY_FEATURES};

/// A repetition loop: the degenerate answer of the tests.
fn looped() -> String {
    "Ada Lovelace wrote it. ".repeat(30)
}

/// A VAE whose decoder outputs the normal answer's standardised vector (0): the normal answer
/// reconstructs exactly (score 0), anything else worse than every ECDF point (score 1).
fn anomaly_bundle(mode: Mode, threshold: f64, ensemble: EnsembleSection) -> Bundle {
    let mut b = bundle(-5.0, ensemble);
    let mut m = crate::vae::tests::zeros();
    let pcs = crate::parse(&body_with(&readme_evidence(LOVELACE))).unwrap();
    let ev = crate::evidence::bound_evidence(&pcs).unwrap().unwrap();
    let outcome = crate::pipeline::verify::run(&pcs, &gate());
    let (x, _) = stage::score_only(&m, &pcs, &outcome, Some(ev));
    m.mean = x.to_vec();
    m.ecdf = vec![1e-9, 2e-9, 3e-9, 4e-9];
    b.anomaly = AnomalySection {
        model: Some(m),
        default: Some(TenantAnomaly {
            mode,
            threshold,
            block_threshold: None,
        }),
        tenants: BTreeMap::new(),
    };
    b
}

fn anomaly_header(f: &Forward) -> (f64, f64, Action, String) {
    let (s, u, a, v) = stage::parse_header(header(f, H_ANOMALY).unwrap()).unwrap();
    (s, u, a, v.to_string())
}

#[test]
fn shadow_records_the_score_and_leaves_the_answer_alone() {
    let plain = bundle(-5.0, EnsembleSection::default());
    for (response, score, action) in [
        (LOVELACE.to_string(), 0.0, Action::None),
        (looped(), 1.0, Action::Shadow),
    ] {
        let body = body_with(&readme_evidence(&response));
        let b = anomaly_bundle(Mode::Shadow, 0.98, EnsembleSection::default());
        let f = forward(done(run(&b, &body, &mut TestHost::new(None))));
        let before = forward(done(run(&plain, &body, &mut TestHost::new(None))));
        assert_eq!(result(&f), result(&before), "shadow changes nothing");
        let (s, _, a, version) = anomaly_header(&f);
        assert_eq!((s, a), (score, action));
        assert_eq!(version, b.anomaly.model.as_ref().unwrap().version());
        let (schema, x) =
            stage::parse_features_header(header(&f, H_ANOMALY_FEATURES).unwrap()).unwrap();
        assert_eq!(schema, crate::anomaly_features::SCHEMA_VERSION);
        assert_eq!(x.len(), crate::anomaly_features::N_FEATURES);
        assert!(
            header(&before, H_ANOMALY).is_none(),
            "no section, no header"
        );
    }
}

#[test]
fn blocking_refuses_a_repetition_loop_with_403_and_passes_a_normal_answer() {
    let b = anomaly_bundle(Mode::Blocking, 0.98, EnsembleSection::default());
    let d = done(run(
        &b,
        &body_with(&readme_evidence(&looped())),
        &mut TestHost::new(None),
    ));
    let Decision::LocalReply(r) = d else {
        panic!("expected a reply, got {d:?}")
    };
    assert_eq!((r.status, r.code), (403, "anomaly_blocked"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["code"], "anomaly_blocked");
    assert_eq!(v["score"], 1.0);
    assert!(v["error"].is_string() && v["reason"].as_str().unwrap().contains("blocking threshold"));
    let f = forward(done(run(
        &b,
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    )));
    assert_eq!(result(&f).status(), 200);
    assert_eq!(anomaly_header(&f).2, Action::None);
}

#[test]
fn guardrail_is_a_reject_vote_in_the_ensemble_and_escalates_without_one() {
    // hrs accepts (low risk); the anomaly's reject vote halves the weighted accept confidence
    // (0.497 < 0.5): the 1-of-N policy no longer accepts and, fail-open, escalates.
    let p = policy(1, &["hrs"], true);
    let b = anomaly_bundle(Mode::Guardrail, 0.98, section(p.clone()));
    let f = forward(done(run(
        &b,
        &body_with(&readme_evidence(&looped())),
        &mut TestHost::new(None),
    )));
    let r = result(&f);
    assert_eq!(vote(&r, "anomaly").outcome, VoteOutcome::Reject);
    assert_eq!(r.status(), 202, "{r:?}");
    assert_eq!(r.ensemble.as_ref().unwrap().verdict, "escalate");
    assert_eq!(anomaly_header(&f).2, Action::Guardrail);
    // The same request without the anomaly section is accepted.
    let plain = bundle(-5.0, section(p));
    let r0 = result(&forward(done(run(
        &plain,
        &body_with(&readme_evidence(&looped())),
        &mut TestHost::new(None),
    ))));
    assert_eq!(r0.status(), 200);
    // A normal answer: the anomaly abstains, hrs accepts.
    let r1 = result(&forward(done(run(
        &b,
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    ))));
    assert_eq!(vote(&r1, "anomaly").outcome, VoteOutcome::Abstain);
    assert_eq!(r1.status(), 200);
    // No ensemble policy: a flagged answer is escalated for review.
    let b = anomaly_bundle(Mode::Guardrail, 0.98, EnsembleSection::default());
    let r2 = result(&forward(done(run(
        &b,
        &body_with(&readme_evidence(&looped())),
        &mut TestHost::new(None),
    ))));
    assert_eq!(r2.status(), 202);
    assert!(r2.reason.unwrap().contains("anomaly score"));
}

#[test]
fn a_new_threshold_changes_the_outcome_and_off_scores_nothing() {
    // The threshold above every possible score: the loop passes; at 0.98 it is blocked.
    let body = body_with(&readme_evidence(&looped()));
    let mut b = anomaly_bundle(Mode::Blocking, 1.0, EnsembleSection::default());
    b.anomaly.default.as_mut().unwrap().block_threshold = Some(1.0);
    assert!(matches!(
        done(run(&b, &body, &mut TestHost::new(None))),
        Decision::LocalReply(_)
    ));
    b.anomaly.default.as_mut().unwrap().block_threshold = Some(0.999_999_9);
    let mut b2 = b.clone();
    // score 1 ≥ 0.9999999: blocked; with mode off nothing is scored.
    assert!(matches!(
        done(run(&b2, &body, &mut TestHost::new(None))),
        Decision::LocalReply(_)
    ));
    b2.anomaly.default.as_mut().unwrap().mode = Mode::Off;
    let f = forward(done(run(&b2, &body, &mut TestHost::new(None))));
    assert!(header(&f, H_ANOMALY).is_none());
    // Shadow at a threshold of 1 on a normal answer: not flagged.
    let mut b3 = anomaly_bundle(Mode::Shadow, 1.0, EnsembleSection::default());
    b3.anomaly.default.as_mut().unwrap().threshold = 1.0;
    let f = forward(done(run(
        &b3,
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    )));
    assert_eq!(anomaly_header(&f).2, Action::None);
}

#[test]
fn an_artifact_of_another_schema_is_refused_and_old_bundles_keep_their_bytes() {
    let mut b = anomaly_bundle(Mode::Shadow, 0.98, EnsembleSection::default());
    assert_eq!(b.validate(), Ok(()));
    b.anomaly.model.as_mut().unwrap().schema_version = "anomaly-features-v0".into();
    assert!(matches!(
        b.validate(),
        Err(crate::bundle::BundleError::Anomaly(_))
    ));
    let seed = [7u8; 32];
    let signed = b.sign(&seed);
    let key = crate::signature::ed25519_public_b64(&seed);
    let refused =
        crate::bundle::verify_bundle(&signed.bytes, &signed.sha256, &signed.signature_b64, &[key]);
    assert!(
        matches!(refused, Err(crate::bundle::BundleError::Anomaly(_))),
        "{refused:?}"
    );
    // Without the section the bytes carry no `anomaly` member.
    let plain = bundle(-5.0, EnsembleSection::default());
    assert!(!String::from_utf8(plain.canonical_bytes())
        .unwrap()
        .contains("\"anomaly\""));
}
