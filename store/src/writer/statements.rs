//! The writer's set-based statements: each writes or reads many rows at once, so a batch
//! costs a few statements however many operations it holds.
//!
//! Lists are cut into pieces that stay far below SQLite's limit on bound parameters
//! (32,766 since 3.32); every piece is one statement (`pieces`).

use std::collections::HashMap;

use bytes::Bytes;
use relais_core::ordering::QueueUsage;
use relais_core::{DeliveryKind, DeviceId};

use super::sql::{Arg, Conn, Error};
use crate::backend::Backend;

/// Bound parameters per statement: large enough that a batch is a handful of statements,
/// small enough that SQLite never refuses one.
const PARAMETERS_MAX: usize = 8_000;

/// A message to store, decided by the segment but not yet written.
pub(super) struct NewMessage {
    pub kind: DeliveryKind,
    pub group_id: Vec<u8>,
    pub sender: Option<DeviceId>,
    pub sender_user: String,
    pub sender_fingerprint: String,
    pub now_ms: i64,
    pub body: Bytes,
    pub recipients: Vec<DeviceId>,
}

/// A client message id to remember, pointing at the message it produced (if any).
pub(super) struct NewSubmission {
    pub sender: DeviceId,
    pub message_id: Vec<u8>,
    pub message: Option<usize>,
    pub epoch: u64,
    pub now_ms: i64,
}

/// `(?, ?), (?, ?)` on SQLite, `($1, $2), ($3, $4)` on PostgreSQL, for `rows` rows of
/// `columns` parameters.
fn tuples(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 7);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&list(backend, row * columns, columns));
        sql.push(')');
    }
    sql
}

/// `?, ?, ?` on SQLite, `$1, $2, $3` on PostgreSQL (numbered after the first `skip`), for
/// `n` parameters. SQLite finds a numbered parameter by walking the list of names, so
/// binding thousands of them costs the square of their number; here they are anonymous.
fn list(backend: Backend, skip: usize, n: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(n * 7);
    for i in 1..=n {
        let sep = if i > 1 { ", " } else { "" };
        let _ = match backend {
            Backend::Sqlite => write!(sql, "{sep}?"),
            Backend::Postgres => write!(sql, "{sep}${}", skip + i),
        };
    }
    sql
}

/// How many rows of `columns` parameters go in one statement.
fn rows_per_statement(columns: usize) -> usize {
    PARAMETERS_MAX / columns
}

