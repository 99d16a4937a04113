//! What the window shows, and how each result or event from the backend changes it.
//!
//! [`Model::apply`] is pure: it takes an [`Update`] and returns the requests it calls for
//! (reload the list, fetch the newest page), so its rules are tested without a window or a
//! relay. The views read the model and change the parts that are theirs to change (a form's
//! text, the open page).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use relais_client::{ConnectionState, ConversationChange, DeliveryState, Event, HistoryPage};
use zeroize::Zeroizing;

use crate::backend::{Asked, HISTORY_PAGE, Problem, Request, Target, Update};
use crate::i18n::Lang;

mod pages;

pub use pages::{Loaded, Notice, Pages, SendCheck, Settings};

/// Entries a timeline holds in memory at most: scrolling further back stops there (search
/// reaches older ones). About 50 MB of text at the worst, far less in practice.
pub const TIMELINE_ENTRIES_MAX: usize = 200_000;
/// Errors shown at once; older ones give way.
const PROBLEMS_MAX: usize = 4;
/// Verification and membership events kept for the trust pages; they reload what they show
/// from the library, so older ones are not needed.
const TRUST_EVENTS_MAX: usize = 256;
/// Delivery states remembered for texts sent in this run of the app.
const DELIVERIES_MAX: usize = 4_096;
/// Texts waiting for the relay's answer, or failed and kept to try again.
pub const PENDING_MAX: usize = 64;
/// The longest text the composer sends, in bytes: well under the relay's message limit once
/// encrypted, and more than any message a person types.
pub const TEXT_BYTES_MAX: usize = 32 * 1024;

/// Which screen the window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Screen {
    /// Opening the home.
    #[default]
    Starting,
    /// No device yet: the welcome screen, to enroll from a link.
    Enroll,
    /// The home is encrypted: its passphrase.
    Unlock,
    /// The conversations.
    Main,
}

/// The page in the main window's centre (the conversation list stays on the left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Page {
    /// The open conversation's timeline and composer.
    #[default]
    Conversation,
    /// A contact's safety number and verification.
    Contact,
    /// This user's devices.
    Devices,
    /// Creating or managing a group.
    Group,
    /// Searching the history on this device.
    Search,
    /// The app's settings.
    Settings,
}

impl Page {
    /// The pages the toolbar offers, in its order.
    pub const TOOLBAR: [Page; 5] = [
        Page::Contact,
        Page::Devices,
        Page::Group,
        Page::Search,
        Page::Settings,
    ];
}

/// A conversation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Group,
    /// Joined, before the creator's information names it.
    Unknown,
}

impl Kind {
    fn parse(kind: &str) -> Kind {
        match kind {
            "direct" => Kind::Direct,
            "group" => Kind::Group,
            _ => Kind::Unknown,
        }
    }
}

/// A conversation in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The MLS group id, in hex: the key that stays when a name changes.
    pub group_id: String,
    /// The other user for a direct conversation, the group's name otherwise.
    pub name: String,
    pub kind: Kind,
    pub unread: u64,
    /// The last entry, as a preview: its sender (empty for a line the app wrote), text and
    /// time.
    pub last: Option<Preview>,
    /// This device left it or was removed: nothing more arrives.
    pub left: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub sender: String,
    pub text: String,
    pub at_ms: i64,
}

impl Conversation {
    /// When something last happened there, for the list's order.
    pub fn activity_ms(&self) -> i64 {
        self.last.as_ref().map_or(0, |p| p.at_ms)
    }

    /// Where a text to it goes.
    pub fn target(&self) -> Target {
        match self.kind {
            Kind::Direct => Target::Direct(self.name.clone()),
            Kind::Group | Kind::Unknown => Target::Group(self.name.clone()),
        }
    }
}

/// One line of a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its place in the history (smaller is older).
    pub position: i64,
    /// Its message id, in hex: ties a text this device sent to its delivery state.
    pub message_id: String,
    /// The sender; empty for a line the library wrote (a membership or device change).
    pub sender: String,
    pub at_ms: i64,
    pub text: String,
    /// Its height in the timeline at `Timeline::measured_width`: estimated from its length
    /// until laid out (`measured`), then exact.
    pub height: f32,
    pub measured: bool,
}

impl Entry {
    /// A line the library wrote about the conversation (not a text someone sent).
    pub fn is_event(&self) -> bool {
        self.sender.is_empty()
    }
}

/// The open conversation's history, as far back as it was loaded.
#[derive(Debug, Default)]
pub struct Timeline {
    pub group_id: String,
    /// Oldest first; contiguous up to the newest entry loaded.
    pub entries: VecDeque<Entry>,
    /// How many entries the history holds in all.
    pub total: u64,
    /// A page of older entries was asked for and has not come yet.
    pub loading_older: bool,
    /// The newest page was asked for and has not come yet.
    pub refreshing: bool,
    /// Something arrived while the newest page was on its way: ask again when it comes.
    pub stale: bool,
    /// The view was at the bottom at the last frame: it stays there as entries arrive.
    pub at_bottom: bool,
    /// The width the entries' heights were measured at.
    pub measured_width: f32,
    /// The entry at the top of the view and how far above the view's top it starts, so
    /// that loading older entries or measuring does not move what the user reads.
    pub anchor: Option<(i64, f32)>,
    /// The view's scroll offset at the last frame.
    pub last_offset: f32,
}

impl Timeline {
    fn new(group_id: &str) -> Timeline {
        Timeline {
            group_id: group_id.to_owned(),
            at_bottom: true,
            ..Timeline::default()
        }
    }

    /// Whether older entries remain to be loaded.
    pub fn has_older(&self) -> bool {
        (self.entries.len() as u64) < self.total && self.entries.len() < TIMELINE_ENTRIES_MAX
    }

    /// The request for the page before the oldest entry loaded, unless one is on its way.
    pub fn older_request(&mut self) -> Option<Request> {
        if self.loading_older || !self.has_older() {
            return None;
        }
        self.loading_older = true;
        Some(Request::History {
            group_id: self.group_id.clone(),
            before: self.entries.front().map(|e| e.position),
        })
    }

    /// The request for the newest page, unless one is on its way (then it is asked again
    /// when that one comes).
    fn refresh_request(&mut self) -> Option<Request> {
        if self.refreshing {
            self.stale = true;
            return None;
        }
        self.refreshing = true;
        Some(Request::History {
            group_id: self.group_id.clone(),
            before: None,
        })
    }

