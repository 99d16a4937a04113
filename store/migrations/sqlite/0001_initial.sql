-- The initial schema of a Relais SQLite database.
-- Times are milliseconds since the Unix epoch. Message bodies are MLS ciphertext or
-- public handshake messages: the server never stores plaintext content.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,          -- name@domain
    created_at  INTEGER NOT NULL
);

-- One-time enrollment codes, stored only as an HMAC under the server secret.
CREATE TABLE enrollment_codes (
    code_hash   BLOB PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    public_key  BLOB NOT NULL UNIQUE,          -- Ed25519, also the MLS signature key
    fingerprint TEXT NOT NULL UNIQUE,          -- the device id shown to operators
    enrolled_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    last_resort INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX key_packages_device ON key_packages(device_id, last_resort);

-- The delivery service's public view of each MLS group.
CREATE TABLE groups (
    group_id    BLOB PRIMARY KEY,
    epoch       INTEGER NOT NULL,
    state       BLOB NOT NULL,                 -- openmls public group state
    created_at  INTEGER NOT NULL
);

-- Which devices a group's messages are fanned out to, derived from its commits.
CREATE TABLE group_members (
    group_id    BLOB NOT NULL,
    device_id   INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_id)
) WITHOUT ROWID;
CREATE INDEX group_members_device ON group_members(device_id);

-- Each message is stored once; per-device queues hold references to it.
CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: clients and cursors rely on it
    kind         INTEGER NOT NULL,
    group_id     BLOB NOT NULL,
    sender_device INTEGER,
    accepted_at  INTEGER NOT NULL,
    body         BLOB NOT NULL,
    refs         INTEGER NOT NULL
);
CREATE INDEX messages_accepted ON messages(accepted_at);

CREATE TABLE queue (
    device_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;

-- Client message ids already accepted, kept longer than the retention period so a late
-- resubmission is recognised even after the original was delivered and deleted.
CREATE TABLE submissions (
    sender_device INTEGER NOT NULL,
    message_id  BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (sender_device, message_id)
) WITHOUT ROWID;
CREATE INDEX submissions_accepted ON submissions(accepted_at);
