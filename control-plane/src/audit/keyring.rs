//! The keys checkpoints may be signed with: the control plane's current key and the keys it
//! retired (`audit_keys`, migration 0038), public halves only.
//!
//! **Trust.** A retired key is trusted only through its *endorsement*: at rotation the new
//! key signs the retirement message of the old one ([`retirement_message`]). The keyring is
//! built from the current key outwards: a row counts when its successor is already trusted
//! and its endorsement verifies with the successor's key, so the current key vouches for its
//! predecessor, which vouches for its own, and so on. A row someone inserted into the
//! database without the current private key is ignored, and the checkpoints it would cover
//! fail verification naming their unknown key.
//!
//! **Rotation** ([`rotate`]), run by `kakeya bundle rekey` (the key change: the operator
//! replaces the seed file, then re-keys with the previous seed): seal every unsealed entry
//! with the old key (its last checkpoint), then, in one transaction, store the old key's
//! endorsed retirement and append a `key_rotated` entry (sealed later by the new key). Only
//! the public half of the old key is stored.

use super::chain;
use super::store::Checkpoint;
use crate::registry::keys::{public_key_b64, sign_artifact, verify_artifact};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One trusted public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditTrustedKey)]
pub struct TrustedKey {
    pub key_id: String,
    /// Standard base64 Ed25519 public key.
    pub public_key: String,
    /// When it was retired; `None` for the current key.
    pub retired_at_ms: Option<i64>,
}

/// The current key first, then the retired keys trusted through endorsements.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyring {
    pub keys: Vec<TrustedKey>,
}

/// Bytes the successor signs when a key is retired (`kakeya-audit-key-retired-v1`).
pub fn retirement_message(
    key_id: &str,
    public_key: &str,
    retired_at_ms: i64,
    successor_key_id: &str,
) -> Vec<u8> {
    format!(
        "kakeya-audit-key-retired-v1\n{key_id}\n{public_key}\n{retired_at_ms}\n{successor_key_id}\n"
    )
    .into_bytes()
}

impl Keyring {
    /// Only `current` (standard base64 public key).
    pub fn current(current: &str) -> Keyring {
        Keyring {
            keys: vec![TrustedKey {
                key_id: chain::key_id(current),
                public_key: current.to_string(),
                retired_at_ms: None,
            }],
        }
    }

    /// `current` and every retired key of `audit_keys` endorsed from it.
    pub async fn load(db: &Db, current: &str) -> Result<Keyring, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT key_id, public_key, retired_at_ms, successor_key_id, endorsement \
             FROM audit_keys ORDER BY retired_at_ms DESC",
        )
        .fetch_all(&db.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for r in &rows {
            pending.push((
                r.try_get::<String, _>("key_id")?,
                r.try_get::<String, _>("public_key")?,
                r.try_get::<i64, _>("retired_at_ms")?,
                r.try_get::<String, _>("successor_key_id")?,
                r.try_get::<String, _>("endorsement")?,
            ));
        }
        let mut ring = Keyring::current(current);
        // Each pass adds the rows whose successor is trusted; at most one pass per row.
        loop {
            let before = ring.keys.len();
            pending.retain(|(id, pk, at, succ, sig)| {
                let Some(s) = ring.get(succ).map(|k| k.public_key.clone()) else {
                    return true;
                };
                let ok = *id == chain::key_id(pk)
                    && ring.get(id).is_none()
                    && verify_artifact(&retirement_message(id, pk, *at, succ), sig, &s);
                if ok {
                    ring.keys.push(TrustedKey {
                        key_id: id.clone(),
                        public_key: pk.clone(),
                        retired_at_ms: Some(*at),
                    });
                }
                !ok
            });
            if ring.keys.len() == before {
                break;
            }
        }
        Ok(ring)
    }

    pub fn get(&self, key_id: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.key_id.as_str())
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.key_id.clone()).collect()
    }

    /// Why `c` is not signed by a key of the ring; `None` when it is.
    pub fn check(&self, c: &Checkpoint) -> Option<String> {
        let Some(k) = self.get(&c.key_id) else {
            return Some(format!(
                "checkpoint {}..={} names key {}, which is neither the current key {} nor a \
                 retired key in the keyring ({})",
                c.seq_from,
                c.seq_to,
                c.key_id,
                self.current_id(),
                self.ids().join(", ")
            ));
        };
        if c.public_key != k.public_key
            || !verify_artifact(&c.message(), &c.signature, &k.public_key)
        {
            return Some(format!(
                "checkpoint {}..={} is not signed by the key {} it names",
                c.seq_from, c.seq_to, c.key_id
            ));
        }
        None
    }
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the new key is the current key")]
    SameKey,
    #[error(transparent)]
    Seal(#[from] super::store::SealError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Retires `old_seed`'s key in favour of `new_seed`'s (see the module docs); the retirement.
/// A key already retired keeps its first retirement (nothing is stored or appended).
pub async fn rotate(
    db: &Db,
    old_seed: &[u8; 32],
    new_seed: &[u8; 32],
    now_ms: i64,
) -> Result<TrustedKey, RotateError> {
    let (old_pk, new_pk) = (public_key_b64(old_seed), public_key_b64(new_seed));
    if old_pk == new_pk {
        return Err(RotateError::SameKey);
    }
    // Everything so far is sealed by the key that wrote it.
    super::store::seal(db, old_seed, &super::AuditOptions::default(), now_ms, true).await?;
    let (old_id, new_id) = (chain::key_id(&old_pk), chain::key_id(&new_pk));
    let endorsement = sign_artifact(
        &retirement_message(&old_id, &old_pk, now_ms, &new_id),
        new_seed,
    );
    let mut tx = db.pool.begin().await?;
    // Retired once: a second run (the same rekey again) keeps the first retirement.
    let stored = sqlx::query(
        "INSERT INTO audit_keys (key_id, public_key, retired_at_ms, successor_key_id, endorsement) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(&old_id)
    .bind(&old_pk)
    .bind(now_ms)
    .bind(&new_id)
    .bind(&endorsement)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if stored == 1 {
        let e = super::Event::KeyRotated {
            retired_key_id: old_id.clone(),
            key_id: new_id,
        };
        super::append(&mut tx, &e, now_ms).await?;
    }
    tx.commit().await?;
    Ok(TrustedKey {
        key_id: old_id,
        public_key: old_pk,
        retired_at_ms: Some(now_ms),
    })
}
