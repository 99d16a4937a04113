//! relais-store: accounts, devices, KeyPackages, groups and the per-device message queues,
//! in SQLite or PostgreSQL.
//!
//! Everything that changes the queues (submissions, acknowledgements, revocations,
//! expiry) goes through one writer task that group-commits concurrent requests
//! (`writer/`); rarer changes (accounts, enrollment, KeyPackages) and all reads use the
//! connection pool directly. Storage knows nothing of the network: what a commit changed
//! goes out through [`Outlet`], which the daemon implements.

mod audit;
mod backend;
mod checkpoint;
mod copy;
mod directory;
mod key_packages;
mod notify;
mod outlet;
mod writer;

use std::path::Path;
use std::sync::Arc;

use sqlx::AnyPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

pub use audit::{AuditEntry, AuditEvent, AuditHead, AuditKey, ChainStatus};
pub use backend::{Backend, Location, PostgresUrl, migrate, read_password};
pub use copy::{CopyProgress, copy};
pub use directory::{
    AccountState, ClaimError, ClaimedKeyPackage, Device, EnrollError, PendingCode, UserSummary,
};
pub use outlet::{BatchFigures, CommittedMessage, Disconnect, Fanout, Outlet};
pub use relais_core::DeviceId;
pub use writer::{Accepted, CommitRequest, ProposalRequest, SubmitError, SubmitRequest, Submitted};

use writer::WriteOp;

/// What an acknowledgement promises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Synced to disk before the sender is acknowledged.
    #[default]
    Full,
    /// Survives a crash of the daemon but not necessarily a power cut.
    Normal,
}

/// A failure of the storage layer itself (as opposed to a refused request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the storage writer has stopped; the daemon is shutting down")]
    WriterStopped,
    /// The writer's batch failed and was rolled back; the writer logged why.
    #[error("the storage batch failed and was rolled back")]
    BatchFailed,
    #[error(
        "cannot apply the database migrations ({0}); apply them with `relaisd migrate --config FILE` \
         as the database's owner, then start again"
    )]
    MigrateAsOwner(sqlx::migrate::MigrateError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("cannot open the storage writer's connection: {0}")]
    WriterConnection(String),
    /// A copy's row counts disagree; its transaction was not committed.
    #[error(
        "{table}: {expected} rows in SQLite, {copied} copied, {landed} in PostgreSQL; nothing was committed"
    )]
    CopyMismatch {
        table: &'static str,
        expected: i64,
        copied: i64,
        landed: i64,
    },
}

/// One queued delivery as read back from storage.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: i64,
    pub kind: i32,
    pub group_id: Vec<u8>,
    pub sender_user: String,
    pub sender_device: String,
    pub accepted_at_ms: i64,
    pub body: Vec<u8>,
}

/// What `metrics_figures` reads.
#[derive(Debug, Clone, Default)]
pub struct MetricsFigures {
    pub oldest_accepted_ms: Option<i64>,
    pub groups: i64,
    pub key_package_buckets: [i64; 4],
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: mpsc::Sender<WriteOp>,
    writer_done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// This process among the nodes sharing a PostgreSQL database; `None` on SQLite.
    node: Option<notify::Node>,
}

/// Settings the store needs from the configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    pub batch_max: usize,
    pub queue_messages_max: i64,
    /// Bytes of undelivered messages one device may have queued.
    pub queue_bytes_max: i64,
    /// Percent of a recipient's two bounds above one sender may hold (1 to 100).
    pub queue_share_per_sender_percent: u32,
    /// PostgreSQL: how often every online device looks at its queue even without a
    /// notification, so a lost one only delays a delivery.
    pub catch_up: std::time::Duration,
}

/// Requests waiting for the writer at most; senders wait when it is full (backpressure).
const WRITER_QUEUE_MAX: usize = 8192;

