//! The client's local state: one SQLite database in the client's home directory, private
//! to its user, holding the MLS state, the conversations and the received history.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::ClientError;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mls_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS conversations (
        group_id BLOB PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, created_at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY, group_id BLOB NOT NULL, sender TEXT NOT NULL, message_id BLOB NOT NULL,
        sent_at_ms INTEGER NOT NULL, received_at_ms INTEGER NOT NULL, text TEXT NOT NULL,
        shown INTEGER NOT NULL DEFAULT 0, UNIQUE (sender, message_id))",
    "CREATE TABLE IF NOT EXISTS processed (sequence INTEGER PRIMARY KEY)",
];

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
    pub sent_at_ms: i64,
    pub text: String,
}

/// The state database.
#[derive(Clone)]
pub struct State {
    pool: SqlitePool,
}

impl State {
    pub async fn open(path: &Path) -> Result<State, ClientError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        restrict(path);
        Ok(State { pool })
    }

    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The whole MLS key-value store.
    pub async fn mls_values(&self) -> Result<HashMap<Vec<u8>, Vec<u8>>, ClientError> {
        let rows = sqlx::query("SELECT key, value FROM mls_kv")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, ClientError> {
        Ok(self.pool.begin().await?)
    }

    /// Replaces the stored MLS state with `values`, inside `tx`.
    pub async fn save_mls(
        tx: &mut Transaction<'static, Sqlite>,
        values: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM mls_kv").execute(&mut **tx).await?;
        for (key, value) in values {
            sqlx::query("INSERT INTO mls_kv (key, value) VALUES (?, ?)")
                .bind(key)
                .bind(value)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let rows =
            sqlx::query("SELECT group_id, kind, title FROM conversations ORDER BY created_at_ms")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| Conversation {
                group_id: r.get(0),
                kind: r.get(1),
                title: r.get(2),
            })
            .collect())
    }

    pub async fn put_conversation(
        tx: &mut Transaction<'static, Sqlite>,
        c: &Conversation,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO conversations (group_id, kind, title, created_at_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (group_id) DO UPDATE SET kind = excluded.kind, title = excluded.title",
        )
        .bind(&c.group_id)
        .bind(&c.kind)
        .bind(&c.title)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn is_processed(&self, sequence: u64) -> Result<bool, ClientError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE sequence = ?")
            .bind(sequence as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn mark_processed(
        tx: &mut Transaction<'static, Sqlite>,
        sequence: u64,
    ) -> Result<(), ClientError> {
        sqlx::query("INSERT OR IGNORE INTO processed (sequence) VALUES (?)")
            .bind(sequence as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Records a received text; a second copy (same sender and message id) is ignored.
    pub async fn add_history(
        tx: &mut Transaction<'static, Sqlite>,
        group_id: &[u8],
        sender: &str,
        message_id: &[u8],
        sent_at_ms: i64,
        text: &str,
        now_ms: i64,
    ) -> Result<(), ClientError> {
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

    /// Texts not yet shown, oldest first, and marks them shown.
    pub async fn take_unshown(&self) -> Result<Vec<HistoryRow>, ClientError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT group_id, sender, sent_at_ms, text FROM history WHERE shown = 0 ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE history SET shown = 1 WHERE shown = 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| HistoryRow {
                group_id: r.get(0),
                sender: r.get(1),
                sent_at_ms: r.get(2),
                text: r.get(3),
            })
            .collect())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes the database and its WAL files private to the user.
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}
