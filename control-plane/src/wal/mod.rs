//! The inbox write-ahead log.
//!
//! Why a WAL in front of the database: an answer is only given once the submission is on disk
//! (fsync), so a crash between "answered" and "committed to the DB" loses nothing: start-up
//! replays the tail after the last checkpoint through the same dedup-aware apply path.
//!
//! Format (fixes spec §15 #15): segment files `inbox-YYYYMMDD.wal` (UTC date at append time),
//! each a sequence of `[u32 LE len][u32 LE crc32(payload)][payload]` frames whose payload is the
//! JSON [`WalRecord`]. Framing by length + CRC means bodies may contain anything and a torn
//! tail (crash mid-write) is detected and cut instead of being misread. Corruption in the
//! middle of a segment is skipped (reported, readers resynchronise on the next valid frame) and
//! never cut; the writer rotates to `inbox-YYYYMMDD-n.wal` instead. Segments are ordered by
//! [`SegmentKey`] (day, rotation number), never by file name. A record's id is
//! `"<segment file name>:<byte offset>"`: unique, stable, and usable as an idempotency key.

pub mod checkpoint;
pub mod reader;
pub mod retention;
pub mod segment;
pub mod writer;

pub use checkpoint::Checkpoint;
pub use reader::{
    read_segment, replay_iter, replay_records, ReplayItem, ReplayRecord, SegmentScan, SkippedRange,
};
pub use segment::{decode_frame, encode_frame, segment_key, segment_name, SegmentKey, WalRecord};
pub use writer::{AppendOutcome, WalWriter};
