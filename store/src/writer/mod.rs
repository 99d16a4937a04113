//! The single storage writer: group-commits concurrent submissions and acknowledgements.
//!
//! Requests queue on a bounded channel; the writer takes whatever is waiting (up to
//! `batch_max`, and acknowledgements only up to the rows they remove: `admit.rs`),
//! applies it in one `BEGIN IMMEDIATE` transaction, commits (one fsync under
//! `durability = full`), and only then answers the requesters and pushes the new messages
//! to online recipients. A refused request (conflict, full queue) does not abort the
//! batch; a database error rolls the whole batch back and fails every request in it.
//!
//! A batch is applied with set-based statements (`segment.rs`, `statements.rs`): a batch of
//! hundreds of messages and acknowledgements costs a few dozen statements, not ten per
//! operation. On SQLite the writer calls SQLite directly from a thread of its own
//! (`sql.rs`); on PostgreSQL each statement is a round trip to the server.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

mod admit;
mod queue;
mod segment;
mod sql;
mod statements;

use relais_core::ordering::QueueUsage;
use segment::SegmentOp;
pub(super) use sql::Conn;
use sql::{Arg, Error};

use super::backend::Backend;
use super::checkpoint::{self, WalPages};
use super::notify::{self, Node};
use relais_core::Refusal;

use super::outlet::{BatchFigures, Fanout, Outlet};
use super::{DeviceId, StoreError, StoreOptions};

/// An application message to store and fan out.
#[derive(Debug)]
pub struct SubmitRequest {
    pub sender: DeviceId,
    pub sender_user: String,
    pub sender_fingerprint: String,
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub body: Bytes,
    pub now_ms: i64,
}

/// A verified commit to apply if the group is still at `from_epoch`.
#[derive(Debug)]
pub struct CommitRequest {
    pub sender: DeviceId,
    pub sender_user: String,
    pub sender_fingerprint: String,
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub from_epoch: u64,
    /// The group's public state after the commit.
    pub state: Vec<u8>,
    /// The devices in the group after the commit (revoked ones already left out).
    pub members_after: Vec<DeviceId>,
    pub commit: Bytes,
    /// The Welcome and the devices it is for.
    pub welcome: Option<(Bytes, Vec<DeviceId>)>,
    pub now_ms: i64,
}

/// Removal proposals the service itself makes, with the group state that records them.
#[derive(Debug)]
pub struct ProposalRequest {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    /// The group's public state with the proposals queued.
    pub state: Vec<u8>,
    /// TLS-serialized PublicMessages, each one proposal.
    pub proposals: Vec<Bytes>,
    pub now_ms: i64,
}

/// A stored submission.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The message's sequence number; 0 when nobody else was in the group.
    pub seq: i64,
    /// The group's epoch after the submission.
    pub epoch: u64,
    /// The same message id was accepted before; nothing new was stored.
    pub duplicate: bool,
}

/// A stored application message, and the recipients it was not queued for.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub accepted: Accepted,
    /// Recipient devices skipped because their queue was full (`queue_messages_max` or
    /// `queue_bytes_max`) or the sender held its share of it; they will see a gap in the
    /// sender's messages.
    pub recipients_skipped: u32,
}

/// Why the writer did not store a submission: refused (the sender learns why), or the
/// batch failed (the cause is logged once, by the writer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the storage batch failed and was rolled back")]
    Failed,
}

