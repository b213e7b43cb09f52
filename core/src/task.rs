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
