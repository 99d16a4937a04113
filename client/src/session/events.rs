//! The events a session publishes, and the bounded channel that carries them.
//!
//! Every event says what this device has stored or what its connection did; nothing is
//! announced before the local transaction that stored it committed. Serialised (as
//! `relais follow --json` prints them), each is one JSON object whose `type` names the
//! variant in snake case and whose other keys are the variant's fields, always present
//! (`null` when empty); `docs/reference/events.md` lists them. The names are stable: a new
//! field or variant may come, an existing one is not renamed.

use serde::Serialize;
use tokio::sync::mpsc;

/// Something that happened on this device, for a display to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A text someone sent, stored in the conversation's history (this user's other
    /// devices included; texts this device sent are not announced again).
    Message {
        /// The other user for a direct conversation, the group's name otherwise.
        conversation: String,
        /// The MLS group id, in hex: stable where names can change.
        group_id: String,
        /// The sending user as MLS authenticated it.
        sender: String,
        /// When the sender wrote it, by the sender's clock, in ms since the Unix epoch.
        sent_at_ms: i64,
        text: String,
    },
    /// A line this device wrote into a conversation's history itself, as `recv` shows
    /// it with `*` as sender: a membership change ("bob@… has a new device …"), and every
    /// other change the library records that way.
    Notice {
        conversation: String,
        group_id: String,
        /// When this device recorded it, in ms since the Unix epoch.
        at_ms: i64,
        text: String,
    },
    /// A commit changed a conversation's devices; its lines for people come as notices.
    Membership {
        conversation: String,
        group_id: String,
        /// The user whose device made the commit (this user for this device's own).
        actor: String,
        /// The group's epoch after the commit.
        epoch: u64,
        added: Vec<Member>,
        removed: Vec<Member>,
    },
    /// A contact the user verified became unverified (a device came or went), or verified.
    Verification { contact: String, verified: bool },
    /// A conversation appeared, was renamed, or this device left it (or was removed).
    Conversation {
        conversation: String,
        group_id: String,
        change: ConversationChange,
        /// `direct` or `group`.
        kind: String,
        /// The name before a rename.
        previous_name: Option<String>,
    },
    /// What became of an application message this device submitted.
    Delivery {
        conversation: String,
        group_id: String,
        /// The message id, in hex (a UUIDv7).
        message_id: String,
        state: DeliveryState,
        /// Why it failed, for people.
        reason: Option<String>,
    },
    /// The session's connection to the relay changed.
    Connection {
        state: ConnectionState,
        /// Why it was lost, an attempt failed, or the session ended.
        reason: Option<String>,
        /// The relay's error code when it refused or closed (`DEVICE_REVOKED`…).
        code: Option<String>,
        /// For `reconnecting`: the wait before the next attempt.
        retry_in_ms: Option<u64>,
    },
    /// Something the library noticed without failing (`Client::take_warnings`).
    Warning { text: String },
    /// The consumer fell behind and `missed` events were dropped; what they announced is
    /// in the history (`history`, `conversations`), which stays the record.
    Lagged { missed: u64 },
}

/// One device of a user, as a membership change names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user: String,
    /// The device's signature key, in hex.
    pub device_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationChange {
    /// Created here or joined (announced once its kind and name are known).
    Created,
    Renamed,
    /// This device left it or was removed from it: nothing more arrives there.
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The relay stored it for every recipient device.
    Sent,
    /// The connection broke before the relay answered: it stays in the outbox and is sent
    /// again, with the same id, after the next connection (the relay drops a second copy).
    Pending,
    /// The relay refused it (`reason` says why); it will not be sent again.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Authenticated; the outbox was sent again.
    Connected,
    /// The connection was lost; a `reconnecting` follows.
    Disconnected,
    /// The next attempt comes in `retry_in_ms`.
    Reconnecting,
    /// The session is over (shut down, or refused for good: a revoked device, a suspended
    /// account); the last event of the stream.
    Ended,
}

impl Event {
    pub(crate) fn connection(state: ConnectionState) -> Event {
        Event::Connection {
            state,
            reason: None,
            code: None,
            retry_in_ms: None,
        }
    }
}

/// Events that may wait for the consumer: a display that stalls for a few seconds while
/// a busy conversation streams loses none; one that stops reading loses events, not
/// history, and is told how many (`Lagged`).
pub(crate) const EVENTS_MAX: usize = 1024;

/// The sending side of the event channel: it never waits for the consumer, so a stalled
/// display cannot stall the connection (and with it the relay's queue for this device).
pub(crate) struct Emitter {
    sender: mpsc::Sender<Event>,
    missed: u64,
}

impl Emitter {
    pub(crate) fn new() -> (Emitter, mpsc::Receiver<Event>) {
        let (sender, receiver) = mpsc::channel(EVENTS_MAX);
        (Emitter { sender, missed: 0 }, receiver)
    }

    /// Queues `event`, or counts it as missed when the consumer is behind; the next event
    /// that finds room is preceded by one `Lagged` with the count.
    pub(crate) fn emit(&mut self, event: Event) {
        use mpsc::error::TrySendError;
        if self.missed > 0 {
            match self.sender.try_send(Event::Lagged {
                missed: self.missed,
            }) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if let Err(TrySendError::Full(_)) = self.sender.try_send(event) {
            self.missed += 1;
        }
    }

    /// Queues the last event, waiting for room since it says why the stream ends; gives up
    /// when `stop` completes first (the consumer asked the session to stop and reads no
    /// more).
    pub(crate) async fn last(&mut self, event: Event, stop: impl std::future::Future) {
        tokio::select! {
            _ = self.sender.send(event) => {}
            _ = stop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(n: usize) -> Event {
        Event::Warning {
            text: n.to_string(),
        }
    }

    #[tokio::test]
    async fn a_consumer_that_falls_behind_is_told_how_many_events_it_missed() {
        let (mut emitter, mut receiver) = Emitter::new();
        for n in 0..EVENTS_MAX + 5 {
            emitter.emit(warning(n));
        }
        for n in 0..10 {
            assert_eq!(receiver.recv().await, Some(warning(n)));
        }
        emitter.emit(warning(9_999));
        for n in 10..EVENTS_MAX {
            assert_eq!(receiver.recv().await, Some(warning(n)));
        }
        assert_eq!(receiver.recv().await, Some(Event::Lagged { missed: 5 }));
        assert_eq!(receiver.recv().await, Some(warning(9_999)));
        assert!(receiver.try_recv().is_err(), "nothing else");
    }

    #[test]
    fn events_serialise_with_their_type_and_every_field() {
        let event = Event::Delivery {
            conversation: "ops".into(),
            group_id: "0a0b".into(),
            message_id: "01".into(),
            state: DeliveryState::Failed,
            reason: Some("queue full".into()),
        };
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "delivery", "conversation": "ops", "group_id": "0a0b",
                "message_id": "01", "state": "failed", "reason": "queue full",
            })
        );
        let json =
            serde_json::to_value(Event::connection(ConnectionState::Connected)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "connection", "state": "connected", "reason": null, "code": null,
                "retry_in_ms": null,
            })
        );
    }
}
