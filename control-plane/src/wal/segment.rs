//! Segment naming (UTC calendar dates without a date crate) and record framing.

use serde::{Deserialize, Serialize};

/// One submission as it travels through the WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    pub ts_ms: i64,
    pub tenant: String,
    /// The `x-kakeya-result` header exactly as the gate filter sent it.
    pub result: String,
    pub cacheable: bool,
    #[serde(default)]
    pub verify_ns: Option<u64>,
    /// The request body (a parsed PCS, hence valid UTF-8). A body without an `evidence`
    /// member is stored byte for byte as received. A body with one is stored *re-serialised*
    /// without it (`api::ingest`): raw evidence is never persisted, and the remaining members
    /// are not the received bytes (key order and number spelling may differ), so such a record
    /// does not hold the signed request; `evidence_sha256` and the signed fields are kept.
    pub body: String,
    /// The features the gate scored this decision with, validated at ingest (absent when it
    /// was not scored, and in records written before features were kept), so replay rebuilds
    /// the decision-log row exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<crate::decision_features::DecidedFeatures>,
    /// The filter's cost tracer (`x-kakeya-filter-ns`, `x-kakeya-model-calls`), kept so replay
    /// rebuilds the cost record exactly; absent in records from before the tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_calls: Option<u64>,
    /// The micro-vote callout's wait (`x-kakeya-microvote-ns`), for the decision log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microvote_ns: Option<u64>,
    /// The RAG vote's in-guest time (`x-kakeya-rag-ns`), for the cost record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag_ns: Option<u64>,
    /// The task kind of the PCS's signed evidence (`qa`, `dialogue`, …), taken at ingest
    /// before the evidence is dropped from `body`, for the decision log's `task` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The LLM backend's token counts of a gateway answer (`x-kakeya-llm-tokens`), for the
    /// cost record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// The gate's inline anomaly assessment (`x-kakeya-anomaly`, `x-kakeya-anomaly-features`),
    /// for the decision log's `anomaly_*` columns; absent when the tenant is not scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<crate::anomaly::inline::AnomalyRecord>,
}

/// Frame header size: length + CRC.
pub const HEADER_LEN: usize = 8;
/// Upper bound for a payload; anything larger is treated as corruption.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
/// Every payload starts with these bytes (serde writes fields in declaration order, and a `"`
/// inside any string field is escaped), so they mark frame starts when resynchronising after
/// a corrupt region.
pub const PAYLOAD_PREFIX: &[u8] = b"{\"ts_ms\":";

pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Decodes the frame at the start of `buf`. `None` when the frame is incomplete or corrupt.
/// Returns the payload and the total frame length.
pub fn decode_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = buf.get(HEADER_LEN..HEADER_LEN + len as usize)?;
    (crc32fast::hash(payload) == crc).then_some((payload, HEADER_LEN + len as usize))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn day_of_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(86_400_000)
}

/// `inbox-YYYYMMDD.wal` for the UTC day containing `ts_ms`.
pub fn segment_name(ts_ms: i64) -> String {
    segment_file_name(SegmentKey {
        day: day_of_ms(ts_ms),
        seq: 0,
    })
}

/// Position of a segment in the log: its UTC day, then a rotation number within the day
/// (0 for `inbox-YYYYMMDD.wal`, n for `inbox-YYYYMMDD-n.wal`, written when a damaged segment
/// must not be appended to). **Segments are ordered by this key, never by their file name**:
/// `"inbox-20240229-1.wal" < "inbox-20240229.wal"` as strings, and `-10` sorts before `-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    pub day: i64,
    pub seq: u32,
}

/// The file name of a segment key (canonical: parses back to the same key).
pub fn segment_file_name(key: SegmentKey) -> String {
    let (y, m, d) = civil_from_days(key.day);
    if key.seq == 0 {
        format!("inbox-{y:04}{m:02}{d:02}.wal")
    } else {
        format!("inbox-{y:04}{m:02}{d:02}-{}.wal", key.seq)
    }
}

