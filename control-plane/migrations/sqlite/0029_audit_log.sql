-- The WORM audit log (audit/ owns these tables). audit_entries and audit_checkpoints are
-- insert-only: no code path updates or deletes their rows. hash = SHA-256 over
-- (seq, ts_ms, kind, subject, payload, prev_hash) as documented in docs/AUDIT.md; hashes are
-- lowercase hex; payload is the event's compact JSON, hashed byte for byte as stored.
CREATE TABLE IF NOT EXISTS audit_entries (
    seq       INTEGER NOT NULL PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    payload   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_entries_ts ON audit_entries (ts_ms);
CREATE INDEX IF NOT EXISTS audit_entries_kind ON audit_entries (kind, seq);
-- The one head row: the next seq, the last entry's hash and the last sealed seq. Every append
-- updates it first, which takes the write lock, so appends are serialised and the chain
-- never forks.
CREATE TABLE IF NOT EXISTS audit_head (
    id               INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    next_seq         INTEGER NOT NULL,
    head_hash        TEXT    NOT NULL,
    checkpointed_seq INTEGER NOT NULL
);
INSERT INTO audit_head (id, next_seq, head_hash, checkpointed_seq)
    VALUES (1, 1, '0000000000000000000000000000000000000000000000000000000000000000', 0)
    ON CONFLICT (id) DO NOTHING;
-- A sealed segment [seq_from, seq_to]: the hash of its last entry, the RFC 6962 root over its
-- entries' hashes, and the Ed25519 signature (standard base64) of the checkpoint message by
-- the control plane's key (key_id, public_key).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq_to        INTEGER NOT NULL PRIMARY KEY,
    seq_from      INTEGER NOT NULL,
    head_hash     TEXT    NOT NULL,
    segment_root  TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    key_id        TEXT    NOT NULL,
    public_key    TEXT    NOT NULL,
    signature     TEXT    NOT NULL
);