    /// Adds a page: older entries before those loaded, or the newest after them. A newest
    /// page that does not reach what is loaded (more arrived than a page holds) replaces it.
    fn add(&mut self, before: Option<i64>, page: HistoryPage) {
        self.total = page.total;
        let entries = page.entries.into_iter().map(|e| Entry {
            position: e.position,
            message_id: e.message_id,
            sender: if e.message.event {
                String::new()
            } else {
                e.message.sender
            },
            at_ms: e.message.sent_at_ms,
            text: e.message.text,
            height: 0.0,
            measured: false,
        });
        match before {
            Some(before) => {
                self.loading_older = false;
                if self.entries.front().is_some_and(|e| e.position != before) {
                    return; // the timeline was replaced meanwhile
                }
                let older: Vec<Entry> = entries.collect();
                for entry in older.into_iter().rev() {
                    if self.entries.len() >= TIMELINE_ENTRIES_MAX {
                        break;
                    }
                    self.entries.push_front(entry);
                }
            }
            None => {
                self.refreshing = false;
                let newest = self.entries.back().map(|e| e.position);
                let page: Vec<Entry> = entries.collect();
                let joins = match (newest, page.first()) {
                    (Some(newest), Some(first)) => first.position <= newest,
                    _ => false,
                };
                if joins || page.len() < HISTORY_PAGE as usize {
                    let newest = newest.unwrap_or(i64::MIN);
                    let fresh = page.into_iter().filter(|e| e.position > newest);
                    self.entries.extend(fresh);
                } else {
                    self.entries = page.into();
                    self.anchor = None;
                }
                while self.entries.len() > TIMELINE_ENTRIES_MAX {
                    self.entries.pop_front();
                }
            }
        }
    }
}

/// A text the composer sent, until the relay has it (then it is in the history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub local_id: u64,
    /// The conversation it was written in (a group id, or the user for a new direct one).
    pub conversation: String,
    pub target: Target,
    pub text: String,
    /// The contacts whose change of devices the user chose to send anyway to.
    pub acknowledged: Vec<String>,
    /// Why it was not sent; `None` while on its way.
    pub failed: Option<Problem>,
}

/// The connection, as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connection {
    /// `None` until the session says anything.
    pub state: Option<ConnectionState>,
    /// When the next attempt comes, while reconnecting.
    pub retry_at: Option<Instant>,
    /// Why it was lost, or why the session ended (the relay's words).
    pub reason: Option<String>,
    /// The relay's error code when it refused the device (`DEVICE_REVOKED`…).
    pub code: Option<String>,
}

/// The welcome screen's form.
#[derive(Default)]
pub struct EnrollForm {
    pub link: Zeroizing<String>,
    pub passphrase: Zeroizing<String>,
    pub confirm: Zeroizing<String>,
    /// The user chose, explicitly, not to protect the home with a passphrase.
    pub without_passphrase: bool,
    /// The enrollment is on its way.
    pub busy: bool,
    pub problem: Option<Problem>,
}

/// The unlock screen's form.
#[derive(Default)]
pub struct UnlockForm {
    pub passphrase: Zeroizing<String>,
    /// The home could not be opened for another reason than its passphrase (another
    /// program holds it): the screen offers to try again, without a passphrase field.
    pub retry_only: bool,
    pub busy: bool,
    pub problem: Option<Problem>,
}

/// Everything the window shows.
#[derive(Default)]
pub struct Model {
    pub screen: Screen,
    pub page: Page,
    /// The language the user chose (the settings page changes it; the app follows).
    pub lang: Lang,
    /// This device's user, once the session runs.
    pub user: Option<String>,
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
    /// The open conversation (its group id), if any.
    pub selected: Option<String>,
    /// A direct conversation the user started by name, not created until the first text.
    pub new_direct: Option<String>,
    /// The name typed in the list's "new conversation" field.
    pub new_direct_input: String,
    /// The open conversation's history.
    pub timeline: Timeline,
    /// What the composer holds, per conversation (group id, or the user of a new one).
    pub drafts: HashMap<String, String>,
    pub pending: Vec<Pending>,
    /// Why the composer did not send (too long, conversation left).
    pub composer_problem: Option<Problem>,
    next_local_id: u64,
    /// Delivery states of texts sent while the app runs, by message id.
    pub deliveries: BTreeMap<String, (DeliveryState, Option<String>)>,
    delivery_order: VecDeque<String>,
    pub connection: Connection,
    /// The session is over: nothing more can be sent.
    pub ended: Option<Option<Problem>>,
    /// Errors to show, newest last.
    pub problems: Vec<Problem>,
    pub enroll: EnrollForm,
    pub unlock: UnlockForm,
    /// Events the backend passed on that the trust pages read (verification and
    /// membership changes), newest last, bounded.
    pub trust_events: VecDeque<Event>,
    /// The settings, and what the trust and management pages show.
    pub pages: Pages,
    /// The user's time zone's offset from UTC, read when the app started.
    pub utc_offset_seconds: i32,
    /// The window is in front: what the open conversation shows is read only then.
    pub in_front: bool,
    /// The list was asked for and has not come yet.
    listing: bool,
    /// Something changed the list while it was on its way: ask again when it comes.
    list_stale: bool,
    /// Per conversation (group id), the last position this run of the app marked read.
    read_marks: HashMap<String, i64>,
}

impl Model {
    pub fn new(lang: Lang, utc_offset_seconds: i32) -> Model {
        Model {
            lang,
            utc_offset_seconds,
            in_front: true,
            ..Model::default()
        }
    }

    /// The total of unread entries, for the window title.
    pub fn unread_total(&self) -> u64 {
        self.conversations.iter().map(|c| c.unread).sum()
    }

    /// The open conversation.
    pub fn selected_conversation(&self) -> Option<&Conversation> {
        let selected = self.selected.as_deref()?;
        self.conversations.iter().find(|c| c.group_id == selected)
    }

    /// Shows a problem (the oldest gives way past a few).
    pub fn show_problem(&mut self, problem: Problem) {
        if self.problems.last() == Some(&problem) {
            return;
        }
        self.problems.push(problem);
        if self.problems.len() > PROBLEMS_MAX {
            self.problems.remove(0);
        }
    }

    /// Opens a conversation: its timeline is loaded from the newest page, and it is read.
    pub fn open(&mut self, group_id: &str) -> Vec<Request> {
        self.page = Page::Conversation;
        self.new_direct = None;
        if self.selected.as_deref() == Some(group_id) && !self.timeline.entries.is_empty() {
            return Vec::new();
        }
        // A draft waiting for the verification check stays in its own conversation.
        self.pages.send_check = None;
        self.selected = Some(group_id.to_owned());
        self.timeline = Timeline::new(group_id);
        self.timeline.refresh_request().into_iter().collect()
    }

