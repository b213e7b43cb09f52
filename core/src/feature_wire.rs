//! Features as decided, on the wire: the vector a scored decision was computed from, forwarded by
//! the gate to the control plane in one header so the decision log keeps it exactly.
//!
//! Format of [`HEADER`]: `<schema version>;<standard base64 of the values as little-endian f64>`,
//! e.g. `hrs-features-v1;AAAA…` (16 + 236 = 252 bytes for [`N_FEATURES`] = 22).
//!
//! Why base64 of the raw bits rather than a decimal list: the round trip is bit-exact by
//! construction (no float formatting or parsing on either side, `-0.0` and subnormals
//! included), the value has one fixed length for a schema (checked before anything is decoded),
//! and it is half the size of shortest-round-trip decimals (up to 24 characters each), well
//! within Envoy's header limits (60 KiB for all request headers by default). Decoding is strict:
//! padding and trailing bits must be canonical, so one vector has exactly one spelling.

use crate::features::{N_FEATURES, SCHEMA_VERSION};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Request header the gate sets on a scored submission (never on an unscored one); client
/// copies are stripped like every `x-kakeya-*` header.
pub const HEADER: &str = "x-kakeya-features";

/// Length of the base64 part for [`N_FEATURES`] values.
pub const ENCODED_LEN: usize = (N_FEATURES * 8).div_ceil(3) * 4;

/// Longest base64 part [`decode`] reads (a vector of another length is still told apart as
/// [`FeatureWireError::Length`] up to this size).
const MAX_ENCODED_LEN: usize = 4096;

/// Why a forwarded feature vector was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureWireError {
    #[error("unknown feature schema {0:?} (this build knows {SCHEMA_VERSION})")]
    Schema(String),
    #[error("{0} feature values, expected {N_FEATURES}")]
    Length(usize),
    #[error("feature {0} is not finite")]
    NonFinite(usize),
    #[error("malformed feature encoding: expected <schema>;<base64 of little-endian f64>")]
    Encoding,
}

impl FeatureWireError {
    /// Short label for counters (`kakeya_feature_rejects_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            FeatureWireError::Schema(_) => "unknown_schema",
            FeatureWireError::Length(_) => "length",
            FeatureWireError::NonFinite(_) => "non_finite",
            FeatureWireError::Encoding => "encoding",
        }
    }
}

/// The header value of `x` (schema [`SCHEMA_VERSION`]).
pub fn encode(x: &[f64; N_FEATURES]) -> String {
    let mut raw = [0u8; N_FEATURES * 8];
    for (chunk, v) in raw.chunks_exact_mut(8).zip(x) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    let mut out = String::with_capacity(SCHEMA_VERSION.len() + 1 + ENCODED_LEN);
    out.push_str(SCHEMA_VERSION);
    out.push(';');
    STANDARD.encode_string(raw, &mut out);
    out
}

/// Parses and validates a header value: known schema, well-formed base64 of exactly
/// [`N_FEATURES`] little-endian f64, every value finite ([`check`]).
pub fn decode(value: &str) -> Result<[f64; N_FEATURES], FeatureWireError> {
    let (schema, b64) = value.split_once(';').ok_or(FeatureWireError::Encoding)?;
    if schema != SCHEMA_VERSION {
        return Err(FeatureWireError::Schema(schema.chars().take(64).collect()));
    }
    // Nothing oversized is decoded; whole 8-byte values only.
    if b64.len() > MAX_ENCODED_LEN {
        return Err(FeatureWireError::Encoding);
    }
    let raw = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| FeatureWireError::Encoding)?;
    if raw.len() % 8 != 0 {
        return Err(FeatureWireError::Encoding);
    }
    let values: Vec<f64> = raw
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect();
    check(schema, &values)
}