pub(super) enum WriteOp {
    Submit(
        SubmitRequest,
        oneshot::Sender<Result<Submitted, SubmitError>>,
    ),
    Commit(
        CommitRequest,
        oneshot::Sender<Result<Accepted, SubmitError>>,
    ),
    Propose(
        ProposalRequest,
        oneshot::Sender<Result<Accepted, SubmitError>>,
    ),
    Ack {
        device: DeviceId,
        seqs: Vec<i64>,
        reply: oneshot::Sender<Result<u32, StoreError>>,
    },
    ForgetDevice {
        device: DeviceId,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Expire {
        before_ms: i64,
        ids_before_ms: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// An operation's result, sent to its requester once the batch is durable.
pub(super) enum Answer {
    Submitted(Result<Submitted, Refusal>),
    Acked(u32),
    Forgot,
    Expired(u64),
}

/// Where an operation's answer goes.
enum Reply {
    Submitted(oneshot::Sender<Result<Accepted, SubmitError>>),
    Message(oneshot::Sender<Result<Submitted, SubmitError>>),
    Acked(oneshot::Sender<Result<u32, StoreError>>),
    Forgot(oneshot::Sender<Result<(), StoreError>>),
    Expired(oneshot::Sender<Result<u64, StoreError>>),
}

/// A batch operation without its reply: either part of a segment or a barrier.
// Each lives for one batch and is moved, never copied: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
enum Work {
    Segment(SegmentOp),
    Forget(DeviceId),
    Expire { before_ms: i64, ids_before_ms: i64 },
}

struct Writer {
    options: StoreOptions,
    /// The checkpointer or the other nodes, by backend.
    beside: Beside,
    /// What waits in the queues of devices seen since start (messages and bytes, in all
    /// and per sender), kept exact by this (only) writer on SQLite, loaded lazily so
    /// start-up does no work proportional to the queue. On PostgreSQL other nodes change
    /// queues too: it holds only the current batch's.
    queue_usage: HashMap<DeviceId, QueueUsage>,
    /// What the current batch changed, published to the metrics once it commits.
    stats: BatchStats,
}

/// Whom the writer works beside: on SQLite the checkpointer, which tells it the WAL's
/// length; on PostgreSQL the other nodes, which its notifications name this node to.
/// It must match the connection's kind, so `Store::open` makes both in one match arm.
pub(super) enum Beside {
    Checkpointer(WalPages),
    Nodes(Node),
}

/// Counts of one batch's effects; discarded if the batch rolls back.
#[derive(Debug, Default)]
struct BatchStats {
    queued: i64,
    kinds: [u64; 4],
    epochs: u64,
    acked: u64,
    expired: u64,
    /// Deliveries not queued because the recipient's queue was full.
    skipped: u64,
    /// Devices whose queues were dropped (revoked), for the other nodes to disconnect.
    forgotten: Vec<DeviceId>,
    /// Every queue's entries after the batch, all nodes together, when it changed.
    queue_total: Option<i64>,
}

impl BatchStats {
    fn figures(&self, operations: usize, seconds: f64) -> BatchFigures {
        BatchFigures {
            operations,
            seconds,
            queued: self.queued,
            stored: self.kinds,
            epochs_advanced: self.epochs,
            acknowledged: self.acked,
            expired: self.expired,
            skipped: self.skipped,
            queue_total: self.queue_total,
        }
    }
}

pub(super) async fn run(
    pool: sqlx::AnyPool,
    mut conn: Conn,
    mut rx: mpsc::Receiver<WriteOp>,
    options: StoreOptions,
    beside: Beside,
    outlet: Arc<dyn Outlet>,
) {
    let mut writer = Writer {
        options,
        beside,
        queue_usage: HashMap::new(),
        stats: BatchStats::default(),
    };
    // The queue's size is kept in a counter row, so start-up does not count the queue.
    match conn
        .fetch_int(
            "SELECT value FROM counters WHERE name = 'queue_deliveries'",
            &[],
        )
        .await
    {
        Ok(n) => outlet.queue_total(n.unwrap_or(0)),
        Err(e) => tracing::warn!(error = %e, "cannot read the queue counter for the metrics"),
    }
    let mut deferred = admit::Deferred::default();
    let mut waiting = Vec::with_capacity(writer.options.batch_max);
    loop {
        if deferred.is_empty() {
            if rx.recv_many(&mut waiting, writer.options.batch_max).await == 0 {
                return;
            }
        } else {
            // Acknowledgements are waiting for this batch: take only what has arrived.
            while waiting.len() < deferred.room(writer.options.batch_max) {
                let Ok(op) = rx.try_recv() else { break };
                waiting.push(op);
            }
        }
        let mut batch = deferred.admit(writer.options.batch_max, &mut waiting);
        let shutdown = batch
            .iter()
            .position(|op| matches!(op, WriteOp::Shutdown(_)));
        let stop = shutdown.map(|i| batch.drain(i..).collect::<Vec<_>>());
        if !batch.is_empty() {
            if writer
                .apply_batch(&mut conn, std::mem::take(&mut batch), &*outlet)
                .await
            {
                if let (Beside::Checkpointer(wal), Conn::Sqlite(sqlite)) = (&writer.beside, &conn) {
                    checkpoint::restart_if_long(sqlite, wal);
                }
            } else {
                conn = healthy(&pool, conn).await;
            }
        }
        if let Some(rest) = stop {
            for op in rest {
                if let WriteOp::Shutdown(reply) = op {
                    let _ = reply.send(());
                }
            }
            return;
        }
    }
}

/// After a failed batch: the writer's connection if it still answers, otherwise a new
/// one (a PostgreSQL server restarted, or a network cut, ends a connection for good).
/// Waits until the database answers again; requests queue meanwhile, within the channel's
/// bound. SQLite's connection is to a file and stays.
async fn healthy(pool: &sqlx::AnyPool, conn: Conn) -> Conn {
    let Conn::Postgres(mut conn) = conn else {
        return conn;
    };
    if conn.ping().await.is_ok() {
        return Conn::Postgres(conn);
    }
    conn.close_on_drop();
    drop(conn);
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match pool.acquire().await {
            Ok(conn) => {
                tracing::warn!("the storage writer reconnected to the database");
                return Conn::Postgres(conn);
            }
            Err(error) => {
                tracing::error!(%error, "the storage writer cannot reach the database; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

impl Writer {
    /// Applies a batch and answers its requesters; false when it failed.
    async fn apply_batch(
        &mut self,
        conn: &mut Conn,
        batch: Vec<WriteOp>,
        outlet: &dyn Outlet,
    ) -> bool {
        let started = std::time::Instant::now();
        let size = batch.len();
        let (work, replies): (Vec<Work>, Vec<Reply>) = batch.into_iter().filter_map(split).unzip();
        self.stats = BatchStats::default();
        if conn.backend() == Backend::Postgres {
            self.queue_usage.clear();
        }
        let result = self.apply(conn, work).await;
        if result.is_err()
            && let Err(error) = conn.rollback().await
        {
            tracing::debug!(%error, "cannot roll the failed batch back");
        }
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok((answers, fanouts)) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    reply.send(answer);
                }
                outlet.committed(&self.stats.figures(size, seconds), fanouts);
            }
            Err(error) => {
                outlet.rolled_back(&BatchFigures {
                    operations: size,
                    seconds,
                    ..BatchFigures::default()
                });
                tracing::error!(%error, "storage batch failed and was rolled back");
                // Counts may be off after a rollback: reload them when next needed.
                self.queue_usage.clear();
                for reply in replies {
                    reply.fail();
                }
                return false;
            }
        }
        true
    }

    /// Applies every operation in one transaction, in order: runs of submissions and
    /// acknowledgements as set-based segments, removals and expiry on their own between
    /// them. Returns one answer per operation, and the pushes to make after commit.
    async fn apply(
        &mut self,
        conn: &mut Conn,
        work: Vec<Work>,
    ) -> Result<(Vec<Answer>, Vec<Fanout>), Error> {
        conn.begin().await?;
        let mut answers = Vec::with_capacity(work.len());
        let mut fanouts = Vec::new();
        let mut segment = Vec::new();
        for item in work {
            let barrier = match item {
                Work::Segment(op) => {
                    segment.push(op);
                    continue;
                }
                barrier => barrier,
            };
            if !segment.is_empty() {
                let ops = std::mem::take(&mut segment);
                self.run_segment(conn, ops, &mut answers, &mut fanouts)
                    .await?;
            }
            answers.push(match barrier {
                Work::Forget(device) => {
                    self.forget_device(conn, device).await?;
                    Answer::Forgot
                }
                Work::Expire {
                    before_ms,
                    ids_before_ms,
                } => Answer::Expired(self.expire(conn, before_ms, ids_before_ms).await?),
                Work::Segment(_) => unreachable!("segment operations are collected above"),
            });
        }
        if !segment.is_empty() {
            self.run_segment(conn, segment, &mut answers, &mut fanouts)
                .await?;
        }
        if self.stats.queued != 0 {
            // The total of all nodes, read back in the same transaction, is what the gauge
            // shows (this node's changes alone would miss the other nodes').
            let total = conn
                .fetch_one_int(
                    "UPDATE counters SET value = value + $1 WHERE name = 'queue_deliveries' \
                     RETURNING value",
                    &[Arg::Int(self.stats.queued)],
                )
                .await?;
            self.stats.queue_total = Some(total);
        }
        if let (Beside::Nodes(node), Conn::Postgres(pg)) = (&self.beside, &mut *conn) {
            let mut recipients: Vec<DeviceId> = fanouts
                .iter()
                .flat_map(|f| f.recipients().iter().copied())
                .collect();
            recipients.sort_unstable();
            recipients.dedup();
            notify::send(pg, *node, &recipients, &self.stats.forgotten).await?;
        }
        conn.commit().await?;
        Ok((answers, fanouts))
    }
}

/// Separates an operation from its reply; `run` never passes a shutdown into a batch.
fn split(op: WriteOp) -> Option<(Work, Reply)> {
    Some(match op {
        WriteOp::Submit(r, reply) => (Work::Segment(SegmentOp::Submit(r)), Reply::Message(reply)),
        WriteOp::Commit(r, reply) => (Work::Segment(SegmentOp::Commit(r)), Reply::Submitted(reply)),
        WriteOp::Propose(r, reply) => (
            Work::Segment(SegmentOp::Propose(r)),
            Reply::Submitted(reply),
        ),
        WriteOp::Ack {
            device,
            seqs,
            reply,
        } => (
            Work::Segment(SegmentOp::Ack { device, seqs }),
            Reply::Acked(reply),
        ),
        WriteOp::ForgetDevice { device, reply } => (Work::Forget(device), Reply::Forgot(reply)),
        WriteOp::Expire {
            before_ms,
            ids_before_ms,
            reply,
        } => (
            Work::Expire {
                before_ms,
                ids_before_ms,
            },
            Reply::Expired(reply),
        ),
        WriteOp::Shutdown(reply) => {
            let _ = reply.send(());
            return None;
        }
    })
}

impl Reply {
    /// Sends the answer; a requester that has gone away (a closed connection) is fine.
    fn send(self, answer: Answer) {
        match (self, answer) {
            (Reply::Submitted(reply), Answer::Submitted(result)) => {
                drop(reply.send(result.map(|s| s.accepted).map_err(SubmitError::from)))
            }
            (Reply::Message(reply), Answer::Submitted(result)) => {
                drop(reply.send(result.map_err(SubmitError::from)))
            }
            (Reply::Acked(reply), Answer::Acked(n)) => drop(reply.send(Ok(n))),
            (Reply::Forgot(reply), Answer::Forgot) => drop(reply.send(Ok(()))),
            (Reply::Expired(reply), Answer::Expired(n)) => drop(reply.send(Ok(n))),
            (reply, _) => {
                tracing::error!(
                    "the storage writer answered a request with the wrong kind of answer"
                );
                reply.fail();
            }
        }
    }

    /// Tells the requester its batch failed; the writer has logged why.
    fn fail(self) {
        match self {
            Reply::Submitted(reply) => drop(reply.send(Err(SubmitError::Failed))),
            Reply::Message(reply) => drop(reply.send(Err(SubmitError::Failed))),
            Reply::Acked(reply) => drop(reply.send(Err(StoreError::BatchFailed))),
            Reply::Forgot(reply) => drop(reply.send(Err(StoreError::BatchFailed))),
            Reply::Expired(reply) => drop(reply.send(Err(StoreError::BatchFailed))),
        }
    }
}
