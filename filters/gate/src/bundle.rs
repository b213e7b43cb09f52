//! Model-bundle distribution between the VMs of one Envoy, free of hostcalls (tested natively).
//!
//! * One VM per poll interval holds the poll lease (shared-data key [`LEASE_KEY`], value: the
//!   lease expiry in ns, claimed with CAS) and polls the control plane.
//! * A bundle that verifies ([`kakeya_core::bundle::verify_bundle`]) and is newer than the stored
//!   one is written, as received, into shared-data key [`BUNDLE_KEY`] ([`encode_entry`]) with CAS.
//! * Right after the entry, the writer stores a small stamp (version and digest, [`STAMP_KEY`],
//!   [`stamp_value`]). A request reads only the stamp; when it differs from the one the VM saw
//!   last, the VM reads the entry and, when the entry's CAS changed, re-verifies and parses it
//!   once and swaps its `Rc<Scorer>` ([`BundleCache`]): a swap happens between requests, never
//!   during one. Every tick also reads the entry itself (off the request path), so a VM catches
//!   up within one interval even if a stamp write was lost.
//! * The first tick comes [`FIRST_TICK_MS`] after configuration (then every poll interval), so
//!   a cold start polls at once instead of after a full interval.

use kakeya_core::bundle::{verify_bundle, Scorer};
use std::rc::Rc;

/// Shared-data key of the current bundle.
pub const BUNDLE_KEY: &str = "kakeya.bundle";
/// Shared-data key of the stamp of the current bundle (small; what requests read).
pub const STAMP_KEY: &str = "kakeya.bundle.stamp";
/// Delay of the first tick after configuration (capped by the poll interval).
pub const FIRST_TICK_MS: u32 = 50;
/// Shared-data key of the poll lease.
pub const LEASE_KEY: &str = "kakeya.bundle.lease";
/// Tag of the entry encoding.
const ENTRY_TAG: &str = "kb1";
/// Bounded retries of a bundle write that lost a CAS race.
pub const CAS_RETRIES: usize = 4;

/// A stored bundle as received: version (for the "is it newer" check), digest, signature, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub version: u64,
    pub sha256: &'a str,
    pub signature_b64: &'a str,
    pub bytes: &'a [u8],
}

