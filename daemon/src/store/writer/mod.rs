//! The single storage writer: group-commits concurrent submissions and acknowledgements.
//!
//! Requests queue on a bounded channel; the writer takes whatever is waiting (up to
//! `batch_max`), applies it in one `BEGIN IMMEDIATE` transaction, commits (one fsync under
//! `durability = full`), and only then answers the requesters and pushes the new messages
//! to online recipients. A refused request (conflict, full queue) does not abort the
//! batch; a database error rolls the whole batch back and fails every request in it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::Sqlite;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

mod messages;
mod queue;

pub use messages::delivery_frame;

use super::{DeviceId, StoreError, StoreOptions};
use crate::hub::Hub;

/// Past epochs in which an application message is still accepted: a member may send just
/// as a commit lands; clients keep this many past epochs' secrets (openmls `max_past_epochs`).
pub const APPLICATION_EPOCH_WINDOW: u64 = 4;

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

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown group")]
    UnknownGroup,
    #[error("the sending device is not a member of this group")]
    NotAMember,
    #[error("the message is for epoch {message} but the group is at epoch {current}")]
    WrongEpoch { message: u64, current: u64 },
    #[error("another commit already advanced the group to epoch {current}")]
    EpochConflict { current: u64 },
    #[error("a recipient's queue is full")]
    QueueFull,
    #[error("storage failure: {0}")]
    Storage(String),
}

