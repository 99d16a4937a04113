//! SQLite's WAL checkpoints, off the writer's path.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past 1,000 pages:
//! the storage writer would copy every page of the WAL into the database file and fsync
//! it while every sender waits for its batch. Here every connection has automatic
//! checkpoints off (`backend::sqlite_pragmas`) and this task, on a connection of its own,
//! copies the WAL into the database in `PASSIVE` mode, which runs beside the writer
//! without blocking it.
//!
//! A passive checkpoint cannot make SQLite write the WAL from its start again: that
//! happens only when a write transaction begins with the WAL wholly copied, and a busy
//! writer begins its next batch as soon as one commits. So this task publishes the WAL's
//! length, and once it passes [`WAL_PAGES_RESTART`] the writer itself, between two
//! batches, copies what the last passive checkpoint left (about one batch's pages) and
//! syncs the database (`restart_if_long`); its next batch then starts the WAL over.
//! The writer never waits on a lock for this, and the WAL stays near that length
//! (`journal_size_limit` cuts the file back).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};

/// How often the WAL is copied into the database.
const INTERVAL: Duration = Duration::from_millis(100);
/// Copies what it can of the WAL into the database without waiting for any lock; its row
/// is (busy, pages in the WAL, pages copied into the database), -1 when not in WAL mode.
const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
/// WAL pages (8 KiB each, 4 KiB in databases made before 8 KiB pages) past which the WAL
/// is started over: SQLite's own default.
pub(super) const WAL_PAGES_RESTART: i64 = 1_000;

/// The WAL's length in pages at the last checkpoint, shared by the checkpointer and the
/// writer.
pub(super) type WalPages = Arc<AtomicI64>;

/// Checkpoints until the pool closes, publishing the WAL's length in `wal`.
pub(super) fn spawn(pool: AnyPool, wal: WalPages) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            let checkpointed = match pool.acquire().await {
                Ok(mut conn) => passive(&mut conn).await,
                Err(error) => Err(error),
            };
            match checkpointed.map(|pages| wal.store(pages, Ordering::Relaxed)) {
                Ok(()) if failing => {
                    tracing::info!("WAL checkpoints succeed again");
                    failing = false;
                }
                Ok(()) => {}
                Err(_) if pool.is_closed() => return,
                Err(error) if !failing => {
                    tracing::warn!(%error, "cannot checkpoint the WAL; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

/// Run by the writer between batches: once the WAL is long, copies the little the
/// checkpointer has not yet (no other writer can add to it meanwhile), so that the next
/// batch writes the WAL from its start again.
pub(super) fn restart_if_long(conn: &rusqlite::Connection, wal: &WalPages) {
    if wal.load(Ordering::Relaxed) <= WAL_PAGES_RESTART {
        return;
    }
    match conn.query_row(PASSIVE, [], |_| Ok(())) {
        Ok(()) => wal.store(0, Ordering::Relaxed),
        // The checkpointer is copying right now: the next batch tries again.
        Err(error) => tracing::debug!(%error, "the writer could not checkpoint the WAL"),
    }
}

/// Runs [`PASSIVE`]; returns the WAL's length in pages.
pub(super) async fn passive(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let (_, pages, _): (i64, i64, i64) = sqlx::query_as(PASSIVE).fetch_one(conn).await?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::Durability;
    use crate::{CommitRequest, DeviceId, Location, Store, StoreOptions, SubmitRequest};

    /// With SQLite's automatic checkpoints off, the WAL would hold every byte written; the
    /// checkpointer and the writer keep it near its limit while the database file takes
    /// the data, without waiting for the store to close.
    #[tokio::test]
    async fn the_wal_stays_bounded_while_the_database_takes_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relais.db");
        let options = StoreOptions {
            durability: Durability::Full,
            batch_max: 512,
            queue_messages_max: 1_000_000,
            queue_bytes_max: i64::MAX,
            queue_share_per_sender_percent: 100,
            catch_up: std::time::Duration::from_secs(30),
        };
        let store = Store::open(&Location::Sqlite(path.clone()), options, Arc::new(()))
            .await
            .expect("open");
        assert!(
            store
                .create_group(b"g", 0, b"s", DeviceId(1), 1)
                .await
                .expect("group")
        );
        store
            .commit(CommitRequest {
                sender: DeviceId(1),
                sender_user: "a@example.gouv.fr".into(),
                sender_fingerprint: "fp1".into(),
                message_id: b"c".to_vec(),
                group_id: b"g".to_vec(),
                from_epoch: 0,
                state: b"s1".to_vec(),
                members_after: vec![DeviceId(1), DeviceId(2)],
                commit: Bytes::from_static(b"commit"),
                welcome: None,
                now_ms: 2,
            })
            .await
            .expect("commit");
        let size = |suffix: &str| {
            std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len())
        };
        let limit = 4 * super::WAL_PAGES_RESTART as u64 * 4096;
        let body = Bytes::from(vec![7u8; 64 * 1024]);
        let mut largest_wal = 0;
        // 40 MiB of messages, 20 at a time, with pauses in which the checkpointer runs.
        for round in 0..32 {
            let sends = (0..20).map(|i| {
                store.submit(SubmitRequest {
                    sender: DeviceId(1),
                    sender_user: "a@example.gouv.fr".into(),
                    sender_fingerprint: "fp1".into(),
                    message_id: format!("m{round}-{i}").into_bytes(),
                    group_id: b"g".to_vec(),
                    epoch: 1,
                    body: body.clone(),
                    now_ms: 3,
                })
            });
            for accepted in futures_util::future::join_all(sends).await {
                accepted.expect("accepted");
            }
            largest_wal = largest_wal.max(size("-wal"));
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        assert!(
            largest_wal < limit + 4 * 1024 * 1024,
            "the WAL grew to {largest_wal} bytes (limit {limit})"
        );
        assert!(
            size("") > 30 * 1024 * 1024,
            "the database file holds {} bytes: the WAL was not copied into it",
            size("")
        );
        store.close().await;
    }
}