/// `kb1\n<version>\n<sha256>\n<signature>\n<bytes>`.
pub fn encode_entry(version: u64, sha256: &str, signature_b64: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + sha256.len() + signature_b64.len() + 32);
    out.extend_from_slice(ENTRY_TAG.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(version.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(sha256.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(signature_b64.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(bytes);
    out
}

/// Inverse of [`encode_entry`]; `None` when malformed (never a panic).
pub fn decode_entry(raw: &[u8]) -> Option<Entry<'_>> {
    let mut parts = raw.splitn(5, |b| *b == b'\n');
    if parts.next()? != ENTRY_TAG.as_bytes() {
        return None;
    }
    let version = core::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let sha256 = core::str::from_utf8(parts.next()?).ok()?;
    let signature_b64 = core::str::from_utf8(parts.next()?).ok()?;
    let bytes = parts.next()?;
    Some(Entry {
        version,
        sha256,
        signature_b64,
        bytes,
    })
}

/// Stamp of a stored entry: `<version>\n<sha256>`.
pub fn stamp_value(version: u64, sha256: &str) -> Vec<u8> {
    format!("{version}\n{sha256}").into_bytes()
}

/// Lease value: the expiry in ns since the epoch.
pub fn lease_value(expiry_ns: u64) -> Vec<u8> {
    expiry_ns.to_string().into_bytes()
}

/// Whether a VM may take the lease now: absent, malformed or expired.
pub fn lease_free(current: Option<&[u8]>, now_ns: u64) -> bool {
    match current {
        None => true,
        Some(v) => core::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_none_or(|expiry| expiry <= now_ns),
    }
}

/// Lease length for a poll interval: 9/10 of it, so the holder's next tick finds it expired
/// (and renews it) while the other VMs' ticks in between find it held.
pub fn lease_ns(poll_interval_ms: u64) -> u64 {
    poll_interval_ms.saturating_mul(900_000)
}

/// What to do with a poll response.
#[derive(Debug, Clone, PartialEq)]
pub enum PollVerdict {
    /// 304: the current bundle is still current.
    NotModified,
    /// Store this verified bundle (newer than the stored one).
    Install { version: u64 },
    /// The very bundle already stored: nothing to do.
    Unchanged,
    /// Refused; the last good bundle stays. `transport` marks a non-200/304 status.
    Refused { reason: String, transport: bool },
}

/// Judges a poll response against the stored entry (if any).
pub fn judge_response(
    status: Option<u32>,
    sha256: Option<&str>,
    signature_b64: Option<&str>,
    body: &[u8],
    trusted_keys: &[String],
    stored: Option<&Entry<'_>>,
) -> PollVerdict {
    match status {
        Some(304) => return PollVerdict::NotModified,
        Some(200) => {}
        other => {
            return PollVerdict::Refused {
                reason: match other {
                    Some(s) => format!("bundle poll answered HTTP {s}"),
                    None => "bundle poll failed (no response status)".into(),
                },
                transport: true,
            }
        }
    }
    let (Some(sha), Some(sig)) = (sha256, signature_b64) else {
        return PollVerdict::Refused {
            reason: "bundle response lacks its sha256 or signature header".into(),
            transport: false,
        };
    };
    let bundle = match verify_bundle(body, sha, sig, trusted_keys) {
        Ok(b) => b,
        Err(e) => {
            return PollVerdict::Refused {
                reason: e.to_string(),
                transport: false,
            }
        }
    };
    compare_with_stored(stored, sha, bundle.version)
}

/// Whether a verified bundle (`sha256`, `version`) should replace the stored entry.
pub fn compare_with_stored(stored: Option<&Entry<'_>>, sha256: &str, version: u64) -> PollVerdict {
    match stored {
        Some(s) if s.sha256.eq_ignore_ascii_case(sha256.trim()) => PollVerdict::Unchanged,
        Some(s) if version <= s.version => PollVerdict::Refused {
            reason: format!(
                "bundle version {version} is not newer than the stored version {}",
                s.version
            ),
            transport: false,
        },
        _ => PollVerdict::Install { version },
    }
}

/// A VM's view of the shared bundle.
#[derive(Debug, Default)]
pub struct BundleCache {
    /// CAS of the shared entry last looked at (valid or not).
    cas: Option<u32>,
    /// The stamp last seen.
    stamp: Option<Vec<u8>>,
    current: Option<Rc<Scorer>>,
}

impl BundleCache {
    /// Records the stamp a request read; `true` when it differs from the last one seen (the
    /// entry must be looked at then).
    pub fn stamp_changed(&mut self, stamp: &[u8]) -> bool {
        if self.stamp.as_deref() == Some(stamp) {
            return false;
        }
        self.stamp = Some(stamp.to_vec());
        true
    }

    /// The bundle requests score with now.
    pub fn current(&self) -> Option<Rc<Scorer>> {
        self.current.clone()
    }

    /// Whether the shared entry with this CAS was already looked at.
    pub fn is_current(&self, cas: u32) -> bool {
        self.cas == Some(cas)
    }

    /// Takes the shared entry `(raw, cas)`: when its CAS changed, re-verifies and parses it and
    /// swaps the cached bundle. `Err` (the reason) when the new entry does not verify; the last
    /// good bundle stays then and that CAS is not looked at again.
    pub fn refresh(
        &mut self,
        raw: &[u8],
        cas: u32,
        trusted_keys: &[String],
    ) -> Result<bool, String> {
        if self.is_current(cas) {
            return Ok(false);
        }
        self.cas = Some(cas);
        let entry = decode_entry(raw).ok_or_else(|| "malformed shared bundle entry".to_string())?;
        let bundle = verify_bundle(entry.bytes, entry.sha256, entry.signature_b64, trusted_keys)
            .map_err(|e| e.to_string())?;
        if let Some(cur) = &self.current {
            if cur.version > bundle.version {
                return Err(format!(
                    "shared bundle version {} is older than the cached version {}",
                    bundle.version, cur.version
                ));
            }
        }
        self.current = Some(Rc::new(Scorer::new(bundle)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_malformed_ones_are_none() {
        let e = encode_entry(7, "ab", "c+/=", b"{\"x\":\n1}");
        assert_eq!(
            decode_entry(&e),
            Some(Entry {
                version: 7,
                sha256: "ab",
                signature_b64: "c+/=",
                bytes: b"{\"x\":\n1}",
            })
        );
        for cut in 0..e.len() {
            let _ = decode_entry(&e[..cut]);
        }
        assert_eq!(decode_entry(b""), None);
        assert_eq!(decode_entry(b"kb1\nx\na\nb\n{}"), None);
    }

    #[test]
    fn stamps_trigger_one_look_each() {
        assert_eq!(stamp_value(7, "ab"), b"7\nab".to_vec());
        let mut c = BundleCache::default();
        assert!(c.stamp_changed(&stamp_value(1, "aa")));
        assert!(!c.stamp_changed(&stamp_value(1, "aa")));
        assert!(c.stamp_changed(&stamp_value(2, "bb")));
        assert!(!c.stamp_changed(&stamp_value(2, "bb")));
        assert!(c.stamp_changed(&stamp_value(1, "aa")));
    }

    #[test]
    fn leases() {
        assert!(lease_free(None, 5));
        assert!(lease_free(Some(b"junk"), 5));
        assert!(lease_free(Some(b"5"), 5));
        assert!(!lease_free(Some(b"6"), 5));
        assert_eq!(lease_ns(1000), 900_000_000);
    }

    #[test]
    fn responses() {
        let keys: Vec<String> = Vec::new();
        assert_eq!(
            judge_response(Some(304), None, None, b"", &keys, None),
            PollVerdict::NotModified
        );
        assert!(matches!(
            judge_response(Some(500), None, None, b"", &keys, None),
            PollVerdict::Refused {
                transport: true,
                ..
            }
        ));
        assert!(matches!(
            judge_response(None, None, None, b"", &keys, None),
            PollVerdict::Refused {
                transport: true,
                ..
            }
        ));
        assert!(matches!(
            judge_response(Some(200), Some("ab"), None, b"", &keys, None),
            PollVerdict::Refused {
                transport: false,
                ..
            }
        ));
        assert!(matches!(
            judge_response(Some(200), Some("ab"), Some("x"), b"", &keys, None),
            PollVerdict::Refused {
                transport: false,
                ..
            }
        ));
    }

    #[test]
    fn a_malformed_shared_entry_is_looked_at_once() {
        let mut c = BundleCache::default();
        assert!(c.refresh(b"junk", 3, &[]).is_err());
        assert_eq!(c.refresh(b"junk", 3, &[]), Ok(false));
        assert!(c.current().is_none());
    }
}
