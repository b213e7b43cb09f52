//! Task-aware models of a bundle: the selection order (tenant + task → task → champion), the
//! rule for the other arms (a challenger or canary scores every task), byte compatibility of
//! bundles without task models, and what the result records.

use super::tests::{bundle, keys, SEED};
use super::*;
use crate::model::tests::tiny_model;
use crate::task_models::TaskModelError;
use crate::verify::{verify, VerifyParams};

/// A model that differs from the champion by its intercept (hence its version).
fn model(intercept: f64) -> Model {
    let mut m = tiny_model();
    m.intercept = intercept;
    m.into()
}

fn evidence(task: Option<TaskKind>) -> Evidence {
    Evidence {
        question: "Who wrote the first program?".into(),
        context: "Ada Lovelace wrote the first program in 1843.".into(),
        response: "Ada Lovelace, in 1843.".into(),
        task,
        ..Evidence::default()
    }
}

/// Champion (−1), a QA model for everyone (−0.5), and tenant `acme`'s own QA (0.5) and
/// dialogue (0.25) models.
fn with_task_models() -> Bundle {
    let mut b = bundle();
    b.task_models.by_task.insert(TaskKind::Qa, model(-0.5));
    let acme = BTreeMap::from([
        (TaskKind::Qa, model(0.5)),
        (TaskKind::Dialogue, model(0.25)),
    ]);
    b.task_models.by_tenant.insert("acme".into(), acme);
    b
}

fn pcs() -> (Pcs, Outcome) {
    let p = crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
    let o = verify(&p, &VerifyParams::default());
    (p, o)
}

#[test]
fn selection_is_tenant_task_then_task_then_champion() {
    let b = with_task_models();
    let scorer = Scorer::new(b.clone());
    let (p, o) = pcs();
    let cases = [
        ("acme", Some(TaskKind::Qa), model(0.5), Some(TaskKind::Qa)),
        (
            "acme",
            Some(TaskKind::Dialogue),
            model(0.25),
            Some(TaskKind::Dialogue),
        ),
        // acme has no summarization model, nor has the bundle: the champion.
        (
            "acme",
            Some(TaskKind::Summarization),
            b.champion.clone(),
            None,
        ),
        ("beta", Some(TaskKind::Qa), model(-0.5), Some(TaskKind::Qa)),
        // beta has no dialogue model of its own and the bundle has none: the champion.
        ("beta", Some(TaskKind::Dialogue), b.champion.clone(), None),
        // No task: the champion, whatever the tenant has.
        ("acme", None, b.champion.clone(), None),
    ];
    for (tenant, task, expected, expected_task) in cases {
        let ev = evidence(task);
        let r = scorer.assess(tenant, &p, &o, Some(&ev)).unwrap();
        assert_eq!(r.arm, Arm::Champion);
        assert_eq!(r.model_version, expected.version(), "{tenant} {task:?}");
        assert_eq!(r.task, expected_task, "{tenant} {task:?}");
        // The scorer (precomputed versions) and the bundle agree, and the score is the
        // chosen model's.
        assert_eq!(Some(&r), b.assess(tenant, &p, &o, Some(&ev)).as_ref());
        let alone = Bundle {
            champion: expected.clone(),
            task_models: TaskModels::default(),
            ..bundle()
        };
        let r0 = alone.assess(tenant, &p, &o, Some(&ev)).unwrap();
        assert_eq!(r.risk.to_bits(), r0.risk.to_bits(), "{tenant} {task:?}");
    }
    // Two tasks of one tenant, two different models and scores from one bundle.
    let qa = scorer.assess("beta", &p, &o, Some(&evidence(Some(TaskKind::Qa))));
    let other = scorer.assess("beta", &p, &o, Some(&evidence(Some(TaskKind::Other))));
    let (qa, other) = (qa.unwrap(), other.unwrap());
    assert_ne!(qa.model_version, other.model_version);
    assert_ne!(qa.risk, other.risk);
}