pub(super) enum WriteOp {
    Submit(
        SubmitRequest,
        oneshot::Sender<Result<Accepted, SubmitError>>,
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

/// What to do once a batch is durable.
enum Outcome {
    Submitted(
        oneshot::Sender<Result<Accepted, SubmitError>>,
        Result<Accepted, SubmitError>,
    ),
    Acked(oneshot::Sender<Result<u32, StoreError>>, u32),
    Forgot(oneshot::Sender<Result<(), StoreError>>),
    Expired(oneshot::Sender<Result<u64, StoreError>>, u64),
}

/// A push to send after commit: the same frame for every recipient.
struct Fanout {
    recipients: Vec<DeviceId>,
    seq: i64,
    frame: Bytes,
}

struct Writer {
    options: StoreOptions,
    /// Queue lengths of devices seen since start, kept exact by this (only) writer.
    /// Loaded lazily so start-up does no work proportional to the queue.
    queue_lengths: HashMap<DeviceId, i64>,
    /// What the current batch changed, published to the metrics once it commits.
    stats: BatchStats,
}

/// Counts of one batch's effects; discarded if the batch rolls back.
#[derive(Debug, Default)]
struct BatchStats {
    queued: i64,
    kinds: [u64; 4],
    epochs: u64,
    acked: u64,
    expired: u64,
}

impl BatchStats {
    fn publish(&self) {
        use crate::metrics::{METRICS, MessageKind};
        METRICS.queue_deliveries.add(self.queued);
        for (kind, n) in MessageKind::ALL.iter().zip(self.kinds) {
            METRICS.messages_submitted.at(*kind as usize).add(n);
        }
        METRICS.epochs_advanced.add(self.epochs);
        METRICS.acknowledgements.add(self.acked);
        METRICS.retention_expired.add(self.expired);
    }
}

pub(super) async fn run(
    mut conn: PoolConnection<Sqlite>,
    mut rx: mpsc::Receiver<WriteOp>,
    options: StoreOptions,
    hub: Arc<Hub>,
) {
    let mut writer = Writer {
        options,
        queue_lengths: HashMap::new(),
        stats: BatchStats::default(),
    };
    // The queue's size is kept in a counter row, so start-up does not count the queue.
    match sqlx::query_scalar::<_, i64>("SELECT value FROM counters WHERE name = 'queue_deliveries'")
        .fetch_optional(&mut *conn)
        .await
    {
        Ok(n) => crate::metrics::METRICS.queue_deliveries.set(n.unwrap_or(0)),
        Err(e) => tracing::warn!(error = %e, "cannot read the queue counter for the metrics"),
    }
    let mut batch = Vec::with_capacity(writer.options.batch_max);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, writer.options.batch_max).await == 0 {
            return;
        }
        let shutdown = batch
            .iter()
            .position(|op| matches!(op, WriteOp::Shutdown(_)));
        let stop = shutdown.map(|i| batch.drain(i..).collect::<Vec<_>>());
        if !batch.is_empty() {
            writer
                .apply_batch(&mut conn, std::mem::take(&mut batch), &hub)
                .await;
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

impl Writer {
    async fn apply_batch(&mut self, conn: &mut SqliteConnection, batch: Vec<WriteOp>, hub: &Hub) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut fanouts = Vec::new();
        let started = std::time::Instant::now();
        let size = batch.len();
        self.stats = BatchStats::default();
        let result = self
            .apply_ops(conn, batch, &mut outcomes, &mut fanouts)
            .await;
        crate::metrics::METRICS
            .storage_commit
            .observe(started.elapsed().as_secs_f64());
        crate::metrics::METRICS
            .storage_batch_size
            .observe(size as f64);
        match result {
            Ok(()) => {
                self.stats.publish();
                for outcome in outcomes {
                    match outcome {
                        Outcome::Submitted(reply, result) => drop(reply.send(result)),
                        Outcome::Acked(reply, n) => drop(reply.send(Ok(n))),
                        Outcome::Forgot(reply) => drop(reply.send(Ok(()))),
                        Outcome::Expired(reply, n) => drop(reply.send(Ok(n))),
                    }
                }
                for fanout in fanouts {
                    hub.deliver(&fanout.recipients, fanout.seq, &fanout.frame);
                }
            }
            Err((error, unanswered)) => {
                crate::metrics::METRICS.error(
                    crate::metrics::ErrorKind::Storage,
                    crate::metrics::ErrorSource::Storage,
                );
                tracing::error!(%error, "storage batch failed and was rolled back");
                // Counts may be off after a rollback: reload them when next needed.
                self.queue_lengths.clear();
                let message = error.to_string();
                for outcome in outcomes.into_iter().chain(unanswered) {
                    match outcome {
                        Outcome::Submitted(reply, _) => {
                            drop(reply.send(Err(SubmitError::Storage(message.clone()))))
                        }
                        Outcome::Acked(reply, _) => drop(reply.send(Err(StoreError::Database(
                            sqlx::Error::Protocol(message.clone()),
                        )))),
                        Outcome::Forgot(reply) => drop(reply.send(Err(StoreError::Database(
                            sqlx::Error::Protocol(message.clone()),
                        )))),
                        Outcome::Expired(reply, _) => drop(reply.send(Err(StoreError::Database(
                            sqlx::Error::Protocol(message.clone()),
                        )))),
                    }
                }
            }
        }
    }

    /// Applies every op in one transaction. On error, returns the replies not yet recorded.
    async fn apply_ops(
        &mut self,
        conn: &mut SqliteConnection,
        batch: Vec<WriteOp>,
        outcomes: &mut Vec<Outcome>,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<(), (sqlx::Error, Vec<Outcome>)> {
        let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => return Err((e, batch.into_iter().filter_map(pending_outcome).collect())),
        };
        let mut ops = batch.into_iter();
        while let Some(op) = ops.next() {
            let step = match op {
                WriteOp::Submit(request, reply) => {
                    match self.submit(&mut tx, request, fanouts).await {
                        Ok(result) => Ok(Outcome::Submitted(reply, result)),
                        Err(e) => Err((e, Outcome::Submitted(reply, Err(SubmitError::QueueFull)))),
                    }
                }
                WriteOp::Commit(request, reply) => {
                    match self.commit(&mut tx, request, fanouts).await {
                        Ok(result) => Ok(Outcome::Submitted(reply, result)),
                        Err(e) => Err((e, Outcome::Submitted(reply, Err(SubmitError::QueueFull)))),
                    }
                }
                WriteOp::Propose(request, reply) => {
                    match self.propose(&mut tx, request, fanouts).await {
                        Ok(result) => Ok(Outcome::Submitted(reply, result)),
                        Err(e) => Err((e, Outcome::Submitted(reply, Err(SubmitError::QueueFull)))),
                    }
                }
                WriteOp::Ack {
                    device,
                    seqs,
                    reply,
                } => match self.ack(&mut tx, device, &seqs).await {
                    Ok(n) => Ok(Outcome::Acked(reply, n)),
                    Err(e) => Err((e, Outcome::Acked(reply, 0))),
                },
                WriteOp::ForgetDevice { device, reply } => {
                    match self.forget_device(&mut tx, device).await {
                        Ok(()) => Ok(Outcome::Forgot(reply)),
                        Err(e) => Err((e, Outcome::Forgot(reply))),
                    }
                }
                WriteOp::Expire {
                    before_ms,
                    ids_before_ms,
                    reply,
                } => match self.expire(&mut tx, before_ms, ids_before_ms).await {
                    Ok(n) => Ok(Outcome::Expired(reply, n)),
                    Err(e) => Err((e, Outcome::Expired(reply, 0))),
                },
                // `run` never passes a shutdown into a batch.
                WriteOp::Shutdown(reply) => {
                    let _ = reply.send(());
                    continue;
                }
            };
            match step {
                Ok(outcome) => outcomes.push(outcome),
                Err((e, outcome)) => {
                    let mut rest: Vec<Outcome> = vec![outcome];
                    rest.extend(ops.filter_map(pending_outcome));
                    fanouts.clear();
                    return Err((e, rest));
                }
            }
        }
        if self.stats.queued != 0
            && let Err(e) =
                sqlx::query("UPDATE counters SET value = value + ? WHERE name = 'queue_deliveries'")
                    .bind(self.stats.queued)
                    .execute(&mut *tx)
                    .await
        {
            fanouts.clear();
            return Err((e, Vec::new()));
        }
        if let Err(e) = tx.commit().await {
            fanouts.clear();
            return Err((e, Vec::new()));
        }
        Ok(())
    }
}

/// The reply slot of an op that was never applied, so it can be failed.
fn pending_outcome(op: WriteOp) -> Option<Outcome> {
    Some(match op {
        WriteOp::Submit(_, reply) | WriteOp::Commit(_, reply) | WriteOp::Propose(_, reply) => {
            Outcome::Submitted(reply, Err(SubmitError::QueueFull))
        }
        WriteOp::Ack { reply, .. } => Outcome::Acked(reply, 0),
        WriteOp::ForgetDevice { reply, .. } => Outcome::Forgot(reply),
        WriteOp::Expire { reply, .. } => Outcome::Expired(reply, 0),
        WriteOp::Shutdown(reply) => {
            let _ = reply.send(());
            return None;
        }
    })
}
