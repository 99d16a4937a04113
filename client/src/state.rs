//! The client's local state: one SQLite database in the client's home directory, private
//! to its user, holding the MLS state, the conversations and the received history. In an
//! encrypted home every secret or content-bearing value is sealed under the home's data key
//! (`rows` says how, `protect` how a home becomes encrypted; `docs/reference/at-rest.md`).

mod protect;
mod rows;

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use crate::ClientError;
use crate::at_rest::{DataKey, Keys, Secret, SecretKind};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mls_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS conversations (
        group_id BLOB PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, created_at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY, group_id BLOB NOT NULL, sender TEXT NOT NULL, message_id BLOB NOT NULL,
        sent_at_ms INTEGER NOT NULL, received_at_ms INTEGER NOT NULL, text TEXT NOT NULL,
        shown INTEGER NOT NULL DEFAULT 0, UNIQUE (sender, message_id))",
    "CREATE INDEX IF NOT EXISTS history_group ON history (group_id, id)",
    // Per conversation, the last history row its user read in a display that says so (the
    // desktop app): what comes after it is unread, whatever a session already announced.
    "CREATE TABLE IF NOT EXISTS read_marks (group_id BLOB PRIMARY KEY, position INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS processed (sequence INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY, group_id BLOB NOT NULL, message_id BLOB NOT NULL,
        kind TEXT NOT NULL, body BLOB NOT NULL, welcome BLOB NOT NULL)",
    // One row in an encrypted home, none in an unencrypted one: how the data key is wrapped.
    "CREATE TABLE IF NOT EXISTS at_rest (
        id INTEGER PRIMARY KEY CHECK (id = 1), protection TEXT NOT NULL,
        memory_kib INTEGER NOT NULL, iterations INTEGER NOT NULL, parallelism INTEGER NOT NULL,
        salt BLOB NOT NULL, wrapped_key BLOB NOT NULL)",
];

/// Meta entries that stay in the clear in an encrypted home: a count, and whether the
/// warning about an unencrypted home was shown. Nothing else is.
const CLEAR_META: &[&str] = &["failed_deliveries", "plaintext_warned"];

/// How many of the newest history entries a search reads: in an encrypted home each is
/// decrypted to be searched, so a search costs at most a fraction of a second of work
/// however long the history grows.
pub const SEARCH_ENTRIES_MAX: u32 = 200_000;

/// Where a conversation without a read mark is read up to: every entry this device received
/// is after it, and none of the history another device sent it, which `import_history`
/// places before everything (ids up to 0, since received entries are numbered from 1).
const UNMARKED: i64 = 0;

/// What an outbox entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A commit (with its Welcome, if it adds devices), pending in its group.
    Commit,
    /// An application message.
    Message,
}

impl OutboxKind {
    fn stored_name(self) -> &'static str {
        match self {
            OutboxKind::Commit => "commit",
            OutboxKind::Message => "message",
        }
    }
}
/// A submission whose fate is unknown: stored before it is sent, removed once the relay
/// answered, and resent (with the same message id, which the relay de-duplicates) after a
/// connection broke in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub group_id: Vec<u8>,
    pub message_id: Vec<u8>,
    pub kind: OutboxKind,
    pub body: Vec<u8>,
    pub welcome: Vec<u8>,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub group_id: Vec<u8>,
    /// `direct`, `group`, or `unknown` until the creator's info message arrives.
    pub kind: String,
    /// The group's name; for a direct conversation, the other user.
    pub title: String,
}

/// A received text, ready to show.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub group_id: Vec<u8>,
    pub sender: String,
    /// The id the entry came with (random for a line this device wrote itself).
    pub message_id: Vec<u8>,
    pub sent_at_ms: i64,
    pub text: String,
}

/// The state database.
#[derive(Clone)]
pub struct State {
    pool: SqlitePool,
    /// The keys of an encrypted home; none for an unencrypted one.
    sealing: Option<Arc<Sealing>>,
}

/// An unlocked encrypted home's keys.
pub(crate) struct Sealing {
    keys: Keys,
    /// Kept to wrap it anew when the passphrase changes.
    data_key: DataKey,
    kind: SecretKind,
}

