-- The audit log becomes an HMAC chain under a key derived from the server's sealed secret,
-- with a head that records where it ends, so that deleting its last entries shows
-- (store/audit.rs). Entries written before stay as they are (keyed = 0) and are checked
-- with their plain hashes; relaisd seals them under the head at its next start.
ALTER TABLE audit_log ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0;

CREATE TABLE audit_head (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    legacy_last_id INTEGER NOT NULL,  -- the last entry written before keyed chaining
    last_id        INTEGER NOT NULL,
    entries        INTEGER NOT NULL,
    last_hash      BLOB NOT NULL,
    mac            BLOB NOT NULL      -- over the four fields above, under the audit key
);
