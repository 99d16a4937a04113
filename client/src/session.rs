//! A long-running session: one connection kept open, pushes processed as they arrive, and
//! a typed stream of what they changed, for programs that stay up (`relais follow`, the
//! desktop app) rather than connect for one command.
//!
//! A [`Session`] owns the [`Client`] on a thread of its own, with a single-threaded
//! runtime, so that nothing the client does needs to cross threads. There it
//!
//! - processes each delivery the moment it arrives and acknowledges it as every client does
//!   (`acks.rs`: after its result is stored, in batches);
//! - runs the commands given to it through a [`SessionHandle`], one at a time, between
//!   deliveries;
//! - pings a relay that has been silent for a while, reconnects after a loss with jittered
//!   exponential backoff (0.5 s to 30 s, from the start again after a connection that
//!   lasted), and sends the durable outbox again on each new connection;
//! - ends, saying why, when the relay refuses the device for good (revoked, its account
//!   suspended or expired) or the device connects from elsewhere;
//! - on [`Session::shutdown`], acknowledges what it processed, closes the connection and the
//!   database, and ends the event stream.
//!
//! Its events ([`Event`]) are announced only from what was stored: history rows (texts,
//! and the lines the library writes into a conversation's history, such as membership
//! changes), the stored conversations and verified contacts, and what processing recorded
//! after committing (membership changes as data, the relay's answers to submitted
//! messages). So nothing is shown that a crash could lose, and whatever new code records
//! in the history reaches every session without the session knowing it. Rows announced are
//! marked shown, as `recv` marks what it prints. The channel is bounded
//! ([`EVENTS_MAX`](events::EVENTS_MAX) events): a consumer that stops reading loses events,
//! never history, and is told how many with [`Event::Lagged`].
//!
//! Only one process may open a home at a time (see [`HomeLock`]): [`Session::open`] and
//! [`Session::open_with`] (for an encrypted home) take the lock, and the `relais` command
//! takes it for every command.
//!
//! ```no_run
//! use std::path::Path;
//! use relais_client::{Event, Secret, Session};
//!
//! # async fn example() -> Result<(), relais_client::ClientError> {
//! // An encrypted home: its passphrase, from a file only its owner reads.
//! let passphrase = Secret::read_passphrase_file(Path::new("/run/user/1000/relais-pass"))?;
//! let home = Path::new("/home/alice/.relais");
//! let mut session = Session::open_with(home, Some(&passphrase)).await?;
//! // Act while the session runs, from anywhere: a handle is cheap to clone.
//! let handle = session.handle();
//! handle.send("bob", "Bonjour Bob").await?;
//! let history = handle.history("bob", 50).await?;
//! // Anything else the client can do, on the session's thread.
//! let epoch = handle
//!     .run(|client| Box::pin(async move { client.conversation_epoch("bob").await }))
//!     .await?;
//! # let _ = (history, epoch);
//! while let Some(event) = session.next_event().await {
//!     match event {
//!         Event::Message { conversation, sender, text, .. } => {
//!             println!("{conversation}: {sender}: {text}")
//!         }
//!         Event::Connection { state, reason, .. } => eprintln!("{state:?} {reason:?}"),
//!         _ => {}
//!     }
//! }
//! // The stream ended by itself: `shutdown` says why (a revoked device, say).
//! session.shutdown().await
//! # }
//! ```

mod backoff;
pub mod events;
mod journal;
mod lock;
mod task;
mod view;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use events::{ConnectionState, ConversationChange, DeliveryState, Event, Member};
pub(crate) use journal::{Committed, Live, membership};
pub use lock::HomeLock;
pub(crate) use view::short_id;

use crate::{
    Client, ClientError, ConversationSummary, HistoryPage, OwnDevice, ReceivedMessage,
    SafetyNumber, Secret,
};

/// Commands that may wait for the session: a caller that sends faster than the session
/// works waits for room rather than piling commands up.
const COMMANDS_MAX: usize = 64;
/// How long [`Session::open`] waits for another process to release the home (a command
/// that is finishing) before it fails.
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// What a command given to [`SessionHandle::run`] returns: a future borrowing the client,
/// run on the session's thread (so it need not be `Send`).
pub type ClientFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + 'c>>;

/// A running session: its events, a handle to act through, and the way to end it.
/// Dropping it stops the session as [`Session::shutdown`] does, without waiting.
pub struct Session {
    handle: SessionHandle,
    events: mpsc::Receiver<Event>,
    stop: Option<oneshot::Sender<()>>,
    /// Why the session ended: sent by its thread when it is done.
    done: Option<oneshot::Receiver<Result<(), ClientError>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Held for the session's life when it opened the home itself.
    _lock: Option<HomeLock>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Locks the home, opens the unencrypted device in it and starts a session; the session
    /// connects by itself, and keeps trying while the relay cannot be reached. An encrypted
    /// home fails with [`ClientError::Locked`]: see [`Session::open_with`].
    pub async fn open(home: &Path) -> Result<Session, ClientError> {
        Self::open_with(home, None).await
    }

