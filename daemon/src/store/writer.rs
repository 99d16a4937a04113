//! The single storage writer: group-commits concurrent submissions and acknowledgements.
//!
//! Requests queue on a bounded channel; the writer takes whatever is waiting (up to
//! `batch_max`), applies it in one `BEGIN IMMEDIATE` transaction, commits (one fsync under
//! `durability = full`), and only then answers the requesters and pushes the new messages
//! to online recipients. A refused request (conflict, full queue) does not abort the
//! batch; a database error rolls the whole batch back and fails every request in it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use relais_protocol::pb;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::Sqlite;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

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
    };
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
        let result = self
            .apply_ops(conn, batch, &mut outcomes, &mut fanouts)
            .await;
        match result {
            Ok(()) => {
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
        if let Err(e) = tx.commit().await {
            fanouts.clear();
            return Err((e, Vec::new()));
        }
        Ok(())
    }

    async fn submit(
        &mut self,
        tx: &mut SqliteConnection,
        request: SubmitRequest,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<Result<Accepted, SubmitError>, sqlx::Error> {
        if let Some(previous) = submission(tx, request.sender, &request.message_id).await? {
            return Ok(Ok(previous));
        }
        let Some(current) = group_epoch(tx, &request.group_id).await? else {
            return Ok(Err(SubmitError::UnknownGroup));
        };
        if request.epoch > current || request.epoch + APPLICATION_EPOCH_WINDOW < current {
            return Ok(Err(SubmitError::WrongEpoch {
                message: request.epoch,
                current,
            }));
        }
        let members = group_members(tx, &request.group_id).await?;
        if !members.contains(&request.sender) {
            return Ok(Err(SubmitError::NotAMember));
        }
        let recipients: Vec<DeviceId> = members
            .into_iter()
            .filter(|d| *d != request.sender)
            .collect();
        if !self.has_room(tx, &recipients).await? {
            return Ok(Err(SubmitError::QueueFull));
        }
        let seq = self
            .store_message(
                tx,
                pb::DeliveryKind::Application,
                &request.group_id,
                Some(request.sender),
                request.now_ms,
                &request.body,
                &recipients,
            )
            .await?;
        record_submission(
            tx,
            request.sender,
            &request.message_id,
            seq,
            current,
            request.now_ms,
        )
        .await?;
        if seq != 0 {
            fanouts.push(Fanout {
                frame: delivery_frame(
                    seq,
                    pb::DeliveryKind::Application,
                    &request.group_id,
                    &request.sender_user,
                    &request.sender_fingerprint,
                    request.now_ms,
                    &request.body,
                ),
                recipients,
                seq,
            });
        }
        Ok(Ok(Accepted {
            seq,
            epoch: current,
            duplicate: false,
        }))
    }

    async fn commit(
        &mut self,
        tx: &mut SqliteConnection,
        request: CommitRequest,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<Result<Accepted, SubmitError>, sqlx::Error> {
        if let Some(previous) = submission(tx, request.sender, &request.message_id).await? {
            return Ok(Ok(previous));
        }
        let new_epoch = request.from_epoch + 1;
        let updated =
            sqlx::query("UPDATE groups SET epoch = ?, state = ? WHERE group_id = ? AND epoch = ?")
                .bind(new_epoch as i64)
                .bind(&request.state)
                .bind(&request.group_id)
                .bind(request.from_epoch as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            return Ok(Err(match group_epoch(tx, &request.group_id).await? {
                None => SubmitError::UnknownGroup,
                Some(current) => SubmitError::EpochConflict { current },
            }));
        }
        let before = group_members(tx, &request.group_id).await?;
        let recipients: Vec<DeviceId> = before
            .iter()
            .copied()
            .filter(|d| *d != request.sender)
            .collect();
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(&request.group_id)
            .execute(&mut *tx)
            .await?;
        for device in &request.members_after {
            sqlx::query("INSERT OR IGNORE INTO group_members (group_id, device_id) VALUES (?, ?)")
                .bind(&request.group_id)
                .bind(device.0)
                .execute(&mut *tx)
                .await?;
        }
        // Handshake messages are never refused for a full queue: a member that misses a
        // commit could never read the group again.
        let seq = self
            .store_message(
                tx,
                pb::DeliveryKind::Commit,
                &request.group_id,
                Some(request.sender),
                request.now_ms,
                &request.commit,
                &recipients,
            )
            .await?;
        if seq != 0 {
            fanouts.push(Fanout {
                frame: delivery_frame(
                    seq,
                    pb::DeliveryKind::Commit,
                    &request.group_id,
                    &request.sender_user,
                    &request.sender_fingerprint,
                    request.now_ms,
                    &request.commit,
                ),
                recipients,
                seq,
            });
        }
        if let Some((welcome, welcomed)) = &request.welcome {
            let welcome_seq = self
                .store_message(
                    tx,
                    pb::DeliveryKind::Welcome,
                    &request.group_id,
                    Some(request.sender),
                    request.now_ms,
                    welcome,
                    welcomed,
                )
                .await?;
            if welcome_seq != 0 {
                fanouts.push(Fanout {
                    frame: delivery_frame(
                        welcome_seq,
                        pb::DeliveryKind::Welcome,
                        &request.group_id,
                        &request.sender_user,
                        &request.sender_fingerprint,
                        request.now_ms,
                        welcome,
                    ),
                    recipients: welcomed.clone(),
                    seq: welcome_seq,
                });
            }
        }
        record_submission(
            tx,
            request.sender,
            &request.message_id,
            seq,
            new_epoch,
            request.now_ms,
        )
        .await?;
        Ok(Ok(Accepted {
            seq,
            epoch: new_epoch,
            duplicate: false,
        }))
    }

    async fn propose(
        &mut self,
        tx: &mut SqliteConnection,
        request: ProposalRequest,
        fanouts: &mut Vec<Fanout>,
    ) -> Result<Result<Accepted, SubmitError>, sqlx::Error> {
        let updated = sqlx::query("UPDATE groups SET state = ? WHERE group_id = ? AND epoch = ?")
            .bind(&request.state)
            .bind(&request.group_id)
            .bind(request.epoch as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            return Ok(Err(match group_epoch(tx, &request.group_id).await? {
                None => SubmitError::UnknownGroup,
                Some(current) => SubmitError::EpochConflict { current },
            }));
        }
        let recipients = group_members(tx, &request.group_id).await?;
        let mut last = 0;
        for proposal in &request.proposals {
            let seq = self
                .store_message(
                    tx,
                    pb::DeliveryKind::Proposal,
                    &request.group_id,
                    None,
                    request.now_ms,
                    proposal,
                    &recipients,
                )
                .await?;
            if seq != 0 {
                fanouts.push(Fanout {
                    frame: delivery_frame(
                        seq,
                        pb::DeliveryKind::Proposal,
                        &request.group_id,
                        "",
                        "",
                        request.now_ms,
                        proposal,
                    ),
                    recipients: recipients.clone(),
                    seq,
                });
            }
            last = seq;
        }
        Ok(Ok(Accepted {
            seq: last,
            epoch: request.epoch,
            duplicate: false,
        }))
    }

    /// Stores one message body and queues a reference for each recipient; 0 if none.
    #[allow(clippy::too_many_arguments)]
    async fn store_message(
        &mut self,
        tx: &mut SqliteConnection,
        kind: pb::DeliveryKind,
        group_id: &[u8],
        sender: Option<DeviceId>,
        now_ms: i64,
        body: &[u8],
        recipients: &[DeviceId],
    ) -> Result<i64, sqlx::Error> {
        if recipients.is_empty() {
            return Ok(0);
        }
        let seq: i64 = sqlx::query(
            "INSERT INTO messages (kind, group_id, sender_device, accepted_at, body, refs)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(kind as i32)
        .bind(group_id)
        .bind(sender.map(|d| d.0))
        .bind(now_ms)
        .bind(body)
        .bind(recipients.len() as i64)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        for device in recipients {
            sqlx::query("INSERT INTO queue (device_id, seq) VALUES (?, ?)")
                .bind(device.0)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            if let Some(n) = self.queue_lengths.get_mut(device) {
                *n += 1;
            }
        }
        Ok(seq)
    }

    async fn has_room(
        &mut self,
        tx: &mut SqliteConnection,
        recipients: &[DeviceId],
    ) -> Result<bool, sqlx::Error> {
        for device in recipients {
            let len = match self.queue_lengths.get(device) {
                Some(n) => *n,
                None => {
                    let n: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE device_id = ?")
                            .bind(device.0)
                            .fetch_one(&mut *tx)
                            .await?;
                    self.queue_lengths.insert(*device, n);
                    n
                }
            };
            if len >= self.options.queue_messages_max {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn ack(
        &mut self,
        tx: &mut SqliteConnection,
        device: DeviceId,
        seqs: &[i64],
    ) -> Result<u32, sqlx::Error> {
        let mut removed = 0u32;
        let unique: HashSet<i64> = seqs.iter().copied().collect();
        for seq in unique {
            let deleted = sqlx::query("DELETE FROM queue WHERE device_id = ? AND seq = ?")
                .bind(device.0)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                continue;
            }
            removed += 1;
            sqlx::query("UPDATE messages SET refs = refs - 1 WHERE seq = ?")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM messages WHERE seq = ? AND refs <= 0")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(n) = self.queue_lengths.get_mut(&device) {
            *n -= i64::from(removed);
        }
        Ok(removed)
    }

    async fn forget_device(
        &mut self,
        tx: &mut SqliteConnection,
        device: DeviceId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE messages SET refs = refs - 1 WHERE seq IN (SELECT seq FROM queue WHERE device_id = ?)")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM queue WHERE device_id = ?")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM messages WHERE refs <= 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE device_id = ?")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        self.queue_lengths.remove(&device);
        Ok(())
    }

    async fn expire(
        &mut self,
        tx: &mut SqliteConnection,
        before_ms: i64,
        ids_before_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE accepted_at < ?)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let expired = sqlx::query("DELETE FROM messages WHERE accepted_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM submissions WHERE accepted_at < ?")
            .bind(ids_before_ms)
            .execute(&mut *tx)
            .await?;
        if expired > 0 {
            self.queue_lengths.clear();
        }
        Ok(expired)
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

async fn submission(
    tx: &mut SqliteConnection,
    sender: DeviceId,
    message_id: &[u8],
) -> Result<Option<Accepted>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT seq, epoch FROM submissions WHERE sender_device = ? AND message_id = ?",
    )
    .bind(sender.0)
    .bind(message_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| Accepted {
        seq: r.get(0),
        epoch: r.get::<i64, _>(1) as u64,
        duplicate: true,
    }))
}

async fn record_submission(
    tx: &mut SqliteConnection,
    sender: DeviceId,
    message_id: &[u8],
    seq: i64,
    epoch: u64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO submissions (sender_device, message_id, seq, epoch, accepted_at) VALUES (?, ?, ?, ?, ?)")
        .bind(sender.0)
        .bind(message_id)
        .bind(seq)
        .bind(epoch as i64)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn group_epoch(
    tx: &mut SqliteConnection,
    group_id: &[u8],
) -> Result<Option<u64>, sqlx::Error> {
    let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM groups WHERE group_id = ?")
        .bind(group_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(epoch.map(|e| e as u64))
}

async fn group_members(
    tx: &mut SqliteConnection,
    group_id: &[u8],
) -> Result<Vec<DeviceId>, sqlx::Error> {
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT device_id FROM group_members WHERE group_id = ?")
            .bind(group_id)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().map(DeviceId).collect())
}

/// Encodes the push frame for a stored message: identical for every recipient.
pub fn delivery_frame(
    seq: i64,
    kind: pb::DeliveryKind,
    group_id: &[u8],
    sender_user: &str,
    sender_device: &str,
    accepted_at_ms: i64,
    body: &[u8],
) -> Bytes {
    Bytes::from(relais_protocol::frame::push(pb::push::Body::Delivery(
        pb::Delivery {
            sequence: seq as u64,
            kind: kind as i32,
            group_id: group_id.to_vec(),
            sender_user: sender_user.to_owned(),
            sender_device: sender_device.to_owned(),
            accepted_at_ms,
            mls_message: body.to_vec(),
        },
    )))
}
