//! The bridge between the window and the client library: a thread of its own, with a
//! single-threaded tokio runtime, that opens, enrolls or unlocks the device, owns its
//! [`Session`], runs what the views ask for and passes back results and the session's
//! events.
//!
//! The UI thread never waits for it: [`Backend::request`] hands a [`Request`] over a bounded
//! channel without blocking (a full channel refuses the request, and says so), and
//! [`Backend::poll`] takes what has come back. Each result or event asks egui for a repaint,
//! so an idle window sleeps until something arrives.
//!
//! Requests that use the session run as tasks of their own, so that a slow one (sending to
//! a large group) does not hold back the events or a history page; the session itself runs
//! commands one at a time, between deliveries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relais_client::{
    ClientError, ConversationSummary, EnrollLink, ErrorCode, Event, GroupMember, HistoryPage,
    HomeLock, LinkError, OwnDevice, ReceivedMessage, SafetyNumber, Secret, Session, SessionHandle,
};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Requests waiting for the backend: far more than a person can cause between two frames.
/// Past it a request is refused (`error-busy`) rather than making the window wait.
const REQUESTS_MAX: usize = 256;
/// Results and events waiting for the window. When the window does not take them (it is
/// hidden and not repainted), the backend waits for room, and the session's own bounded
/// channel then drops events, saying how many (`Event::Lagged`): the history stays whole.
const UPDATES_MAX: usize = 4096;
/// How many updates one frame takes at most, so that a burst cannot make a frame slow; the
/// rest come with the next frame, which is asked for at once.
const UPDATES_PER_FRAME: usize = 512;
/// Requests running at once: each waits for its turn on the session, which takes commands
/// one at a time; past this, a request is refused (`error-busy`) rather than kept.
const IN_FLIGHT_MAX: usize = 128;
/// How long opening the home waits for another process to release it.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How long closing the window waits for the backend to end the session cleanly; past it
/// the thread is left to finish (or not) on its own, and the window closes.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// Refused requests remembered until the next poll (each distinct one once).
const REFUSED_MAX: usize = 64;
/// A history page: enough to fill a tall window several times over, small enough to read
/// and decrypt in a few milliseconds.
pub const HISTORY_PAGE: u32 = 200;

/// What the window asks of the backend.
#[derive(Debug)]
pub enum Request {
    /// Open the home: start the session of the device enrolled there, or say that the home
    /// needs an enrollment or a passphrase. Sent once when the app starts.
    Open,
    /// Enroll this device from a `relais://enroll?…` link, protecting the home with the
    /// passphrase if one is given.
    Enroll {
        link: Zeroizing<String>,
        passphrase: Option<Secret>,
    },
    /// Unlock the encrypted home and start its session.
    Unlock { passphrase: Secret },
    /// The conversations, with their unread counts and last entries.
    Conversations,
    /// A page of a conversation's history before `before` (the newest when `None`).
    History {
        group_id: String,
        before: Option<i64>,
    },
    /// Send a text; `local_id` ties the answer to the line the composer shows meanwhile.
    /// `acknowledged` names the contacts the user was shown had changed devices, and chose
    /// to send to anyway (with "require verified contacts" on; empty otherwise).
    Send {
        target: Target,
        text: String,
        local_id: u64,
        acknowledged: Vec<String>,
    },
    /// The user has read the conversation up to `position`.
    MarkRead { group_id: String, position: i64 },
    /// A contact's safety number; with `confirm` (the number the user compared), marks the
    /// contact verified if it is still theirs.
    SafetyNumber {
        contact: String,
        confirm: Option<String>,
    },
    /// This user's devices.
    Devices,
    /// Revokes another device of this user's.
    RevokeDevice { device_id: String },
    /// A single-use link that enrolls a new device of this user's.
    LinkDevice,
    /// A group's members and their roles (`conversation` is its current name).
    GroupMembers {
        group_id: String,
        conversation: String,
    },
    /// Creates or changes a group (`conversation` is its current name, empty to create).
    Govern {
        group_id: String,
        conversation: String,
        change: GroupChange,
    },
    /// The entries on this device that contain `text`, newest first.
    Search { text: String },
    /// Where a search result stands in its conversation's history, to open it there.
    Locate {
        group_id: String,
        sender: String,
        sent_at_ms: i64,
        text: String,
    },
    /// The contacts of a conversation whose devices changed since the user verified them;
    /// `then_send` when the composer waits for the answer to send the draft.
    Unverified {
        group_id: String,
        conversation: String,
        then_send: bool,
    },
    /// Writes the app's settings file ([`SETTINGS_FILE`] in the home): not secret, 0600.
    SaveSettings { text: String },
    /// Reads a file dropped on the welcome screen for the enrollment link it holds
    /// ([`Update::Dropped`]), off the window's thread: a dropped FIFO or a stalled network
    /// mount must not freeze it.
    ReadDropped { path: PathBuf },
    /// The device's "require verified contacts" setting, the library's (which refuses such
    /// a text itself): read it (`None`), or set it first (`Some`).
    RequireVerified { set: Option<bool> },
}