    /// Starts a direct conversation with `user`: the one that exists, or a new one that is
    /// created by the first text.
    pub fn start_direct(&mut self, user: &str) -> Vec<Request> {
        let user = user.trim();
        if user.is_empty() {
            return Vec::new();
        }
        let found = self
            .conversations
            .iter()
            .find(|c| c.kind == Kind::Direct && same_user(&c.name, user))
            .map(|c| c.group_id.clone());
        match found {
            Some(group_id) => self.open(&group_id),
            None => {
                self.page = Page::Conversation;
                self.pages.send_check = None;
                self.selected = None;
                self.timeline = Timeline::default();
                self.new_direct = Some(user.to_owned());
                Vec::new()
            }
        }
    }

    /// The key of the open conversation's draft and pending texts.
    pub fn composing_key(&self) -> Option<String> {
        self.selected.clone().or_else(|| self.new_direct.clone())
    }

    /// Sends the open conversation's draft: it shows as pending until the relay answers.
    pub fn send_draft(&mut self) -> Result<Option<Request>, Problem> {
        match self.composing_key() {
            Some(key) => self.send_draft_of(key, Vec::new()),
            None => Ok(None),
        }
    }

    /// Sends the draft of the conversation `key` (a group id, or the user of a new direct
    /// conversation), whichever conversation is open; `acknowledged` as `Request::Send`.
    fn send_draft_of(
        &mut self,
        key: String,
        acknowledged: Vec<String>,
    ) -> Result<Option<Request>, Problem> {
        let listed = self.conversations.iter().find(|c| c.group_id == key);
        let target = match listed {
            Some(c) if !c.left => c.target(),
            None if self.new_direct.as_deref() == Some(key.as_str()) => Target::Direct(key.clone()),
            _ => return Err(Problem::new("composer-error-left")),
        };
        let draft = self
            .drafts
            .get(&key)
            .map(String::as_str)
            .unwrap_or_default();
        let text = draft.trim_end_matches(['\n', '\r']).to_owned();
        if text.trim().is_empty() {
            return Ok(None);
        }
        if text.len() > TEXT_BYTES_MAX {
            return Err(Problem::new("composer-error-too-long"));
        }
        if self.pending.len() >= PENDING_MAX {
            return Err(Problem::new("composer-error-too-many-pending"));
        }
        self.drafts.remove(&key);
        self.next_local_id += 1;
        let local_id = self.next_local_id;
        self.pending.push(Pending {
            local_id,
            conversation: key,
            target: target.clone(),
            text: text.clone(),
            acknowledged: acknowledged.clone(),
            failed: None,
        });
        Ok(Some(Request::Send {
            target,
            text,
            local_id,
            acknowledged,
        }))
    }

    /// Sends a failed text again.
    pub fn retry(&mut self, local_id: u64) -> Option<Request> {
        let pending = self.pending.iter_mut().find(|p| p.local_id == local_id)?;
        pending.failed = None;
        Some(Request::Send {
            target: pending.target.clone(),
            text: pending.text.clone(),
            local_id,
            acknowledged: pending.acknowledged.clone(),
        })
    }

    /// Takes a failed text back into the composer, to change it.
    pub fn edit_failed(&mut self, local_id: u64) {
        if let Some(at) = self.pending.iter().position(|p| p.local_id == local_id) {
            let pending = self.pending.remove(at);
            let draft = self.drafts.entry(pending.conversation).or_default();
            if !draft.is_empty() {
                draft.push('\n');
            }
            draft.push_str(&pending.text);
        }
    }

    /// Applies what the backend sent; returns the requests that follow from it.
    pub fn apply(&mut self, update: Update) -> Vec<Request> {
        match update {
            Update::NeedsEnrollment => self.screen = Screen::Enroll,
            Update::NeedsPassphrase => {
                self.screen = Screen::Unlock;
                self.unlock.retry_only = false;
                self.unlock.busy = false;
            }
            Update::Started { user } => {
                self.screen = Screen::Main;
                self.user = Some(user);
                self.enroll = EnrollForm::default();
                self.unlock = UnlockForm::default();
                // The composer follows the library's "require verified contacts".
                self.pages.require_verified = Loaded::Loading;
                let verified = Request::RequireVerified { set: None };
                return self.list_request().into_iter().chain([verified]).collect();
            }
            Update::EnrollFailed(problem) => {
                self.enroll.busy = false;
                self.enroll.problem = Some(problem);
            }
            Update::OpenFailed(problem) => self.open_failed(problem),
            Update::Conversations(list) => return self.set_conversations(list),
            Update::History {
                group_id,
                before,
                page,
            } => return self.history(&group_id, before, page),
            Update::Sent {
                local_id, result, ..
            } => return self.sent(local_id, result),
            Update::Event(event) => return self.event(event),
            Update::Ended(problem) => {
                self.ended = Some(problem.clone());
                if let Some(problem) = problem {
                    self.show_problem(problem);
                }
            }
            Update::Failed { asked, problem } => self.failed(asked, problem),
            page @ (Update::SafetyNumber { .. }
            | Update::Devices(_)
            | Update::Revoked { .. }
            | Update::DeviceLink(_)
            | Update::Dropped(_)
            | Update::RequireVerified(_)
            | Update::SettingsFile(_)
            | Update::GroupMembers { .. }
            | Update::Governed { .. }
            | Update::SearchResults { .. }
            | Update::Located { .. }
            | Update::Unverified { .. }) => return self.apply_page(page),
        }
        Vec::new()
    }

    fn open_failed(&mut self, problem: Problem) {
        match self.screen {
            Screen::Unlock => {
                self.unlock.busy = false;
                self.unlock.passphrase = Zeroizing::default();
                self.unlock.problem = Some(problem);
            }
            // Enrolled, but its session did not start: enrolling again would only find the
            // device there, so the unlock screen tries to open it again.
            Screen::Enroll | Screen::Starting | Screen::Main => {
                self.enroll = EnrollForm::default();
                // Opening at start failed for another reason than a passphrase (the home
                // is in use by another process): the unlock screen says so and can retry.
                self.screen = Screen::Unlock;
                self.unlock.retry_only = true;
                self.unlock.busy = false;
                self.unlock.problem = Some(problem);
            }
        }
    }

    /// The request for the list, unless one is on its way (then it is asked again when
    /// that one comes): a burst of messages for conversations not yet listed asks once.
    fn list_request(&mut self) -> Option<Request> {
        if self.listing {
            self.list_stale = true;
            return None;
        }
        self.listing = true;
        Some(Request::Conversations)
    }

