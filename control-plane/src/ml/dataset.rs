//! Labelled evidence rows from JSONL, plain or gzip (detected by the magic bytes, not the name).
//! Errors name the line, so a bad row in a 25,000-line file can be found.

use kakeya_core::evidence::Evidence;
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
