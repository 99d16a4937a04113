//! What the trust and management pages show and how their answers change it: the
//! contact page, the user's devices, the group page, the search page, the settings and the
//! new-device banner with the confirmation before sending.

use relais_client::{Event, GroupMember, OwnDevice, ReceivedMessage, SafetyNumber};

use super::{Model, Page, Screen};
use crate::backend::{DeviceLink, GroupChange, Problem, Request, Update};
use crate::i18n::Lang;

/// The app's settings, as the settings page shows them and the home's settings file keeps
/// them (`views::settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The language chosen on the settings page; `None` follows the environment.
    pub language: Option<Lang>,
    /// Notify new messages while the window is not in front.
    pub notifications: bool,
    /// Show a message's text in its notification (off by default: a notification shows on
    /// a locked screen, and to whoever sits nearby).
    pub notification_text: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            language: None,
            notifications: true,
            notification_text: false,
        }
    }
}

/// Something a page loads through the backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Loaded<T> {
    /// Not asked for (or to be asked for again): the page asks when it is shown.
    #[default]
    Nothing,
    Loading,
    Ready(T),
    Failed(Problem),
}

impl<T> Loaded<T> {
    pub fn ready(&self) -> Option<&T> {
        match self {
            Loaded::Ready(value) => Some(value),
            _ => None,
        }
    }
}

impl<T> From<Result<T, Problem>> for Loaded<T> {
    fn from(result: Result<T, Problem>) -> Loaded<T> {
        result.map_or_else(Loaded::Failed, Loaded::Ready)
    }
}

/// A draft held back while sending waits for verified contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendCheck {
    /// Which of the conversation's contacts changed devices is being looked up.
    Checking { group_id: String },
    /// Some did: a dialog names them, and the draft goes only if the user confirms.
    Confirm {
        group_id: String,
        contacts: Vec<String>,
    },
}

/// A message for the user about what a page just did ("device revoked"): a catalogue id
/// and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: &'static str,
    pub args: Vec<(&'static str, String)>,
}

impl Notice {
    pub fn new(id: &'static str, args: &[(&'static str, &str)]) -> Notice {
        let args = args.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        Notice { id, args }
    }
}

/// What the trust and management pages show: the contact page, the user's devices, the
/// group page, the search page and the open conversation's new-device banner; each loads
/// what it shows when it is shown and finds it `Nothing`.
#[derive(Debug, Default)]
pub struct Pages {
    pub settings: Settings,
    /// The contact the contact page shows (as the user named them), and the safety number.
    pub contact: String,
    pub safety_number: Loaded<SafetyNumber>,
    /// Marking the contact verified is on its way.
    pub confirming: bool,
    pub devices: Loaded<Vec<OwnDevice>>,
    /// The device whose revocation is on its way.
    pub revoking: Option<String>,
    /// A link for a new device: kept only while the devices page shows it.
    pub device_link: Loaded<DeviceLink>,
    /// The group the group page manages (its group id; empty: the page creates one).
    pub group: String,
    pub members: Loaded<Vec<GroupMember>>,
    /// A change of a group on its way.
    pub governing: Option<GroupChange>,
    /// What the search page searched for, and what it found, newest first.
    pub search: Loaded<(String, Vec<ReceivedMessage>)>,
    /// A search result to open: its conversation and position, until it is loaded.
    pub open_at: Option<(String, i64)>,
    /// The banner's conversation (group id), and its contacts whose devices changed since
    /// the user verified them.
    pub unverified_for: String,
    pub unverified: Loaded<Vec<String>>,
    pub send_check: Option<SendCheck>,
    /// The library's "require verified contacts" (a setting of the device, which refuses
    /// such a text itself): read when the session starts, changed on the settings page.
    pub require_verified: Loaded<bool>,
    /// What a page just did, said on that page.
    pub notice: Option<Notice>,
}

