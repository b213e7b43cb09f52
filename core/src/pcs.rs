//! The PCS v0.1 wire type ("fractal-lba-kakeya" schema) and its parser.
//!
//! Parsing follows spec §1.4 with two deliberate tightenings: keys match exactly (plus the
//! `d_hat` / `n_j` aliases the reference WASM SDK sends), and a field of the PCS that appears
//! twice is an error instead of "last one wins", since two readers of an ambiguous body could
//! disagree. (Inside the unsigned `N_j` map a repeated scale key still takes the last value.)
//! Unknown fields are ignored; missing fields and `null` take the zero value.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Schema tag every PCS must carry.
pub const SCHEMA: &str = "fractal-lba-kakeya";

/// A Proof-of-Computation Summary as sent by an agent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Pcs {
    #[serde(deserialize_with = "nullable")]
    pub pcs_id: String,
    #[serde(deserialize_with = "nullable")]
    pub schema: String,
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    #[serde(deserialize_with = "nullable")]
    pub shard_id: String,
    #[serde(deserialize_with = "nullable")]
    pub epoch: i64,
    #[serde(deserialize_with = "nullable")]
    pub attempt: i64,
    /// RFC 3339 send time; validated when present, otherwise unused.
    pub sent_at: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub seed: i64,
    #[serde(deserialize_with = "nullable")]
    pub scales: Vec<i64>,
    /// Non-empty cell count per scale, keyed by the scale in decimal.
    #[serde(rename = "N_j", alias = "n_j", deserialize_with = "nullable")]
    pub n_j: BTreeMap<String, i64>,
    #[serde(deserialize_with = "nullable")]
    pub coh_star: f64,
    #[serde(deserialize_with = "nullable")]
    pub v_star: Vec<f64>,
    #[serde(rename = "D_hat", alias = "d_hat", deserialize_with = "nullable")]
    pub d_hat: f64,
    #[serde(deserialize_with = "nullable")]
    pub r: f64,
    #[serde(deserialize_with = "nullable")]
    pub regime: String,
    #[serde(deserialize_with = "nullable")]
    pub budget: f64,
    #[serde(deserialize_with = "nullable")]
    pub merkle_root: String,
    #[serde(deserialize_with = "nullable")]
    pub sig: String,
    #[serde(deserialize_with = "nullable")]
    pub ft: FaultTolerance,
    /// v0.2: hex SHA-256 of the canonical evidence ([`crate::evidence::evidence_sha256`]);
    /// signed whenever present, which binds the evidence to the signature.
    #[serde(deserialize_with = "nullable")]
    pub evidence_sha256: String,
    /// v0.2: the question, context and response behind this result (never persisted).
    pub evidence: Option<crate::evidence::Evidence>,
}

/// Agent fault-tolerance metadata; carried, never signed, never judged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FaultTolerance {
    #[serde(deserialize_with = "nullable")]
    pub outbox_seq: i64,
    #[serde(deserialize_with = "nullable")]
    pub degraded: bool,
    #[serde(deserialize_with = "nullable")]
    pub fallbacks: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub clock_skew_ms: i64,
}

/// `null` leaves the zero value in place, as in the reference server.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a body is not a PCS. Every variant maps to HTTP 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("empty body")]
    Empty,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid sent_at: {0:?} is not an RFC 3339 timestamp")]
    SentAt(String),
    /// `evidence.task` is not one of `qa | dialogue | summarization | rag | other`.
    #[error("invalid evidence.task: {0}")]
    Task(String),
}

impl ParseError {
    /// Stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty_body",
            ParseError::Json(_) => "invalid_json",
            ParseError::SentAt(_) => "invalid_sent_at",
            ParseError::Task(_) => "invalid_task",
        }
    }
}

/// Parses a request body into a [`Pcs`].
pub fn parse(body: &[u8]) -> Result<Pcs, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    // serde would also read a struct from a JSON array of its fields; a PCS is an object only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ParseError::Json("expected a JSON object".into()));
    }
    let pcs: Pcs = serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with(crate::task::UNKNOWN_TASK) {
            ParseError::Task(msg)
        } else {
            ParseError::Json(msg)
        }
    })?;
    if let Some(ts) = &pcs.sent_at {
        let format = time::format_description::well_known::Rfc3339;
        if time::OffsetDateTime::parse(ts, &format).is_err() {
            return Err(ParseError::SentAt(ts.chars().take(64).collect()));
        }
    }
    Ok(pcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_1: &str = include_str!("../tests/data/pcs_tiny_case_1.json");

    #[test]
    fn parses_golden() {
        let p = parse(GOLDEN_1.as_bytes()).unwrap();
        assert_eq!(p.shard_id, "test-shard-001");
        assert_eq!(p.scales, vec![2, 4, 8, 16]);
        assert_eq!(p.n_j.get("16"), Some(&15));
        assert_eq!(p.d_hat, 0.528320834);
        assert_eq!(p.sent_at.as_deref(), Some("2025-01-19T12:00:00Z"));
    }

    #[test]
    fn type_rules() {
        // spec §1.4: all of these are 400
        for bad in [
            r#"{"epoch":1.0}"#,
            r#"{"epoch":"1"}"#,
            r#"{"N_j":{"2":3.5}}"#,
            r#"{"sent_at":""}"#,
            r#"[]"#,
            r#"{} x"#,
            r#"{"D_hat":1,"D_hat":2}"#,
            r#"{"epoch":99999999999999999999}"#,
            "",
            "   ",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn nulls_unknowns_and_aliases() {
        let p = parse(br#"{"pcs_id":null,"epoch":null,"extra":{"deep":[1,2]},"d_hat":1.5,"n_j":{"2":3},"sent_at":null}"#)
            .unwrap();
        assert_eq!(p.pcs_id, "");
        assert_eq!(p.epoch, 0);
        assert_eq!(p.d_hat, 1.5);
        assert_eq!(p.n_j.get("2"), Some(&3));
        assert_eq!(p.sent_at, None);
    }

    #[test]
    fn error_codes() {
        assert_eq!(parse(b"").unwrap_err().code(), "empty_body");
        assert_eq!(parse(b"{").unwrap_err().code(), "invalid_json");
        assert_eq!(
            parse(br#"{"sent_at":"yesterday"}"#).unwrap_err().code(),
            "invalid_sent_at"
        );
    }

    /// An unknown task spelling is its own typed error (400 `invalid_task`); absent or null
    /// is no task, and each of the five spellings parses.
    #[test]
    fn evidence_task_parses_or_is_a_typed_error() {
        use crate::task::TaskKind;
        let with = |t: &str| parse(format!(r#"{{"evidence":{{"response":"r"{t}}}}}"#).as_bytes());
        let task =
            |p: Result<Pcs, ParseError>| p.ok().and_then(|p| p.evidence).and_then(|e| e.task);
        assert_eq!(task(with("")), None);
        assert_eq!(task(with(r#","task":null"#)), None);
        for k in TaskKind::ALL {
            assert_eq!(task(with(&format!(r#","task":"{}""#, k.as_str()))), Some(k));
        }
        for bad in [
            r#","task":"QA""#,
            r#","task":"chat""#,
            r#","task":"""#,
            r#","task":3"#,
            r#","task":{}"#,
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_task", "{bad}: {e}");
            assert!(e.to_string().contains("unknown task kind"), "{e}");
        }
        // Other malformed evidence stays invalid_json.
        assert_eq!(with(r#","question":3"#).unwrap_err().code(), "invalid_json");
    }
}