/// Validates a stored or forwarded vector: `schema` is [`SCHEMA_VERSION`], exactly
/// [`N_FEATURES`] values, each finite.
pub fn check(schema: &str, values: &[f64]) -> Result<[f64; N_FEATURES], FeatureWireError> {
    if schema != SCHEMA_VERSION {
        return Err(FeatureWireError::Schema(schema.chars().take(64).collect()));
    }
    let x: [f64; N_FEATURES] = values
        .try_into()
        .map_err(|_| FeatureWireError::Length(values.len()))?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(FeatureWireError::NonFinite(i));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awkward() -> [f64; N_FEATURES] {
        let mut x = [0.0; N_FEATURES];
        let specials = [
            -0.0,
            f64::MIN_POSITIVE / 4.0, // subnormal
            f64::MAX,
            f64::MIN,
            0.1 + 0.2,
            -1.0 / 3.0,
            std::f64::consts::PI,
            1e-300,
            5e-324,
        ];
        for (i, v) in x.iter_mut().enumerate() {
            *v = specials.get(i).copied().unwrap_or(i as f64 * 0.37 - 2.5);
        }
        x
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let x = awkward();
        let h = encode(&x);
        assert_eq!(h.len(), SCHEMA_VERSION.len() + 1 + ENCODED_LEN);
        assert_eq!(h.len(), 252);
        assert!(h.starts_with("hrs-features-v1;"), "{h}");
        let back = decode(&h).unwrap();
        assert_eq!(back.map(f64::to_bits), x.map(f64::to_bits));
        // The real vector of a golden PCS too.
        let p = crate::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let f = crate::features::features(
            &crate::features::PcsSignals::from_pcs(&p),
            None,
            &crate::features::TenantStats::fresh(),
        );
        assert_eq!(
            decode(&encode(&f)).unwrap().map(f64::to_bits),
            f.map(f64::to_bits)
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let x = awkward();
        let good = encode(&x);
        let b64 = good.split_once(';').unwrap().1;
        let with = |values: &[f64]| {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            format!("{SCHEMA_VERSION};{}", STANDARD.encode(raw))
        };
        let reason = |v: &str| decode(v).unwrap_err().reason();
        // Unknown or missing schema.
        assert_eq!(reason(&format!("hrs-features-v2;{b64}")), "unknown_schema");
        assert_eq!(reason(&format!(";{b64}")), "unknown_schema");
        assert_eq!(reason(b64), "encoding");
        // Wrong number of values.
        assert_eq!(decode(&with(&x[..21])), Err(FeatureWireError::Length(21)));
        let mut long = x.to_vec();
        long.push(1.0);
        assert_eq!(decode(&with(&long)), Err(FeatureWireError::Length(23)));
        assert_eq!(decode(&with(&[])), Err(FeatureWireError::Length(0)));
        // Not finite.
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN] {
            let mut y = x;
            y[7] = bad;
            assert_eq!(decode(&encode(&y)), Err(FeatureWireError::NonFinite(7)));
        }
        // Garbage: not base64, a partial value, non-canonical padding or trailing bits,
        // whitespace, a second separator, an oversized value.
        for g in [
            format!("{SCHEMA_VERSION};!!!!"),
            format!("{SCHEMA_VERSION};{}", STANDARD.encode([1u8; 9])),
            format!("{SCHEMA_VERSION};{}", b64.trim_end_matches('=')),
            format!("{SCHEMA_VERSION};{b64}="),
            format!("{SCHEMA_VERSION}; {b64}"),
            format!("{SCHEMA_VERSION};{b64};x"),
            format!("{SCHEMA_VERSION};{}", "A".repeat(100_000)),
            String::new(),
            "garbage".into(),
        ] {
            assert_eq!(reason(&g), "encoding", "{g:.80}");
        }
        // Trailing bits that are not zero: 176 bytes end in a group of two, whose third digit
        // carries 2 unused bits; setting one is a non-canonical spelling of the same bytes.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut t = b64.as_bytes().to_vec();
        let i = t.len() - 2;
        let digit = ALPHABET.iter().position(|&c| c == t[i]).unwrap();
        assert_eq!(digit & 3, 0, "canonical encoding has zero trailing bits");
        t[i] = ALPHABET[digit | 1];
        let tweaked = format!("{SCHEMA_VERSION};{}", String::from_utf8(t).unwrap());
        assert_eq!(reason(&tweaked), "encoding", "{tweaked}");
        // check() is the same rule for stored vectors.
        assert_eq!(check(SCHEMA_VERSION, &x).unwrap(), x);
        assert!(matches!(check("v0", &x), Err(FeatureWireError::Schema(_))));
        assert_eq!(
            check(SCHEMA_VERSION, &x[1..]),
            Err(FeatureWireError::Length(21))
        );
    }
}
