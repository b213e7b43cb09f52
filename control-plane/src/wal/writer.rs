//! Appending writer: one `write` + one `fsync` per batch (group commit).
//!
//! The segment is chosen by the UTC date at append time, so the file rotates at midnight
//! without a timer. Opening a segment for append first cuts a torn tail left by a crash, so
//! new records never follow garbage that a reader would stop at.

use super::checkpoint::sync_dir;
use super::reader::valid_len;
use super::segment::{day_of_ms, encode_frame, record_id, segment_name, WalRecord};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct OpenSegment {
    name: String,
    day: i64,
    file: File,
    len: u64,
}

pub struct WalWriter {
    dir: PathBuf,
    cur: Option<OpenSegment>,
}

/// Where a batch landed.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// Record ids, in input order.
    pub ids: Vec<String>,
    pub segment: String,
    /// Offset just past the batch (the next checkpoint).
    pub end: u64,
    /// Time spent in `sync_data`.
    pub fsync: Duration,
}

impl WalWriter {
    /// Creates the directory if needed. Segments are opened lazily on first append.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            cur: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_for(&mut self, now_ms: i64) -> io::Result<&mut OpenSegment> {
        let day = day_of_ms(now_ms);
        if self.cur.as_ref().is_some_and(|c| c.day != day) {
            self.cur = None;
        }
        if self.cur.is_some() {
            return self
                .cur
                .as_mut()
                .ok_or_else(|| io::Error::other("unreachable"));
        }
        let name = segment_name(now_ms);
        let path = self.dir.join(&name);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let file_len = file.metadata()?.len();
        let len = if existed { valid_len(&path)? } else { 0 };
        if len < file_len {
            tracing::warn!(segment = %name, valid = len, file_len, "truncating torn WAL tail");
            file.set_len(len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(len))?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(self.cur.insert(OpenSegment {
            name,
            day,
            file,
            len,
        }))
    }