    /// A request failed or was refused: what waited for it is undone, so that it can be
    /// asked again, and the user is told.
    fn failed(&mut self, asked: Asked, problem: Problem) {
        fn undo<T>(loaded: &mut Loaded<T>, problem: &Problem) {
            if matches!(loaded, Loaded::Loading) {
                *loaded = Loaded::Failed(problem.clone());
            }
        }
        let pages = &mut self.pages;
        match asked {
            Asked::Home => {
                self.enroll.busy = false;
                self.unlock.busy = false;
            }
            Asked::Conversations => (self.listing, self.list_stale) = (false, false),
            Asked::History { group_id, before } if group_id == self.timeline.group_id => {
                match before {
                    None => (self.timeline.refreshing, self.timeline.stale) = (false, false),
                    Some(_) => self.timeline.loading_older = false,
                }
            }
            Asked::History { .. } | Asked::Locate => {}
            Asked::Send { local_id } => {
                // The pending line says why, with its buttons to try again.
                if let Some(p) = self.pending.iter_mut().find(|p| p.local_id == local_id) {
                    p.failed = Some(problem);
                }
                return;
            }
            Asked::MarkRead { group_id } => {
                self.read_marks.remove(&group_id);
            }
            Asked::SafetyNumber => {
                pages.confirming = false;
                undo(&mut pages.safety_number, &problem);
            }
            Asked::Devices => undo(&mut pages.devices, &problem),
            Asked::RevokeDevice => pages.revoking = None,
            Asked::LinkDevice => undo(&mut pages.device_link, &problem),
            Asked::GroupMembers => undo(&mut pages.members, &problem),
            Asked::Govern => pages.governing = None,
            Asked::Search => undo(&mut pages.search, &problem),
            Asked::RequireVerified => {
                if pages.require_verified == Loaded::Loading {
                    pages.require_verified = Loaded::Failed(problem.clone());
                }
            }
            Asked::Unverified { group_id } => {
                if group_id == pages.unverified_for {
                    undo(&mut pages.unverified, &problem);
                }
                let checking = SendCheck::Checking { group_id };
                if pages.send_check.as_ref() == Some(&checking) {
                    // Not sent: the draft stays in the composer, which says why.
                    pages.send_check = None;
                    self.composer_problem = Some(problem);
                    return;
                }
            }
        }
        self.show_problem(problem);
    }

    fn set_conversations(&mut self, list: Vec<relais_client::ConversationSummary>) -> Vec<Request> {
        self.listing = false;
        let left: Vec<String> = self
            .conversations
            .iter()
            .filter(|c| c.left)
            .map(|c| c.group_id.clone())
            .collect();
        self.conversations = list
            .into_iter()
            .map(|s| Conversation {
                left: left.contains(&s.group_id),
                group_id: s.group_id,
                name: s.name,
                kind: Kind::parse(&s.kind),
                unread: s.after_read_mark,
                last: s.last.map(|m| Preview {
                    sender: if m.event { String::new() } else { m.sender },
                    text: m.text,
                    at_ms: m.sent_at_ms,
                }),
            })
            .collect();
        self.sort_conversations();
        let listed: std::collections::HashSet<&str> = self
            .conversations
            .iter()
            .map(|c| c.group_id.as_str())
            .collect();
        self.read_marks.retain(|id, _| listed.contains(id.as_str()));
        let mut requests = Vec::new();
        if std::mem::take(&mut self.list_stale) {
            requests.extend(self.list_request());
        }
        // The conversation a first text created: open it now that it is listed.
        if let Some(user) = self.new_direct.clone() {
            let created = self
                .conversations
                .iter()
                .find(|c| c.kind == Kind::Direct && same_user(&c.name, &user))
                .map(|c| c.group_id.clone());
            if let Some(group_id) = created {
                if let Some(draft) = self.drafts.remove(&user) {
                    self.drafts.insert(group_id.clone(), draft);
                }
                for pending in self.pending.iter_mut().filter(|p| p.conversation == user) {
                    pending.conversation = group_id.clone();
                }
                requests.extend(self.open(&group_id));
            }
        }
        if let Some(request) = self.read_request() {
            requests.push(request);
        }
        requests
    }

    fn sort_conversations(&mut self) {
        self.conversations
            .sort_by_key(|c| (std::cmp::Reverse(c.activity_ms()), c.name.clone()));
    }

    fn history(&mut self, group_id: &str, before: Option<i64>, page: HistoryPage) -> Vec<Request> {
        if self.timeline.group_id != group_id {
            return Vec::new();
        }
        self.timeline.add(before, page);
        let mut requests = Vec::new();
        if before.is_none() && std::mem::take(&mut self.timeline.stale) {
            requests.extend(self.timeline.refresh_request());
        }
        requests.extend(self.read_request());
        requests.extend(self.reach_open_at());
        requests
    }

    /// Whether the window is in front; coming back in front reads the open conversation.
    pub fn set_in_front(&mut self, in_front: bool) -> Option<Request> {
        let back = in_front && !self.in_front;
        self.in_front = in_front;
        back.then(|| self.read_request()).flatten()
    }

    /// Marks the open conversation read up to its newest entry, when the user can see it
    /// (the window is in front, its timeline at the bottom) and that entry is past what
    /// was last marked: whatever the list's count says, which may predate the entry (the
    /// list of a refresh that crossed it, one's own text).
    fn read_request(&mut self) -> Option<Request> {
        if self.page != Page::Conversation || !self.timeline.at_bottom || !self.in_front {
            return None;
        }
        let newest = self.timeline.entries.back()?.position;
        let group_id = self.timeline.group_id.clone();
        let conversation = self
            .conversations
            .iter_mut()
            .find(|c| c.group_id == group_id)?;
        conversation.unread = 0;
        if self.read_marks.get(&group_id).is_some_and(|&m| m >= newest) {
            return None;
        }
        self.read_marks.insert(group_id.clone(), newest);
        Some(Request::MarkRead {
            group_id,
            position: newest,
        })
    }

    /// The user scrolled back to the bottom of the open conversation: it is read.
    pub fn reached_bottom(&mut self) -> Option<Request> {
        self.timeline.at_bottom = true;
        self.read_request()
    }