/// The rule for arms: task models belong to the champion; a challenger or canary model scores
/// every task itself (an experiment compares one candidate against the champion as served).
#[test]
fn challenger_and_canary_score_every_task_with_their_own_model() {
    let (mut p, o) = pcs();
    let mut b = with_task_models();
    b.challenger = Some(model(-2.0));
    b.challenger_weight = 0.5;
    b.canary = Some(Canary {
        model: model(-3.0),
        weight: 0.3,
        key: ArmKey::Request,
    });
    let scorer = Scorer::new(b.clone());
    let ev = evidence(Some(TaskKind::Qa));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..80 {
        p.pcs_id = format!("pcs-{i}");
        let r = scorer.assess("acme", &p, &o, Some(&ev)).unwrap();
        assert_eq!(Some(&r), b.assess("acme", &p, &o, Some(&ev)).as_ref());
        let (version, task) = match r.arm {
            Arm::Champion => (model(0.5).version(), Some(TaskKind::Qa)),
            Arm::Challenger => (model(-2.0).version(), None),
            Arm::Canary => (model(-3.0).version(), None),
        };
        assert_eq!((r.model_version.as_str(), r.task), (version.as_str(), task));
        seen.insert(r.arm.as_str());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// Bundles without task models have the bytes they had before task models existed; with them
/// the key is written, signed, verified and read back, and the task maps are keyed by the
/// task's wire spelling.
#[test]
fn bundles_without_task_models_keep_their_bytes() {
    let b = bundle();
    let text = String::from_utf8(b.canonical_bytes()).unwrap();
    assert!(!text.contains("task_models"), "{text}");
    let mut empty_tenant = b.clone();
    empty_tenant
        .task_models
        .by_tenant
        .insert("acme".into(), BTreeMap::new());
    assert_eq!(empty_tenant.canonical_bytes(), b.canonical_bytes());
    let t = with_task_models();
    let s = t.sign(&SEED);
    let back = verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()).unwrap();
    assert_eq!(back, t);
    let v: serde_json::Value = serde_json::from_slice(&s.bytes).unwrap();
    assert!(v["task_models"]["by_task"]["qa"].is_object());
    assert!(v["task_models"]["by_tenant"]["acme"]["dialogue"].is_object());
    // An unknown task key or field is refused (a filter never guesses).
    let bad = String::from_utf8(s.bytes.clone())
        .unwrap()
        .replace(r#""by_task":{"qa""#, r#""by_task":{"chat""#);
    assert!(serde_json::from_str::<Bundle>(&bad).is_err());
}

#[test]
fn invalid_task_models_are_refused() {
    let mut b = with_task_models();
    if let Some(Model::Logistic(m)) = b.task_models.by_task.get_mut(&TaskKind::Qa) {
        m.schema_version = "hrs-features-v0".into();
    }
    assert!(matches!(
        b.validate(),
        Err(BundleError::TaskModels(TaskModelError::Model(n, _))) if n == "qa"
    ));
    let mut b = with_task_models();
    if let Some(Model::Logistic(m)) = b
        .task_models
        .by_tenant
        .get_mut("acme")
        .and_then(|t| t.get_mut(&TaskKind::Dialogue))
    {
        m.thresholds.escalate = f64::NAN;
    }
    assert_eq!(
        b.validate(),
        Err(BundleError::TaskModels(TaskModelError::Threshold(
            "acme/dialogue".into()
        )))
    );
    let mut b = bundle();
    b.task_models
        .by_tenant
        .insert(String::new(), BTreeMap::from([(TaskKind::Qa, model(0.0))]));
    assert_eq!(
        b.validate(),
        Err(BundleError::TaskModels(TaskModelError::TenantId))
    );
}

/// The result records the task of the model that scored; without one its bytes are unchanged.
#[test]
fn the_verify_result_names_the_task_model() {
    let (p, o) = pcs();
    let scorer = Scorer::new(with_task_models());
    let r = scorer
        .assess("acme", &p, &o, Some(&evidence(Some(TaskKind::Qa))))
        .unwrap();
    let mut res = o.result.clone();
    res.apply_risk(&r, 3);
    let json = res.to_json();
    assert!(
        json.contains(r#""arm":"champion","model_task":"qa","bundle_version":3"#),
        "{json}"
    );
    let r = scorer
        .assess("acme", &p, &o, Some(&evidence(None)))
        .unwrap();
    let mut res = o.result.clone();
    res.apply_risk(&r, 3);
    assert!(!res.to_json().contains("model_task"));
}