/// Which request a failure answers, so that the window undoes what it set while waiting
/// for it (a spinner, a request in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Opening, enrolling, unlocking, saving the settings: their screens have their own
    /// answers.
    Home,
    Conversations,
    History {
        group_id: String,
        before: Option<i64>,
    },
    Send {
        local_id: u64,
    },
    MarkRead {
        group_id: String,
    },
    SafetyNumber,
    Devices,
    RevokeDevice,
    LinkDevice,
    GroupMembers,
    Govern,
    Search,
    Locate,
    Unverified {
        group_id: String,
    },
    RequireVerified,
}

impl Asked {
    /// What `request` asks, without its contents (no text, no secret).
    pub fn of(request: &Request) -> Asked {
        match request {
            Request::Open
            | Request::Enroll { .. }
            | Request::Unlock { .. }
            | Request::SaveSettings { .. }
            | Request::ReadDropped { .. } => Asked::Home,
            Request::RequireVerified { .. } => Asked::RequireVerified,
            Request::Conversations => Asked::Conversations,
            Request::History { group_id, before } => Asked::History {
                group_id: group_id.clone(),
                before: *before,
            },
            Request::Send { local_id, .. } => Asked::Send {
                local_id: *local_id,
            },
            Request::MarkRead { group_id, .. } => Asked::MarkRead {
                group_id: group_id.clone(),
            },
            Request::SafetyNumber { .. } => Asked::SafetyNumber,
            Request::Devices => Asked::Devices,
            Request::RevokeDevice { .. } => Asked::RevokeDevice,
            Request::LinkDevice => Asked::LinkDevice,
            Request::GroupMembers { .. } => Asked::GroupMembers,
            Request::Govern { .. } => Asked::Govern,
            Request::Search { .. } => Asked::Search,
            Request::Locate { .. } => Asked::Locate,
            Request::Unverified { group_id, .. } => Asked::Unverified {
                group_id: group_id.clone(),
            },
        }
    }
}

/// A change of a group, as its page asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    Create { name: String, members: Vec<String> },
    Add(Vec<String>),
    Remove(String),
    Promote(String),
    Rename(String),
    Leave,
}

/// A link that enrolls a device (a new device of this user's, or this one from a dropped
/// file): a secret, shown on its page and never written anywhere (its `Debug` does not
/// show it), wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceLink(pub Zeroizing<String>);

impl std::fmt::Debug for DeviceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceLink(…)")
    }
}

/// Where a text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The direct conversation with a user (`name` or `name@domain`), created on first use.
    Direct(String),
    /// A group, by its current name.
    Group(String),
}

/// What the backend gives back to the window.
#[derive(Debug)]
pub enum Update {
    /// No device is enrolled in the home: the welcome screen.
    NeedsEnrollment,
    /// The home is encrypted: the unlock screen.
    NeedsPassphrase,
    /// The session runs, for `user`.
    Started {
        user: String,
    },
    /// Enrolling failed; the home is as it was.
    EnrollFailed(Problem),
    /// Unlocking or opening the home failed.
    OpenFailed(Problem),
    Conversations(Vec<ConversationSummary>),
    History {
        group_id: String,
        before: Option<i64>,
        page: HistoryPage,
    },
    /// The relay stored the text (`Ok`), or it was not sent.
    Sent {
        local_id: u64,
        target: Target,
        result: Result<(), Problem>,
    },
    /// Something the session announced.
    Event(Event),
    /// The session is over, with the error that ended it if one did.
    Ended(Option<Problem>),
    /// A request that failed (`error-busy`: the backend had too much to do and refused it;
    /// the user may try again), for a banner.
    Failed {
        asked: Asked,
        problem: Problem,
    },
    /// A contact's safety number, after marking it verified when `confirmed`.
    SafetyNumber {
        contact: String,
        confirmed: bool,
        result: Result<SafetyNumber, Problem>,
    },
    Devices(Result<Vec<OwnDevice>, Problem>),
    Revoked {
        device_id: String,
        result: Result<(), Problem>,
    },
    DeviceLink(Result<DeviceLink, Problem>),
    GroupMembers {
        group_id: String,
        result: Result<Vec<GroupMember>, Problem>,
    },
    Governed {
        group_id: String,
        change: GroupChange,
        result: Result<(), Problem>,
    },
    SearchResults {
        text: String,
        result: Result<Vec<ReceivedMessage>, Problem>,
    },
    /// Where a search result stands in its conversation (`None`: not among the newest
    /// entries searched for it).
    Located {
        group_id: String,
        position: Option<i64>,
    },
    Unverified {
        group_id: String,
        then_send: bool,
        result: Result<Vec<String>, Problem>,
    },
    /// The enrollment link found in a dropped file, or why there is none.
    Dropped(Result<DeviceLink, Problem>),
    /// The library's "require verified contacts" setting, as read or just set.
    RequireVerified(Result<bool, Problem>),
    /// The settings file's text (`None`: there is none yet), read when the app starts, or
    /// why it cannot be used (`views::settings` parses it).
    SettingsFile(Result<Option<String>, Problem>),
}