    /// Appends all records durably (one write, one fsync) or none of them.
    pub fn append_batch(
        &mut self,
        now_ms: i64,
        records: &[WalRecord],
    ) -> io::Result<AppendOutcome> {
        let mut buf = Vec::with_capacity(records.len() * 1024);
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            offsets.push(buf.len() as u64);
            let payload = serde_json::to_vec(r).map_err(io::Error::other)?;
            encode_frame(&payload, &mut buf);
        }
        let seg = self.segment_for(now_ms)?;
        let start = seg.len;
        let res = seg.file.write_all(&buf).and_then(|()| {
            let t = Instant::now();
            seg.file.sync_data().map(|()| t.elapsed())
        });
        match res {
            Ok(fsync) => {
                seg.len += buf.len() as u64;
                Ok(AppendOutcome {
                    ids: offsets
                        .iter()
                        .map(|o| record_id(&seg.name, start + o))
                        .collect(),
                    segment: seg.name.clone(),
                    end: seg.len,
                    fsync,
                })
            }
            Err(e) => {
                // Nothing of this batch is acknowledged; cut whatever reached the file and
                // reopen next time (the tail check runs again then).
                let _ = seg.file.set_len(start);
                self.cur = None;
                Err(e)
            }
        }
    }

    /// fsync the open segment (shutdown).
    pub fn sync(&mut self) -> io::Result<()> {
        match self.cur.as_mut() {
            Some(c) => c.file.sync_all(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::Checkpoint;
    use super::super::reader::{list_segments, read_segment, replay_iter};
    use super::super::retention;
    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_709_164_800_000; // 2024-02-29T00:00:00Z

    fn rec(i: usize) -> WalRecord {
        WalRecord {
            ts_ms: T0 + i as i64,
            tenant: "t".into(),
            result: "{\"accepted\":true,\"escalated\":false}".into(),
            cacheable: i % 2 == 0,
            verify_ns: if i % 3 == 0 { None } else { Some(i as u64) },
            body: format!("{{\"pcs_id\":\"{i}\",\n\"x\":\"\\u0000|\"}}"),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path()).unwrap();
        let a = w.append_batch(T0, &[rec(0), rec(1)]).unwrap();
        let b = w.append_batch(T0 + 5, &[rec(2)]).unwrap();
        assert_eq!(a.ids[0], "inbox-20240229.wal:0");
        assert_eq!(a.segment, "inbox-20240229.wal");
        assert_eq!(b.ids[0], format!("inbox-20240229.wal:{}", a.end));
        let scan = read_segment(&dir.path().join("inbox-20240229.wal")).unwrap();
        assert!(!scan.torn());
        assert_eq!(
            scan.records
                .iter()
                .map(|r| r.record.clone())
                .collect::<Vec<_>>(),
            vec![rec(0), rec(1), rec(2)]
        );
        assert_eq!(
            scan.records
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
            [a.ids.clone(), b.ids.clone()].concat()
        );
        assert_eq!(scan.valid_len, b.end);
    }

    #[test]
    fn torn_tail_is_ignored_by_reader_and_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-20240229.wal");
        let good_end = {
            let mut w = WalWriter::open(dir.path()).unwrap();
            w.append_batch(T0, &[rec(0), rec(1)]).unwrap().end
        };
        // A crash mid-write: a header promising more bytes than exist, then a corrupt frame.
        for garbage in [
            &[200u8, 0, 0, 0, 1, 2, 3, 4, 9, 9][..],
            &[3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c'],
        ] {
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(garbage).unwrap();
            drop(f);
            let scan = read_segment(&path).unwrap();
            assert_eq!(scan.records.len(), 2);
            assert!(scan.torn());
            assert_eq!(scan.valid_len, good_end);
            let mut w = WalWriter::open(dir.path()).unwrap();
            let out = w.append_batch(T0 + 1, &[rec(2)]).unwrap();
            assert_eq!(out.ids[0], format!("inbox-20240229.wal:{good_end}"));
            let scan = read_segment(&path).unwrap();
            assert!(!scan.torn());
            assert_eq!(scan.records.len(), 3);
            // reset for the next garbage kind
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(good_end)
                .unwrap();
        }
    }

    #[test]
    fn rotation_by_date_and_replay_from_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path()).unwrap();
        let a = w.append_batch(T0 + DAY - 1, &[rec(0), rec(1)]).unwrap();
        let b = w.append_batch(T0 + DAY, &[rec(2)]).unwrap();
        let c = w.append_batch(T0 + DAY + 1, &[rec(3)]).unwrap();
        assert_eq!(a.segment, "inbox-20240229.wal");
        assert_eq!(b.segment, "inbox-20240301.wal");
        assert_eq!(c.segment, b.segment);
        let names: Vec<String> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names, vec!["inbox-20240229.wal", "inbox-20240301.wal"]);
        let all: Vec<_> = replay_iter(dir.path(), None)
            .unwrap()
            .map(|r| r.unwrap().record)
            .collect();
        assert_eq!(all, vec![rec(0), rec(1), rec(2), rec(3)]);
        // checkpoint after the first day's batch and after b
        let cp = Checkpoint {
            segment: a.segment.clone(),
            offset: a.end,
        };
        cp.store(dir.path()).unwrap();
        let cp = Checkpoint::load(dir.path()).unwrap().unwrap();
        let rest: Vec<_> = replay_iter(dir.path(), Some(&cp))
            .unwrap()
            .map(|r| r.unwrap().record)
            .collect();
        assert_eq!(rest, vec![rec(2), rec(3)]);
        let cp = Checkpoint {
            segment: b.segment.clone(),
            offset: b.end,
        };
        let rest: Vec<_> = replay_iter(dir.path(), Some(&cp))
            .unwrap()
            .map(|r| r.unwrap().id)
            .collect();
        assert_eq!(rest, c.ids);
    }

    #[test]
    fn checkpoint_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("checkpoint"), b"{nope").unwrap();
        assert!(Checkpoint::load(dir.path()).is_err());
        let cp = Checkpoint {
            segment: "inbox-20240229.wal".into(),
            offset: 42,
        };
        cp.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(cp));
        assert!(!dir.path().join("checkpoint.tmp").exists());
    }

    #[test]
    fn retention_by_name_date() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path()).unwrap();
        for d in 0..5 {
            w.append_batch(T0 + d * DAY, &[rec(0)]).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
        // now = day 4; keep 2 days → keep days 2,3,4
        let deleted = retention::apply(dir.path(), T0 + 4 * DAY + 5, 2).unwrap();
        assert_eq!(deleted.len(), 2);
        let names: Vec<String> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(
            names,
            vec![
                "inbox-20240302.wal",
                "inbox-20240303.wal",
                "inbox-20240304.wal"
            ]
        );
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn failed_open_reports_error() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        let mut w = WalWriter::open(&wal).unwrap();
        std::fs::remove_dir(&wal).unwrap();
        std::fs::write(&wal, b"not a dir").unwrap();
        assert!(w.append_batch(T0, &[rec(0)]).is_err());
    }
}