    /// The relay has a text (it is in the history now, and the list's preview), or refused
    /// it (it stays, to send again or take back).
    fn sent(&mut self, local_id: u64, result: Result<(), Problem>) -> Vec<Request> {
        match result {
            Ok(()) => {
                self.pending.retain(|p| p.local_id != local_id);
                let mut requests: Vec<Request> = self.list_request().into_iter().collect();
                if !self.timeline.group_id.is_empty() {
                    requests.extend(self.timeline.refresh_request());
                }
                requests
            }
            Err(problem) => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.local_id == local_id) {
                    p.failed = Some(problem);
                }
                Vec::new()
            }
        }
    }

    fn event(&mut self, event: Event) -> Vec<Request> {
        match event {
            Event::Message {
                group_id,
                sender,
                sent_at_ms,
                text,
                ..
            } => self.arrived(&group_id, sender, sent_at_ms, text),
            Event::Notice {
                group_id,
                at_ms,
                text,
                ..
            } => self.arrived(&group_id, String::new(), at_ms, text),
            Event::Conversation {
                conversation,
                group_id,
                change,
                ..
            } => self.conversation_changed(&group_id, conversation, change),
            Event::Delivery {
                message_id,
                state,
                reason,
                ..
            } => {
                self.delivered(message_id, state, reason);
                Vec::new()
            }
            Event::Connection {
                state,
                reason,
                code,
                retry_in_ms,
            } => {
                self.connection = Connection {
                    state: Some(state),
                    retry_at: retry_in_ms
                        .map(|ms| Instant::now() + std::time::Duration::from_millis(ms)),
                    reason,
                    code,
                };
                // What arrived while disconnected is announced; the list catches up.
                if state == ConnectionState::Connected {
                    return self.list_request().into_iter().collect();
                }
                Vec::new()
            }
            Event::Warning { text } => {
                // What the library noticed without failing (a device left out of a group
                // for running an old version): in its words, under a line that says so.
                self.show_problem(Problem {
                    id: "library-warning",
                    args: Vec::new(),
                    detail: Some(text),
                });
                Vec::new()
            }
            Event::Lagged { .. } => {
                // Events were dropped: the history has everything, reload from it.
                let mut requests: Vec<Request> = self.list_request().into_iter().collect();
                if !self.timeline.group_id.is_empty() {
                    requests.extend(self.timeline.refresh_request());
                }
                requests
            }
            trust @ (Event::Membership { .. } | Event::Verification { .. }) => {
                self.pages.trust_changed(&trust);
                self.trust_events.push_back(trust);
                if self.trust_events.len() > TRUST_EVENTS_MAX {
                    self.trust_events.pop_front();
                }
                Vec::new()
            }
        }
    }

    /// A conversation appeared (the list is loaded again for it), was renamed, or was left.
    fn conversation_changed(
        &mut self,
        group_id: &str,
        name: String,
        change: ConversationChange,
    ) -> Vec<Request> {
        match change {
            ConversationChange::Created => return self.list_request().into_iter().collect(),
            ConversationChange::Renamed => {
                if let Some(c) = self.find_mut(group_id) {
                    c.name = name;
                }
            }
            ConversationChange::Left => {
                if let Some(c) = self.find_mut(group_id) {
                    c.left = true;
                }
            }
        }
        Vec::new()
    }

    /// A text or a notice was stored in a conversation: its preview, its place in the list,
    /// its unread count, and the open timeline's newest page.
    fn arrived(
        &mut self,
        group_id: &str,
        sender: String,
        at_ms: i64,
        text: String,
    ) -> Vec<Request> {
        let Some(conversation) = self.find_mut(group_id) else {
            // Not listed yet (just joined): the list will have it.
            return self.list_request().into_iter().collect();
        };
        conversation.last = Some(Preview {
            sender,
            text,
            at_ms,
        });
        conversation.unread += 1;
        self.sort_conversations();
        let mut requests = Vec::new();
        if self.timeline.group_id == group_id {
            requests.extend(self.timeline.refresh_request());
        }
        requests
    }

    fn delivered(&mut self, message_id: String, state: DeliveryState, reason: Option<String>) {
        if self
            .deliveries
            .insert(message_id.clone(), (state, reason))
            .is_none()
        {
            self.delivery_order.push_back(message_id);
            if self.delivery_order.len() > DELIVERIES_MAX
                && let Some(oldest) = self.delivery_order.pop_front()
            {
                self.deliveries.remove(&oldest);
            }
        }
    }

    fn find_mut(&mut self, group_id: &str) -> Option<&mut Conversation> {
        self.conversations
            .iter_mut()
            .find(|c| c.group_id == group_id)
    }
}

/// Whether `name` (as the list shows it, `bob@domain`) is the user `typed` (`bob` or
/// `bob@domain`).
fn same_user(name: &str, typed: &str) -> bool {
    name == typed
        || name
            .split_once('@')
            .is_some_and(|(local, _)| local == typed)
}

#[cfg(test)]
mod tests {
    use relais_client::{ConversationSummary, HistoryEntry, ReceivedMessage};

    use super::*;

    fn summary(id: u8, name: &str, kind: &str, unread: u64, at_ms: i64) -> ConversationSummary {
        ConversationSummary {
            name: name.into(),
            group_id: hex::encode([id; 16]),
            kind: kind.into(),
            unread: 0,
            after_read_mark: unread,
            last: (at_ms > 0).then(|| ReceivedMessage {
                conversation: name.into(),
                sender: "bob@x".into(),
                sent_at_ms: at_ms,
                text: format!("last in {name}"),
                event: false,
            }),
        }
    }

    fn gid(id: u8) -> String {
        hex::encode([id; 16])
    }

    fn page(positions: std::ops::RangeInclusive<i64>, total: u64) -> HistoryPage {
        HistoryPage {
            entries: positions
                .map(|p| HistoryEntry {
                    position: p,
                    message_id: format!("{p:02x}"),
                    message: ReceivedMessage {
                        conversation: "ops".into(),
                        sender: if p % 10 == 0 {
                            String::new()
                        } else {
                            "bob@x".into()
                        },
                        sent_at_ms: p * 1000,
                        text: format!("text {p}"),
                        event: p % 10 == 0,
                    },
                })
                .collect(),
            total,
        }
    }

    fn message(id: u8, text: &str, at_ms: i64) -> Update {
        Update::Event(Event::Message {
            conversation: "ops".into(),
            group_id: gid(id),
            sender: "bob@x".into(),
            sent_at_ms: at_ms,
            text: text.into(),
        })
    }

    fn history(id: u8, before: Option<i64>, page: HistoryPage) -> Update {
        Update::History {
            group_id: gid(id),
            before,
            page,
        }
    }