/// An error for the user: a catalogue message id and its arguments (the window says it in
/// the user's language), and the library's own text where it adds something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub id: &'static str,
    pub args: Vec<(&'static str, String)>,
    /// The library's words, in English, shown under the message when it is not obvious.
    pub detail: Option<String>,
}

impl Problem {
    pub fn new(id: &'static str) -> Problem {
        Problem {
            id,
            args: Vec::new(),
            detail: None,
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Problem {
        self.args.push((name, value.into()));
        self
    }

    fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    /// What to tell the user about `error`. Never the passphrase or the code: the
    /// library's errors do not carry them.
    pub fn from_client(error: &ClientError) -> Problem {
        match error {
            ClientError::Locked { .. } | ClientError::WrongSecret { .. } => {
                Problem::new("error-wrong-passphrase")
            }
            ClientError::HomeInUse { pid, .. } => Problem::new("error-home-in-use")
                .with("pid", pid.map_or_else(|| "?".into(), |p| p.to_string())),
            ClientError::NotEnrolled(_) => Problem::new("error-not-enrolled"),
            ClientError::SessionEnded => Problem::new("error-session-ended"),
            // The relay's certificate is refused (not for this address, expired, unknown
            // issuer): the network is fine, the server's setup is not.
            ClientError::Tls(text) if text.contains("certificate") => {
                Problem::new("error-tls-certificate").detail(text.as_str())
            }
            ClientError::NotConnected
            | ClientError::Network(_)
            | ClientError::Tls(_)
            | ClientError::Timeout => Problem::new("error-relay-unreachable"),
            ClientError::Unreachable(user) => {
                Problem::new("error-user-no-device").with("user", user)
            }
            ClientError::Unverified(user) => Problem::new("error-unverified").with("user", user),
            ClientError::Usage(text) => Problem::new("error-request").detail(text),
            ClientError::Server { code, .. } => Problem::from_code(*code).detail(error.to_string()),
            ClientError::Protocol(_) | ClientError::Mls(_) => {
                Problem::new("error-protocol").detail(error.to_string())
            }
            ClientError::State(_) | ClientError::Database(_) => {
                Problem::new("error-local-storage").detail(error.to_string())
            }
            ClientError::Link(link) => Problem::from_link(link),
            ClientError::PinMismatch { .. } => Problem::new("enroll-error-pin-mismatch"),
        }
    }

    /// Why a text was not sent. Without a connection it did not leave, and can be sent again
    /// once connected; a connection lost while it was on its way may have left it in the
    /// library's outbox, which sends it again by itself: sending it anew could repeat it.
    fn from_sending(error: &ClientError) -> Problem {
        match error {
            ClientError::NotConnected => Problem::new("error-send-not-connected"),
            ClientError::Network(_) | ClientError::Timeout => {
                Problem::new("error-send-interrupted")
            }
            other => Problem::from_client(other),
        }
    }

    /// Why an enrollment link cannot be used: cut short or mangled in copying (copy it
    /// again), altered (ask for a new one), or of a version this app does not read.
    fn from_link(error: &LinkError) -> Problem {
        let id = match error {
            LinkError::NotALink => "enroll-error-not-a-link",
            LinkError::UnsupportedVersion { .. } => "enroll-error-link-version",
            LinkError::Duplicate { .. } | LinkError::Unknown { .. } => "enroll-error-link-altered",
            LinkError::TooLong
            | LinkError::Missing { .. }
            | LinkError::Invalid { .. }
            | LinkError::Malformed { .. } => "enroll-error-link-malformed",
        };
        Problem::new(id).detail(error.to_string())
    }

    /// Why a link for a new device was not made: the relay's limits on devices and links
    /// waiting, or linking turned off, each with what to do; the relay's own words name
    /// commands of the terminal, so they are not shown.
    fn from_linking(error: &ClientError) -> Problem {
        match error {
            ClientError::Server {
                code: ErrorCode::LimitExceeded,
                ..
            } => Problem::new("error-link-limit"),
            ClientError::Server {
                code: ErrorCode::DeviceLinkingDisabled,
                ..
            } => Problem::new("error-linking-disabled"),
            other => Problem::from_client(other),
        }
    }

    fn from_code(code: ErrorCode) -> Problem {
        Problem::new(match code {
            ErrorCode::InvalidEnrollmentCode => "error-enrollment-code",
            ErrorCode::DeviceRevoked => "error-device-revoked",
            ErrorCode::AccountSuspended | ErrorCode::AccountExpired => "error-account-closed",
            ErrorCode::UnknownUser => "error-unknown-user",
            ErrorCode::RateLimited | ErrorCode::SenderQuotaExceeded | ErrorCode::QueueFull => {
                "error-slow-down"
            }
            ErrorCode::LimitExceeded => "error-limit",
            ErrorCode::DeviceLinkingDisabled => "error-linking-disabled",
            ErrorCode::NotGroupAdmin => "error-not-admin",
            ErrorCode::Replaced => "error-replaced",
            ErrorCode::StorageFull
            | ErrorCode::StorageUnavailable
            | ErrorCode::Internal
            | ErrorCode::ShuttingDown => "error-relay-failed",
            _ => "error-relay-refused",
        })
    }
}

/// The window's side of the backend.
pub struct Backend {
    requests: mpsc::Sender<Request>,
    updates: Mutex<mpsc::Receiver<Update>>,
    /// What was refused since the last poll, each once, at most [`REFUSED_MAX`].
    refused: Mutex<Vec<Asked>>,
    repaint: Repaint,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// The egui context to wake when something arrives, once the window has one.
#[derive(Clone, Default)]
struct Repaint(Arc<Mutex<Option<egui::Context>>>);

impl Repaint {
    fn request(&self) {
        if let Some(ctx) = self.0.lock().ok().and_then(|c| c.clone()) {
            ctx.request_repaint();
        }
    }
}

impl Backend {
    /// Starts the backend's thread for the device home `home`, and asks it to open the home.
    /// Should the system refuse a thread or a runtime, the first poll says so.
    pub fn start(home: PathBuf) -> Backend {
        let (requests, requests_in) = mpsc::channel(REQUESTS_MAX);
        let (updates_out, updates) = mpsc::channel(UPDATES_MAX);
        let repaint = Repaint::default();
        let worker = Worker {
            home,
            updates: updates_out.clone(),
            repaint: repaint.clone(),
            session: None,
            handle: None,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX)),
            ended: false,
            _lock: None,
        };
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| {
                std::thread::Builder::new()
                    .name("relais-desktop-backend".into())
                    .spawn(move || runtime.block_on(worker.run(requests_in)))
            });
        let thread = match started {
            Ok(thread) => Some(thread),
            Err(e) => {
                let problem = Problem::new("error-internal").detail(e.to_string());
                let _ = updates_out.try_send(Update::OpenFailed(problem));
                None
            }
        };
        let backend = Backend {
            requests,
            updates: Mutex::new(updates),
            refused: Mutex::new(Vec::new()),
            repaint,
            thread,
        };
        backend.request(Request::Open);
        backend
    }

