//! Streaming segment reader and replay iterator.
//!
//! A frame that is incomplete, fails its CRC or does not decode is never trusted. What follows
//! it decides what it is:
//!
//! * no valid frame anywhere after it: a **torn tail** (the last write before a crash; the
//!   writer cuts it before appending again). Reported as [`SkippedRange`] with `torn_tail`.
//! * a valid frame further on: **corruption in the middle** of acknowledged data. The reader
//!   logs the byte range, reports it as a [`SkippedRange`] and resynchronises on the next valid
//!   frame, so one bad frame never hides the records after it. The writer never truncates or
//!   appends to such a segment (it rotates to `inbox-YYYYMMDD-n.wal`).

use super::checkpoint::Checkpoint;
use super::segment::{
    record_id, segment_key, SegmentKey, WalRecord, HEADER_LEN, MAX_PAYLOAD, PAYLOAD_PREFIX,
};
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

/// Bytes of a segment that were not readable as frames: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    pub segment: String,
    pub start: u64,
    pub end: u64,
    /// `true`: nothing valid follows (crash mid-write). `false`: corruption with valid records
    /// after it.
    pub torn_tail: bool,
}

impl SkippedRange {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a reader yields: a record, or a range it had to skip.
// Nearly every item is a record, moved straight to the caller: boxing it would only add an
// allocation per replayed record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ReplayItem {
    Record(ReplayRecord),
    Skipped(SkippedRange),
}

/// Outcome of scanning one whole segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    pub records: Vec<ReplayRecord>,
    /// End of the last valid frame: everything after it is a torn tail.
    pub valid_len: u64,
    pub file_len: u64,
    /// Corrupt ranges in the middle of the segment (valid frames follow each of them).
    pub corrupt: Vec<(u64, u64)>,
}

impl SegmentScan {
    /// The segment ends in a torn tail.
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

// As for [`ReplayItem`]: one frame at a time, moved on at once.
#[allow(clippy::large_enum_variant)]
enum Frame {
    /// Clean end of file at a frame boundary.
    Eof,
    Good(u64, WalRecord),
    Bad,
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

    /// Offset just past the last good record returned so far (or the resynchronisation
    /// point after a corrupt range).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_frame(&mut self) -> io::Result<Frame> {
        let mut hdr = [0u8; HEADER_LEN];
        match read_up_to(&mut self.r, &mut hdr)? {
            0 => return Ok(Frame::Eof),
            HEADER_LEN => {}
            _ => return Ok(Frame::Bad),
        }
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        if len > MAX_PAYLOAD {
            return Ok(Frame::Bad);
        }
        let mut payload = vec![0u8; len as usize];
        if read_up_to(&mut self.r, &mut payload)? < payload.len()
            || crc32fast::hash(&payload) != crc
        {
            return Ok(Frame::Bad);
        }
        match serde_json::from_slice::<WalRecord>(&payload) {
            Ok(record) => Ok(Frame::Good(HEADER_LEN as u64 + u64::from(len), record)),
            Err(_) => Ok(Frame::Bad),
        }
    }

    fn next_item(&mut self) -> io::Result<Option<ReplayItem>> {
        let start = self.pos;
        match self.read_frame()? {
            Frame::Eof => Ok(None),
            Frame::Good(frame_len, record) => {
                let end = start + frame_len;
                self.pos = end;
                Ok(Some(ReplayItem::Record(ReplayRecord {
                    id: record_id(&self.name, start),
                    segment: self.name.clone(),
                    offset: start,
                    end,
                    record,
                })))
            }
            Frame::Bad => {
                let file = self.r.get_mut();
                let file_len = file.metadata()?.len();
                match find_next_frame(file, start + 1, file_len)? {
                    Some(next) => {
                        tracing::error!(
                            segment = %self.name,
                            start,
                            end = next,
                            bytes = next - start,
                            "corrupt WAL region in the middle of a segment: skipping it and resuming at the next valid frame"
                        );
                        self.r.seek(SeekFrom::Start(next))?;
                        self.pos = next;
                        Ok(Some(ReplayItem::Skipped(SkippedRange {
                            segment: self.name.clone(),
                            start,
                            end: next,
                            torn_tail: false,
                        })))
                    }
                    None => {
                        self.done = true;
                        let end = file_len.max(start);
                        tracing::warn!(
                            segment = %self.name,
                            start,
                            end,
                            "torn WAL tail (incomplete last write) ignored"
                        );
                        Ok(Some(ReplayItem::Skipped(SkippedRange {
                            segment: self.name.clone(),
                            start,
                            end,
                            torn_tail: true,
                        })))
                    }
                }
            }
        }
    }
}

