//! Bulk reads of the chain for [`super::verify`]: many entries per fetched row.
//!
//! A row-per-entry read through `sqlx::Any` costs several allocations and a channel hop per
//! entry (5 s per million on SQLite, where hashing takes well under one). Instead the database
//! concatenates a range of entries, in seq order, into one text of length-prefixed fields
//! (`string_agg(format(…) ORDER BY seq)` and `octet_length`, the same SQL on SQLite ≥ 3.44
//! and PostgreSQL), and [`Rows`] splits it without copying. Nothing is computed by the database
//! but the concatenation: every hash and link is still recomputed here from the stored bytes,
//! so a database that lied would be caught exactly as with plain rows.
//!
//! One entry is encoded as (`lp(x)` = decimal byte length, `,`, the bytes):
//!
//! ```text
//! seq "," ts_ms "," lp(kind) lp(subject) lp(payload) lp(prev_hash) lp(hash)
//! ```

use crate::store::Db;
use sqlx::Row;

/// Entries per fetched text (about 2.5 MB of 250-byte entries).
pub const CHUNK: i64 = 8192;

/// The query: `$1`..=`$2` of seqs, one text. One `format()` per entry (SQLite ≥ 3.38 and
/// PostgreSQL read `%s` alike, integers as their decimal text) rather than a chain of `||`,
/// each of which would build an intermediate string.
const CHUNK_SQL: &str = "SELECT string_agg(format('%s,%s,%s,%s%s,%s%s,%s%s,%s%s,%s', \
     seq, ts_ms, octet_length(kind), kind, octet_length(subject), subject, \
     octet_length(payload), payload, octet_length(prev_hash), prev_hash, \
     octet_length(hash), hash), '' ORDER BY seq) AS blob \
     FROM audit_entries WHERE seq >= $1 AND seq <= $2";

/// Entries `from..=to` as one encoded text (empty when there are none).
pub async fn chunk(db: &Db, from: i64, to: i64) -> Result<String, sqlx::Error> {
    let row = sqlx::query(CHUNK_SQL)
        .bind(from)
        .bind(to)
        .fetch_one(&db.pool)
        .await?;
    Ok(row
        .try_get::<Option<String>, _>("blob")?
        .unwrap_or_default())
}

/// One entry of an encoded text, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a> {
    pub seq: i64,
    pub ts_ms: i64,
    pub kind: &'a str,
    pub subject: &'a str,
    pub payload: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

/// The entries of an encoded text, in order; an `Err` (and the end) at malformed input.
pub struct Rows<'a> {
    rest: &'a str,
}

impl<'a> Rows<'a> {
    pub fn new(text: &'a str) -> Rows<'a> {
        Rows { rest: text }
    }

    fn int(&mut self) -> Option<i64> {
        let (n, rest) = self.rest.split_once(',')?;
        self.rest = rest;
        n.parse().ok()
    }

    fn field(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.int()?).ok()?;
        let s = self.rest.get(..n)?;
        self.rest = self.rest.get(n..)?;
        Some(s)
    }

    fn entry(&mut self) -> Option<Raw<'a>> {
        Some(Raw {
            seq: self.int()?,
            ts_ms: self.int()?,
            kind: self.field()?,
            subject: self.field()?,
            payload: self.field()?,
            prev_hash: self.field()?,
            hash: self.field()?,
        })
    }
}

/// The encoded text is not what [`chunk`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed;

impl<'a> Iterator for Rows<'a> {
    type Item = Result<Raw<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let e = self.entry();
        if e.is_none() {
            self.rest = "";
        }
        Some(e.ok_or(Malformed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_length_prefixed_fields_with_any_content() {
        // A payload holding the separator and digits, and multi-byte UTF-8 (lengths in bytes).
        let text = "1,5,1,k3,s,x11,{\"a\":\"1,2\"}1,p1,h2,7,0,0,0,2,pp2,hh";
        let rows: Vec<_> = Rows::new(text).collect();
        assert_eq!(
            rows,
            vec![
                Ok(Raw {
                    seq: 1,
                    ts_ms: 5,
                    kind: "k",
                    subject: "s,x",
                    payload: "{\"a\":\"1,2\"}",
                    prev_hash: "p",
                    hash: "h"
                }),
                Ok(Raw {
                    seq: 2,
                    ts_ms: 7,
                    kind: "",
                    subject: "",
                    payload: "",
                    prev_hash: "pp",
                    hash: "hh"
                }),
            ]
        );
        // Lengths are bytes: "é" is two.
        let e = Rows::new("3,1,2,é0,0,0,0,").next().unwrap().unwrap();
        assert_eq!((e.kind, e.subject), ("é", ""));
        // A length that splits a character is malformed, not a panic.
        assert_eq!(Rows::new("3,1,1,é0,0,0,0,").next(), Some(Err(Malformed)));
        assert_eq!(Rows::new("3,1,9,short").next(), Some(Err(Malformed)));
        assert_eq!(Rows::new("").next(), None);
    }
}