    /// Hands `request` to the backend without waiting; a backend with too much to do
    /// refuses it, and the next [`Backend::poll`] says which (`error-busy`).
    pub fn request(&self, request: Request) {
        let Err(refused) = self.requests.try_send(request) else {
            return;
        };
        let request = match refused {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        };
        let asked = Asked::of(&request);
        if let Ok(mut list) = self.refused.lock()
            && !list.contains(&asked)
        {
            if list.len() >= REFUSED_MAX {
                list.remove(0);
            }
            list.push(asked);
        }
        self.repaint.request();
    }

    /// What has come back since the last call, in order; at most [`UPDATES_PER_FRAME`]
    /// (another repaint is asked for when more wait).
    pub fn poll(&self) -> Vec<Update> {
        let mut taken: Vec<Update> = match self.refused.lock() {
            Ok(mut list) => list
                .drain(..)
                .map(|asked| Update::Failed {
                    asked,
                    problem: Problem::new("error-busy"),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let Ok(mut updates) = self.updates.lock() else {
            return taken;
        };
        while taken.len() < UPDATES_PER_FRAME {
            match updates.try_recv() {
                Ok(update) => taken.push(update),
                Err(_) => return taken,
            }
        }
        self.repaint.request();
        taken
    }

    /// Tells the backend which egui context to wake when something arrives.
    pub fn set_repaint(&self, ctx: &egui::Context) {
        if let Ok(mut slot) = self.repaint.0.lock()
            && slot.is_none()
        {
            *slot = Some(ctx.clone());
        }
    }
}

impl Drop for Backend {
    /// Closing the request channel stops the backend, which ends the session cleanly
    /// (acknowledging what it processed); the window waits for that a few seconds
    /// ([`STOP_WAIT`]), so that the next start finds the home unlocked, and no longer: an
    /// enrollment stuck on an unanswering relay must not keep the window from closing.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.requests, closed));
        if let Ok(mut updates) = self.updates.lock() {
            updates.close();
        }
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            // Otherwise detached: the process exit ends it.
        }
    }
}

/// The backend's thread: the session and what it needs.
struct Worker {
    home: PathBuf,
    updates: mpsc::Sender<Update>,
    repaint: Repaint,
    session: Option<Session>,
    handle: Option<SessionHandle>,
    /// Requests running at once, at most [`IN_FLIGHT_MAX`].
    in_flight: Arc<tokio::sync::Semaphore>,
    /// A session ran and is over.
    ended: bool,
    /// The home's lock, held while the session runs (one process per home).
    _lock: Option<HomeLock>,
}

impl Worker {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.serve(request).await,
                    None => break,
                },
                event = next_event(&mut self.session) => match event {
                    Some(event) => self.send(Update::Event(event)).await,
                    None => self.ended().await,
                },
            }
        }
        if let Some(session) = self.session.take() {
            let _ = session.shutdown().await;
        }
    }

    async fn serve(&mut self, request: Request) {
        match request {
            Request::Open => {
                // The settings first: the language they name is the first screen's.
                let path = self.home.join(SETTINGS_FILE);
                let file = tokio::task::spawn_blocking(move || read_settings(&path))
                    .await
                    .unwrap_or_else(|e| Err(Problem::new("error-internal").detail(e.to_string())));
                self.send(Update::SettingsFile(file)).await;
                self.open(None).await
            }
            Request::ReadDropped { path } => self.read_dropped(path).await,
            Request::Unlock { passphrase } => self.open(Some(passphrase)).await,
            Request::Enroll { link, passphrase } => self.enroll(&link, passphrase).await,
            Request::SaveSettings { text } => {
                let path = self.home.join(SETTINGS_FILE);
                let saved = tokio::task::spawn_blocking(move || write_private(&path, &text)).await;
                if let Some(e) =
                    saved.map_or_else(|e| Some(e.to_string()), |r| r.err().map(|e| e.to_string()))
                {
                    // The system's words, in English, only as the detail.
                    let problem = Problem::new("settings-error-save")
                        .with("path", self.home.display().to_string())
                        .detail(e);
                    let asked = Asked::Home;
                    self.send(Update::Failed { asked, problem }).await;
                }
            }
            other => match self.handle.clone() {
                Some(handle) => {
                    let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                        let asked = Asked::of(&other);
                        let problem = Problem::new("error-busy");
                        return self.send(Update::Failed { asked, problem }).await;
                    };
                    let updates = self.updates.clone();
                    let repaint = self.repaint.clone();
                    tokio::spawn(async move {
                        if let Some(update) = run(&handle, other).await
                            && updates.send(update).await.is_ok()
                        {
                            repaint.request();
                        }
                        drop(permit);
                    });
                }
                // Before any session (a window that is not yet the main one) there is
                // nobody to tell; after one, the user is told it is over.
                None if self.ended => {
                    let asked = Asked::of(&other);
                    let problem = Problem::new("error-session-ended");
                    self.send(Update::Failed { asked, problem }).await
                }
                None => {}
            },
        }
    }

    /// Reads a dropped file on a thread of the blocking pool, as a task of its own: a file
    /// that stalls holds that thread, never the window or the session's events.
    async fn read_dropped(&mut self, path: PathBuf) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let problem = Problem::new("error-busy");
            let asked = Asked::Home;
            return self.send(Update::Failed { asked, problem }).await;
        };
        let updates = self.updates.clone();
        let repaint = self.repaint.clone();
        tokio::spawn(async move {
            let link = tokio::task::spawn_blocking(move || read_dropped(&path))
                .await
                .unwrap_or_else(|e| Err(Problem::new("error-internal").detail(e.to_string())));
            if updates.send(Update::Dropped(link)).await.is_ok() {
                repaint.request();
            }
            drop(permit);
        });
    }

    /// Opens the home (unlocking it with `secret`) and starts its session.
    async fn open(&mut self, secret: Option<Secret>) {
        if self.session.is_some() {
            return;
        }
        let update = match self.start_session(secret.as_ref()).await {
            Ok(user) => Update::Started { user },
            Err(ClientError::NotEnrolled(_)) => Update::NeedsEnrollment,
            Err(ClientError::Locked { .. }) if secret.is_none() => Update::NeedsPassphrase,
            Err(e) => Update::OpenFailed(Problem::from_client(&e)),
        };
        self.send(update).await;
    }

    async fn start_session(&mut self, secret: Option<&Secret>) -> Result<String, ClientError> {
        if !is_enrolled(&self.home) {
            return Err(ClientError::NotEnrolled(self.home.clone()));
        }
        let lock = HomeLock::acquire(&self.home, LOCK_WAIT).await?;
        let client = relais_client::Client::open_with(&self.home, secret).await?;
        // Before the session announces anything: what it announces is unread until read.
        client.start_read_marks().await?;
        let user = client.user().to_owned();
        let session = Session::start(client)?;
        self.handle = Some(session.handle());
        self.session = Some(session);
        self._lock = Some(lock);
        Ok(user)
    }

    async fn enroll(&mut self, link: &str, secret: Option<Secret>) {
        if self.session.is_some() {
            return;
        }
        if is_enrolled(&self.home) {
            // An enrollment went through before and only starting its session failed: the
            // device is there, to open rather than enroll again.
            let problem = Problem::new("enroll-error-already-enrolled");
            return self.send(Update::EnrollFailed(problem)).await;
        }
        let update = match enroll_from_link(&self.home, link, secret.as_ref()).await {
            // The device is enrolled; a session that does not start is the unlock screen's
            // to try again ([`Update::OpenFailed`]).
            Ok(()) => match self.start_session(secret.as_ref()).await {
                Ok(user) => Update::Started { user },
                Err(e) => Update::OpenFailed(Problem::from_client(&e)),
            },
            Err(problem) => Update::EnrollFailed(problem),
        };
        self.send(update).await;
    }

    /// The session's event stream ended: it stopped by itself (a revoked device).
    async fn ended(&mut self) {
        self.handle = None;
        self.ended = true;
        let problem = match self.session.take() {
            Some(session) => session
                .shutdown()
                .await
                .err()
                .map(|e| Problem::from_client(&e)),
            None => None,
        };
        self._lock = None;
        self.send(Update::Ended(problem)).await;
    }

    async fn send(&self, update: Update) {
        if self.updates.send(update).await.is_ok() {
            self.repaint.request();
        }
    }
}