/// Reads until `buf` is full or end of file; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a complete, valid frame (length, CRC, decodable record) starts at `off`.
fn frame_at(file: &mut File, off: u64, file_len: u64) -> io::Result<bool> {
    let mut hdr = [0u8; HEADER_LEN];
    file.seek(SeekFrom::Start(off))?;
    if read_up_to(file, &mut hdr)? < HEADER_LEN {
        return Ok(false);
    }
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if len > MAX_PAYLOAD || off + HEADER_LEN as u64 + u64::from(len) > file_len {
        return Ok(false);
    }
    let mut payload = vec![0u8; len as usize];
    if read_up_to(file, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc {
        return Ok(false);
    }
    Ok(serde_json::from_slice::<WalRecord>(&payload).is_ok())
}

/// Offset of the first valid frame starting at or after `from`, if any. Candidates are found
/// by the payload prefix every record starts with, then checked fully.
fn find_next_frame(file: &mut File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let plen = PAYLOAD_PREFIX.len();
    let mut buf = vec![0u8; CHUNK];
    // Where the prefix of a frame starting at `from` would be.
    let mut at = from + HEADER_LEN as u64;
    while at + plen as u64 <= file_len {
        file.seek(SeekFrom::Start(at))?;
        let want = usize::try_from(file_len - at).map_or(CHUNK, |n| n.min(CHUNK));
        let n = read_up_to(file, &mut buf[..want])?;
        if n < plen {
            break;
        }
        let hits: Vec<usize> = buf[..n]
            .windows(plen)
            .enumerate()
            .filter(|(_, w)| *w == PAYLOAD_PREFIX)
            .map(|(i, _)| i)
            .collect();
        for i in hits {
            let cand = at + i as u64 - HEADER_LEN as u64;
            if frame_at(file, cand, file_len)? {
                return Ok(Some(cand));
            }
        }
        at += (n - plen + 1) as u64;
    }
    Ok(None)
}

impl Iterator for SegmentReader {
    type Item = io::Result<ReplayItem>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(item)) => Some(Ok(item)),
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

fn scan(path: &Path, keep_records: bool) -> io::Result<SegmentScan> {
    let file_len = std::fs::metadata(path)?.len();
    let mut reader = SegmentReader::open(path, 0)?;
    let mut records = Vec::new();
    let mut corrupt = Vec::new();
    for item in reader.by_ref() {
        match item? {
            ReplayItem::Record(r) if keep_records => records.push(r),
            ReplayItem::Record(_) => {}
            ReplayItem::Skipped(s) if s.torn_tail => {}
            ReplayItem::Skipped(s) => corrupt.push((s.start, s.end)),
        }
    }
    Ok(SegmentScan {
        records,
        // Past the last good frame; a torn tail (if any) starts here.
        valid_len: reader.position(),
        file_len,
        corrupt,
    })
}

/// Reads a whole segment into memory (tests, tools; replay streams instead).
pub fn read_segment(path: &Path) -> io::Result<SegmentScan> {
    scan(path, true)
}

/// Scans a segment without keeping its records (the writer's check before appending).
pub fn check_segment(path: &Path) -> io::Result<SegmentScan> {
    scan(path, false)
}

/// Segment files in `dir`, oldest first by [`SegmentKey`] (day, then rotation number; not by
/// file name, which would put `inbox-D-1.wal` before `inbox-D.wal`).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    Ok(list_segment_keys(dir)?
        .into_iter()
        .map(|(_, name, path)| (name, path))
        .collect())
}

/// Like [`list_segments`], with each segment's key.
pub fn list_segment_keys(dir: &Path) -> io::Result<Vec<(SegmentKey, String, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(key) = segment_key(&name) {
            out.push((key, name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every record (and skipped range) after `from` (or from the very beginning), across
/// segments, in order.
pub fn replay_iter(
    dir: &Path,
    from: Option<&Checkpoint>,
) -> io::Result<impl Iterator<Item = io::Result<ReplayItem>> + Send> {
    let from = match from {
        Some(cp) => match segment_key(&cp.segment) {
            Some(key) => Some((key, cp.offset)),
            None => {
                tracing::warn!(segment = %cp.segment, "WAL checkpoint names no segment; replaying everything");
                None
            }
        },
        None => None,
    };
    let segments: Vec<(PathBuf, u64)> = list_segment_keys(dir)?
        .into_iter()
        .filter_map(|(key, _, path)| match from {
            None => Some((path, 0)),
            Some((cp, _)) if key < cp => None,
            Some((cp, offset)) if key == cp => Some((path, offset)),
            Some(_) => Some((path, 0)),
        })
        .collect();
    Ok(segments.into_iter().flat_map(
        |(path, offset)| -> Box<dyn Iterator<Item = io::Result<ReplayItem>> + Send> {
            match SegmentReader::open(&path, offset) {
                Ok(r) => Box::new(r),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        },
    ))
}

/// Only the records of [`replay_iter`] (tests and tools that do not count skipped bytes).
pub fn replay_records(
    dir: &Path,
    from: Option<&Checkpoint>,
) -> io::Result<impl Iterator<Item = io::Result<ReplayRecord>> + Send> {
    Ok(replay_iter(dir, from)?.filter_map(|item| match item {
        Ok(ReplayItem::Record(r)) => Some(Ok(r)),
        Ok(ReplayItem::Skipped(_)) => None,
        Err(e) => Some(Err(e)),
    }))
}
