//! Property tests: whatever the body, the decision logic never panics and a submit request always
//! ends in 400, 401 or a forward (with well-formed, header-safe x-kakeya-* values).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use kakeya_core::Gate;
use kakeya_gate::decide::{decide, Decision, HeadVerdict};
use proptest::prelude::*;

const G1: &[u8] = include_bytes!("../../../core/tests/data/pcs_tiny_case_1.json");
const G2: &[u8] = include_bytes!("../../../core/tests/data/pcs_tiny_case_2.json");

fn gate() -> Gate {
    Gate::from_json(br#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#).unwrap()
}

fn headers() -> Vec<(String, Vec<u8>)> {
    vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), b"/v1/pcs/submit".to_vec()),
    ]
}

fn check(body: &[u8], g: &Gate) -> Decision {
    let mut t = 0u64;
    let (head, d) = decide(&headers(), body, g, &mut || {
        t += 7;
        t
    });
    assert!(matches!(head.verdict, HeadVerdict::AwaitBody { .. }));
    let d = d.expect("submit requests always get a decision");
    match &d {
        Decision::LocalReply(r) => {
            assert!(r.status == 400 || r.status == 401, "status {}", r.status);
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("error body is JSON");
            assert_eq!(v["code"], r.code);
            assert!(r.body.is_ascii());
        }
        Decision::Forward(f) => {
            assert_eq!(f.headers.len(), 4);
            for (_, v) in &f.headers {
                assert!(
                    v.bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "header-safe: {v:?}"
                );
            }
            let result: serde_json::Value =
                serde_json::from_str(&f.headers[1].1).expect("result is JSON");
            assert!(result["accepted"].is_boolean());
        }
    }
    d
}

/// A mutation of a golden body: overwrite, insert, delete or truncate at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(body: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = body.to_vec();
    for m in ms {
        let len = b.len().max(1);
        match m {
            Mutation::Set(i, v) => {
                if !b.is_empty() {
                    b[i % len] = *v;
                }
            }
            Mutation::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % len),
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let d = check(&body, &gate());
        // Random bytes are practically never a signed PCS.
        prop_assert!(matches!(d, Decision::LocalReply(_)));
    }

    #[test]
    fn mutated_golden_bodies(which in any::<bool>(), ms in prop::collection::vec(mutation(), 1..4)) {
        let base = if which { G1 } else { G2 };
        check(&apply(base, &ms), &gate());
    }

    #[test]
    fn json_shaped_noise(s in r#"\{("[a-zA-Z_]{1,8}":(-?[0-9]{1,20}(\.[0-9]{1,5})?|"[^"\\]{0,10}"|null|true|\[\]|\{\}),?){0,8}\}"#) {
        check(s.as_bytes(), &gate());
    }
}

#[test]
fn unmutated_goldens_forward() {
    for g in [G1, G2] {
        assert!(matches!(check(g, &gate()), Decision::Forward(_)));
    }
}
