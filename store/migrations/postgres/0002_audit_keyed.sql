-- The audit log becomes an HMAC chain under a key derived from the server's sealed secret,
-- with a head that records where it ends, so that deleting its last entries shows
-- (store/audit.rs). Entries written before stay as they are (keyed = 0) and are checked
-- with their plain hashes; relaisd seals them under the head at its next start.
ALTER TABLE audit_log ADD COLUMN keyed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE audit_head (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    legacy_last_id BIGINT NOT NULL,
    last_id        BIGINT NOT NULL,
    entries        BIGINT NOT NULL,
    last_hash      BYTEA NOT NULL,
    mac            BYTEA NOT NULL
);