    /// A model in the main window with three conversations listed.
    fn main_model() -> Model {
        let mut model = Model::new(Lang::Fr, 0);
        let requests = model.apply(Update::Started {
            user: "alice@x".into(),
        });
        // The list, and the library's "require verified contacts" the composer follows.
        assert!(matches!(
            requests[..],
            [
                Request::Conversations,
                Request::RequireVerified { set: None }
            ]
        ));
        assert_eq!(model.screen, Screen::Main);
        model.apply(Update::Conversations(vec![
            summary(1, "ops", "group", 2, 5_000),
            summary(2, "bob@x", "direct", 0, 9_000),
            summary(3, "02020202", "unknown", 1, 0),
        ]));
        model
    }

    #[test]
    fn the_list_is_sorted_by_activity_with_unread_counts_and_a_total() {
        let model = main_model();
        let names: Vec<&str> = model
            .conversations
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["bob@x", "ops", "02020202"]);
        assert_eq!(model.unread_total(), 3);
        assert_eq!(model.conversations[2].kind, Kind::Unknown);
        assert_eq!(
            model.conversations[1]
                .last
                .as_ref()
                .map(|p| p.text.as_str()),
            Some("last in ops")
        );
    }

    #[test]
    fn a_message_elsewhere_counts_as_unread_and_moves_its_conversation_up() {
        let mut model = main_model();
        let requests = model.apply(message(1, "Réunion à 15 h", 20_000));
        assert!(requests.is_empty(), "{requests:?}");
        assert_eq!(model.conversations[0].name, "ops");
        assert_eq!(model.conversations[0].unread, 3);
        let preview = model.conversations[0].last.clone().expect("preview");
        assert_eq!(
            (preview.text.as_str(), preview.at_ms),
            ("Réunion à 15 h", 20_000)
        );
        // Unknown here (just joined): the list is asked for again.
        let requests = model.apply(message(9, "hello", 21_000));
        assert!(matches!(requests[..], [Request::Conversations]));
    }

    #[test]
    fn opening_a_conversation_loads_its_newest_page_and_marks_it_read() {
        let mut model = main_model();
        let requests = model.open(&gid(1));
        assert!(
            matches!(&requests[..], [Request::History { before: None, .. }]),
            "{requests:?}"
        );
        let requests = model.apply(history(1, None, page(801..=1000, 1000)));
        match &requests[..] {
            [Request::MarkRead { group_id, position }] => {
                assert_eq!((group_id.as_str(), *position), (gid(1).as_str(), 1000));
            }
            other => panic!("expected a read mark, got {other:?}"),
        }
        assert_eq!(
            model
                .conversations
                .iter()
                .find(|c| c.group_id == gid(1))
                .map(|c| c.unread),
            Some(0)
        );
        assert_eq!(model.timeline.entries.len(), 200);
        assert!(model.timeline.has_older());
        assert!(model.timeline.entries.iter().any(Entry::is_event));
    }

    #[test]
    fn older_pages_go_before_and_are_asked_once() {
        let mut model = main_model();
        model.open(&gid(1));
        model.apply(history(1, None, page(801..=1000, 1000)));
        let first = model.timeline.older_request();
        assert!(
            matches!(
                first,
                Some(Request::History {
                    before: Some(801),
                    ..
                })
            ),
            "{first:?}"
        );
        assert!(model.timeline.older_request().is_none(), "one at a time");
        model.apply(history(1, Some(801), page(601..=800, 1000)));
        let positions: Vec<i64> = model.timeline.entries.iter().map(|e| e.position).collect();
        assert_eq!(positions.first(), Some(&601));
        assert!(positions.windows(2).all(|w| w[0] + 1 == w[1]), "contiguous");
        // A page for a timeline that moved on meanwhile is dropped.
        model.apply(history(1, Some(42), page(1..=41, 1000)));
        assert_eq!(
            model.timeline.entries.front().map(|e| e.position),
            Some(601)
        );
    }

    #[test]
    fn new_entries_in_the_open_conversation_fetch_the_newest_page_once_at_a_time() {
        let mut model = main_model();
        model.open(&gid(1));
        model.apply(history(1, None, page(801..=1000, 1000)));
        let requests = model.apply(message(1, "un", 30_000));
        assert!(matches!(
            &requests[..],
            [Request::History { before: None, .. }]
        ));
        // A burst while that page is on its way asks for nothing more now...
        assert!(model.apply(message(1, "deux", 30_001)).is_empty());
        assert!(model.apply(message(1, "trois", 30_002)).is_empty());
        // ...and once more when it comes.
        let requests = model.apply(history(1, None, page(901..=1001, 1001)));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::History { before: None, .. })),
            "{requests:?}"
        );
        assert_eq!(
            model.timeline.entries.back().map(|e| e.position),
            Some(1001)
        );
        assert_eq!(model.timeline.entries.len(), 201, "no entry twice");
        // Far more than a page arrived: the newest page replaces what was loaded.
        model.apply(message(1, "quatre", 30_003));
        model.apply(history(1, None, page(5001..=5200, 5200)));
        assert_eq!(
            model.timeline.entries.front().map(|e| e.position),
            Some(5001)
        );
        assert_eq!(model.timeline.entries.len(), 200);
    }

    #[test]
    fn a_text_is_pending_until_sent_and_kept_when_refused() {
        let mut model = main_model();
        model.open(&gid(1));
        model.apply(history(1, None, page(1..=20, 20)));
        model.drafts.insert(gid(1), "Bonjour à tous\n".into());
        let request = model.send_draft().expect("sendable").expect("a request");
        let Request::Send {
            target,
            text,
            local_id,
            acknowledged,
        } = request
        else {
            panic!("not a send: {request:?}")
        };
        assert!(acknowledged.is_empty(), "no check was asked for");
        assert_eq!(target, Target::Group("ops".into()));
        assert_eq!(text, "Bonjour à tous");
        assert!(!model.drafts.contains_key(&gid(1)), "the composer is empty");
        assert_eq!(model.pending.len(), 1);
        let refused = Problem::new("error-not-admin");
        model.apply(Update::Sent {
            local_id,
            target: target.clone(),
            result: Err(refused.clone()),
        });
        assert_eq!(model.pending[0].failed, Some(refused));
        // Taken back into the composer, to change it.
        model.edit_failed(local_id);
        assert!(model.pending.is_empty());
        assert_eq!(
            model.drafts.get(&gid(1)).map(String::as_str),
            Some("Bonjour à tous")
        );
        let request = model.send_draft().expect("sendable").expect("a request");
        let Request::Send { local_id, .. } = request else {
            panic!("not a send")
        };
        let requests = model.apply(Update::Sent {
            local_id,
            target,
            result: Ok(()),
        });
        assert!(model.pending.is_empty());
        assert!(requests.iter().any(|r| matches!(r, Request::Conversations)));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::History { before: None, .. }))
        );
    }

    #[test]
    fn texts_too_long_or_empty_are_not_sent() {
        let mut model = main_model();
        model.open(&gid(1));
        model.drafts.insert(gid(1), "  \n".into());
        assert!(matches!(model.send_draft(), Ok(None)));
        model.drafts.insert(gid(1), "é".repeat(TEXT_BYTES_MAX));
        assert!(
            matches!(model.send_draft(), Err(p) if p.id == "composer-error-too-long"),
            "a text over {TEXT_BYTES_MAX} bytes is refused"
        );
        assert!(
            model.drafts.contains_key(&gid(1)),
            "the text stays to be shortened"
        );
    }

    #[test]
    fn a_new_direct_conversation_opens_once_its_first_text_created_it() {
        let mut model = main_model();
        assert!(model.start_direct("carol").is_empty());
        assert_eq!(model.new_direct.as_deref(), Some("carol"));
        model.drafts.insert("carol".into(), "Salut".into());
        let request = model.send_draft().expect("sendable").expect("a request");
        assert!(
            matches!(request, Request::Send { target: Target::Direct(ref u), .. } if u == "carol")
        );
        let mut list = vec![summary(1, "ops", "group", 0, 5_000)];
        list.push(summary(4, "carol@x", "direct", 0, 40_000));
        let requests = model.apply(Update::Conversations(list));
        assert_eq!(model.selected, Some(gid(4)));
        assert!(model.new_direct.is_none());
        assert_eq!(model.pending[0].conversation, gid(4));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::History { .. }))
        );
        // An existing one is opened, not started again.
        model.start_direct("bob");
        assert_eq!(model.selected, None, "bob is not in this list any more");
        model.start_direct("carol@x");
        assert_eq!(model.selected, Some(gid(4)));
    }

    #[test]
    fn renames_departures_and_lost_events_change_the_list() {
        let mut model = main_model();
        model.apply(Update::Event(Event::Conversation {
            conversation: "crise".into(),
            group_id: gid(1),
            change: ConversationChange::Renamed,
            kind: "group".into(),
            previous_name: Some("ops".into()),
        }));
        let renamed = model.conversations.iter().find(|c| c.group_id == gid(1));
        assert_eq!(renamed.map(|c| c.name.as_str()), Some("crise"));
        model.apply(Update::Event(Event::Conversation {
            conversation: "crise".into(),
            group_id: gid(1),
            change: ConversationChange::Left,
            kind: "group".into(),
            previous_name: None,
        }));
        model.open(&gid(1));
        model.apply(history(1, None, page(1..=20, 20)));
        model.drafts.insert(gid(1), "encore là ?".into());
        assert!(matches!(model.send_draft(), Err(p) if p.id == "composer-error-left"));
        let requests = model.apply(Update::Event(Event::Lagged { missed: 12 }));
        assert!(requests.iter().any(|r| matches!(r, Request::Conversations)));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::History { .. }))
        );
    }

    #[test]
    fn the_connection_and_the_end_of_the_session_are_shown() {
        let mut model = main_model();
        model.apply(Update::Event(Event::Connection {
            state: ConnectionState::Reconnecting,
            reason: Some("connection reset".into()),
            code: None,
            retry_in_ms: Some(4_000),
        }));
        assert_eq!(model.connection.state, Some(ConnectionState::Reconnecting));
        let wait = model
            .connection
            .retry_at
            .expect("when")
            .saturating_duration_since(Instant::now());
        assert!(
            wait.as_millis() > 3_000 && wait.as_millis() <= 4_000,
            "{wait:?}"
        );
        model.apply(Update::Event(Event::Connection {
            state: ConnectionState::Ended,
            reason: Some("device revoked".into()),
            code: Some("DEVICE_REVOKED".into()),
            retry_in_ms: None,
        }));
        let revoked = Problem::new("error-device-revoked");
        model.apply(Update::Ended(Some(revoked.clone())));
        assert_eq!(model.connection.code.as_deref(), Some("DEVICE_REVOKED"));
        assert_eq!(model.ended, Some(Some(revoked.clone())));
        assert_eq!(model.problems, [revoked]);
    }

    #[test]
    fn delivery_states_are_kept_by_message_id_within_a_bound() {
        let mut model = main_model();
        for n in 0..DELIVERIES_MAX + 10 {
            model.apply(Update::Event(Event::Delivery {
                conversation: "ops".into(),
                group_id: gid(1),
                message_id: format!("{n:08x}"),
                state: DeliveryState::Sent,
                reason: None,
            }));
        }
        assert_eq!(model.deliveries.len(), DELIVERIES_MAX);
        assert!(
            !model.deliveries.contains_key("00000000"),
            "the oldest gave way"
        );
        assert!(
            model
                .deliveries
                .contains_key(&format!("{:08x}", DELIVERIES_MAX + 9))
        );
    }

    #[test]
    fn what_arrives_behind_other_windows_stays_unread_until_the_window_is_in_front() {
        let mut model = main_model();
        model.open(&gid(1));
        model.apply(history(1, None, page(1..=20, 20)));
        assert!(model.set_in_front(false).is_none());
        model.apply(message(1, "pendant votre absence", 30_000));
        let requests = model.apply(history(1, None, page(1..=21, 21)));
        assert!(
            !requests
                .iter()
                .any(|r| matches!(r, Request::MarkRead { .. })),
            "{requests:?}"
        );
        assert_eq!(model.selected_conversation().map(|c| c.unread), Some(1));
        match model.set_in_front(true) {
            Some(Request::MarkRead { position, .. }) => assert_eq!(position, 21),
            other => panic!("expected a read mark, got {other:?}"),
        }
        assert_eq!(
            model.unread_total(),
            1,
            "the other conversation's unread stay"
        );
    }

    #[test]
    fn a_wrong_passphrase_is_said_and_forgotten() {
        let mut model = Model::new(Lang::Fr, 0);
        model.apply(Update::NeedsPassphrase);
        assert_eq!(model.screen, Screen::Unlock);
        model.unlock.passphrase = Zeroizing::new("pas la bonne".into());
        model.unlock.busy = true;
        model.apply(Update::OpenFailed(Problem::new("error-wrong-passphrase")));
        assert!(model.unlock.passphrase.is_empty());
        assert!(!model.unlock.busy);
        assert_eq!(
            model.unlock.problem,
            Some(Problem::new("error-wrong-passphrase"))
        );
        // Another process holds the home at start: the screen offers to try again.
        let mut model = Model::new(Lang::Fr, 0);
        model.apply(Update::OpenFailed(Problem::new("error-home-in-use")));
        assert_eq!(model.screen, Screen::Unlock);
        assert!(model.unlock.retry_only);
    }

    #[test]
    fn a_checked_draft_goes_to_its_own_conversation_only() {
        let mut model = main_model();
        model.open(&gid(1));
        model.drafts.insert(gid(1), "pour ops".into());
        model.pages.send_check = Some(SendCheck::Checking { group_id: gid(1) });
        // Another conversation opened while the check runs: the check is off.
        model.open(&gid(2));
        model.drafts.insert(gid(2), "pour bob".into());
        assert_eq!(model.pages.send_check, None);
        let requests = model.apply(Update::Unverified {
            group_id: gid(1),
            then_send: true,
            result: Ok(Vec::new()),
        });
        assert!(requests.is_empty(), "{requests:?}");
        assert!(model.pending.is_empty());
        // Confirmed for a conversation, its draft goes to it, whichever is open, naming
        // the contacts the user chose to send to anyway (the library refuses otherwise).
        let requests = model.send_checked(&gid(1), vec!["bob@x".into()]);
        match &requests[..] {
            [
                Request::Send {
                    target,
                    text,
                    acknowledged,
                    ..
                },
            ] => {
                assert_eq!(target, &Target::Group("ops".into()));
                assert_eq!(text, "pour ops");
                assert_eq!(acknowledged, &["bob@x"]);
            }
            other => panic!("expected ops's draft, got {other:?}"),
        }
        assert_eq!(
            model.drafts.get(&gid(2)).map(String::as_str),
            Some("pour bob")
        );
    }

    #[test]
    fn an_entry_past_the_last_mark_is_marked_whatever_the_list_counted() {
        let mut model = main_model();
        model.open(&gid(1));
        let requests = model.apply(history(1, None, page(1..=20, 20)));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::MarkRead { position: 20, .. }))
        );
        // One's own text: the list's answer (no unread) comes before the history's.
        model.drafts.insert(gid(1), "moi".into());
        let Ok(Some(Request::Send {
            local_id, target, ..
        })) = model.send_draft()
        else {
            panic!("not sent")
        };
        model.apply(Update::Sent {
            local_id,
            target,
            result: Ok(()),
        });
        model.apply(Update::Conversations(vec![summary(
            1, "ops", "group", 0, 6_000,
        )]));
        let requests = model.apply(history(1, None, page(1..=21, 21)));
        assert!(
            requests
                .iter()
                .any(|r| matches!(r, Request::MarkRead { position: 21, .. })),
            "{requests:?}"
        );
        // Nothing new: nothing marked again.
        model.apply(message(1, "x", 7_000));
        let requests = model.apply(history(1, None, page(1..=21, 21)));
        assert!(
            !requests
                .iter()
                .any(|r| matches!(r, Request::MarkRead { .. }))
        );
        // A mark that failed is sent again with the next entry shown.
        model.apply(Update::Failed {
            asked: Asked::MarkRead { group_id: gid(1) },
            problem: Problem::new("error-local-storage"),
        });
        assert!(model.reached_bottom().is_some());
    }

    #[test]
    fn a_refused_or_failed_request_leaves_nothing_waiting_for_it() {
        let mut model = main_model();
        model.open(&gid(1));
        assert!(model.timeline.refreshing);
        let busy = |asked| Update::Failed {
            asked,
            problem: Problem::new("error-busy"),
        };
        let newest = Asked::History {
            group_id: gid(1),
            before: None,
        };
        model.apply(busy(newest));
        assert!(
            !model.timeline.refreshing,
            "the newest page can be asked again"
        );
        assert!(matches!(
            &model.apply(message(1, "encore", 9_500))[..],
            [Request::History { before: None, .. }]
        ));
        model.apply(history(1, None, page(801..=1000, 1000)));
        assert!(model.timeline.older_request().is_some());
        model.apply(busy(Asked::History {
            group_id: gid(1),
            before: Some(801),
        }));
        assert!(!model.timeline.loading_older);
        assert!(model.timeline.older_request().is_some(), "asked again");
        model.pages.devices = Loaded::Loading;
        model.apply(busy(Asked::Devices));
        assert_eq!(
            model.pages.devices,
            Loaded::Failed(Problem::new("error-busy"))
        );
        model.drafts.insert(gid(1), "texte".into());
        let Ok(Some(Request::Send { local_id, .. })) = model.send_draft() else {
            panic!("not sent")
        };
        model.apply(busy(Asked::Send { local_id }));
        assert_eq!(model.pending[0].failed, Some(Problem::new("error-busy")));
        model.pages.send_check = Some(SendCheck::Checking { group_id: gid(1) });
        model.apply(busy(Asked::Unverified { group_id: gid(1) }));
        assert_eq!(model.pages.send_check, None);
        assert_eq!(model.composer_problem, Some(Problem::new("error-busy")));
    }

    #[test]
    fn the_list_is_asked_once_at_a_time_however_many_messages_need_it() {
        let mut model = main_model();
        let mut asked = 0;
        for n in 0..1_000 {
            let requests = model.apply(message(100 + (n % 100) as u8, "salut", 10_000 + n));
            asked += requests
                .iter()
                .filter(|r| matches!(r, Request::Conversations))
                .count();
        }
        assert_eq!(asked, 1, "one request in flight");
        // When it comes, once more for what changed meanwhile; then nothing.
        let requests = model.apply(Update::Conversations(Vec::new()));
        assert!(
            matches!(&requests[..], [Request::Conversations]),
            "{requests:?}"
        );
        assert!(model.apply(Update::Conversations(Vec::new())).is_empty());
        // A failed one can be asked again.
        assert!(matches!(
            &model.apply(message(7, "a", 1))[..],
            [Request::Conversations]
        ));
        model.apply(Update::Failed {
            asked: Asked::Conversations,
            problem: Problem::new("error-busy"),
        });
        assert!(matches!(
            &model.apply(message(7, "b", 2))[..],
            [Request::Conversations]
        ));
    }

    #[test]
    fn a_session_that_does_not_start_after_enrolling_goes_to_the_retry_screen() {
        let mut model = Model::new(Lang::Fr, 0);
        model.apply(Update::NeedsEnrollment);
        model.enroll.busy = true;
        model.apply(Update::OpenFailed(Problem::new("error-home-in-use")));
        assert_eq!(model.screen, Screen::Unlock);
        assert!(model.unlock.retry_only);
        assert!(!model.enroll.busy);
        assert_eq!(
            model.unlock.problem,
            Some(Problem::new("error-home-in-use"))
        );
    }
}