/// The session's next event; never, without a session.
async fn next_event(session: &mut Option<Session>) -> Option<Event> {
    match session {
        Some(session) => session.next_event().await,
        None => std::future::pending().await,
    }
}

/// Runs a request on the session and says what came of it.
async fn run(handle: &SessionHandle, request: Request) -> Option<Update> {
    let asked = Asked::of(&request);
    let failed = |e: ClientError| {
        let problem = Problem::from_client(&e);
        Some(Update::Failed { asked, problem })
    };
    match request {
        Request::Conversations => match handle.conversations().await {
            Ok(list) => Some(Update::Conversations(list)),
            Err(e) => failed(e),
        },
        Request::History { group_id, before } => {
            let Ok(id) = hex::decode(&group_id) else {
                return failed(ClientError::Usage("not a group id".into()));
            };
            match handle.history_page(&id, before, HISTORY_PAGE).await {
                Ok(page) => Some(Update::History {
                    group_id,
                    before,
                    page,
                }),
                Err(e) => failed(e),
            }
        }
        Request::Send {
            target,
            text,
            local_id,
            acknowledged,
        } => {
            let result = match &target {
                Target::Direct(user) => handle.send_acknowledging(user, &text, acknowledged).await,
                Target::Group(name) => {
                    handle
                        .group_send_acknowledging(name, &text, acknowledged)
                        .await
                }
            };
            Some(Update::Sent {
                local_id,
                target,
                result: result.map_err(|e| Problem::from_sending(&e)),
            })
        }
        Request::MarkRead { group_id, position } => {
            let id = hex::decode(&group_id).ok()?;
            handle.mark_read(&id, position).await.err().and_then(failed)
        }
        Request::Open | Request::Unlock { .. } | Request::Enroll { .. } => None,
        Request::SaveSettings { .. } | Request::ReadDropped { .. } => None,
        Request::RequireVerified { set } => Some(require_verified(handle, set).await),
        page @ (Request::SafetyNumber { .. }
        | Request::Devices
        | Request::RevokeDevice { .. }
        | Request::LinkDevice
        | Request::GroupMembers { .. }
        | Request::Govern { .. }
        | Request::Search { .. }
        | Request::Locate { .. }
        | Request::Unverified { .. }) => run_page(handle, page).await,
    }
}

