//! The filter-floor benchmark's set-up through real Envoy 1.40 (V8), without measuring anything:
//! the bench bootstrap (`envoy/bench.yaml.tmpl`) renders, Envoy runs it with one worker, the
//! floor filter sets its header, and the gate, configured as `kakeya envoy render` configures it,
//! verifies, scores with the control plane's default bundle and passes other paths through.
//! Run through `cargo xtask test` (it sets KAKEYA_FLOOR_WASM besides the stack's binaries).

use kakeya_wasm_tests::fixtures::{evidence_of_size, signed_pcs, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::floor_bench::{check_listeners, BenchEnvoy, Listener, PASS_PATH};

const SUBMIT: &str = "/v1/pcs/submit";

#[test]
fn bench_envoy_runs_the_floor_and_the_gate_as_configured() {
    // The v0.1 hostcall floor with a pattern; the v0.2 one as the plain floor.
    let b = BenchEnvoy::start(&[
        "get_buffer_bytes=1,get_header_map_pairs=2,replace_header_map_value=4,increment_metric=3"
            .into(),
        String::new(),
    ])
    .unwrap();
    let golden = signed_pcs("floor-test", KEY).to_string();
    // Floor: x-floor-body-bytes = the body length; gate: accepted; plain: untouched.
    check_listeners(&b, SUBMIT, golden.as_bytes(), false).unwrap();
    // Non-submit path: the floor still reads the body, the gate leaves the request alone.
    check_listeners(&b, PASS_PATH, golden.as_bytes(), false).unwrap();
    // The gate checks signatures with the keyring from Envoy's environment: a submission
    // signed with another key is refused there, while the floor and the plain listener say 200.
    let forged = signed_pcs("floor-test", "not-the-key").to_string();
    let a = b.probe(Listener::Gate, SUBMIT, forged.as_bytes()).unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    for l in [Listener::Floor, Listener::Plain] {
        assert_eq!(b.probe(l, SUBMIT, forged.as_bytes()).unwrap().status, 200);
    }
    // The hostcall floors accept their configurations and still report the body they read.
    for l in [Listener::HostcallsV01, Listener::HostcallsV02] {
        let a = b.probe(l, SUBMIT, golden.as_bytes()).unwrap();
        let len = golden.len().to_string();
        assert_eq!(
            (a.status, a.header("x-echo-floor")),
            (200, Some(len.as_str()))
        );
    }
    // v0.2 with evidence: the gate gets the default bundle through kakeya_admin and scores.
    let ev = evidence_of_size(2048);
    let scored = signed_pcs_with_evidence("floor-test-ev", KEY, &ev, None).to_string();
    check_listeners(&b, SUBMIT, scored.as_bytes(), true).unwrap();
    let a = b.probe(Listener::Gate, SUBMIT, scored.as_bytes()).unwrap();
    let risk: f64 = a.header("x-echo-risk").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&risk), "{a:?}");
}