impl Pages {
    /// A verification or membership change: what the pages showed about trust may be
    /// stale, so they load it again.
    pub(super) fn trust_changed(&mut self, event: &Event) {
        self.unverified_for.clear();
        self.unverified = Loaded::Nothing;
        if !self.confirming {
            self.safety_number = Loaded::Nothing;
        }
        if let Event::Membership { group_id, .. } = event
            && *group_id == self.group
            && self.governing.is_none()
        {
            self.members = Loaded::Nothing;
        }
    }
}

impl Model {
    /// Applies an answer to a request of the trust and management pages.
    pub(super) fn apply_page(&mut self, update: Update) -> Vec<Request> {
        let pages = &mut self.pages;
        match update {
            Update::SafetyNumber {
                contact,
                confirmed,
                result,
            } => return self.safety_number(contact, confirmed, result),
            Update::Devices(result) => pages.devices = result.into(),
            Update::Revoked { device_id, result } => {
                pages.revoking = None;
                match result {
                    Ok(()) => {
                        pages.notice = Some(Notice::new(
                            "devices-revoked",
                            &[("id", device_id.as_str())],
                        ));
                        pages.devices = Loaded::Loading;
                        return vec![Request::Devices];
                    }
                    Err(problem) => self.show_problem(problem),
                }
            }
            // Hidden meanwhile, a link is not kept: it is a secret.
            Update::DeviceLink(result)
                if pages.device_link == Loaded::Loading && self.page == Page::Devices =>
            {
                pages.device_link = result.into();
            }
            Update::Dropped(result) => self.dropped(result),
            Update::RequireVerified(result) => pages.require_verified = result.into(),
            Update::GroupMembers { group_id, result } if group_id == pages.group => {
                pages.members = result.into();
            }
            Update::Governed {
                group_id,
                change,
                result,
            } => return self.governed(&group_id, &change, result),
            Update::SearchResults { text, result } => {
                let asked = matches!(&pages.search, Loaded::Loading);
                if asked {
                    pages.search = result.map(|found| (text, found)).into();
                }
            }
            Update::Located { group_id, position } => {
                let mut requests = self.open(&group_id);
                if let Some(position) = position {
                    self.pages.open_at = Some((group_id, position));
                    requests.extend(self.reach_open_at());
                }
                return requests;
            }
            Update::Unverified {
                group_id,
                then_send,
                result,
            } => return self.unverified(&group_id, then_send, result),
            _ => {}
        }
        Vec::new()
    }

    fn safety_number(
        &mut self,
        contact: String,
        confirmed: bool,
        result: Result<SafetyNumber, Problem>,
    ) -> Vec<Request> {
        let pages = &mut self.pages;
        if contact != pages.contact {
            return Vec::new(); // asked for another contact, before the page changed
        }
        pages.confirming = false;
        match result {
            Ok(number) if confirmed => {
                pages.notice = Some(Notice::new(
                    "contact-marked-verified",
                    &[("contact", number.contact.as_str())],
                ));
                pages.safety_number = Loaded::Ready(number);
            }
            Err(problem) if confirmed => {
                // Not the number compared any more: show the new one.
                pages.safety_number = Loaded::Loading;
                self.show_problem(problem);
                return vec![Request::SafetyNumber {
                    contact,
                    confirm: None,
                }];
            }
            result => pages.safety_number = result.into(),
        }
        Vec::new()
    }