/// The library's "require verified contacts", after setting it when `set` says to.
async fn require_verified(handle: &SessionHandle, set: Option<bool>) -> Update {
    let result = handle
        .run(move |c| {
            Box::pin(async move {
                if let Some(on) = set {
                    c.set_require_verified(on).await?;
                }
                c.require_verified().await
            })
        })
        .await;
    Update::RequireVerified(result.map_err(|e| Problem::from_client(&e)))
}

/// Whether a device is enrolled in `home` (its key or its database is there); the library
/// says more once it opens it.
fn is_enrolled(home: &Path) -> bool {
    home.join("state.db").exists() || home.join("device.key").exists()
}

/// Enrolls from a link, leaving the home as it was on failure.
async fn enroll_from_link(home: &Path, link: &str, secret: Option<&Secret>) -> Result<(), Problem> {
    let link = EnrollLink::parse(link.trim()).map_err(|e| Problem::from_link(&e))?;
    let client = relais_client::Client::enroll_from_link(home, &link, secret)
        .await
        .map_err(|e| Problem::from_client(&e))?;
    // The session connects on its own thread, with its own runtime: this connection, made
    // on the backend's, is closed first.
    client.close().await;
    Ok(())
}

/// The app's settings file in the home (`views::settings` reads and writes its text).
pub const SETTINGS_FILE: &str = "desktop.toml";

/// Entries a search shows at most, newest first.
pub const SEARCH_RESULTS_MAX: u32 = 100;

/// Pages of a conversation's history [`Request::Locate`] reads at most, from the newest: a
/// search result further back than that opens its conversation at the newest entries.
const LOCATE_PAGES_MAX: usize = 100;

/// Runs a request of the trust and management pages (contact, devices, group, search, the
/// new-device banner) on the session.
async fn run_page(handle: &SessionHandle, request: Request) -> Option<Update> {
    let problem = |e: ClientError| Problem::from_client(&e);
    Some(match request {
        Request::SafetyNumber { contact, confirm } => safety_number(handle, contact, confirm).await,
        Request::Devices => Update::Devices(handle.devices().await.map_err(problem)),
        Request::RevokeDevice { device_id } => Update::Revoked {
            result: handle.revoke_device(&device_id).await.map_err(problem),
            device_id,
        },
        Request::LinkDevice => Update::DeviceLink(
            handle
                .link_device()
                .await
                .map(|link| DeviceLink(link.to_uri()))
                .map_err(|e| Problem::from_linking(&e)),
        ),
        Request::GroupMembers {
            group_id,
            conversation,
        } => {
            let members = handle
                .run(move |c| Box::pin(async move { c.group_members(&conversation).await }))
                .await;
            Update::GroupMembers {
                group_id,
                result: members.map_err(problem),
            }
        }
        Request::Govern {
            group_id,
            conversation,
            change,
        } => Update::Governed {
            result: govern(handle, conversation, change.clone()).await,
            group_id,
            change,
        },
        Request::Search { text } => Update::SearchResults {
            result: handle
                .search(&text, SEARCH_RESULTS_MAX)
                .await
                .map_err(problem),
            text,
        },
        Request::Locate {
            group_id,
            sender,
            sent_at_ms,
            text,
        } => Update::Located {
            position: locate(handle, &group_id, &sender, sent_at_ms, &text).await,
            group_id,
        },
        Request::Unverified {
            group_id,
            conversation,
            then_send,
        } => Update::Unverified {
            result: handle
                .unverified_contacts(&conversation)
                .await
                .map_err(problem),
            group_id,
            then_send,
        },
        _ => return None,
    })
}