/// A write transaction on the state, which seals what it writes as the home requires.
pub struct Tx {
    inner: Transaction<'static, Sqlite>,
    sealing: Option<Arc<Sealing>>,
}

impl Deref for Tx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.inner
    }
}

impl Tx {
    fn keys(&self) -> Option<&Keys> {
        self.sealing.as_deref().map(|s| &s.keys)
    }

    pub async fn commit(self) -> Result<(), ClientError> {
        Ok(self.inner.commit().await?)
    }
}

impl State {
    /// Opens (creating it private to the user if needed) the database at `path`, with the
    /// keys `protection` unlocked if the home is encrypted.
    pub(crate) async fn open_with(
        path: &Path,
        secret: Option<&Secret>,
    ) -> Result<State, ClientError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // What a write replaces or deletes is overwritten with zeros, not left in free
            // pages; sorts and VACUUM's copy stay in memory, never in a temporary file.
            .pragma("secure_delete", "ON")
            .pragma("temp_store", "MEMORY");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        let sealing = match Self::prepare(&pool, path, secret).await {
            Ok(sealing) => sealing,
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        };
        Ok(State {
            pool,
            sealing: sealing.map(Arc::new),
        })
    }

    /// Opens an unencrypted home's database, or fails with [`ClientError::Locked`].
    #[cfg(test)]
    pub async fn open(path: &Path) -> Result<State, ClientError> {
        Self::open_with(path, None).await
    }

    async fn prepare(
        pool: &SqlitePool,
        path: &Path,
        secret: Option<&Secret>,
    ) -> Result<Option<Sealing>, ClientError> {
        for statement in SCHEMA {
            sqlx::query(*statement).execute(pool).await?;
        }
        protect::unlock(pool, path, secret).await
    }

    /// What protects this home: a passphrase, a key file, or nothing.
    pub fn protection(&self) -> Option<SecretKind> {
        self.sealing.as_ref().map(|s| s.kind)
    }

    fn keys(&self) -> Option<&Keys> {
        self.sealing.as_deref().map(|s| &s.keys)
    }

    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let stored_key = rows::meta_key(self.keys(), key);
        let value: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(&stored_key)
            .fetch_optional(&self.pool)
            .await?;
        value
            .map(|v| rows::open_meta(self.keys(), &stored_key, v).map(|(_, value)| value))
            .transpose()
    }

    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        let mut tx = self.begin().await?;
        State::put_meta(&mut tx, key, value).await?;
        tx.commit().await
    }

    /// Sets a meta entry inside a transaction.
    pub async fn put_meta(tx: &mut Tx, key: &str, value: &[u8]) -> Result<(), ClientError> {
        let stored_key = rows::meta_key(tx.keys(), key);
        let stored = rows::meta_value(tx.keys(), &stored_key, key, value);
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(&stored_key)
            .bind(stored)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The meta entries whose keys start with `prefix`, by the rest of their key.
    pub async fn meta_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        // An encrypted home keeps each key's namespace (up to its first `:`) in the clear.
        let stored_prefix = match self.keys() {
            None => prefix,
            Some(_) => prefix.find(':').map_or("", |i| &prefix[..=i]),
        };
        let stored = sqlx::query("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?")
            .bind(stored_prefix.len() as i64)
            .bind(stored_prefix)
            .fetch_all(&self.pool)
            .await?;
        let mut entries = BTreeMap::new();
        for row in &stored {
            let stored_key: String = row.try_get(0)?;
            if self.keys().is_some() && CLEAR_META.contains(&stored_key.as_str()) {
                continue;
            }
            let (key, value) = rows::open_meta(self.keys(), &stored_key, row.try_get(1)?)?;
            if let Some(rest) = key.strip_prefix(prefix) {
                entries.insert(
                    rest.to_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
        }
        Ok(entries)
    }

    /// The whole MLS key-value store.
    pub async fn mls_values(&self) -> Result<HashMap<Vec<u8>, Vec<u8>>, ClientError> {
        let stored = sqlx::query("SELECT key, value FROM mls_kv")
            .fetch_all(&self.pool)
            .await?;
        stored
            .iter()
            .map(|r| rows::open_mls(self.keys(), r.try_get(0)?, r.try_get(1)?))
            .collect()
    }

    pub async fn begin(&self) -> Result<Tx, ClientError> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            sealing: self.sealing.clone(),
        })
    }

    /// Brings the stored MLS state from `saved` (what the database holds) to `current`,
    /// inside `tx`, writing only the entries that changed.
    pub async fn save_mls(
        tx: &mut Tx,
        saved: &HashMap<Vec<u8>, Vec<u8>>,
        current: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), ClientError> {
        for key in saved.keys().filter(|k| !current.contains_key(*k)) {
            sqlx::query("DELETE FROM mls_kv WHERE key = ?")
                .bind(rows::mls_key(tx.keys(), key))
                .execute(&mut **tx)
                .await?;
        }
        for (key, value) in current {
            if saved.get(key) == Some(value) {
                continue;
            }
            let stored_key = rows::mls_key(tx.keys(), key);
            let stored = rows::mls_value(tx.keys(), &stored_key, key, value);
            sqlx::query(
                "INSERT INTO mls_kv (key, value) VALUES (?, ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(stored_key)
            .bind(stored)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let stored =
            sqlx::query("SELECT group_id, kind, title FROM conversations ORDER BY created_at_ms")
                .fetch_all(&self.pool)
                .await?;
        stored
            .iter()
            .map(|r| {
                rows::open_conversation(self.keys(), r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)
            })
            .collect()
    }

    pub async fn put_conversation(
        tx: &mut Tx,
        c: &Conversation,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let (kind, title) = rows::conversation_columns(tx.keys(), c);
        sqlx::query(
            "INSERT INTO conversations (group_id, kind, title, created_at_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (group_id) DO UPDATE SET kind = excluded.kind, title = excluded.title",
        )
        .bind(&c.group_id)
        .bind(kind)
        .bind(title)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stores a submission before it is sent; returns its id.
    pub async fn put_outbox(
        tx: &mut Tx,
        group_id: &[u8],
        message_id: &[u8],
        kind: OutboxKind,
        body: &[u8],
        welcome: &[u8],
    ) -> Result<i64, ClientError> {
        let seal = |column, value| {
            rows::outbox_value(tx.keys(), column, group_id, message_id, kind, value)
        };
        let (body, welcome) = (seal("body", body), seal("welcome", welcome));
        let result = sqlx::query(
            "INSERT INTO outbox (group_id, message_id, kind, body, welcome) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(group_id)
        .bind(message_id)
        .bind(kind.stored_name())
        .bind(body)
        .bind(welcome)
        .execute(&mut **tx)
        .await?;
        Ok(result.last_insert_rowid())
    }

    pub async fn delete_outbox(tx: &mut Tx, id: i64) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Submissions not known to have reached the relay, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, ClientError> {
        let stored = sqlx::query(
            "SELECT id, group_id, message_id, kind, body, welcome FROM outbox ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        stored
            .iter()
            .map(|r| {
                let kind = match r.try_get::<String, _>(3)?.as_str() {
                    "commit" => OutboxKind::Commit,
                    "message" => OutboxKind::Message,
                    other => {
                        return Err(ClientError::State(format!(
                            "unknown outbox entry kind {other:?}; was this home used by a newer relais?"
                        )));
                    }
                };
                let (group_id, message_id): (Vec<u8>, Vec<u8>) = (r.try_get(1)?, r.try_get(2)?);
                let open = |column, index| {
                    rows::open_outbox_value(
                        self.keys(),
                        column,
                        &group_id,
                        &message_id,
                        kind,
                        r.try_get(index)?,
                    )
                };
                Ok(OutboxEntry {
                    id: r.try_get(0)?,
                    body: open("body", 4)?,
                    welcome: open("welcome", 5)?,
                    group_id: group_id.clone(),
                    message_id: message_id.clone(),
                    kind,
                })
            })
            .collect()
    }

    /// Counts one delivery that could not be processed (a count, kept in the clear).
    pub async fn count_failed_delivery(tx: &mut Tx) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('failed_deliveries', 1)
             ON CONFLICT (key) DO UPDATE SET value = value + 1",
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn failed_deliveries(&self) -> Result<u64, ClientError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'failed_deliveries'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Whether the warning about an unencrypted home was shown; marks it shown.
    pub async fn take_plaintext_warning(&self) -> Result<bool, ClientError> {
        let result = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('plaintext_warned', 1) ON CONFLICT (key) DO NOTHING",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn is_processed(&self, sequence: u64) -> Result<bool, ClientError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE sequence = ?")
            .bind(sequence as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn mark_processed(tx: &mut Tx, sequence: u64) -> Result<(), ClientError> {
        sqlx::query("INSERT OR IGNORE INTO processed (sequence) VALUES (?)")
            .bind(sequence as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Forgets every sequence below `sequence`, none of which the relay will send again.
    pub async fn forget_processed_below(&self, sequence: u64) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM processed WHERE sequence < ?")
            .bind(sequence as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets sequences the relay confirmed deleting.
    pub async fn forget_processed(&self, sequences: &[u64]) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await?;
        for sequence in sequences {
            sqlx::query("DELETE FROM processed WHERE sequence = ?")
                .bind(*sequence as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a received text; a second copy (same sender and message id) is ignored.
    pub async fn add_history(
        tx: &mut Tx,
        group_id: &[u8],
        sender: &str,
        message_id: &[u8],
        sent_at_ms: i64,
        text: &str,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let (sender, text) = rows::history_columns(tx.keys(), group_id, sender, message_id, text);
        sqlx::query(
            "INSERT OR IGNORE INTO history (group_id, sender, message_id, sent_at_ms, received_at_ms, text)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(group_id)
        .bind(sender)
        .bind(message_id)
        .bind(sent_at_ms)
        .bind(now_ms)
        .bind(text)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records a text this device sent, already shown, so that the history has both sides.
    /// A conversation read up to its newest entry stays read: its read mark moves past the
    /// text (one's own text is never unread).
    pub async fn add_own_history(
        tx: &mut Tx,
        group_id: &[u8],
        sender: &str,
        message_id: &[u8],
        sent_at_ms: i64,
        text: &str,
    ) -> Result<(), ClientError> {
        let (sender, text) = rows::history_columns(tx.keys(), group_id, sender, message_id, text);
        let added = sqlx::query(
            "INSERT OR IGNORE INTO history (group_id, sender, message_id, sent_at_ms, received_at_ms, text, shown)
             VALUES (?, ?, ?, ?, ?, ?, 1)",
        )
        .bind(group_id)
        .bind(sender)
        .bind(message_id)
        .bind(sent_at_ms)
        .bind(sent_at_ms)
        .bind(text)
        .execute(&mut **tx)
        .await?;
        if added.rows_affected() == 1 {
            let position = added.last_insert_rowid();
            sqlx::query(
                "UPDATE read_marks SET position = ?1 WHERE group_id = ?2
                 AND position >= (SELECT COALESCE(MAX(id), 0) FROM history
                                  WHERE group_id = ?2 AND id < ?1)",
            )
            .bind(position)
            .bind(group_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Imports entries another device of this user sent (oldest first), already shown,
    /// before every entry the history holds: they are older than anything this device
    /// received itself, and each import comes before the one it follows (`transfer.rs`
    /// sends the newest first). An entry already here (same sender and message id) is
    /// ignored. Returns how many were added.
    pub async fn import_history(
        tx: &mut Tx,
        group_id: &[u8],
        entries: &[HistoryRow],
    ) -> Result<u64, ClientError> {
        let lowest: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM history")
            .fetch_one(&mut **tx)
            .await?;
        let first = lowest.unwrap_or(1) - entries.len() as i64;
        let mut added = 0;
        for (offset, entry) in entries.iter().enumerate() {
            let (sender, text) = rows::history_columns(
                tx.keys(),
                group_id,
                &entry.sender,
                &entry.message_id,
                &entry.text,
            );
            let result = sqlx::query(
                "INSERT OR IGNORE INTO history
                   (id, group_id, sender, message_id, sent_at_ms, received_at_ms, text, shown)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            )
            .bind(first + offset as i64)
            .bind(group_id)
            .bind(sender)
            .bind(&entry.message_id)
            .bind(entry.sent_at_ms)
            .bind(crate::now_ms())
            .bind(text)
            .execute(&mut **tx)
            .await?;
            added += result.rows_affected();
        }
        Ok(added)
    }

    /// The last `limit` entries of a conversation's history, oldest first.
    pub async fn history(
        &self,
        group_id: &[u8],
        limit: u32,
    ) -> Result<Vec<HistoryRow>, ClientError> {
        let stored = sqlx::query(
            "SELECT group_id, sender, message_id, sent_at_ms, text FROM
               (SELECT id, group_id, sender, message_id, sent_at_ms, text FROM history
                WHERE group_id = ? ORDER BY id DESC LIMIT ?)
             ORDER BY id",
        )
        .bind(group_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        stored
            .iter()
            .map(|r| rows::open_history(self.keys(), r))
            .collect()
    }

    /// Up to `limit` entries of a conversation's history before row `before` (the newest
    /// when `None`), oldest first, each with its row id; and how many entries it holds.
    pub async fn history_page(
        &self,
        group_id: &[u8],
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<(i64, HistoryRow)>, u64), ClientError> {
        let stored = sqlx::query(
            "SELECT group_id, sender, message_id, sent_at_ms, text, id FROM
               (SELECT id, group_id, sender, message_id, sent_at_ms, text FROM history
                WHERE group_id = ? AND id < ? ORDER BY id DESC LIMIT ?)
             ORDER BY id",
        )
        .bind(group_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM history WHERE group_id = ?")
            .bind(group_id)
            .fetch_one(&self.pool)
            .await?;
        let entries = stored
            .iter()
            .map(|r| Ok((r.try_get(5)?, rows::open_history(self.keys(), r)?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok((entries, total.max(0) as u64))
    }

    /// Gives every conversation without a read mark one at its last entry already shown,
    /// so that what a session announces from now on counts as unread until it is read.
    pub async fn start_read_marks(&self) -> Result<(), ClientError> {
        // Without a shown entry, the mark is at [`UNMARKED`]: entries received are unread.
        sqlx::query(
            "INSERT OR IGNORE INTO read_marks (group_id, position)
             SELECT c.group_id, COALESCE((SELECT MAX(h.id) FROM history h
                                          WHERE h.group_id = c.group_id AND h.shown = 1), ?)
             FROM conversations c",
        )
        .bind(UNMARKED)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a conversation's read mark forward to row `position` (never back).
    pub async fn mark_read(&self, group_id: &[u8], position: i64) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO read_marks (group_id, position) VALUES (?, ?)
             ON CONFLICT (group_id) DO UPDATE SET position = MAX(position, excluded.position)",
        )
        .bind(group_id)
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Per conversation: the entries after its read mark ([`UNMARKED`] without one).
    pub async fn unread_after_marks(&self) -> Result<HashMap<Vec<u8>, u64>, ClientError> {
        let stored = sqlx::query(
            "SELECT c.group_id, (SELECT COUNT(*) FROM history h WHERE h.group_id = c.group_id
                 AND h.id > COALESCE((SELECT r.position FROM read_marks r
                                      WHERE r.group_id = c.group_id), ?))
             FROM conversations c",
        )
        .bind(UNMARKED)
        .fetch_all(&self.pool)
        .await?;
        stored
            .iter()
            .map(|r| {
                let count: i64 = r.try_get(1)?;
                Ok((r.try_get(0)?, count.max(0) as u64))
            })
            .collect()
    }

    /// Entries whose text contains `needle` (case-insensitive for ASCII), newest first,
    /// among the newest [`SEARCH_ENTRIES_MAX`]. The texts are compared here, not in SQL,
    /// since an encrypted home's are sealed; one entry at a time is held.
    pub async fn search(&self, needle: &str, limit: u32) -> Result<Vec<HistoryRow>, ClientError> {
        let needle = needle.to_ascii_lowercase();
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        let mut stored = sqlx::query(
            "SELECT group_id, sender, message_id, sent_at_ms, text FROM history
             ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(SEARCH_ENTRIES_MAX))
        .fetch(&self.pool);
        while let Some(r) = stored.try_next().await? {
            let entry = rows::open_history(self.keys(), &r)?;
            if entry.text.to_ascii_lowercase().contains(&needle) {
                found.push(entry);
                if found.len() >= limit as usize {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Per conversation: entries not yet shown, and the last entry.
    pub async fn summaries(
        &self,
    ) -> Result<HashMap<Vec<u8>, (u64, Option<HistoryRow>)>, ClientError> {
        let stored = sqlx::query(
            "SELECT h.group_id, h.sender, h.message_id, h.sent_at_ms, h.text,
                    (SELECT COUNT(*) FROM history u WHERE u.group_id = h.group_id AND u.shown = 0)
             FROM history h
             WHERE h.id = (SELECT MAX(id) FROM history l WHERE l.group_id = h.group_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        stored
            .iter()
            .map(|r| {
                let unread: i64 = r.try_get(5)?;
                let last = rows::open_history(self.keys(), r)?;
                Ok((last.group_id.clone(), (unread.max(0) as u64, Some(last))))
            })
            .collect()
    }

    /// Texts not yet shown, oldest first, and marks them shown.
    pub async fn take_unshown(&self) -> Result<Vec<HistoryRow>, ClientError> {
        let mut tx = self.pool.begin().await?;
        let stored = sqlx::query(
            "SELECT group_id, sender, message_id, sent_at_ms, text FROM history
             WHERE shown = 0 ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let entries = stored
            .iter()
            .map(|r| rows::open_history(self.keys(), r))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("UPDATE history SET shown = 1 WHERE shown = 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(entries)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database file readable by its owner only, before SQLite opens it: SQLite
/// gives the WAL and shared-memory files the database file's permissions.
fn create_private(path: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClientError::State(format!("cannot open {}: {e}", path.display())))?;
    // A database created by an older version may be more open than it should be.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ClientError::State(format!("cannot restrict {}: {e}", path.display())))
}

/// The home a database is in, for messages.
fn home_of(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| path.to_owned(), Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    async fn save(
        state: &State,
        saved: &HashMap<Vec<u8>, Vec<u8>>,
        now: &HashMap<Vec<u8>, Vec<u8>>,
    ) {
        let mut tx = state.begin().await.expect("begin");
        State::save_mls(&mut tx, saved, now).await.expect("save");
        tx.commit().await.expect("commit");
    }

    #[tokio::test]
    async fn mls_state_round_trips_through_changes_and_removals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let state = State::open(&path).await.expect("open");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let first: HashMap<Vec<u8>, Vec<u8>> = [
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ]
        .into();
        save(&state, &HashMap::new(), &first).await;
        assert_eq!(state.mls_values().await.expect("load"), first);

        let second: HashMap<Vec<u8>, Vec<u8>> = [
            (b"b".to_vec(), b"3".to_vec()),
            (b"c".to_vec(), vec![0; 5000]),
        ]
        .into();
        save(&state, &first, &second).await;
        state.close().await;

        let reopened = State::open(&path).await.expect("reopen");
        assert_eq!(reopened.mls_values().await.expect("load"), second);
    }

    #[tokio::test]
    async fn history_drops_duplicates_and_is_shown_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("state.db"))
            .await
            .expect("open");
        let mut tx = state.begin().await.expect("begin");
        let conversation = Conversation {
            group_id: vec![1; 16],
            kind: "group".into(),
            title: "ops".into(),
        };
        State::put_conversation(&mut tx, &conversation, 5)
            .await
            .expect("put");
        for (sender, id) in [("bob@x", 1), ("bob@x", 1), ("carol@x", 1), ("bob@x", 2)] {
            State::add_history(&mut tx, &[1; 16], sender, &[id], 10, "hi", 11)
                .await
                .expect("add");
        }
        for sequence in [41, 42, 50] {
            State::mark_processed(&mut tx, sequence)
                .await
                .expect("mark");
        }
        let first = State::put_outbox(&mut tx, &[1; 16], &[9], OutboxKind::Commit, b"c", b"w")
            .await
            .expect("outbox");
        State::put_outbox(&mut tx, &[1; 16], &[8], OutboxKind::Message, b"m", b"")
            .await
            .expect("outbox");
        State::delete_outbox(&mut tx, first).await.expect("delete");
        tx.commit().await.expect("commit");

        let outbox = state.outbox().await.expect("outbox");
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            (outbox[0].kind, &outbox[0].body[..]),
            (OutboxKind::Message, &b"m"[..])
        );

        assert_eq!(state.conversations().await.expect("list"), [conversation]);
        assert!(state.is_processed(42).await.expect("processed"));
        assert!(!state.is_processed(43).await.expect("processed"));
        state.forget_processed_below(42).await.expect("forget");
        assert!(!state.is_processed(41).await.expect("processed"));
        assert!(state.is_processed(42).await.expect("processed"));
        assert!(state.is_processed(50).await.expect("processed"));
        let shown: Vec<String> = state
            .take_unshown()
            .await
            .expect("take")
            .into_iter()
            .map(|row| row.sender)
            .collect();
        assert_eq!(shown, ["bob@x", "carol@x", "bob@x"]);
        assert!(state.take_unshown().await.expect("again").is_empty());
    }

    #[tokio::test]
    async fn history_pages_and_read_marks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("state.db"))
            .await
            .expect("open");
        let mut tx = state.begin().await.expect("begin");
        for (id, title) in [(1u8, "ops"), (2, "crisis")] {
            let conversation = Conversation {
                group_id: vec![id; 16],
                kind: "group".into(),
                title: title.into(),
            };
            State::put_conversation(&mut tx, &conversation, 5)
                .await
                .expect("put");
        }
        for n in 0..250u32 {
            // Two conversations interleaved: a page holds only its own.
            let group = [1 + (n % 2) as u8; 16];
            let id = n.to_be_bytes();
            State::add_history(&mut tx, &group, "bob@x", &id, n.into(), "hi", 1)
                .await
                .expect("add");
        }
        tx.commit().await.expect("commit");
        let ops = [1; 16];
        let (newest, total) = state.history_page(&ops, None, 100).await.expect("page");
        assert_eq!((newest.len(), total), (100, 125));
        let positions: Vec<i64> = newest.iter().map(|(p, _)| *p).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert!(newest.iter().all(|(_, row)| row.group_id == ops));
        assert_eq!(newest.last().map(|(_, row)| row.sent_at_ms), Some(248));
        let (older, _) = state
            .history_page(&ops, Some(positions[0]), 100)
            .await
            .expect("older");
        assert_eq!(older.len(), 25, "the rest, before the first page");
        assert!(older.iter().all(|(p, _)| *p < positions[0]));

        // Marks start at what was shown (nothing here): everything is unread until read.
        state.start_read_marks().await.expect("marks");
        let unread = state.unread_after_marks().await.expect("unread");
        assert_eq!(unread.get(&ops[..]), Some(&125));
        state.mark_read(&ops, positions[89]).await.expect("read");
        state.mark_read(&ops, positions[0]).await.expect("back");
        let unread = state.unread_after_marks().await.expect("unread");
        assert_eq!(unread.get(&ops[..]), Some(&10));
        assert_eq!(unread.get(&[2; 16][..]), Some(&125));
        // History another device sent is older than anything here: never unread.
        let imported = HistoryRow {
            group_id: vec![2; 16],
            sender: "carol@x".into(),
            message_id: vec![7; 16],
            sent_at_ms: 1,
            text: "earlier".into(),
        };
        let mut tx = state.begin().await.expect("begin");
        State::import_history(&mut tx, &[2; 16], &[imported])
            .await
            .expect("import");
        tx.commit().await.expect("commit");
        let unread = state.unread_after_marks().await.expect("unread");
        assert_eq!(unread.get(&[2; 16][..]), Some(&125));
        // Shown rows are where a new mark starts; an existing mark stays.
        state.take_unshown().await.expect("shown");
        state.start_read_marks().await.expect("marks");
        let unread = state.unread_after_marks().await.expect("unread");
        assert_eq!((unread[&ops[..]], unread[&[2; 16][..]]), (10, 125));
        // One's own text is never unread: in a conversation read to its end the mark moves
        // past it; in one with unread entries it is not marked read for them.
        let newest = *positions.last().expect("positions");
        state.mark_read(&ops, newest).await.expect("read all");
        let mut tx = state.begin().await.expect("begin");
        State::add_own_history(&mut tx, &ops, "alice@x", &[9; 16], 900, "moi")
            .await
            .expect("own");
        State::add_own_history(&mut tx, &[2; 16], "alice@x", &[8; 16], 901, "moi")
            .await
            .expect("own");
        tx.commit().await.expect("commit");
        let unread = state.unread_after_marks().await.expect("unread");
        assert_eq!((unread[&ops[..]], unread[&[2; 16][..]]), (0, 126));
    }
}
