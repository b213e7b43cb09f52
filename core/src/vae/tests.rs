use super::*;

fn dense(inputs: usize, outputs: usize) -> Dense {
    Dense {
        weights: vec![vec![0.0; inputs]; outputs],
        bias: vec![0.0; outputs],
    }
}

/// All weights 0, mean 0, std 1: the decoder outputs 0 whatever the latent draw.
pub(crate) fn zeros() -> VaeModel {
    let [h1, h2] = HIDDEN;
    VaeModel {
        kind: KIND_VAE.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; N_FEATURES],
        std: vec![1.0; N_FEATURES],
        encoder: vec![dense(N_FEATURES, h1), dense(h1, h2)],
        mu: dense(h2, LATENT),
        log_var: dense(h2, LATENT),
        decoder: vec![dense(LATENT, h2), dense(h2, h1), dense(h1, N_FEATURES)],
        beta: 1.0,
        latent_samples: 10,
        ecdf: vec![0.01, 0.04, 0.1, 0.2],
        training: VaeTraining {
            seed: 1,
            n_train: 0,
            n_ecdf: 4,
            epochs: 0,
            learning_rate: 0.0,
            weight_decay: 0.0,
            dataset_sha256: String::new(),
        },
    }
}

fn unit(k: usize, v: f64) -> Vec<f64> {
    let mut x = vec![0.0; N_FEATURES];
    x[k] = v;
    x
}

#[test]
fn forward_pass_by_hand() {
    let m = zeros();
    m.validate().unwrap();
    // Reconstruction 0: error = 1²/N for every draw (1/26 ≈ 0.038 under the v2 schema); ECDF: 1
    // of 4 (0.01) is ≤ it.
    let n = N_FEATURES as f64;
    let s = m.score(&unit(0, 1.0));
    assert!((s.reconstruction_error - 1.0 / n).abs() < 1e-15);
    assert!(0.01 <= 1.0 / n && 1.0 / n < 0.04);
    assert_eq!(s.score, 0.25);
    assert_eq!(s.uncertainty, 0.0);
    // μ = 0, log σ² = 0: KL = 0, so elbo = −N·(1/N).
    assert!((s.elbo + 1.0).abs() < 1e-12);
    // Standardisation: x = 3 with mean 1, std 2 is z = 1 again.
    let mut m2 = m.clone();
    m2.mean[0] = 1.0;
    m2.std[0] = 2.0;
    assert_eq!(m2.score(&unit(0, 3.0)), s);
    // Beyond every normal error: 1; below all: 0.
    assert_eq!(m.score(&unit(0, 10.0)).score, 1.0);
    assert_eq!(m.score(&[0.0; N_FEATURES]).score, 0.0);

    // A path through every layer: μ₀ = bias 1, σ ≈ e^−10 (log σ² clamped at −20), each decoder
    // layer passes unit 0 on, the hidden ones through tanh: x̂₀ = tanh(tanh(1)).
    let mut m = zeros();
    m.mu.bias[0] = 1.0;
    m.log_var.bias = vec![-50.0; LATENT];
    m.decoder[0].weights[0][0] = 1.0;
    m.decoder[1].weights[0][0] = 1.0;
    m.decoder[2].weights[0][0] = 1.0;
    let target = 1f64.tanh().tanh();
    assert!((target - 0.642_014_5).abs() < 1e-6);
    let s = m.score(&unit(0, target));
    assert!(s.reconstruction_error < 1e-8, "{s:?}");
    // KL per dimension −½(1 + l − μ² − eˡ): dim 0 with μ = 1, l = −20, the two others μ = 0.
    let kl0 = -0.5 * (1.0 - 20.0 - 1.0 - (-20f64).exp());
    let kl = kl0 + 2.0 * (-0.5 * (1.0 - 20.0 - (-20f64).exp()));
    assert!((s.elbo - (-(n * s.reconstruction_error) - kl)).abs() < 1e-9);
}

