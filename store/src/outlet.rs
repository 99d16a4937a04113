//! Where storage's news goes: what this node's writer committed, and what other nodes'
//! notifications name. The store defines the interface and the daemon implements it
//! (pushing to online devices, waking them, counting), so storage knows nothing of the
//! network or the metrics.

use bytes::Bytes;
use relais_core::{DeliveryKind, DeviceId};

/// A message as committed, with the devices it was queued for.
#[derive(Debug)]
pub struct CommittedMessage {
    pub seq: i64,
    pub kind: DeliveryKind,
    pub group_id: Vec<u8>,
    pub sender_user: String,
    pub sender_fingerprint: String,
    pub accepted_at_ms: i64,
    pub body: Bytes,
    pub recipients: Vec<DeviceId>,
}

/// What the online recipients of a committed message are to be told.
#[derive(Debug)]
pub enum Fanout {
    /// The message itself, pushed from memory: SQLite, where this writer is the only one,
    /// so nothing older can still be on its way.
    Push(CommittedMessage),
    /// Only that their queue has news: PostgreSQL, where pushing from here could overtake
    /// an older message another node committed and has not announced yet, so the
    /// recipients read storage after their cursor instead.
    Wake(Vec<DeviceId>),
}

impl Fanout {
    /// The devices this fan-out reaches.
    pub fn recipients(&self) -> &[DeviceId] {
        match self {
            Fanout::Push(message) => &message.recipients,
            Fanout::Wake(devices) => devices,
        }
    }
}

/// One batch's figures, for the metrics.
#[derive(Debug, Default, Clone)]
pub struct BatchFigures {
    /// Requests in the batch.
    pub operations: usize,
    /// From taking the batch to its commit (or rollback).
    pub seconds: f64,
    /// Queue entries added less those removed.
    pub queued: i64,
    /// Messages stored, by kind, in the order of `DeliveryKind::ALL`.
    pub stored: [u64; 4],
    pub epochs_advanced: u64,
    pub acknowledged: u64,
    pub expired: u64,
    /// Deliveries not queued because the recipient's queue was full.
    pub skipped: u64,
    /// Entries in every device's queue after the commit, all nodes together.
    pub queue_total: Option<i64>,
}

/// Why another node asks this one to close a device's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The device was revoked.
    Revoked,
    /// The device connected again, to another node.
    Replaced,
}

/// What the store tells the rest of the relay. Called from the writer's thread (on SQLite
/// its own, outside the runtime) and from the PostgreSQL listener: it must not block.
pub trait Outlet: Send + Sync + 'static {
    /// A batch committed: its figures, and its messages in sequence order.
    fn committed(&self, figures: &BatchFigures, fanouts: Vec<Fanout>);
    /// A batch failed and was rolled back; `figures` holds its size and duration only.
    fn rolled_back(&self, figures: &BatchFigures);
    /// The queue counter as read at start.
    fn queue_total(&self, entries: i64);
    /// Other nodes queued messages for these devices.
    fn wake(&self, devices: &[DeviceId]);
    /// Notifications may have been lost: every online device reads its queue.
    fn wake_all(&self);
    /// Another node asks this one to close a device's connection.
    fn disconnect(&self, device: DeviceId, why: Disconnect);
    /// The connection that receives other nodes' notifications was lost.
    fn notifications_lost(&self);
}

/// Nobody listens: for tools and tests that store without serving devices.
impl Outlet for () {
    fn committed(&self, _: &BatchFigures, _: Vec<Fanout>) {}
    fn rolled_back(&self, _: &BatchFigures) {}
    fn queue_total(&self, _: i64) {}
    fn wake(&self, _: &[DeviceId]) {}
    fn wake_all(&self) {}
    fn disconnect(&self, _: DeviceId, _: Disconnect) {}
    fn notifications_lost(&self) {}
}
