//! The session's task: it owns the [`Client`], processes pushes as they arrive, runs the
//! commands handed to it one at a time, acknowledges as `acks.rs` says, keeps the
//! connection alive and reconnects, and after each step announces what was stored.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use relais_protocol::pb;
use tokio::sync::{mpsc, oneshot};

use super::backoff::{Backoff, HEALTHY};
use super::events::{ConnectionState, Emitter, Event};
use super::journal::Committed;
use super::view::View;
use crate::{Client, ClientError, ErrorCode};

/// After this long without a frame from the relay, the session pings it: a connection
/// that died without a word (a laptop's sleep, a dropped route) is noticed within
/// `SILENCE + PONG_WAIT` rather than at the next send; and a connection that carries a
/// frame this often keeps NAT and firewall entries alive.
const SILENCE: Duration = Duration::from_secs(30);
/// How long the relay has to answer a ping before the connection is given up.
const PONG_WAIT: Duration = Duration::from_secs(10);
/// How long a stopping session waits for the relay to confirm its acknowledgements: a
/// person who pressed Ctrl-C waits no longer, and what was not confirmed only comes again
/// (and is recognised as processed).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A command: something to do with the client, on the session's task.
pub(crate) type Job =
    Box<dyn for<'c> FnOnce(&'c mut Client) -> Pin<Box<dyn Future<Output = ()> + 'c>> + Send>;

/// The connection as the session sees it.
enum Link {
    /// Connected at `since`; `pinged` when a ping awaits an answer.
    Up {
        since: Instant,
        pinged: Option<Instant>,
    },
    /// Waiting until `retry` before the next attempt.
    Down { retry: Instant },
}

/// What woke the session.
enum Step {
    Stop,
    Job(Job),
    Delivery(Result<Option<pb::Delivery>, ClientError>),
    Retry,
}

pub(crate) struct Task {
    pub(crate) client: Client,
    pub(crate) jobs: mpsc::Receiver<Job>,
    /// Completes (sent or dropped) when the session is to stop.
    pub(crate) stop: oneshot::Receiver<()>,
    pub(crate) events: Emitter,
    view: View,
    link: Link,
    backoff: Backoff,
}

impl Task {
    pub(crate) fn new(
        client: Client,
        jobs: mpsc::Receiver<Job>,
        stop: oneshot::Receiver<()>,
        events: Emitter,
    ) -> Task {
        Task {
            client,
            jobs,
            stop,
            events,
            view: View::default(),
            link: Link::Down {
                retry: Instant::now(),
            },
            backoff: Backoff::default(),
        }
    }

    /// Runs until stopped or refused for good; returns the refusal that ended it.
    pub(crate) async fn run(mut self) -> Result<(), ClientError> {
        self.client.live.attach();
        let ended = match self.start().await {
            Ok(()) => self.serve().await,
            Err(e) => Some(e),
        };
        self.finish(ended).await
    }

    /// Loads what is stored, takes over the client's connection if it has one, and
    /// announces what was waiting (as `recv` would show it).
    async fn start(&mut self) -> Result<(), ClientError> {
        let conversations = self.client.state_conversations().await?;
        let verified = self.client.verification_states().await?;
        self.view = View::new(conversations, verified);
        if self.client.is_connected() {
            self.up();
        }
        self.announce(false).await;
        Ok(())
    }

    /// The loop: one step at a time, until a stop or a refusal that ends the session.
    async fn serve(&mut self) -> Option<ClientError> {
        loop {
            let step = self.next_step().await;
            let outcome = match step {
                Step::Stop => return None,
                Step::Job(job) => self.run_job(job).await,
                Step::Delivery(Ok(Some(delivery))) => self.take(delivery).await,
                Step::Delivery(Ok(None)) => self.on_timer().await,
                Step::Delivery(Err(e)) => Err(e),
                Step::Retry => self.reconnect().await,
            };
            if let Err(e) = outcome {
                if ends_session(&e) {
                    return Some(e);
                }
                self.lost(&e).await;
            }
        }
    }

