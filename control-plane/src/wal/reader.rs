//! Streaming segment reader and replay iterator.
//!
//! A reader stops cleanly at the first frame that is incomplete, fails its CRC or does not
//! decode: everything before it is trusted, nothing after it is (a torn tail can only be the
//! last write before a crash, and the writer truncates it before appending again).

use super::checkpoint::Checkpoint;
use super::segment::{record_id, segment_day, WalRecord, HEADER_LEN, MAX_PAYLOAD};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A record read back from the WAL with its position.
#[derive(Debug, Clone)]
pub struct ReplayRecord {
    pub id: String,
    pub segment: String,
    pub offset: u64,
    /// Offset just past this record (a checkpoint after it points here).
    pub end: u64,
    pub record: WalRecord,
}

/// Outcome of scanning one whole segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    pub records: Vec<ReplayRecord>,
    /// Length of the trusted prefix.
    pub valid_len: u64,
    pub file_len: u64,
}

impl SegmentScan {
    pub fn torn(&self) -> bool {
        self.valid_len < self.file_len
    }
}

/// Iterates the records of one segment from `offset` on.
pub struct SegmentReader {
    r: BufReader<File>,
    name: String,
    pos: u64,
    done: bool,
}

impl SegmentReader {
    pub fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(SegmentReader {
            r: BufReader::with_capacity(256 * 1024, f),
            name,
            pos: offset,
            done: false,
        })
    }

    /// Offset just past the last good record returned so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn next_record(&mut self) -> io::Result<Option<ReplayRecord>> {
        let mut hdr = [0u8; HEADER_LEN];
        if !read_full(&mut self.r, &mut hdr)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if len > MAX_PAYLOAD {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        if !read_full(&mut self.r, &mut payload)? || crc32fast::hash(&payload) != crc {
            return Ok(None);
        }
        let Ok(record) = serde_json::from_slice::<WalRecord>(&payload) else {
            return Ok(None);
        };
        let offset = self.pos;
        let end = offset + HEADER_LEN as u64 + len as u64;
        self.pos = end;
        Ok(Some(ReplayRecord {
            id: record_id(&self.name, offset),
            segment: self.name.clone(),
            offset,
            end,
            record,
        }))
    }
}

/// Fills `buf` completely; `Ok(false)` at (possibly partial) end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Iterator for SegmentReader {
    type Item = io::Result<ReplayRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole segment into memory (tests, tools; replay streams instead).
pub fn read_segment(path: &Path) -> io::Result<SegmentScan> {
    let file_len = std::fs::metadata(path)?.len();
    let mut reader = SegmentReader::open(path, 0)?;
    let mut records = Vec::new();
    for r in reader.by_ref() {
        records.push(r?);
    }
    Ok(SegmentScan {
        records,
        valid_len: reader.position(),
        file_len,
    })
}

/// Length of the trusted prefix of a segment, without keeping the records.
pub fn valid_len(path: &Path) -> io::Result<u64> {
    let mut reader = SegmentReader::open(path, 0)?;
    for r in reader.by_ref() {
        r?;
    }
    Ok(reader.position())
}

/// Segment files in `dir`, oldest first (the date in the name sorts lexicographically).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if segment_day(&name).is_some() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every record after `from` (or from the very beginning), across segments, in order.
pub fn replay_iter(
    dir: &Path,
    from: Option<&Checkpoint>,
) -> io::Result<impl Iterator<Item = io::Result<ReplayRecord>> + Send> {
    let segments: Vec<(PathBuf, u64)> = list_segments(dir)?
        .into_iter()
        .filter_map(|(name, path)| match from {
            None => Some((path, 0)),
            Some(cp) if name < cp.segment => None,
            Some(cp) if name == cp.segment => Some((path, cp.offset)),
            Some(_) => Some((path, 0)),
        })
        .collect();
    Ok(segments.into_iter().flat_map(
        |(path, offset)| -> Box<dyn Iterator<Item = io::Result<ReplayRecord>> + Send> {
            match SegmentReader::open(&path, offset) {
                Ok(r) => Box::new(r),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        },
    ))
}
