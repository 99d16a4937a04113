//! Moving an appliance from SQLite to PostgreSQL (`relaisd storage copy`): every table, row
//! for row, with the same ids and sequence numbers, so devices, groups, queued messages,
//! cursors and the audit chain carry over unchanged.
//!
//! The source is read inside `BEGIN IMMEDIATE`, so no relaisd can accept a message while
//! it is copied; the target is written in one transaction, so a failed copy leaves it
//! empty, and the row counts of both are compared before that transaction commits.

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

use crate::backend::{self, Backend, Location};
use crate::{Durability, StoreError};

/// How a column is read and written.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    OptInt,
    Text,
    Blob,
}

use Kind::{Blob, Int, OptInt, Text};

/// Every table, parents before children, with its columns; SQLite's `rowid` of an
/// enrollment code becomes its `id`.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("id", Int),
            ("name", Text),
            ("created_at", Int),
            ("suspended_at", OptInt),
            ("expires_at", OptInt),
            ("deleted_at", OptInt),
        ],
    ),
    (
        "enrollment_codes",
        &[
            ("id", Int),
            ("code_hash", Blob),
            ("user_id", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", OptInt),
        ],
    ),
    (
        "devices",
        &[
            ("id", Int),
            ("user_id", Int),
            ("public_key", Blob),
            ("fingerprint", Text),
            ("enrolled_at", Int),
            ("last_seen_at", OptInt),
            ("revoked_at", OptInt),
        ],
    ),
    (
        "key_packages",
        &[
            ("id", Int),
            ("device_id", Int),
            ("last_resort", Int),
            ("data", Blob),
        ],
    ),
    (
        "groups",
        &[
            ("group_id", Blob),
            ("epoch", Int),
            ("state", Blob),
            ("created_at", Int),
            ("creator_device", OptInt),
        ],
    ),
    ("group_members", &[("group_id", Blob), ("device_id", Int)]),
    (
        "messages",
        &[
            ("seq", Int),
            ("kind", Int),
            ("group_id", Blob),
            ("sender_device", OptInt),
            ("accepted_at", Int),
            ("body", Blob),
            ("refs", Int),
        ],
    ),
    ("queue", &[("device_id", Int), ("seq", Int)]),
    (
        "submissions",
        &[
            ("sender_device", Int),
            ("message_id", Blob),
            ("seq", Int),
            ("epoch", Int),
            ("accepted_at", Int),
        ],
    ),
    (
        "audit_log",
        &[
            ("id", Int),
            ("at_ms", Int),
            ("actor", Text),
            ("action", Text),
            ("subject", Text),
            ("outcome", Text),
            ("detail", Text),
            ("prev_hash", Blob),
            ("hash", Blob),
            ("keyed", Int),
        ],
    ),
    (
        "audit_head",
        &[
            ("id", Int),
            ("legacy_last_id", Int),
            ("last_id", Int),
            ("entries", Int),
            ("last_hash", Blob),
            ("mac", Blob),
        ],
    ),
];

/// Tables whose ids PostgreSQL generates: their identity continues after the copied ids.
const IDENTITIES: &[&str] = &[
    "users",
    "enrollment_codes",
    "devices",
    "key_packages",
    "audit_log",
];

/// Rows per INSERT: far below either database's limit on parameters.
const ROWS_PER_INSERT: usize = 500;

/// How far a copy is: rows of `table` copied so far out of `total` (read in the copy's
/// transaction, so they are the rows that will be copied).
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress {
    pub table: &'static str,
    pub copied: u64,
    pub total: u64,
}