/// Cuts `rows` into one slice per statement, `columns` parameters a row. On PostgreSQL,
/// where each statement is a round trip, a slice takes as many rows as fit; on SQLite its
/// length is a power of two, so that a statement's text takes one of a dozen forms, which
/// stay prepared (`sql.rs`) instead of being parsed again for every new number of rows.
fn pieces<T>(backend: Backend, rows: &[T], columns: usize) -> impl Iterator<Item = &[T]> {
    let most = rows_per_statement(columns);
    let mut rest = rows;
    std::iter::from_fn(move || {
        let n = rest.len().min(most);
        if n == 0 {
            return None;
        }
        let n = match backend {
            Backend::Postgres => n,
            Backend::Sqlite => 1 << n.ilog2(),
        };
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

/// Looks up `rows` (sender, message id) pairs. The pairs drive the loop (`CROSS JOIN`
/// fixes the order) so each is one primary-key search: `(a, b) IN (VALUES …)` written
/// directly makes SQLite scan the whole table, which holds every id of the last 60 days.
/// PostgreSQL has no `CROSS JOIN … ON`, and plans the plain join by key on its own.
fn submissions_sql(backend: Backend, rows: usize) -> String {
    let join = match backend {
        Backend::Sqlite => "CROSS JOIN",
        Backend::Postgres => "JOIN",
    };
    format!(
        "WITH wanted (sender_device, message_id) AS (VALUES {}) \
         SELECT s.sender_device, s.message_id, s.seq, s.epoch \
         FROM wanted {join} submissions s \
         ON s.sender_device = wanted.sender_device AND s.message_id = wanted.message_id",
        tuples(backend, rows, 2)
    )
}

/// Deletes `rows` (device, seq) queue entries, each by primary key (the same reason as
/// [`submissions_sql`] for going through a named `VALUES`).
fn remove_acknowledged_sql(backend: Backend, rows: usize) -> String {
    format!(
        "WITH acked (device_id, seq) AS (VALUES {}) \
         DELETE FROM queue WHERE (device_id, seq) IN (SELECT device_id, seq FROM acked) \
         RETURNING device_id, seq",
        tuples(backend, rows, 2)
    )
}

/// Groups' epochs and members, for the given group ids.
pub(super) async fn groups(
    conn: &mut Conn,
    group_ids: &[&[u8]],
) -> Result<HashMap<Vec<u8>, (u64, Vec<DeviceId>)>, Error> {
    let backend = conn.backend();
    let mut groups: HashMap<Vec<u8>, (u64, Vec<DeviceId>)> = HashMap::new();
    for chunk in pieces(backend, group_ids, 1) {
        let list = list(backend, 0, chunk.len());
        let args: Vec<Arg> = chunk.iter().map(|id| Arg::Blob(id)).collect();
        let sql = format!("SELECT group_id, epoch FROM groups WHERE group_id IN ({list})");
        for (group, epoch) in conn
            .fetch(&sql, &args, |r| Ok((r.blob(0)?, r.int(1)?)))
            .await?
        {
            groups.insert(group, (epoch as u64, Vec::new()));
        }
        let sql = format!(
            "SELECT group_id, device_id FROM group_members WHERE group_id IN ({list}) \
             ORDER BY group_id, device_id"
        );
        for (group, device) in conn
            .fetch(&sql, &args, |r| Ok((r.blob(0)?, r.int(1)?)))
            .await?
        {
            if let Some((_, members)) = groups.get_mut(&group) {
                members.push(DeviceId(device));
            }
        }
    }
    Ok(groups)
}

/// Earlier submissions among the given (sender, message id) pairs: (seq, epoch) for each.
pub(super) async fn submissions(
    conn: &mut Conn,
    keys: &[(DeviceId, &[u8])],
) -> Result<HashMap<(DeviceId, Vec<u8>), (i64, u64)>, Error> {
    let mut found = HashMap::new();
    let backend = conn.backend();
    for chunk in pieces(backend, keys, 2) {
        let sql = submissions_sql(backend, chunk.len());
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|(device, id)| [Arg::Int(device.0), Arg::Blob(id)])
            .collect();
        let rows = conn
            .fetch(&sql, &args, |r| {
                Ok((
                    (DeviceId(r.int(0)?), r.blob(1)?),
                    (r.int(2)?, r.int(3)? as u64),
                ))
            })
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// What waits in the given devices' queues; a device with an empty queue has the default.
/// Reads each device's entries with their message's sender and size (SQLite's `length`
/// reads a blob's header, not its pages; PostgreSQL's reads the stored length).
pub(super) async fn queue_usage(
    conn: &mut Conn,
    devices: &[DeviceId],
) -> Result<HashMap<DeviceId, QueueUsage>, Error> {
    let mut usage: HashMap<DeviceId, QueueUsage> = HashMap::new();
    let backend = conn.backend();
    for chunk in pieces(backend, devices, 1) {
        let sql = format!(
            "SELECT q.device_id, COALESCE(m.sender_device, 0), COUNT(*), \
             CAST(SUM(LENGTH(m.body)) AS BIGINT) \
             FROM queue q JOIN messages m ON m.seq = q.seq WHERE q.device_id IN ({}) \
             GROUP BY q.device_id, m.sender_device",
            list(backend, 0, chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|d| Arg::Int(d.0)).collect();
        let rows = conn
            .fetch(&sql, &args, |r| {
                Ok((
                    DeviceId(r.int(0)?),
                    DeviceId(r.int(1)?),
                    r.int(2)?,
                    r.int(3)?,
                ))
            })
            .await?;
        for (device, sender, messages, bytes) in rows {
            let entry = usage.entry(device).or_default();
            entry.messages += messages;
            entry.bytes += bytes;
            let by_sender = entry.by_sender.entry(sender).or_default();
            by_sender.0 += messages;
            by_sender.1 += bytes;
        }
    }
    for device in devices {
        usage.entry(*device).or_default();
    }
    Ok(usage)
}

/// Each given message's sender (0 for the service) and size, for counting removed queue
/// entries out of the writer's usage; read before acknowledged messages are deleted.
async fn message_sizes(
    conn: &mut Conn,
    seqs: &[i64],
) -> Result<HashMap<i64, (DeviceId, i64)>, Error> {
    let mut sizes = HashMap::new();
    let backend = conn.backend();
    for chunk in pieces(backend, seqs, 1) {
        let sql = format!(
            "SELECT seq, COALESCE(sender_device, 0), LENGTH(body) FROM messages \
             WHERE seq IN ({})",
            list(backend, 0, chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|seq| Arg::Int(*seq)).collect();
        let rows = conn
            .fetch(&sql, &args, |r| {
                Ok((r.int(0)?, (DeviceId(r.int(1)?), r.int(2)?)))
            })
            .await?;
        sizes.extend(rows);
    }
    Ok(sizes)
}

/// Replaces a group's member list.
pub(super) async fn set_members(
    conn: &mut Conn,
    group_id: &[u8],
    members: &[DeviceId],
) -> Result<(), Error> {
    conn.execute(
        "DELETE FROM group_members WHERE group_id = $1",
        &[Arg::Blob(group_id)],
    )
    .await?;
    let backend = conn.backend();
    for chunk in pieces(backend, members, 2) {
        let sql = format!(
            "INSERT INTO group_members (group_id, device_id) VALUES {} ON CONFLICT DO NOTHING",
            tuples(backend, chunk.len(), 2)
        );
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|device| [Arg::Blob(group_id), Arg::Int(device.0)])
            .collect();
        conn.execute(&sql, &args).await?;
    }
    Ok(())
}

/// Writes the messages with consecutive new sequence numbers, in order, and returns them.
///
/// The writer holds the write lock (`backend::lock_writers`), so it can number them
/// itself: on SQLite from `sqlite_sequence` (which `AUTOINCREMENT` keeps at the highest
/// number ever used, so a number is never reused even after its message is gone), on
/// PostgreSQL by moving the `messages_seq` sequence past them in one call.
pub(super) async fn insert_messages(
    conn: &mut Conn,
    messages: &[NewMessage],
) -> Result<Vec<i64>, Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let first = match conn.backend() {
        Backend::Sqlite => {
            let sql = "SELECT seq FROM sqlite_sequence WHERE name = 'messages'";
            conn.fetch_int(sql, &[]).await?.unwrap_or(0) + 1
        }
        Backend::Postgres => {
            let n = messages.len() as i64;
            let sql = "SELECT setval('messages_seq', nextval('messages_seq') + $1 - 1)";
            let last = conn.fetch_one_int(sql, &[Arg::Int(n)]).await?;
            last - n + 1
        }
    };
    let seqs: Vec<i64> = (first..).take(messages.len()).collect();
    let backend = conn.backend();
    let mut done = 0;
    for chunk in pieces(backend, messages, 7) {
        let chunk_seqs = &seqs[done..done + chunk.len()];
        done += chunk.len();
        let sql = format!(
            "INSERT INTO messages (seq, kind, group_id, sender_device, accepted_at, body, refs) \
             VALUES {}",
            tuples(backend, chunk.len(), 7)
        );
        let args: Vec<Arg> = chunk
            .iter()
            .zip(chunk_seqs)
            .flat_map(|(message, seq)| {
                [
                    Arg::Int(*seq),
                    Arg::Int(message.kind.wire() as i64),
                    Arg::Blob(&message.group_id),
                    message.sender.map_or(Arg::Null, |d| Arg::Int(d.0)),
                    Arg::Int(message.now_ms),
                    Arg::Blob(&message.body),
                    Arg::Int(message.recipients.len() as i64),
                ]
            })
            .collect();
        conn.execute(&sql, &args).await?;
    }
    Ok(seqs)
}

/// Queues a reference to each message for each of its recipients.
pub(super) async fn insert_queue(
    conn: &mut Conn,
    messages: &[NewMessage],
    seqs: &[i64],
) -> Result<(), Error> {
    let rows: Vec<(i64, i64)> = messages
        .iter()
        .zip(seqs)
        .flat_map(|(m, seq)| m.recipients.iter().map(move |d| (d.0, *seq)))
        .collect();
    let backend = conn.backend();
    for chunk in pieces(backend, &rows, 2) {
        let sql = format!(
            "INSERT INTO queue (device_id, seq) VALUES {}",
            tuples(backend, chunk.len(), 2)
        );
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|(device, seq)| [Arg::Int(*device), Arg::Int(*seq)])
            .collect();
        conn.execute(&sql, &args).await?;
    }
    Ok(())
}

/// Remembers client message ids with the sequence number each produced (0 for none).
pub(super) async fn insert_submissions(
    conn: &mut Conn,
    submissions: &[NewSubmission],
    seqs: &[i64],
) -> Result<(), Error> {
    let backend = conn.backend();
    for chunk in pieces(backend, submissions, 5) {
        let sql = format!(
            "INSERT INTO submissions (sender_device, message_id, seq, epoch, accepted_at) \
             VALUES {}",
            tuples(backend, chunk.len(), 5)
        );
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|s| {
                [
                    Arg::Int(s.sender.0),
                    Arg::Blob(&s.message_id),
                    Arg::Int(s.message.map_or(0, |i| seqs[i])),
                    Arg::Int(s.epoch as i64),
                    Arg::Int(s.now_ms),
                ]
            })
            .collect();
        conn.execute(&sql, &args).await?;
    }
    Ok(())
}

/// Deletes the acknowledged queue entries that exist, drops messages nobody still needs,
/// and returns the entries that were there; with `sizes`, also each removed message's
/// sender and size (read before it may be deleted).
pub(super) async fn remove_acknowledged(
    conn: &mut Conn,
    entries: &[(DeviceId, i64)],
    sizes: bool,
) -> Result<(Vec<(DeviceId, i64)>, HashMap<i64, (DeviceId, i64)>), Error> {
    let backend = conn.backend();
    let mut removed = Vec::new();
    for chunk in pieces(backend, entries, 2) {
        let sql = remove_acknowledged_sql(backend, chunk.len());
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|(device, seq)| [Arg::Int(device.0), Arg::Int(*seq)])
            .collect();
        let rows = conn
            .fetch(&sql, &args, |r| Ok((DeviceId(r.int(0)?), r.int(1)?)))
            .await?;
        removed.extend(rows);
    }
    let mut per_message: HashMap<i64, i64> = HashMap::new();
    for (_, seq) in &removed {
        *per_message.entry(*seq).or_default() += 1;
    }
    let sizes = if sizes && !per_message.is_empty() {
        let seqs: Vec<i64> = per_message.keys().copied().collect();
        message_sizes(conn, &seqs).await?
    } else {
        HashMap::new()
    };
    // Messages by how many of their references went: those with no more left are
    // deleted without first rewriting their row (body included) to count down, which
    // is the whole of a one-to-one conversation's acknowledgements.
    let mut by_count: HashMap<i64, Vec<i64>> = HashMap::new();
    for (seq, n) in per_message {
        by_count.entry(n).or_default().push(seq);
    }
    for (n, seqs) in by_count {
        for chunk in pieces(backend, &seqs, 1) {
            // The count comes first in both the text and the arguments.
            let (count, list) = (self::list(backend, 0, 1), list(backend, 1, chunk.len()));
            let args: Vec<Arg> = std::iter::once(Arg::Int(n))
                .chain(chunk.iter().map(|seq| Arg::Int(*seq)))
                .collect();
            for sql in [
                format!("DELETE FROM messages WHERE refs <= {count} AND seq IN ({list})"),
                format!("UPDATE messages SET refs = refs - {count} WHERE seq IN ({list})"),
            ] {
                conn.execute(&sql, &args).await?;
            }
        }
    }
    Ok((removed, sizes))
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::Backend;

    /// Every row goes into exactly one statement, in order, within the parameter limit;
    /// on SQLite in power-of-two pieces, on PostgreSQL in as few as fit.
    #[test]
    fn pieces_take_every_row_once() {
        for n in [0, 1, 2, 3, 7, 300, 4_000, 9_999] {
            let rows: Vec<usize> = (0..n).collect();
            for backend in [Backend::Sqlite, Backend::Postgres] {
                let pieces: Vec<&[usize]> = super::pieces(backend, &rows, 2).collect();
                assert_eq!(pieces.concat(), rows, "{backend:?}, {n} rows");
                assert!(pieces.iter().all(|p| (1..=4_000).contains(&p.len())));
                if backend == Backend::Sqlite {
                    assert!(pieces.iter().all(|p| p.len().is_power_of_two()));
                }
            }
        }
        let lengths = |backend| {
            super::pieces(backend, &[0u8; 300], 2)
                .map(<[u8]>::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(lengths(Backend::Sqlite), [256, 32, 8, 4]);
        assert_eq!(lengths(Backend::Postgres), [300]);
    }

    /// The set-based statements must search by key, never scan a table that grows with
    /// traffic; SQLite's planner decides, so this asks it, on the real schema.
    #[tokio::test]
    async fn set_based_statements_search_by_key() {
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        for migration in [
            include_str!("../../migrations/sqlite/0001_initial.sql"),
            include_str!("../../migrations/sqlite/0002_operations.sql"),
            include_str!("../../migrations/sqlite/0003_counters.sql"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migration))
                .execute(&mut conn)
                .await
                .expect("schema");
        }
        for sql in [
            super::submissions_sql(Backend::Sqlite, 3),
            super::remove_acknowledged_sql(Backend::Sqlite, 3),
        ] {
            let plan: Vec<String> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(1)
                    .bind(b"a".as_slice())
                    .bind(2)
                    .bind(b"b".as_slice())
                    .bind(3)
                    .bind(b"c".as_slice())
                    .fetch_all(&mut conn)
                    .await
                    .map(|rows: Vec<(i64, i64, i64, String)>| {
                        rows.into_iter().map(|r| r.3).collect()
                    })
                    .unwrap_or_else(|e| panic!("plan for {sql}: {e}"));
            let plan = plan.join("; ");
            assert!(
                !plan.contains("SCAN queue") && !plan.contains("SCAN s") && plan.contains("SEARCH"),
                "{sql}\n{plan}"
            );
        }
    }
}