/// A contact's safety number; with `confirm`, after marking the contact verified if that
/// is still their number.
async fn safety_number(handle: &SessionHandle, contact: String, confirm: Option<String>) -> Update {
    let result = match &confirm {
        Some(number) => handle.confirm_safety_number(&contact, number).await,
        None => handle.safety_number(&contact).await,
    };
    let result = result.map_err(|e| match (&e, &confirm) {
        // The number compared is no longer theirs: a device came or went meanwhile.
        (ClientError::Usage(_), Some(_)) => Problem::new("contact-error-changed")
            .with("contact", contact.as_str())
            .detail(e.to_string()),
        (ClientError::Usage(_), None) => Problem::new("contact-error-no-conversation")
            .with("contact", contact.as_str())
            .detail(e.to_string()),
        _ => Problem::from_client(&e),
    });
    Update::SafetyNumber {
        confirmed: confirm.is_some(),
        contact,
        result,
    }
}

/// Makes a change of a group; a refusal for want of an admin names whom to ask (the model
/// adds the admins it shows).
async fn govern(
    handle: &SessionHandle,
    conversation: String,
    change: GroupChange,
) -> Result<(), Problem> {
    governed(handle, conversation, change)
        .await
        .map_err(|e| match e {
            ClientError::Server {
                code: ErrorCode::NotGroupAdmin,
                ..
            } => Problem::new("group-error-not-admin").detail(e.to_string()),
            e => Problem::from_client(&e),
        })
}

/// Makes a change of a group through the library's governance calls.
async fn governed(
    handle: &SessionHandle,
    conversation: String,
    change: GroupChange,
) -> Result<(), ClientError> {
    let names = |users: &[String]| {
        users
            .iter()
            .map(|u| u.trim().to_owned())
            .collect::<Vec<_>>()
    };
    match change {
        GroupChange::Create { name, members } => {
            let members = names(&members);
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            handle.create_group(name.trim(), &members).await
        }
        GroupChange::Add(users) => {
            let users = names(&users);
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            handle.add_members(&conversation, &users).await
        }
        GroupChange::Remove(user) => {
            handle
                .run(move |c| Box::pin(async move { c.remove_member(&conversation, &user).await }))
                .await
        }
        GroupChange::Promote(user) => {
            handle
                .run(move |c| Box::pin(async move { c.promote(&conversation, &user).await }))
                .await
        }
        GroupChange::Rename(name) => {
            handle
                .run(move |c| {
                    Box::pin(async move { c.rename_group(&conversation, name.trim()).await })
                })
                .await
        }
        GroupChange::Leave => {
            handle
                .run(move |c| Box::pin(async move { c.leave(&conversation).await }))
                .await
        }
    }
}

/// The position of the entry `sender` wrote at `sent_at_ms` with `text` in a conversation,
/// looked for page by page from the newest, each page a command of its own so that the
/// session goes on processing deliveries between them.
async fn locate(
    handle: &SessionHandle,
    group_id: &str,
    sender: &str,
    sent_at_ms: i64,
    text: &str,
) -> Option<i64> {
    let id = hex::decode(group_id).ok()?;
    let mut before = None;
    for _ in 0..LOCATE_PAGES_MAX {
        let page = handle.history_page(&id, before, HISTORY_PAGE).await.ok()?;
        let found = page.entries.iter().rev().find(|e| {
            e.message.sent_at_ms == sent_at_ms
                && e.message.sender == sender
                && e.message.text == text
        });
        if let Some(entry) = found {
            return Some(entry.position);
        }
        before = Some(page.entries.first()?.position);
    }
    None
}

/// Largest settings file read: a few short keys need a few hundred bytes, and anything
/// much larger is not ours.
pub const SETTINGS_BYTES_MAX: u64 = 64 * 1024;
/// The most a dropped file may hold to be read for a link: a link is a few hundred bytes,
/// a mail saved as text a few kilobytes.
pub const DROPPED_BYTES_MAX: u64 = 16 * 1024;

/// Why a small file was not read.
enum Unread {
    NotAFile,
    TooLarge,
    Io(std::io::Error),
}

