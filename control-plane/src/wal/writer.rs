//! Appending writer: one `write` + one `fsync` per batch (group commit).
//!
//! The segment is chosen by the UTC date at append time, so the file rotates at midnight
//! without a timer. The day never goes backwards: if the wall clock steps back across
//! midnight (or is behind the newest segment on disk after a restart), appends continue in
//! the newest segment instead of reopening an older one, whose records replay would skip
//! (replay starts at the checkpoint's segment).
//!
//! Opening an existing segment for append first checks it. A torn tail (a crash mid-write:
//! no valid frame follows the bad bytes) is cut, so new records never follow garbage. A corrupt
//! region with valid frames after it is **not** cut (those are acknowledged records) and the
//! segment is not appended to either (new ids would collide with old ones after a later
//! repair): the writer rotates to `inbox-YYYYMMDD-n.wal` and logs the byte range.

use super::checkpoint::sync_dir;
use super::reader::{check_segment, list_segment_keys};
use super::segment::{
    day_of_ms, encode_frame, record_id, segment_file_name, SegmentKey, WalRecord,
};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct OpenSegment {
    name: String,
    key: SegmentKey,
    file: File,
    len: u64,
}

pub struct WalWriter {
    dir: PathBuf,
    cur: Option<OpenSegment>,
    /// The newest segment this writer has appended to (survives `cur` being dropped).
    last: Option<SegmentKey>,
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
            last: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_for(&mut self, now_ms: i64) -> io::Result<&mut OpenSegment> {
        let now_day = day_of_ms(now_ms);
        // Only a later day moves on; an earlier one (clock stepped back) stays put.
        if self.cur.as_ref().is_some_and(|c| now_day > c.key.day) {
            self.cur = None;
        }
        if self.cur.is_some() {
            return self
                .cur
                .as_mut()
                .ok_or_else(|| io::Error::other("unreachable"));
        }
        let newest = list_segment_keys(&self.dir)?
            .last()
            .map(|(k, _, _)| *k)
            .max(self.last);
        let mut key = match newest {
            Some(k) if k.day >= now_day => {
                if k.day > now_day {
                    tracing::warn!(
                        segment = %segment_file_name(k),
                        now_ms,
                        "wall clock is behind the newest WAL segment; appending to it (segment days never go backwards)"
                    );
                }
                k
            }
            _ => SegmentKey {
                day: now_day,
                seq: 0,
            },
        };
        loop {
            let name = segment_file_name(key);
            let path = self.dir.join(&name);
            let existed = path.exists();
            let mut valid_len = 0;
            if existed {
                let scan = check_segment(&path)?;
                valid_len = scan.valid_len;
                if !scan.corrupt.is_empty() {
                    for (start, end) in &scan.corrupt {
                        tracing::error!(
                            segment = %name,
                            start,
                            end,
                            bytes = end - start,
                            "corrupt WAL region followed by valid records: not truncating, not appending; rotating to a new segment"
                        );
                    }
                    key.seq = key
                        .seq
                        .checked_add(1)
                        .ok_or_else(|| io::Error::other("too many rotated WAL segments"))?;
                    continue;
                }
            }
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let file_len = file.metadata()?.len();
            let len = valid_len;
            if len < file_len {
                tracing::warn!(segment = %name, valid = len, file_len, "truncating torn WAL tail");
                file.set_len(len)?;
                file.sync_all()?;
            }
            file.seek(SeekFrom::Start(len))?;
            if !existed {
                sync_dir(&self.dir)?;
            }
            self.last = Some(key);
            return Ok(self.cur.insert(OpenSegment {
                name,
                key,
                file,
                len,
            }));
        }
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
    use super::super::reader::{
        list_segments, read_segment, replay_iter, replay_records, ReplayItem,
    };
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
            features: None,
            filter_ns: None,
            model_calls: None,
            microvote_ns: None,
            rag_ns: None,
            anomaly: None,
            task: None,
            prompt_tokens: None,
            completion_tokens: None,
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
        let all: Vec<_> = replay_records(dir.path(), None)
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
        let rest: Vec<_> = replay_records(dir.path(), Some(&cp))
            .unwrap()
            .map(|r| r.unwrap().record)
            .collect();
        assert_eq!(rest, vec![rec(2), rec(3)]);
        let cp = Checkpoint {
            segment: b.segment.clone(),
            offset: b.end,
        };
        let rest: Vec<_> = replay_records(dir.path(), Some(&cp))
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
        // No checkpoint: nothing is known to be applied, nothing is deleted.
        assert!(retention::apply(dir.path(), T0 + 4 * DAY + 5, 2)
            .unwrap()
            .is_empty());
        Checkpoint {
            segment: "inbox-20240304.wal".into(),
            offset: 0,
        }
        .store(dir.path())
        .unwrap();
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
    fn retention_never_deletes_at_or_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path()).unwrap();
        for d in 0..4 {
            w.append_batch(T0 + d * DAY, &[rec(0)]).unwrap();
        }
        // Rotated segments of day 1 (as after mid-segment corruption).
        std::fs::write(dir.path().join("inbox-20240301-1.wal"), b"").unwrap();
        std::fs::write(dir.path().join("inbox-20240301-2.wal"), b"").unwrap();
        let names = |dir: &Path| -> Vec<String> {
            list_segments(dir)
                .unwrap()
                .into_iter()
                .map(|s| s.0)
                .collect()
        };
        // Long downtime: everything is past retention, but the checkpoint is in day 1's
        // first rotation: only what is strictly before it may go.
        let cp = Checkpoint {
            segment: "inbox-20240301-1.wal".into(),
            offset: 0,
        };
        let late = T0 + 100 * DAY;
        assert!(retention::apply_with_checkpoint(dir.path(), late, 2, None)
            .unwrap()
            .is_empty());
        let bogus = Checkpoint {
            segment: "nope".into(),
            offset: 0,
        };
        assert!(
            retention::apply_with_checkpoint(dir.path(), late, 2, Some(&bogus))
                .unwrap()
                .is_empty()
        );
        let deleted = retention::apply_with_checkpoint(dir.path(), late, 2, Some(&cp)).unwrap();
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        assert_eq!(
            names(dir.path()),
            vec![
                "inbox-20240301-1.wal",
                "inbox-20240301-2.wal",
                "inbox-20240302.wal",
                "inbox-20240303.wal"
            ]
        );
        // The persisted checkpoint is what `apply` uses.
        Checkpoint {
            segment: "inbox-20240303.wal".into(),
            offset: 0,
        }
        .store(dir.path())
        .unwrap();
        // Within retention nothing goes even before the checkpoint (day 2 is 1 day old).
        retention::apply(dir.path(), T0 + 3 * DAY, 1).unwrap();
        assert_eq!(
            names(dir.path()),
            vec!["inbox-20240302.wal", "inbox-20240303.wal"]
        );
    }

    /// Frame boundaries of a segment.
    fn frames(path: &Path) -> Vec<(u64, u64)> {
        read_segment(path)
            .unwrap()
            .records
            .iter()
            .map(|r| (r.offset, r.end))
            .collect()
    }

    #[test]
    fn corrupt_middle_frame_is_skipped_not_truncated_and_the_writer_rotates() {
        // Two kinds of damage to the middle frame: a payload bit flip, and a length field
        // that now runs past the end of the file.
        for damage in ["payload", "length"] {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("inbox-20240229.wal");
            let mut w = WalWriter::open(dir.path()).unwrap();
            let a = w.append_batch(T0, &[rec(0), rec(1)]).unwrap();
            w.append_batch(T0 + 1, &[rec(2)]).unwrap();
            let c = w.append_batch(T0 + 2, &[rec(3), rec(4)]).unwrap();
            drop(w);
            let fr = frames(&base);
            let (bad_start, bad_end) = fr[2];
            let mut bytes = std::fs::read(&base).unwrap();
            match damage {
                "payload" => bytes[bad_start as usize + 20] ^= 0x55,
                _ => bytes[bad_start as usize + 3] = 0x03, // len += 48 MiB
            }
            std::fs::write(&base, &bytes).unwrap();
            let file_len = bytes.len() as u64;

            let scan = read_segment(&base).unwrap();
            assert_eq!(scan.corrupt, vec![(bad_start, bad_end)], "{damage}");
            assert!(!scan.torn(), "{damage}");
            let got: Vec<_> = scan.records.iter().map(|r| r.record.clone()).collect();
            assert_eq!(got, vec![rec(0), rec(1), rec(3), rec(4)], "{damage}");
            assert_eq!(scan.records[2].id, c.ids[0]);

            // Reopening does not cut acknowledged records 3 and 4; it rotates instead.
            let mut w = WalWriter::open(dir.path()).unwrap();
            let d = w.append_batch(T0 + 3, &[rec(5)]).unwrap();
            assert_eq!(d.segment, "inbox-20240229-1.wal", "{damage}");
            assert_eq!(d.ids[0], "inbox-20240229-1.wal:0");
            assert_eq!(std::fs::metadata(&base).unwrap().len(), file_len);
            drop(w);
            // A restart keeps appending to the rotated segment, ids stay unique.
            let mut w = WalWriter::open(dir.path()).unwrap();
            let e = w.append_batch(T0 + 4, &[rec(6)]).unwrap();
            assert_eq!(e.ids[0], format!("inbox-20240229-1.wal:{}", d.end));
            // Next day: the base name again, ordered after the rotated one.
            let f = w.append_batch(T0 + DAY, &[rec(7)]).unwrap();
            assert_eq!(f.segment, "inbox-20240301.wal");

            let all: Vec<_> = replay_iter(dir.path(), None)
                .unwrap()
                .map(|i| i.unwrap())
                .collect();
            let skipped: Vec<_> = all
                .iter()
                .filter_map(|i| match i {
                    ReplayItem::Skipped(s) => {
                        Some((s.segment.clone(), s.start, s.end, s.torn_tail))
                    }
                    ReplayItem::Record(_) => None,
                })
                .collect();
            assert_eq!(
                skipped,
                vec![("inbox-20240229.wal".to_string(), bad_start, bad_end, false)]
            );
            let recs: Vec<_> = replay_records(dir.path(), None)
                .unwrap()
                .map(|r| r.unwrap().record)
                .collect();
            assert_eq!(
                recs,
                vec![rec(0), rec(1), rec(3), rec(4), rec(5), rec(6), rec(7)]
            );
            // A checkpoint in the base segment replays the rotated one (key order, not
            // string order: "inbox-20240229-1.wal" < "inbox-20240229.wal" as strings).
            let cp = Checkpoint {
                segment: a.segment.clone(),
                offset: c.end,
            };
            let rest: Vec<_> = replay_records(dir.path(), Some(&cp))
                .unwrap()
                .map(|r| r.unwrap().record)
                .collect();
            assert_eq!(rest, vec![rec(5), rec(6), rec(7)]);
            let cp = Checkpoint {
                segment: d.segment.clone(),
                offset: d.end,
            };
            let rest: Vec<_> = replay_records(dir.path(), Some(&cp))
                .unwrap()
                .map(|r| r.unwrap().record)
                .collect();
            assert_eq!(rest, vec![rec(6), rec(7)]);
        }
    }

    #[test]
    fn garbage_without_a_valid_frame_after_it_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-20240229.wal");
        let good_end = {
            let mut w = WalWriter::open(dir.path()).unwrap();
            w.append_batch(T0, &[rec(0)]).unwrap().end
        };
        // Zero fill (a crash after the size grew) plus a fragment of a real frame.
        let mut frag = Vec::new();
        encode_frame(&serde_json::to_vec(&rec(1)).unwrap(), &mut frag);
        frag.truncate(frag.len() - 3);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 64]).unwrap();
        f.write_all(&frag).unwrap();
        drop(f);
        let scan = read_segment(&path).unwrap();
        assert!(scan.torn());
        assert!(scan.corrupt.is_empty());
        assert_eq!(scan.valid_len, good_end);
        let mut w = WalWriter::open(dir.path()).unwrap();
        let out = w.append_batch(T0 + 1, &[rec(2)]).unwrap();
        assert_eq!(out.ids[0], format!("inbox-20240229.wal:{good_end}"));
        assert_eq!(read_segment(&path).unwrap().records.len(), 2);
    }

    #[test]
    fn clock_stepping_back_never_reopens_an_older_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path()).unwrap();
        let a = w.append_batch(T0 + DAY - 10, &[rec(0)]).unwrap();
        let b = w.append_batch(T0 + DAY + 5, &[rec(1)]).unwrap();
        assert_eq!(a.segment, "inbox-20240229.wal");
        assert_eq!(b.segment, "inbox-20240301.wal");
        // The clock steps back across midnight: stay in the newer segment.
        let c = w.append_batch(T0 + DAY - 5, &[rec(2)]).unwrap();
        assert_eq!(c.segment, b.segment);
        assert_eq!(c.ids[0], format!("{}:{}", b.segment, b.end));
        // Also after a restart with the clock still behind.
        drop(w);
        let mut w = WalWriter::open(dir.path()).unwrap();
        let d = w.append_batch(T0 + DAY - 1, &[rec(3)]).unwrap();
        assert_eq!(d.segment, b.segment);
        // ... and after a failed append dropped the open segment.
        w.cur = None;
        let e = w.append_batch(T0, &[rec(4)]).unwrap();
        assert_eq!(e.segment, b.segment);
        // A checkpoint after b replays everything appended while the clock was behind.
        let cp = Checkpoint {
            segment: b.segment.clone(),
            offset: b.end,
        };
        let rest: Vec<_> = replay_records(dir.path(), Some(&cp))
            .unwrap()
            .map(|r| r.unwrap().record)
            .collect();
        assert_eq!(rest, vec![rec(2), rec(3), rec(4)]);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
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