    fn governed(
        &mut self,
        group_id: &str,
        change: &GroupChange,
        result: Result<(), Problem>,
    ) -> Vec<Request> {
        let pages = &mut self.pages;
        pages.governing = None;
        let mut problem = match result {
            Ok(()) => {
                pages.notice = Some(match change {
                    GroupChange::Create { name, .. } => {
                        Notice::new("group-created", &[("name", name.as_str())])
                    }
                    GroupChange::Add(_) => Notice::new("group-done-added", &[]),
                    GroupChange::Remove(user) => {
                        Notice::new("group-done-removed", &[("user", user.as_str())])
                    }
                    GroupChange::Promote(user) => {
                        Notice::new("group-done-promoted", &[("user", user.as_str())])
                    }
                    GroupChange::Rename(name) => {
                        Notice::new("group-done-renamed", &[("name", name.as_str())])
                    }
                    GroupChange::Leave => Notice::new("group-done-left", &[]),
                });
                if !group_id.is_empty() && group_id == pages.group {
                    pages.members = Loaded::Nothing;
                }
                // Names, members and the list itself may have changed.
                return self.list_request().into_iter().collect();
            }
            Err(problem) => problem,
        };
        if problem.id == "group-error-not-admin" {
            let admins: Vec<&str> = pages
                .members
                .ready()
                .into_iter()
                .flatten()
                .filter(|m| m.admin)
                .map(|m| m.user.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if admins.is_empty() {
                // None known here: the general words, without names.
                problem.id = "error-not-admin";
            } else {
                problem.args.push(("admins", admins.join(", ")));
            }
            // The roles changed since they were shown: show them again.
            pages.members = Loaded::Nothing;
        }
        self.show_problem(problem);
        Vec::new()
    }

    fn unverified(
        &mut self,
        group_id: &str,
        then_send: bool,
        result: Result<Vec<String>, Problem>,
    ) -> Vec<Request> {
        let pages = &mut self.pages;
        if group_id == pages.unverified_for {
            pages.unverified = result.clone().into();
        }
        let checking = SendCheck::Checking {
            group_id: group_id.to_owned(),
        };
        if !then_send || pages.send_check.as_ref() != Some(&checking) {
            return Vec::new();
        }
        match result {
            Ok(contacts) if contacts.is_empty() => {
                pages.send_check = None;
                self.send_checked(group_id, Vec::new())
            }
            Ok(contacts) => {
                pages.send_check = Some(SendCheck::Confirm {
                    group_id: group_id.to_owned(),
                    contacts,
                });
                Vec::new()
            }
            Err(problem) => {
                // Not sent: the draft stays in the composer.
                pages.send_check = None;
                self.composer_problem = Some(problem);
                Vec::new()
            }
        }
    }

    /// The link found in a file dropped on the window, or why there is none: only the
    /// welcome screen takes it, and not while it enrolls.
    fn dropped(&mut self, result: Result<DeviceLink, Problem>) {
        if self.screen != Screen::Enroll || self.enroll.busy {
            return;
        }
        match result {
            Ok(link) => {
                self.enroll.link = link.0;
                self.enroll.problem = None;
            }
            Err(problem) => self.enroll.problem = Some(problem),
        }
    }

    /// Whether sending waits for the conversation's contacts to be checked: the library's
    /// setting, once known (until then the library alone refuses).
    pub fn require_verified(&self) -> bool {
        self.pages.require_verified == Loaded::Ready(true)
    }

    /// Sends the draft of the conversation that was checked (`group_id`) once sending may
    /// go ahead (no contact changed devices, or the user confirmed sending to those
    /// `acknowledged`): that draft only, even if another conversation is open by then.
    pub fn send_checked(&mut self, group_id: &str, acknowledged: Vec<String>) -> Vec<Request> {
        match self.send_draft_of(group_id.to_owned(), acknowledged) {
            Ok(request) => {
                self.composer_problem = None;
                request.into_iter().collect()
            }
            Err(problem) => {
                self.composer_problem = Some(problem);
                Vec::new()
            }
        }
    }

    /// Once the page of a search result's conversation holding it is loaded, the timeline
    /// shows it at the top; until then, the page before the oldest loaded is asked for.
    pub(super) fn reach_open_at(&mut self) -> Option<Request> {
        let (group_id, position) = self.pages.open_at.clone()?;
        if self.timeline.group_id != group_id {
            self.pages.open_at = None;
            return None;
        }
        let oldest = self.timeline.entries.front()?.position;
        if oldest > position && self.timeline.has_older() {
            return self.timeline.older_request();
        }
        self.pages.open_at = None;
        self.timeline.at_bottom = false;
        self.timeline.anchor = Some((position, 0.0));
        None
    }
}