    /// Locks the home, opens the device in it, unlocking it with `secret` if the home is
    /// encrypted (as [`Client::open_with`] does), and starts a session that holds the lock
    /// until it is over. A missing or wrong secret fails with [`ClientError::Locked`] or
    /// [`ClientError::WrongSecret`] and releases the lock, so the caller may ask for
    /// another and call again.
    pub async fn open_with(home: &Path, secret: Option<&Secret>) -> Result<Session, ClientError> {
        let lock = HomeLock::acquire(home, OPEN_WAIT).await?;
        let client = Client::open_with(home, secret).await?;
        Ok(Session::start(client)?.holding(lock))
    }

    /// Starts a session on `client`, connected or not (it connects if not). The caller
    /// keeps other processes off the client's home (see [`HomeLock`]).
    pub fn start(client: Client) -> Result<Session, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::State(format!("cannot start the session's runtime: {e}")))?;
        let (jobs_sender, jobs) = mpsc::channel(COMMANDS_MAX);
        let (stop, stopped) = oneshot::channel();
        let (done_sender, done) = oneshot::channel();
        let (emitter, events) = events::Emitter::new();
        let task = task::Task::new(client, jobs, stopped, emitter);
        let thread = std::thread::Builder::new()
            .name("relais-session".into())
            .spawn(move || {
                let ended = runtime.block_on(task.run());
                let _ = done_sender.send(ended);
            })
            .map_err(|e| ClientError::State(format!("cannot start the session's thread: {e}")))?;
        Ok(Session {
            handle: SessionHandle { jobs: jobs_sender },
            events,
            stop: Some(stop),
            done: Some(done),
            thread: Some(thread),
            _lock: None,
        })
    }

    /// Keeps `lock` (the client's home's) until the session is over.
    fn holding(mut self, lock: HomeLock) -> Session {
        self._lock = Some(lock);
        self
    }

    /// A handle to act through while the session runs.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The next event, waiting for it; `None` once the session has ended and every event
    /// was read (then [`Session::shutdown`] says why it ended).
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one is waiting, for a display that looks once per frame.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Stops the session: acknowledges what it processed, closes the connection and the
    /// database. Returns the error that had ended it by itself, if one did (a revoked
    /// device: the relay's refusal).
    pub async fn shutdown(mut self) -> Result<(), ClientError> {
        self.stop.take();
        let ended = match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(ClientError::State(
                    "the session's thread stopped unexpectedly; report it".into(),
                ))
            }),
            None => Ok(()),
        };
        if let Some(thread) = self.thread.take() {
            // It has sent its outcome, so it is returning.
            let _ = thread.join();
        }
        ended
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The thread sees the stop and closes by itself.
        self.stop.take();
    }
}

/// Acts on a running session's client, from any thread or task; cheap to clone. Each call
/// waits for the session to run it between deliveries, and fails with
/// [`ClientError::SessionEnded`] once the session is over.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    jobs: mpsc::Sender<task::Job>,
}

