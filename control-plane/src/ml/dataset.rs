//! Labelled evidence rows from JSONL, plain or gzip (detected by the magic bytes, not the name).
//! Errors name the line, so a bad row in a 25,000-line file can be found.

use kakeya_core::evidence::Evidence;
use kakeya_core::task::TaskKind;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// One labelled row. `label` 1 = hallucinated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Row {
    pub id: String,
    pub task: String,
    #[serde(default)]
    pub question: String,
    #[serde(default)]
    pub context: String,
    pub response: String,
    pub label: u8,
}

impl Row {
    /// The evidence of this row.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            question: self.question.clone(),
            context: self.context.clone(),
            citations: Vec::new(),
            response: self.response.clone(),
            // The row's task when it is one of the five spellings (HaluEval: qa, dialogue,
            // summarization), so evaluation through the gateway signs it with the evidence.
            task: TaskKind::parse(&self.task),
        }
    }

    /// The item the row belongs to: the id up to its last `-` (`qa-17-1` → `qa-17`).
    pub fn group(&self) -> &str {
        group_of(&self.id)
    }
}

/// The id up to its last `-`, or the whole id when it has none.
pub fn group_of(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(g, _)| g)
}

/// At most `n` rows, whole items taken round-robin over the tasks (in order of first
/// appearance, each task's items in file order), so a small sample still covers every task
/// and keeps both responses of an item together (only the last item may be cut).
pub fn sample_by_task(rows: &[Row], n: usize) -> Vec<Row> {
    use std::collections::BTreeMap;
    let mut tasks: Vec<&str> = Vec::new();
    // task → items in order; item → row indices
    let mut items: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if !items.contains_key(r.task.as_str()) {
            tasks.push(&r.task);
        }
        let m = members.entry(r.group()).or_default();
        if m.is_empty() {
            items.entry(&r.task).or_default().push(r.group());
        }
        m.push(i);
    }
    let mut out = Vec::with_capacity(n.min(rows.len()));
    let mut cursor = vec![0usize; tasks.len()];
    while out.len() < n {
        let mut progressed = false;
        for (t, task) in tasks.iter().enumerate() {
            let Some(group) = items.get(task).and_then(|v| v.get(cursor[t])) else {
                continue;
            };
            cursor[t] += 1;
            progressed = true;
            for &i in members.get(group).into_iter().flatten() {
                if out.len() < n {
                    out.push(rows[i].clone());
                }
            }
        }
        if !progressed {
            break;
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("dataset is empty")]
    Empty,
}

/// A loaded dataset and the SHA-256 of its file bytes (as stored, compressed or not).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub rows: Vec<Row>,
    pub sha256: String,
}

/// Reads a JSONL file, gzip or plain.
pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let sha256 = kakeya_core::ids::sha256_hex(&bytes);
    let rows = parse(&bytes)?;
    Ok(Dataset { rows, sha256 })
}

/// Parses JSONL bytes (gzip when they start with 1f 8b).
pub fn parse(bytes: &[u8]) -> Result<Vec<Row>, DatasetError> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| DatasetError::Line {
            line: line_no,
            msg: format!("cannot read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line).map_err(|e| DatasetError::Line {
            line: line_no,
            msg: e.to_string(),
        })?;
        if row.label > 1 {
            return Err(DatasetError::Line {
                line: line_no,
                msg: format!("label must be 0 or 1, got {}", row.label),
            });
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(DatasetError::Empty);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TWO: &str = r#"{"id":"qa-1-0","task":"qa","question":"q","context":"c","response":"r","label":0}

{"id":"qa-1-1","task":"qa","question":"q","context":"c","response":"x","label":1}
"#;

    #[test]
    fn plain_and_gzip() {
        let rows = parse(TWO.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].label, 1);
        assert_eq!(rows[0].group(), "qa-1");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TWO.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse(&gz).unwrap(), rows);
    }

    #[test]
    fn samples_cover_every_task_and_keep_items_whole() {
        let row = |id: &str, task: &str| Row {
            id: id.into(),
            task: task.into(),
            question: String::new(),
            context: String::new(),
            response: "r".into(),
            label: 0,
        };
        let rows = vec![
            row("d-1-0", "dialogue"),
            row("d-1-1", "dialogue"),
            row("d-2-0", "dialogue"),
            row("d-2-1", "dialogue"),
            row("q-1-0", "qa"),
            row("q-1-1", "qa"),
            row("s-1-0", "summarization"),
        ];
        let ids = |v: Vec<Row>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(sample_by_task(&rows, 5)),
            ["d-1-0", "d-1-1", "q-1-0", "q-1-1", "s-1-0"]
        );
        assert_eq!(ids(sample_by_task(&rows, 3)), ["d-1-0", "d-1-1", "q-1-0"]);
        assert_eq!(sample_by_task(&rows, 100).len(), rows.len());
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "{\"id\":\"a-1\",\"task\":\"qa\",\"response\":\"r\",\"label\":0}\n{oops}\n";
        let e = parse(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        let bad = "{\"id\":\"a-1\",\"task\":\"qa\",\"response\":\"r\",\"label\":2}\n";
        assert!(parse(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("label must be 0 or 1"));
        assert!(matches!(parse(b"\n"), Err(DatasetError::Empty)));
        assert_eq!(group_of("dialogue-8048-1"), "dialogue-8048");
        assert_eq!(group_of("plain"), "plain");
    }
}