/// Copies everything from `source` (SQLite) into `target` (PostgreSQL, migrated here and
/// required to be empty), telling `progress` after each slice of rows. Returns each
/// table's row count.
pub async fn copy(
    source: &Location,
    target: &Location,
    progress: &mut (dyn FnMut(CopyProgress) + Send),
) -> Result<Vec<(&'static str, i64)>, StoreError> {
    let (Location::Sqlite(_), Location::Postgres(_)) = (source, target) else {
        return Err(StoreError::Unsupported(
            "a copy goes from SQLite to PostgreSQL",
        ));
    };
    let from_pool = backend::connect(source, Durability::Full).await?;
    // An appliance of an older release gets its own schema brought up to date first, as
    // its next start would: the copy reads the current schema's columns.
    backend::migrator(Backend::Sqlite).run(&from_pool).await?;
    let to_pool = backend::connect(target, Durability::Full).await?;
    backend::migrator(Backend::Postgres).run(&to_pool).await?;
    let mut from = from_pool.acquire().await?;
    let mut to = to_pool.acquire().await?;
    let mut from_tx = from.begin_with("BEGIN IMMEDIATE").await?;
    let mut to_tx = to.begin().await?;
    backend::lock_writers(&mut to_tx, Backend::Postgres).await?;
    let present: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM groups) + (SELECT COUNT(*) FROM messages)",
    )
    .fetch_one(&mut *to_tx)
    .await?;
    if present != 0 {
        return Err(StoreError::Unsupported(
            "the PostgreSQL database already holds accounts, groups or messages: copy into an empty database",
        ));
    }
    let mut counts = Vec::new();
    for (table, columns) in TABLES {
        let expected: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *from_tx)
                .await?;
        let mut told = |copied: i64| {
            progress(CopyProgress {
                table,
                copied: copied.max(0) as u64,
                total: expected.max(0) as u64,
            })
        };
        told(0);
        let copied = copy_table(&mut from_tx, &mut to_tx, table, columns, &mut told).await?;
        let landed: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *to_tx)
                .await?;
        if copied != expected || landed != expected {
            return Err(StoreError::CopyMismatch {
                table,
                expected,
                copied,
                landed,
            });
        }
        counts.push((*table, landed));
    }
    for table in IDENTITIES {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        )))
        .execute(&mut *to_tx)
        .await?;
    }
    // Sequence numbers continue after the highest ever given, even to deleted messages.
    let last_seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
            .fetch_optional(&mut *from_tx)
            .await?;
    let last_seq = last_seq.unwrap_or(0).max(1);
    sqlx::query("SELECT setval('messages_seq', $1)")
        .bind(last_seq)
        .execute(&mut *to_tx)
        .await?;
    sqlx::query(
        "UPDATE counters SET value = (SELECT COUNT(*) FROM queue) WHERE name = 'queue_deliveries'",
    )
    .execute(&mut *to_tx)
    .await?;
    to_tx.commit().await?;
    from_tx.rollback().await?;
    // A pool closes once its connections are back.
    drop((from, to));
    to_pool.close().await;
    from_pool.close().await;
    Ok(counts)
}

async fn copy_table(
    from: &mut AnyConnection,
    to: &mut AnyConnection,
    table: &str,
    columns: &[(&str, Kind)],
    progress: &mut impl FnMut(i64),
) -> Result<i64, StoreError> {
    use futures_util::TryStreamExt as _;
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let select: Vec<&str> = names
        .iter()
        .map(|n| {
            if table == "enrollment_codes" && *n == "id" {
                "rowid"
            } else {
                n
            }
        })
        .collect();
    let sql = format!("SELECT {} FROM {table}", select.join(", "));
    // Streamed in slices, so a large queue never sits in memory whole.
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *from);
    let mut slice = Vec::with_capacity(ROWS_PER_INSERT);
    let mut copied = 0;
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        slice.extend(row);
        if slice.len() == ROWS_PER_INSERT || (end && !slice.is_empty()) {
            insert(to, table, columns, &slice).await?;
            copied += slice.len() as i64;
            slice.clear();
            progress(copied);
        }
        if end {
            return Ok(copied);
        }
    }
}

async fn insert(
    to: &mut AnyConnection,
    table: &str,
    columns: &[(&str, Kind)],
    rows: &[sqlx::any::AnyRow],
) -> Result<(), StoreError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut n = 0;
    let values: Vec<String> = rows
        .iter()
        .map(|_| {
            let row: Vec<String> = (0..columns.len())
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            format!("({})", row.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        values.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        for (i, (_, kind)) in columns.iter().enumerate() {
            query = match kind {
                Int => query.bind(row.try_get::<i64, _>(i)?),
                OptInt => query.bind(row.try_get::<Option<i64>, _>(i)?),
                Text => query.bind(row.try_get::<String, _>(i)?),
                Blob => query.bind(row.try_get::<Vec<u8>, _>(i)?),
            };
        }
    }
    query.execute(&mut *to).await?;
    Ok(())
}
