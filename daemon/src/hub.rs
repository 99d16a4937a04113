//! The registry of online devices: where the writer pushes committed messages and where
//! revocation and shutdown reach open connections.
//!
//! Pushing never waits: each connection has a bounded outbox, and a device whose outbox is
//! full is disconnected (its messages stay queued in storage), so one slow reader can never
//! stall the writer or the other recipients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use relais_protocol::pb;
use tokio::sync::{Notify, mpsc};

use relais_core::{DeviceId, Refusal};

/// What a connection task is told to send: one per message, shared by all its online
/// recipients. An outbox slot is then a pointer, and tokio allocates a channel's first 32
/// slots when it makes it: 288 bytes for every connection instead of 1.8 KiB.
pub type Push = Arc<PushedMessage>;

/// A committed message as pushed.
#[derive(Debug)]
pub struct PushedMessage {
    pub seq: i64,
    /// The encoded frame.
    pub frame: Bytes,
    /// When the message became durable, for the relay latency metric.
    pub committed: std::time::Instant,
}

/// Tells one connection to close, and why.
#[derive(Debug, Default)]
pub struct Kick {
    notify: Notify,
    reason: Mutex<Option<pb::Error>>,
}

impl Kick {
    pub fn kick(&self, reason: pb::Error) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.notify.notify_one();
    }

    /// Waits until kicked; returns the reason.
    pub async fn kicked(&self) -> pb::Error {
        loop {
            if let Some(reason) = self.reason.lock().ok().and_then(|r| r.clone()) {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

struct Entry {
    conn_id: u64,
    outbox: mpsc::Sender<Push>,
    kick: Arc<Kick>,
    wake: Arc<Notify>,
    account_changed: Arc<Notify>,
}

/// Online devices, one connection each.
#[derive(Default)]
pub struct Hub {
    online: Mutex<HashMap<DeviceId, Entry>>,
    next_conn_id: AtomicU64,
}

/// A connection's registration; unregisters itself when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    device: DeviceId,
    conn_id: u64,
    /// Taken by the connection task, which reads it alongside its socket.
    pub outbox: Option<mpsc::Receiver<Push>>,
    pub kick: Arc<Kick>,
    /// Tells the connection to read its queue from storage again: on PostgreSQL, messages
    /// reach devices this way instead of through the outbox (`store/notify.rs`).
    pub wake: Arc<Notify>,
    /// Tells the connection to read its account again: an administrator changed it (an
    /// expiry, which the connection then waits for, or an expiry already past).
    pub account_changed: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut online) = self.hub.online.lock()
            && online
                .get(&self.device)
                .is_some_and(|e| e.conn_id == self.conn_id)
        {
            online.remove(&self.device);
        }
    }
}

impl Hub {
    /// Registers a device's connection, closing any older connection of the same device.
    pub fn register(self: &Arc<Self>, device: DeviceId, outbox_frames: usize) -> Registration {
        let (tx, rx) = mpsc::channel(outbox_frames);
        let kick = Arc::new(Kick::default());
        let wake = Arc::new(Notify::new());
        let account_changed = Arc::new(Notify::new());
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let previous = self.online.lock().ok().and_then(|mut online| {
            online.insert(
                device,
                Entry {
                    conn_id,
                    outbox: tx,
                    kick: kick.clone(),
                    wake: wake.clone(),
                    account_changed: account_changed.clone(),
                },
            )
        });
        if let Some(previous) = previous {
            // Not retryable (docs/reference/protocol.md): another instance of the device
            // runs, and reconnecting would only close that one in turn.
            previous
                .kick
                .kick(Refusal::Replaced { elsewhere: false }.to_wire());
        }
        Registration {
            hub: self.clone(),
            device,
            conn_id,
            outbox: Some(rx),
            kick,
            wake,
            account_changed,
        }
    }

    /// Pushes a committed message to whichever recipients are online.
    pub fn deliver(&self, recipients: &[DeviceId], seq: i64, frame: &Bytes) {
        let push = Arc::new(PushedMessage {
            seq,
            frame: frame.clone(),
            committed: std::time::Instant::now(),
        });
        let Ok(online) = self.online.lock() else {
            return;
        };
        for device in recipients {
            let Some(entry) = online.get(device) else {
                continue;
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = entry.outbox.try_send(push.clone()) {
                entry.kick.kick(Refusal::TooSlow.to_wire());
            }
        }
    }

    /// Tells whichever of `devices` are online to read their queues from storage.
    pub fn wake(&self, devices: &[DeviceId]) {
        if let Ok(online) = self.online.lock() {
            for device in devices {
                if let Some(entry) = online.get(device) {
                    entry.wake.notify_one();
                }
            }
        }
    }

    /// Tells every online device to read its queue from storage.
    pub fn wake_all(&self) {
        if let Ok(online) = self.online.lock() {
            for entry in online.values() {
                entry.wake.notify_one();
            }
        }
    }

    /// Closes a device's connection, if it is online.
    pub fn disconnect(&self, device: DeviceId, reason: pb::Error) {
        if let Ok(online) = self.online.lock()
            && let Some(entry) = online.get(&device)
        {
            entry.kick.kick(reason);
        }
    }

    /// Tells a device's connection, if it is online, that its account changed.
    pub fn account_changed(&self, device: DeviceId) {
        if let Ok(online) = self.online.lock()
            && let Some(entry) = online.get(&device)
        {
            entry.account_changed.notify_one();
        }
    }

    /// Closes every connection (shutdown).
    pub fn disconnect_all(&self, reason: pb::Error) {
        if let Ok(online) = self.online.lock() {
            for entry in online.values() {
                entry.kick.kick(reason.clone());
            }
        }
    }

    /// Whether a device has an open connection.
    pub fn is_online(&self, device: DeviceId) -> bool {
        self.online.lock().is_ok_and(|o| o.contains_key(&device))
    }

    /// How many devices are online.
    pub fn online(&self) -> usize {
        self.online.lock().map(|o| o.len()).unwrap_or(0)
    }
}
