//! What the relay does with storage's news (`store::Outlet`): a committed message is
//! encoded once and pushed to its online recipients through the hub, or they are woken to
//! read storage; other nodes' revocations and reconnections close connections; every
//! batch's figures go to the metrics.

use bytes::Bytes;
use relais_core::{Refusal, RevokedBy};
use relais_protocol::pb;

use crate::hub::Hub;
use crate::metrics::{ErrorKind, ErrorSource, METRICS, MessageKind};
use relais_store::{BatchFigures, CommittedMessage, DeviceId, Disconnect, Fanout, Outlet};

impl Outlet for Hub {
    fn committed(&self, figures: &BatchFigures, fanouts: Vec<Fanout>) {
        batch_figures(figures);
        METRICS.queue_deliveries.add(figures.queued);
        if let Some(total) = figures.queue_total {
            METRICS.queue_deliveries.set(total);
        }
        for (kind, n) in MessageKind::ALL.iter().zip(figures.stored) {
            METRICS.messages_submitted.at(*kind as usize).add(n);
        }
        METRICS.epochs_advanced.add(figures.epochs_advanced);
        METRICS.acknowledgements.add(figures.acknowledged);
        METRICS.retention_expired.add(figures.expired);
        METRICS.queue_skipped.add(figures.skipped);
        for fanout in fanouts {
            match fanout {
                Fanout::Push(message) => {
                    self.deliver(&message.recipients, message.seq, &committed_frame(&message))
                }
                Fanout::Wake(devices) => self.wake(&devices),
            }
        }
    }

    fn rolled_back(&self, figures: &BatchFigures) {
        batch_figures(figures);
        METRICS.error(ErrorKind::Storage, ErrorSource::Storage);
    }

    fn queue_total(&self, entries: i64) {
        METRICS.queue_deliveries.set(entries);
    }

    fn wake(&self, devices: &[DeviceId]) {
        Hub::wake(self, devices);
    }

    fn wake_all(&self) {
        Hub::wake_all(self);
    }

    fn disconnect(&self, device: DeviceId, why: Disconnect) {
        let refusal = match why {
            Disconnect::Revoked => Refusal::DeviceRevoked(RevokedBy::Unknown),
            Disconnect::Replaced => Refusal::Replaced { elsewhere: true },
        };
        Hub::disconnect(self, device, refusal.to_wire());
    }

    fn notifications_lost(&self) {
        METRICS.error(ErrorKind::Storage, ErrorSource::Storage);
    }
}

fn batch_figures(figures: &BatchFigures) {
    METRICS.storage_commit.observe(figures.seconds);
    METRICS
        .storage_batch_size
        .observe(figures.operations as f64);
}

fn committed_frame(m: &CommittedMessage) -> Bytes {
    delivery_frame(
        m.seq,
        m.kind.wire(),
        &m.group_id,
        &m.sender_user,
        &m.sender_fingerprint,
        m.accepted_at_ms,
        &m.body,
    )
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