/// A small regular file's bytes, in a buffer wiped when dropped; `None` when there is no
/// file. Anything but a regular file is refused before it is opened (opening a FIFO waits
/// for a writer, a device may never end), and the file opened is checked to be the one
/// looked at.
fn read_small(path: &Path, bytes_max: u64) -> Result<Option<Zeroizing<Vec<u8>>>, Unread> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;

    let looked_at = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unread::Io(e)),
    };
    if !looked_at.is_file() {
        return Err(Unread::NotAFile);
    }
    if looked_at.len() > bytes_max {
        return Err(Unread::TooLarge);
    }
    let file = std::fs::File::open(path).map_err(Unread::Io)?;
    let opened = file.metadata().map_err(Unread::Io)?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (looked_at.dev(), looked_at.ino()) {
        return Err(Unread::NotAFile);
    }
    // Room for one byte more than allowed, so that reading never moves the buffer (which
    // would leave a copy behind) and a file that grew meanwhile is seen.
    let room = usize::try_from(bytes_max)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(room));
    file.take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    if bytes.len() as u64 > bytes_max {
        return Err(Unread::TooLarge);
    }
    Ok(Some(bytes))
}

/// The settings file's text, `None` when there is none yet, or why it cannot be used.
fn read_settings(path: &Path) -> Result<Option<String>, Problem> {
    let bad = |problem: Problem| problem.with("path", path.display().to_string());
    match read_small(path, SETTINGS_BYTES_MAX) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| bad(Problem::new("settings-bad-file-not-text"))),
        Err(Unread::NotAFile) => Err(bad(Problem::new("settings-bad-file-not-a-file"))),
        Err(Unread::TooLarge) => Err(bad(Problem::new("settings-bad-file-too-large"))),
        Err(Unread::Io(e)) => {
            Err(bad(Problem::new("settings-bad-file-unreadable")).detail(e.to_string()))
        }
    }
}

/// The enrollment link in a dropped file (a `.txt` from the administrator's mail): its
/// first word that starts with `relais://`.
fn read_dropped(path: &Path) -> Result<DeviceLink, Problem> {
    let bytes = match read_small(path, DROPPED_BYTES_MAX) {
        Ok(Some(bytes)) => bytes,
        // Gone since it was dropped.
        Ok(None) => return Err(Problem::new("enroll-drop-unreadable")),
        Err(Unread::NotAFile) => return Err(Problem::new("enroll-drop-not-a-file")),
        Err(Unread::TooLarge) => return Err(Problem::new("enroll-drop-too-large")),
        Err(Unread::Io(e)) => {
            return Err(Problem::new("enroll-drop-unreadable").detail(e.to_string()));
        }
    };
    // A file that is not text holds no link either.
    let text = std::str::from_utf8(&bytes).map_err(|_| Problem::new("enroll-drop-no-link"))?;
    text.split_whitespace()
        .find(|word| word.starts_with("relais://"))
        .map(|link| DeviceLink(Zeroizing::new(link.to_owned())))
        .ok_or_else(|| Problem::new("enroll-drop-no-link"))
}

/// Writes `text` to `path` through a temporary file (0600) and a rename, both durable
/// before it returns, so that a crash leaves the old file or the new one.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    // A temporary file left by a crash keeps the mode it was created with: set it again.
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Server {
            code,
            message: message.into(),
            retryable: false,
            current_epoch: 0,
            closed: false,
        }
    }

    #[test]
    fn each_failure_says_what_to_do_without_terminal_commands() {
        let limit = refused(
            ErrorCode::LimitExceeded,
            "revoke one (`relais devices revoke`)",
        );
        let problem = Problem::from_linking(&limit);
        assert_eq!(problem.id, "error-link-limit");
        assert_eq!(problem.detail, None, "the relay's words name a command");
        let off = refused(ErrorCode::DeviceLinkingDisabled, "off");
        assert_eq!(Problem::from_linking(&off).id, "error-linking-disabled");
        assert_eq!(Problem::from_client(&off).id, "error-linking-disabled");
        // A text too long is still the composer's "make it shorter".
        let long = refused(ErrorCode::LimitExceeded, "too long");
        assert_eq!(Problem::from_client(&long).id, "error-limit");
        let name = ClientError::Tls(
            "TLS with relais.example:443 failed: invalid peer certificate: NotValidForName".into(),
        );
        assert_eq!(Problem::from_client(&name).id, "error-tls-certificate");
        let cut = ClientError::Tls("TLS with relais.example:443 failed: connection reset".into());
        assert_eq!(Problem::from_client(&cut).id, "error-relay-unreachable");
    }

    #[test]
    fn a_refused_request_is_named_without_its_contents() {
        let send = Request::Send {
            target: Target::Group("ops".into()),
            text: "secret".into(),
            local_id: 7,
            acknowledged: Vec::new(),
        };
        assert_eq!(Asked::of(&send), Asked::Send { local_id: 7 });
        assert!(!format!("{:?}", Asked::of(&send)).contains("secret"));
        let older = Request::History {
            group_id: "ab".into(),
            before: Some(3),
        };
        assert_eq!(
            Asked::of(&older),
            Asked::History {
                group_id: "ab".into(),
                before: Some(3)
            }
        );
    }
}
