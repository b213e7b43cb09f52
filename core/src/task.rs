//! The task kind an answer was produced for, carried by the evidence (signed with it) and used to
//! choose a task-aware model and the micro-vote's head.
//!
//! Why a closed set: each kind has its own models and thresholds in the bundle; an unknown
//! string is refused by the evidence parser rather than silently scored as another kind.

use serde::{Deserialize, Serialize};

/// `qa | dialogue | summarization | rag | other`, as spelled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Qa,
    Dialogue,
    Summarization,
    Rag,
    Other,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Qa,
        TaskKind::Dialogue,
        TaskKind::Summarization,
        TaskKind::Rag,
        TaskKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Qa => "qa",
            TaskKind::Dialogue => "dialogue",
            TaskKind::Summarization => "summarization",
            TaskKind::Rag => "rag",
            TaskKind::Other => "other",
        }
    }

    /// The kind spelled `s`, if it is one of the five.
    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Start of the message of the error [`deserialize_opt`] raises for an unknown spelling; the
/// PCS parser maps it to its typed [`crate::pcs::ParseError::Task`] (serde errors carry only
/// text).
pub const UNKNOWN_TASK: &str = "unknown task kind";

/// Serde `deserialize_with` for an optional task: absent or `null` is `None`, one of the five
/// spellings is that kind, anything else (another string, a number, an object) an error whose
/// message starts with [`UNKNOWN_TASK`].
pub fn deserialize_opt<'de, D>(d: D) -> Result<Option<TaskKind>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => TaskKind::parse(&s).map(Some).ok_or_else(|| {
            D::Error::custom(format!(
                "{UNKNOWN_TASK} {:?}: expected qa, dialogue, summarization, rag or other",
                s.chars().take(64).collect::<String>()
            ))
        }),
        Some(_) => Err(D::Error::custom(format!(
            "{UNKNOWN_TASK}: task must be a string (qa, dialogue, summarization, rag or other)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for k in TaskKind::ALL {
            assert_eq!(TaskKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(TaskKind::parse("QA"), None);
    }
}
