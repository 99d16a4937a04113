-- The audit log: every administrative action and security event, as a hash chain.
-- Each entry's hash covers its fields and the previous entry's hash, so changing,
-- inserting or deleting an entry breaks the chain from that point on.
-- Never contains message content or secrets (enrollment codes, keys).

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,      -- who: "uid:1000", "device:<fingerprint>", "address:<ip>"
    action      TEXT NOT NULL,      -- what: "user_add", "device_revoke", "enroll", ...
    subject     TEXT NOT NULL,      -- on what: a user or device, or "" when none
    outcome     TEXT NOT NULL,      -- "ok", "refused" or "failed"
    detail      TEXT NOT NULL,      -- a short explanation, never a secret
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);

-- Account life cycle. A deleted user's row stays, so its name is never given to someone
-- else: peers would see the new account under the old official's name.
ALTER TABLE users ADD COLUMN suspended_at INTEGER;
ALTER TABLE users ADD COLUMN expires_at INTEGER;
ALTER TABLE users ADD COLUMN deleted_at INTEGER;

-- Enrollment codes get an id operators can name when cancelling one.
CREATE INDEX enrollment_codes_user ON enrollment_codes(user_id);