#[test]
fn draws_are_deterministic_and_uncertainty_reflects_spread() {
    let mut m = zeros();
    // Decoder output 0 = latent 0 (linear path: hidden tanh with small inputs ≈ linear), so
    // the error varies with the draw.
    m.decoder[0].weights[0][0] = 1.0;
    m.decoder[1].weights[0][0] = 1.0;
    m.decoder[2].weights[0][0] = 1.0;
    m.ecdf = (1..=100).map(|i| i as f64 * 0.001).collect();
    let x = unit(0, 0.2);
    let a = m.score(&x);
    assert_eq!(a, m.score(&x));
    assert!(a.uncertainty > 0.0 && a.uncertainty <= 0.5, "{a:?}");
    assert_ne!(input_seed(&x), input_seed(&unit(0, 0.2000001)));
}

#[test]
fn refuses_other_schemas_and_bad_artifacts() {
    let ok = zeros();
    let bytes = ok.canonical_bytes();
    assert_eq!(VaeModel::from_json(&bytes).unwrap(), ok);
    assert!(ok.version().starts_with("vae-") && ok.version().len() == 16);
    type Check = fn(&VaeError) -> bool;
    let cases: Vec<(VaeModel, Check)> = vec![
        (
            VaeModel {
                schema_version: "anomaly-features-v0".into(),
                ..ok.clone()
            },
            |e| matches!(e, VaeError::Schema(_)),
        ),
        (
            VaeModel {
                kind: "autoencoder".into(),
                ..ok.clone()
            },
            |e| matches!(e, VaeError::Kind(_)),
        ),
        (
            {
                let mut m = ok.clone();
                m.feature_names.swap(0, 1);
                m
            },
            |e| *e == VaeError::Names,
        ),
        (
            {
                let mut m = ok.clone();
                m.std[3] = 0.0;
                m
            },
            |e| matches!(e, VaeError::NonFinite(_)),
        ),
        (
            {
                let mut m = ok.clone();
                m.decoder[2].weights.pop();
                m
            },
            |e| matches!(e, VaeError::Shape(_)),
        ),
        (
            {
                let mut m = ok.clone();
                m.encoder[0].bias[0] = f64::NAN;
                m
            },
            |e| matches!(e, VaeError::NonFinite(_)),
        ),
        (
            VaeModel {
                latent_samples: 0,
                ..ok.clone()
            },
            |e| matches!(e, VaeError::LatentSamples(0)),
        ),
        (
            VaeModel {
                ecdf: vec![0.2, 0.1],
                ..ok.clone()
            },
            |e| *e == VaeError::Ecdf,
        ),
        (
            VaeModel {
                ecdf: vec![],
                ..ok.clone()
            },
            |e| *e == VaeError::Ecdf,
        ),
    ];
    for (m, want) in cases {
        let e = m.validate().unwrap_err();
        assert!(want(&e), "{e:?}");
        // NaN has no JSON spelling (serde_json writes null): refused as JSON instead.
        let e = VaeModel::from_json(&m.canonical_bytes()).unwrap_err();
        assert!(want(&e) || matches!(e, VaeError::Json(_)), "{e:?}");
    }
    assert!(matches!(VaeModel::from_json(b"{"), Err(VaeError::Json(_))));
}

#[test]
fn unscorable_inputs() {
    let m = zeros();
    for x in [
        vec![],
        vec![0.0; N_FEATURES - 1],
        unit(2, f64::NAN),
        unit(2, f64::INFINITY),
    ] {
        assert_eq!(m.score(&x), VaeScore::UNSCORABLE);
    }
    // Finite but overflowing once standardised.
    let mut tiny = m.clone();
    tiny.std[0] = 1e-300;
    assert_eq!(tiny.score(&unit(0, 1e300)), VaeScore::UNSCORABLE);
    assert!(serde_json::to_string(&VaeScore::UNSCORABLE).is_ok());
}

proptest::proptest! {
    #[test]
    fn never_panics_and_stays_in_range(x in proptest::collection::vec(proptest::num::f64::ANY, 0..24)) {
        let mut m = zeros();
        m.decoder[2].bias[1] = 0.3;
        m.mu.bias[0] = 0.5;
        let s = m.score(&x);
        proptest::prop_assert!((0.0..=1.0).contains(&s.score));
        proptest::prop_assert!((0.0..=0.5).contains(&s.uncertainty));
        proptest::prop_assert!(s.reconstruction_error.is_finite() && s.elbo.is_finite());
    }
}