impl Store {
    /// Opens (creating if needed) the database, applies migrations and starts the writer;
    /// on PostgreSQL also the listener that wakes this node's devices for other nodes'
    /// messages, on SQLite the WAL's checkpointer.
    pub async fn open(
        location: &Location,
        options: StoreOptions,
        outlet: Arc<dyn Outlet>,
    ) -> Result<Store, StoreError> {
        let pool = backend::connect(location, options.durability).await?;
        let backend = location.backend();
        backend::migrate_at_start(&pool, backend).await?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_MAX);
        let mut node = None;
        // Each arm makes the writer's connection and whom it works beside together: the
        // writer checkpoints only a SQLite connection and notifies only from PostgreSQL.
        let handle = match location {
            // SQLite's writer calls SQLite synchronously, so it has a thread of its own.
            Location::Sqlite(path) => {
                let conn = writer::Conn::open_sqlite(path, options.durability)
                    .map_err(|e| StoreError::WriterConnection(e.to_string()))?;
                let wal = checkpoint::WalPages::default();
                checkpoint::spawn(pool.clone(), wal.clone());
                let beside = writer::Beside::Checkpointer(wal);
                let run = writer::run(pool.clone(), conn, rx, options, beside, outlet);
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || runtime.block_on(run))
            }
            Location::Postgres(url) => {
                let this = *node.insert(notify::Node::new());
                notify::listen(url, this, outlet.clone(), options.catch_up).await?;
                let conn = writer::Conn::Postgres(pool.acquire().await?);
                let beside = writer::Beside::Nodes(this);
                tokio::spawn(writer::run(pool.clone(), conn, rx, options, beside, outlet))
            }
        };
        Ok(Store {
            pool,
            backend,
            writer: tx,
            writer_done: Arc::new(tokio::sync::Mutex::new(Some(handle))),
            node,
        })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that excludes every other writer at once, as the writer's own
    /// do (`backend::begin_exclusive`): what was correct with one SQLite writer stays
    /// correct with several nodes on one PostgreSQL database.
    pub(crate) async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = self.pool.begin_with(self.backend.begin_statement()).await?;
        backend::lock_writers(&mut tx, self.backend).await?;
        Ok(tx)
    }

    /// Submits an application message through the group-committing writer.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Accepted, SubmitError> {
        Ok(self.enqueue_submit(request).await?.await?.accepted)
    }

    /// Hands an application message to the writer and returns the wait for its answer, so
    /// that a connection can queue several in the order they arrived and await them later.
    pub async fn enqueue_submit(
        &self,
        request: SubmitRequest,
    ) -> Result<impl Future<Output = Result<Submitted, SubmitError>> + Send + 'static, SubmitError>
    {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::Submit(request, reply))
            .await
            .map_err(|_| SubmitError::Failed)?;
        Ok(async move { rx.await.unwrap_or(Err(SubmitError::Failed)) })
    }

    /// Applies a verified commit if the group is still at its epoch.
    pub async fn commit(&self, request: CommitRequest) -> Result<Accepted, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::Commit(request, reply))
            .await
            .map_err(|_| SubmitError::Failed)?;
        rx.await.unwrap_or(Err(SubmitError::Failed))
    }

    /// Records the service's own proposals if the group is still at their epoch, and
    /// queues them for every member.
    pub async fn propose(&self, request: ProposalRequest) -> Result<Accepted, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::Propose(request, reply))
            .await
            .map_err(|_| SubmitError::Failed)?;
        rx.await.unwrap_or(Err(SubmitError::Failed))
    }

    /// Removes acknowledged messages from a device's queue; returns how many were there.
    pub async fn acknowledge(&self, device: DeviceId, seqs: Vec<i64>) -> Result<u32, StoreError> {
        self.enqueue_acknowledge(device, seqs).await?.await
    }

    /// Hands an acknowledgement to the writer and returns the wait for its answer.
    pub async fn enqueue_acknowledge(
        &self,
        device: DeviceId,
        seqs: Vec<i64>,
    ) -> Result<impl Future<Output = Result<u32, StoreError>> + Send + 'static, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::Ack {
            device,
            seqs,
            reply,
        })
        .await?;
        Ok(async move { rx.await.map_err(|_| StoreError::WriterStopped)? })
    }

    /// Drops a device's queue and group memberships (after revocation).
    pub async fn forget_device(&self, device: DeviceId) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::ForgetDevice { device, reply })
            .await?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Deletes messages accepted before `before_ms` and submission ids older than
    /// `ids_before_ms`; returns how many messages expired.
    pub async fn expire(&self, before_ms: i64, ids_before_ms: i64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send_op(WriteOp::Expire {
            before_ms,
            ids_before_ms,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    async fn send_op(&self, op: WriteOp) -> Result<(), StoreError> {
        self.writer
            .send(op)
            .await
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Reads a device's queue after `after_seq`, oldest first.
    pub async fn queue_page(
        &self,
        device: DeviceId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.seq, m.kind, m.group_id, COALESCE(u.name, ''), COALESCE(d.fingerprint, ''),
                    m.accepted_at, m.body
             FROM queue q JOIN messages m ON m.seq = q.seq
             LEFT JOIN devices d ON d.id = m.sender_device
             LEFT JOIN users u ON u.id = d.user_id
             WHERE q.device_id = $1 AND q.seq > $2 ORDER BY q.seq LIMIT $3",
        )
        .bind(device.0)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QueuedMessage {
                seq: r.get(0),
                kind: r.get(1),
                group_id: r.get(2),
                sender_user: r.get(3),
                sender_device: r.get(4),
                accepted_at_ms: r.get(5),
                body: r.get(6),
            })
            .collect())
    }

    /// Deliveries waiting in all queues, and when the oldest waiting message was accepted.
    pub async fn queue_stats(&self) -> Result<(i64, Option<i64>), StoreError> {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue")
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(m.accepted_at) FROM messages m WHERE m.refs > 0")
                .fetch_one(&self.pool)
                .await?;
        Ok((depth, oldest))
    }

    /// Figures for the metrics that only the database knows; cheap (indexed) queries.
    pub async fn metrics_figures(&self) -> Result<MetricsFigures, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(accepted_at) FROM messages")
            .fetch_one(&self.pool)
            .await?;
        let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM groups")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT CASE WHEN n = 0 THEN 0 WHEN n < 10 THEN 1 WHEN n < 50 THEN 2 ELSE 3 END AS bucket,
                    COUNT(*)
             FROM (SELECT d.id, (SELECT COUNT(*) FROM key_packages k
                                  WHERE k.device_id = d.id AND k.last_resort = 0) AS n
                   FROM devices d WHERE d.revoked_at IS NULL) AS per_device
             GROUP BY bucket",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut key_package_buckets = [0i64; 4];
        for row in rows {
            let bucket: i64 = row.get(0);
            if let Some(slot) = usize::try_from(bucket)
                .ok()
                .and_then(|b| key_package_buckets.get_mut(b))
            {
                *slot = row.get(1);
            }
        }
        Ok(MetricsFigures {
            oldest_accepted_ms: oldest,
            groups,
            key_package_buckets,
        })
    }

    /// Writes a consistent copy of the database to `path` while the daemon serves.
    pub async fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            return Err(StoreError::Unsupported(
                "online backups of a PostgreSQL database are taken with PostgreSQL's own tools \
                 (pg_dump, pg_basebackup): see docs/cookbook/backups.md",
            ));
        }
        let target = path.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many deliveries wait for a device.
    pub async fn queue_len(&self, device: DeviceId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE device_id = $1")
                .bind(device.0)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A group's epoch and serialized public state.
    pub async fn group(&self, group_id: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT epoch, state FROM groups WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
    }

    /// Registers a new group with one member; false when the id is taken.
    pub async fn create_group(
        &self,
        group_id: &[u8],
        epoch: u64,
        state: &[u8],
        creator: DeviceId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let inserted = sqlx::query(
            "INSERT INTO groups (group_id, epoch, state, created_at, creator_device)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (group_id) DO NOTHING",
        )
        .bind(group_id)
        .bind(epoch as i64)
        .bind(state)
        .bind(now_ms)
        .bind(creator.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO group_members (group_id, device_id) VALUES ($1, $2)")
            .bind(group_id)
            .bind(creator.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Groups `device` registered and is still a member of (`limits.groups_created_max`).
    pub async fn groups_created(&self, device: DeviceId) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM groups g JOIN group_members m
             ON m.group_id = g.group_id AND m.device_id = g.creator_device
             WHERE g.creator_device = $1",
        )
        .bind(device.0)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The sequence and epoch of a message id this device already submitted.
    pub async fn submission(
        &self,
        device: DeviceId,
        message_id: &[u8],
    ) -> Result<Option<(i64, u64)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, epoch FROM submissions WHERE sender_device = $1 AND message_id = $2",
        )
        .bind(device.0)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get::<i64, _>(1) as u64)))
    }

    /// Lets the writer finish what it was given, stops it, then closes the pool.
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        if self.writer.send(WriteOp::Shutdown(reply)).await.is_ok() {
            let _ = rx.await;
        }
        if let Some(handle) = self.writer_done.lock().await.take() {
            let _ = handle.await;
        }
        self.pool.close().await;
    }
}