    /// Runs a command, then announces what it stored. A command that lost the connection
    /// (its caller has the error) leaves the session to reconnect; one that connected
    /// while the session waited to (`Client::connect` through [`super::SessionHandle::run`])
    /// is taken as connected.
    async fn run_job(&mut self, job: Job) -> Result<(), ClientError> {
        job(&mut self.client).await;
        self.announce(true).await;
        match self.link {
            Link::Up { .. } if !self.client.is_connected() => Err(ClientError::Network(
                "the connection was lost during a command".into(),
            )),
            Link::Down { .. } if self.client.is_connected() => {
                self.up();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Waits for whatever comes first: a stop, a command, a push (or the time to
    /// acknowledge or ping), or the time to reconnect.
    async fn next_step(&mut self) -> Step {
        match self.link {
            Link::Up { .. } => {
                let wait = self.wake().saturating_duration_since(Instant::now());
                tokio::select! {
                    biased;
                    _ = &mut self.stop => Step::Stop,
                    job = self.jobs.recv() => job.map_or(Step::Stop, Step::Job),
                    delivery = self.client.next_delivery(wait) => Step::Delivery(delivery),
                }
            }
            Link::Down { retry } => {
                tokio::select! {
                    biased;
                    _ = &mut self.stop => Step::Stop,
                    job = self.jobs.recv() => job.map_or(Step::Stop, Step::Job),
                    _ = tokio::time::sleep_until(retry.into()) => Step::Retry,
                }
            }
        }
    }

    /// When the session must look again without a push: to acknowledge, or to ping.
    fn wake(&mut self) -> Instant {
        let pinged = match self.link {
            Link::Up { pinged, .. } => pinged,
            Link::Down { .. } => None,
        };
        let heard = self
            .client
            .connection()
            .map_or_else(|_| Instant::now(), |c| c.last_heard());
        let mut wake = match pinged {
            Some(pinged) => pinged + PONG_WAIT,
            None => heard + SILENCE,
        };
        if let Some(ack) = self.client.acks.wake() {
            wake = wake.min(ack);
        }
        wake
    }

    /// Processes a push, then announces what it stored.
    async fn take(&mut self, delivery: pb::Delivery) -> Result<(), ClientError> {
        let result = self.client.take_delivery(delivery).await;
        // A failure stored nothing (the delivery comes again on the next connection), but
        // may follow other work worth announcing.
        self.announce(false).await;
        result
    }

    /// No push came in time: acknowledge what is due, and check on a silent relay.
    async fn on_timer(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        if self.client.acks.wake().is_some_and(|due| due <= now) {
            self.client.send_acks().await?;
        }
        let Link::Up { pinged, .. } = &mut self.link else {
            return Ok(());
        };
        let heard = self.client.connection()?.last_heard();
        match *pinged {
            Some(sent) if heard >= sent => *pinged = None,
            Some(sent) if now >= sent + PONG_WAIT => {
                return Err(ClientError::Network(format!(
                    "the relay did not answer a ping within {} s",
                    PONG_WAIT.as_secs()
                )));
            }
            Some(_) => {}
            None if now >= heard + SILENCE => {
                *pinged = Some(now);
                let result = self.client.connection()?.ping().await;
                self.client.settle(result)?;
            }
            None => {}
        }
        Ok(())
    }

    /// Connects again; on success sends the outbox again (`Client::connect` does) and
    /// announces what that stored.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        match self.client.connect().await {
            Ok(()) => {
                self.up();
                self.announce(false).await;
                Ok(())
            }
            Err(e) => {
                // Connected but a later step failed: start over on a fresh connection.
                self.client.disconnect().await;
                if ends_session(&e) {
                    return Err(e);
                }
                self.retry_later(Some(&e));
                Ok(())
            }
        }
    }

    fn up(&mut self) {
        self.link = Link::Up {
            since: Instant::now(),
            pinged: None,
        };
        self.events
            .emit(Event::connection(ConnectionState::Connected));
    }

    /// The connection failed (or a delivery could not be stored, which leaves it to come
    /// again on a new connection): drop it and try again later.
    async fn lost(&mut self, error: &ClientError) {
        self.client.disconnect().await;
        if let Link::Up { since, .. } = self.link {
            if since.elapsed() >= HEALTHY {
                self.backoff.reset();
            }
            self.events.emit(Event::Connection {
                state: ConnectionState::Disconnected,
                reason: Some(error.to_string()),
                code: code(error),
                retry_in_ms: None,
            });
        }
        self.retry_later(None);
    }

    /// Schedules the next attempt, and says when (and, for a failed attempt, why).
    fn retry_later(&mut self, failed: Option<&ClientError>) {
        let wait = self.backoff.next(rand::random::<f64>());
        self.link = Link::Down {
            retry: Instant::now() + wait,
        };
        self.events.emit(Event::Connection {
            state: ConnectionState::Reconnecting,
            reason: failed.map(ToString::to_string),
            code: failed.and_then(code),
            retry_in_ms: Some(wait.as_millis() as u64),
        });
    }

    /// Announces what was stored since the last look: conversations created or renamed,
    /// membership changes and delivery answers, history rows, departures, verification
    /// changes and warnings. `after_command` also rechecks verification, which a command
    /// (a confirmed safety number) may have changed.
    async fn announce(&mut self, after_command: bool) {
        if let Err(e) = self.try_announce(after_command).await {
            // Unannounced rows stay unshown, and are announced at the next look.
            self.events.emit(Event::Warning {
                text: format!("cannot read what was stored: {e}"),
            });
        }
        for text in self.client.take_warnings() {
            self.events.emit(Event::Warning { text });
        }
    }

    async fn try_announce(&mut self, after_command: bool) -> Result<(), ClientError> {
        let conversations = self.client.state_conversations().await?;
        let changed = self.view.conversations(conversations);
        let mut recheck = after_command || !changed.is_empty();
        for event in changed {
            self.events.emit(event);
        }
        let (journal, dropped) = self.client.live.take();
        if dropped > 0 {
            self.events.emit(Event::Warning {
                text: format!("{dropped} changes were not announced; the history has them"),
            });
        }
        let own_key = hex::encode(self.client.public_key());
        let mut removed_here = Vec::new();
        for entry in journal {
            let (Committed::Membership { group_id, .. } | Committed::Delivery { group_id, .. }) =
                &entry;
            if self.client.is_own_devices_group(group_id).await? {
                // This user's own group of devices (`transfer.rs`) is no conversation.
                continue;
            }
            if let Committed::Membership {
                group_id, removed, ..
            } = &entry
            {
                recheck = true;
                if removed.iter().any(|m| m.device_key == own_key) {
                    removed_here.push(group_id.clone());
                }
            }
            let event = self.journal_event(entry);
            self.events.emit(event);
        }
        for row in self.client.state.take_unshown().await? {
            let (conversation, group_id) =
                (self.view.name(&row.group_id), hex::encode(&row.group_id));
            self.events.emit(if row.sender.is_empty() {
                Event::Notice {
                    conversation,
                    group_id,
                    at_ms: row.sent_at_ms,
                    text: row.text,
                }
            } else {
                Event::Message {
                    conversation,
                    group_id,
                    sender: row.sender,
                    sent_at_ms: row.sent_at_ms,
                    text: row.text,
                }
            });
        }
        for group_id in removed_here {
            if let Some(event) = self.view.removed(&group_id) {
                self.events.emit(event);
            }
        }
        if recheck {
            let states = self.client.verification_states().await?;
            for event in self.view.verification(states) {
                self.events.emit(event);
            }
        }
        Ok(())
    }

    fn journal_event(&self, entry: Committed) -> Event {
        match entry {
            Committed::Membership {
                group_id,
                actor,
                epoch,
                added,
                removed,
            } => Event::Membership {
                conversation: self.view.name(&group_id),
                group_id: hex::encode(&group_id),
                actor,
                epoch,
                added,
                removed,
            },
            Committed::Delivery {
                group_id,
                message_id,
                state,
                reason,
            } => Event::Delivery {
                conversation: self.view.name(&group_id),
                group_id: hex::encode(&group_id),
                message_id: hex::encode(message_id),
                state,
                reason,
            },
        }
    }

    /// Ends the session: on a stop, acknowledges what was processed and waits for the
    /// relay to confirm, so that nothing comes twice; then closes the connection and the
    /// database, and says why it ended.
    async fn finish(mut self, ended: Option<ClientError>) -> Result<(), ClientError> {
        if ended.is_none() && self.client.is_connected() {
            let flushed = tokio::time::timeout(CLOSE_WAIT, self.client.flush_acks()).await;
            if let Some(e) = flushed.map_or(Some(ClientError::Timeout), Result::err) {
                // What was not acknowledged comes again, and is recognised as processed.
                self.events.emit(Event::Warning {
                    text: format!("could not acknowledge before closing: {e}"),
                });
            }
        }
        self.announce(false).await;
        self.client.live.detach();
        self.client.close().await;
        let last = Event::Connection {
            state: ConnectionState::Ended,
            reason: Some(ended.as_ref().map_or_else(
                || "the session was shut down".to_owned(),
                ToString::to_string,
            )),
            code: ended.as_ref().and_then(code),
            retry_in_ms: None,
        };
        match ended {
            // Stopped: the consumer asked for the end and may read no more.
            None => {
                self.events.emit(last);
                Ok(())
            }
            // Refused: the reason is worth waiting for room, unless a stop comes first.
            Some(e) => {
                self.events.last(last, &mut self.stop).await;
                Err(e)
            }
        }
    }
}

/// Whether `error` ends the session rather than calling for another connection: the relay
/// refused this device for good (revoked, unknown, its account suspended or expired), or
/// another connection took its place (the same device running elsewhere, which a second
/// connection would only fight).
fn ends_session(error: &ClientError) -> bool {
    match error {
        ClientError::Server { code, .. } => matches!(
            code,
            ErrorCode::DeviceRevoked
                | ErrorCode::AccountSuspended
                | ErrorCode::AccountExpired
                | ErrorCode::AuthenticationFailed
                | ErrorCode::Replaced
        ),
        _ => false,
    }
}

/// The relay's error code in `error`, as the protocol names it.
fn code(error: &ClientError) -> Option<String> {
    match error {
        ClientError::Server { code, .. } => Some(code.as_str_name().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ErrorCode, closed: bool) -> ClientError {
        ClientError::Server {
            code,
            message: String::new(),
            retryable: false,
            current_epoch: 0,
            closed,
        }
    }

    #[test]
    fn only_refusals_that_cannot_heal_end_a_session() {
        for code in [
            ErrorCode::DeviceRevoked,
            ErrorCode::AccountSuspended,
            ErrorCode::AccountExpired,
            ErrorCode::AuthenticationFailed,
            ErrorCode::Replaced,
        ] {
            assert!(ends_session(&refused(code, true)), "{code:?}");
        }
        for error in [
            refused(ErrorCode::ShuttingDown, true),
            refused(ErrorCode::TooSlow, true),
            refused(ErrorCode::RateLimited, false),
            ClientError::Network("reset".into()),
            ClientError::Timeout,
            ClientError::Tls("handshake".into()),
        ] {
            assert!(!ends_session(&error), "{error}");
        }
        assert_eq!(
            code(&refused(ErrorCode::DeviceRevoked, true)).as_deref(),
            Some("DEVICE_REVOKED")
        );
    }
}