/// The key encoded in a segment file name, if it is one (canonical names only).
pub fn segment_key(name: &str) -> Option<SegmentKey> {
    let stem = name.strip_prefix("inbox-")?.strip_suffix(".wal")?;
    let (digits, seq) = match stem.split_once('-') {
        None => (stem, 0),
        Some((digits, seq)) => {
            // No sign, no leading zero, no `-0`: one name per key.
            if seq.is_empty() || seq.starts_with('0') || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (digits, seq.parse::<u32>().ok()?)
        }
    };
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[0..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(SegmentKey {
        day: days_from_civil(y, m, d),
        seq,
    })
}

/// The day number encoded in a segment file name, if it is one.
pub fn segment_day(name: &str) -> Option<i64> {
    segment_key(name).map(|k| k.day)
}

/// Record id: `"<segment>:<offset>"`.
pub fn record_id(segment: &str, offset: u64) -> String {
    format!("{segment}:{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(segment_name(0), "inbox-19700101.wal");
        // 2024-02-29T23:59:59.999Z
        assert_eq!(segment_name(1_709_251_199_999), "inbox-20240229.wal");
        assert_eq!(segment_name(1_709_251_200_000), "inbox-20240301.wal");
        for day in [-1000, 0, 59, 10_000, 19_782, 50_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert_eq!(segment_day(&segment_name(day * 86_400_000)), Some(day));
        }
        assert_eq!(segment_day("inbox-2024.wal"), None);
        assert_eq!(segment_day("checkpoint"), None);
    }

    #[test]
    fn rotated_segment_keys_order_by_day_then_seq() {
        let day = segment_day("inbox-20240229.wal").unwrap();
        let k = |seq| SegmentKey { day, seq };
        assert_eq!(segment_key("inbox-20240229.wal"), Some(k(0)));
        assert_eq!(segment_key("inbox-20240229-1.wal"), Some(k(1)));
        assert_eq!(segment_key("inbox-20240229-10.wal"), Some(k(10)));
        for bad in [
            "inbox-20240229-0.wal",
            "inbox-20240229-01.wal",
            "inbox-20240229-.wal",
            "inbox-20240229--1.wal",
            "inbox-20240229-x.wal",
        ] {
            assert_eq!(segment_key(bad), None, "{bad}");
        }
        for seq in [0, 1, 2, 10, 4_000_000_000] {
            assert_eq!(segment_key(&segment_file_name(k(seq))), Some(k(seq)));
        }
        // String order would put "-1" before the base name and "-10" before "-2".
        let mut names = vec![
            "inbox-20240301.wal",
            "inbox-20240229-10.wal",
            "inbox-20240229-2.wal",
            "inbox-20240229.wal",
            "inbox-20240229-1.wal",
        ];
        names.sort_by_key(|n| segment_key(n).unwrap());
        assert_eq!(
            names,
            vec![
                "inbox-20240229.wal",
                "inbox-20240229-1.wal",
                "inbox-20240229-2.wal",
                "inbox-20240229-10.wal",
                "inbox-20240301.wal",
            ]
        );
    }

    #[test]
    fn payload_prefix_marks_frame_starts_only() {
        let r = WalRecord {
            ts_ms: -5,
            tenant: "{\"ts_ms\":".into(),
            result: "{}".into(),
            cacheable: false,
            verify_ns: None,
            body: "{\"ts_ms\":1}".into(),
            features: None,
            filter_ns: None,
            model_calls: None,
            microvote_ns: None,
            rag_ns: None,
            anomaly: None,
            task: None,
            prompt_tokens: None,
            completion_tokens: None,
        };
        let p = serde_json::to_vec(&r).unwrap();
        assert!(p.starts_with(PAYLOAD_PREFIX));
        let hits = p
            .windows(PAYLOAD_PREFIX.len())
            .filter(|w| *w == PAYLOAD_PREFIX)
            .count();
        assert_eq!(hits, 1);
    }

    #[test]
    fn features_are_optional_and_old_records_still_parse() {
        let old = r#"{"ts_ms":1,"tenant":"t","result":"{}","cacheable":true,"verify_ns":null,"body":"{}"}"#;
        let r: WalRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.features, None);
        // Without features a record is written as before.
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        let with = WalRecord {
            features: Some(crate::decision_features::DecidedFeatures {
                schema: "hrs-features-v1".into(),
                values: vec![0.1 + 0.2, -0.0, 5e-324],
            }),
            ..r
        };
        let text = serde_json::to_string(&with).unwrap();
        assert!(text.starts_with(std::str::from_utf8(PAYLOAD_PREFIX).unwrap()));
        let back: WalRecord = serde_json::from_str(&text).unwrap();
        let bits = |r: &WalRecord| {
            r.features
                .as_ref()
                .unwrap()
                .values
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back), bits(&with));
    }

    #[test]
    fn frame_round_trip_and_corruption() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"", &mut buf);
        let (p, n) = decode_frame(&buf).unwrap();
        assert_eq!((p, n), (&b"hello"[..], 13));
        let (p, n2) = decode_frame(&buf[n..]).unwrap();
        assert_eq!((p, n2), (&b""[..], 8));
        assert!(decode_frame(&buf[..12]).is_none());
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert!(decode_frame(&bad).is_none());
    }
}
