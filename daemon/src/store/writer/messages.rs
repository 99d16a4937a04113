//! Writer operations that store messages: application messages, commits with their
//! Welcomes, and the service's own proposals; each checks and updates the group first.

use bytes::Bytes;
use relais_protocol::pb;
use sqlx::{Row, SqliteConnection};

use super::{
    APPLICATION_EPOCH_WINDOW, Accepted, CommitRequest, Fanout, ProposalRequest, SubmitError,
    SubmitRequest, Writer,
};
use crate::store::DeviceId;

impl Writer {
    pub(super) async fn submit(
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

    pub(super) async fn commit(
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
        self.stats.epochs += 1;
        Ok(Ok(Accepted {
            seq,
            epoch: new_epoch,
            duplicate: false,
        }))
    }

    pub(super) async fn propose(
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
    pub(super) async fn store_message(
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
        self.stats.queued += recipients.len() as i64;
        let kind_index = match kind {
            pb::DeliveryKind::Commit => 1,
            pb::DeliveryKind::Welcome => 2,
            pb::DeliveryKind::Proposal => 3,
            _ => 0,
        };
        self.stats.kinds[kind_index] += 1;
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