impl SessionHandle {
    /// Runs `command` with the session's client, on the session's thread, and returns what
    /// it returns: anything [`Client`] offers, in one step the session does not interleave
    /// with deliveries. What it stores is announced as events afterwards.
    pub async fn run<T, F>(&self, command: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> ClientFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: task::Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = reply.send(command(client).await);
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| ClientError::SessionEnded)?;
        answer.await.map_err(|_| ClientError::SessionEnded)?
    }

    /// [`Client::send`]: a text to a user, in the direct conversation with them.
    pub async fn send(&self, peer: &str, text: &str) -> Result<(), ClientError> {
        let (peer, text) = (peer.to_owned(), text.to_owned());
        self.run(move |c| Box::pin(async move { c.send(&peer, &text).await }))
            .await
    }

    /// [`Client::group_send`]: a text to a named group.
    pub async fn group_send(&self, group: &str, text: &str) -> Result<(), ClientError> {
        let (group, text) = (group.to_owned(), text.to_owned());
        self.run(move |c| Box::pin(async move { c.group_send(&group, &text).await }))
            .await
    }

    /// [`Client::create_group`].
    pub async fn create_group(&self, name: &str, members: &[&str]) -> Result<(), ClientError> {
        let name = name.to_owned();
        let members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        self.run(move |c| {
            Box::pin(async move {
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                c.create_group(&name, &members).await
            })
        })
        .await
    }

    /// [`Client::add_members`].
    pub async fn add_members(&self, conversation: &str, users: &[&str]) -> Result<(), ClientError> {
        let conversation = conversation.to_owned();
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        self.run(move |c| {
            Box::pin(async move {
                let users: Vec<&str> = users.iter().map(String::as_str).collect();
                c.add_members(&conversation, &users).await
            })
        })
        .await
    }

    /// [`Client::conversation_list`]: the conversations with unread counts.
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        self.run(|c| Box::pin(c.conversation_list())).await
    }

    /// [`Client::history`]: a conversation's last `limit` entries, oldest first.
    pub async fn history(
        &self,
        conversation: &str,
        limit: u32,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let conversation = conversation.to_owned();
        self.run(move |c| Box::pin(async move { c.history(&conversation, limit).await }))
            .await
    }

    /// [`Client::send_acknowledging`]: a text to a user, sent although the contacts
    /// `acknowledged` changed devices, which the user was shown.
    pub async fn send_acknowledging(
        &self,
        peer: &str,
        text: &str,
        acknowledged: Vec<String>,
    ) -> Result<(), ClientError> {
        let (peer, text) = (peer.to_owned(), text.to_owned());
        self.run(move |c| {
            Box::pin(async move { c.send_acknowledging(&peer, &text, &acknowledged).await })
        })
        .await
    }

    /// [`Client::group_send_acknowledging`]: as [`SessionHandle::send_acknowledging`], to a
    /// named group.
    pub async fn group_send_acknowledging(
        &self,
        group: &str,
        text: &str,
        acknowledged: Vec<String>,
    ) -> Result<(), ClientError> {
        let (group, text) = (group.to_owned(), text.to_owned());
        self.run(move |c| {
            Box::pin(async move {
                c.group_send_acknowledging(&group, &text, &acknowledged)
                    .await
            })
        })
        .await
    }

    /// [`Client::history_page`]: up to `limit` entries before `before`, oldest first.
    pub async fn history_page(
        &self,
        group_id: &[u8],
        before: Option<i64>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let group_id = group_id.to_owned();
        self.run(move |c| Box::pin(async move { c.history_page(&group_id, before, limit).await }))
            .await
    }

    /// [`Client::mark_read`]: the conversation is read up to `position`.
    pub async fn mark_read(&self, group_id: &[u8], position: i64) -> Result<(), ClientError> {
        let group_id = group_id.to_owned();
        self.run(move |c| Box::pin(async move { c.mark_read(&group_id, position).await }))
            .await
    }

    /// [`Client::search`]: entries containing `text`, newest first.
    pub async fn search(
        &self,
        text: &str,
        limit: u32,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let text = text.to_owned();
        self.run(move |c| Box::pin(async move { c.search(&text, limit).await }))
            .await
    }

    /// [`Client::conversation_members`]: each device's user and key.
    pub async fn members(&self, conversation: &str) -> Result<Vec<(String, String)>, ClientError> {
        let conversation = conversation.to_owned();
        self.run(move |c| Box::pin(async move { c.conversation_members(&conversation).await }))
            .await
    }

    /// [`Client::safety_number`].
    pub async fn safety_number(&self, contact: &str) -> Result<SafetyNumber, ClientError> {
        let contact = contact.to_owned();
        self.run(move |c| Box::pin(async move { c.safety_number(&contact).await }))
            .await
    }

    /// [`Client::confirm_safety_number`]: marks the contact verified if `number` is theirs.
    pub async fn confirm_safety_number(
        &self,
        contact: &str,
        number: &str,
    ) -> Result<SafetyNumber, ClientError> {
        let (contact, number) = (contact.to_owned(), number.to_owned());
        self.run(move |c| Box::pin(async move { c.confirm_safety_number(&contact, &number).await }))
            .await
    }

    /// [`Client::unverified_contacts`]: whom to warn about before sending to `conversation`.
    pub async fn unverified_contacts(
        &self,
        conversation: &str,
    ) -> Result<Vec<String>, ClientError> {
        let conversation = conversation.to_owned();
        self.run(move |c| Box::pin(async move { c.unverified_contacts(&conversation).await }))
            .await
    }

    /// [`Client::devices`]: this user's devices.
    pub async fn devices(&self) -> Result<Vec<OwnDevice>, ClientError> {
        self.run(|c| Box::pin(c.devices())).await
    }

    /// [`Client::revoke_device`]: another device of this user's.
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), ClientError> {
        let device_id = device_id.to_owned();
        self.run(move |c| Box::pin(async move { c.revoke_device(&device_id).await }))
            .await
    }

    /// [`Client::link_device`]: an enrollment link for a new device of this user.
    pub async fn link_device(&self) -> Result<crate::EnrollLink, ClientError> {
        self.run(|c| Box::pin(c.link_device())).await
    }
}
