//! Groups their members govern: the group's name and its admins live in the MLS group
//! context, as a private-use extension every member and the relay read the same way, and
//! one rule, here, says which commits need an admin. The relay runs it on every commit it
//! verifies, and members run it again before they merge (`relais-client`'s `trust.rs`).
//!
//! The extension lists the group's users, longest-standing first, each with a role. The
//! roles in force are a function of the extension and of the users the tree holds: listed
//! admins who are still in the group, or, when none is left, the longest-standing user
//! (so when the last admin leaves, the next in line is admin from that very commit on,
//! for everyone, with no commit of its own). A group created before roles existed has no
//! extension: every member is an admin in it, as every member could do everything before.
//!
//! What needs an admin: removing another user's devices (unless the relay proposed it, for a
//! revoked device or a departure, or the user's own device did, to leave), renaming,
//! changing roles, and changing any other group-context extension. Adding users does not:
//! every member may bring in a colleague, as before, and every member sees it; the commit
//! then records the new users in the extension (bookkeeping anyone may do). Adding one's
//! own new devices changes no user and needs nothing.

mod review;

use std::collections::BTreeSet;
use std::fmt;

use openmls::prelude::{
    Capabilities, Extension, ExtensionType, Extensions, ExternalSender, GroupContext,
    RequiredCapabilitiesExtension, UnknownExtension,
};

pub use review::{check_commit, check_member_proposal, review};

/// The extension's type: in RFC 9420's private-use range (0xF000 to 0xFFFF), not a GREASE
/// value. Documented in `docs/reference/protocol.md`.
pub const EXTENSION_TYPE: u16 = 0xF5A1;

/// The version byte the extension starts with; another version is refused, not guessed.
const VERSION: u8 = 1;

/// Longest group name, in bytes of UTF-8: a title, not a text.
pub const NAME_BYTES_MAX: usize = 256;

/// Most users one extension lists: the relay's design target is a 10,000-member group.
pub const USERS_MAX: usize = 10_000;

/// Longest user name, in bytes: 64 for the name, `@`, 253 for the domain.
const USER_BYTES_MAX: usize = 64 + 1 + 253;

/// The extension's type as openmls names it.
pub fn extension_type() -> ExtensionType {
    ExtensionType::Unknown(EXTENSION_TYPE)
}

/// The capabilities every Relais leaf declares: the last-resort extension (any of its
/// KeyPackages may carry it) and this one, which every member of a governed group must
/// support (openmls refuses to add a device that does not).
pub fn leaf_capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![ExtensionType::LastResort, extension_type()])
        .build()
}

/// A new group's context extensions: the relay as external sender, this extension
/// required of every member (so that a GroupContextExtensions proposal may change it), and
/// the roles.
pub fn group_extensions(
    relay: ExternalSender,
    governance: &Governance,
) -> Result<Extensions<GroupContext>, String> {
    Extensions::from_vec(vec![
        Extension::ExternalSenders(vec![relay]),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[extension_type()],
            &[],
            &[],
        )),
        governance.extension(),
    ])
    .map_err(|e| format!("cannot build the group's extensions: {e}"))
}

/// `current` with the roles replaced, every other extension kept as it is: what a
/// GroupContextExtensions proposal that renames or changes roles carries.
pub fn with_governance(
    current: &Extensions<GroupContext>,
    governance: &Governance,
) -> Result<Extensions<GroupContext>, String> {
    let mut next = current.clone();
    next.add_or_replace(governance.extension())
        .map_err(|e| format!("cannot replace the group's roles: {e}"))?;
    Ok(next)
}

/// The group's name and its users, longest-standing first, each with a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governance {
    /// Empty for a direct conversation, whose name is the other user's.
    pub name: String,
    pub users: Vec<Entry>,
}

/// One user of the group, as the extension lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub admin: bool,
}

impl Governance {
    /// A new group's: `creator` alone, admin.
    pub fn new(name: &str, creator: &str) -> Governance {
        Governance {
            name: name.to_owned(),
            users: vec![Entry {
                user: creator.to_owned(),
                admin: true,
            }],
        }
    }

    /// Reads the extension from a group context's extensions: `None` when the group has
    /// none (a group from before roles), an error when it does not parse.
    pub fn of(extensions: &Extensions<GroupContext>) -> Result<Option<Governance>, String> {
        extensions
            .unknown(EXTENSION_TYPE)
            .map(|extension| Governance::decode(&extension.0))
            .transpose()
    }

    /// The extension as openmls carries it.
    pub fn extension(&self) -> Extension {
        Extension::Unknown(EXTENSION_TYPE, UnknownExtension(self.encode()))
    }

    /// Whether `user` is listed as an admin (present in the group or not).
    pub fn lists_admin(&self, user: &str) -> bool {
        self.users.iter().any(|e| e.user == user && e.admin)
    }

    /// The same extension with `user` made an admin (listed at the end if absent).
    pub fn with_admin(&self, user: &str) -> Governance {
        let mut next = self.clone();
        match next.users.iter_mut().find(|e| e.user == user) {
            Some(entry) => entry.admin = true,
            None => next.users.push(Entry {
                user: user.to_owned(),
                admin: true,
            }),
        }
        next
    }

    /// The same extension under another name.
    pub fn with_name(&self, name: &str) -> Governance {
        Governance {
            name: name.to_owned(),
            users: self.users.clone(),
        }
    }

    /// The bookkeeping a commit may do without an admin: the entries of the users who
    /// were in the group before the commit and still are after it, in order and with
    /// their roles, then the users the commit brings in, as members, in order of their
    /// names. So a user who left and is brought back comes back last, and never with a
    /// role the roster still remembered.
    pub fn recorded(&self, before: &BTreeSet<String>, after: &BTreeSet<String>) -> Governance {
        let mut users: Vec<Entry> = self
            .users
            .iter()
            .filter(|e| before.contains(&e.user) && after.contains(&e.user))
            .cloned()
            .collect();
        for user in after.difference(before) {
            if !users.iter().any(|e| &e.user == user) {
                users.push(Entry {
                    user: user.clone(),
                    admin: false,
                });
            }
        }
        Governance {
            name: self.name.clone(),
            users,
        }
    }

    /// The TLS encoding of `docs/reference/protocol.md`: a version byte, the name as an
    /// `opaque<V>`, then the users as a vector of (`opaque user<V>`, `uint8 role`).
    pub fn encode(&self) -> Vec<u8> {
        let mut users = Vec::new();
        for entry in &self.users {
            put_vector(&mut users, entry.user.as_bytes());
            users.push(u8::from(entry.admin));
        }
        let mut out = vec![VERSION];
        put_vector(&mut out, self.name.as_bytes());
        put_vector(&mut out, &users);
        out
    }

    /// Parses and validates an extension: every input is hostile until it has passed.
    pub fn decode(bytes: &[u8]) -> Result<Governance, String> {
        let mut rest = bytes;
        let version = take(&mut rest, 1)?[0];
        if version != VERSION {
            return Err(format!(
                "the group's roles are in version {version}, this software reads version {VERSION}; update it"
            ));
        }
        let name = take_vector(&mut rest)?;
        let mut users_bytes = take_vector(&mut rest)?;
        if !rest.is_empty() {
            return Err("the group's roles have trailing bytes".into());
        }
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| "the group's name is not UTF-8".to_string())?;
        let mut users = Vec::new();
        while !users_bytes.is_empty() {
            if users.len() == USERS_MAX {
                return Err(format!(
                    "the group's roles list more than {USERS_MAX} users"
                ));
            }
            let user = take_vector(&mut users_bytes)?;
            let admin = match take(&mut users_bytes, 1)?[0] {
                0 => false,
                1 => true,
                other => return Err(format!("unknown role {other} in the group's roles")),
            };
            let user = String::from_utf8(user.to_vec())
                .map_err(|_| "a user in the group's roles is not UTF-8".to_string())?;
            users.push(Entry { user, admin });
        }
        let governance = Governance { name, users };
        governance.validate()?;
        Ok(governance)
    }

    /// What every extension must be, whoever wrote it.
    pub fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.users.len() > USERS_MAX {
            return Err(format!(
                "the group's roles list more than {USERS_MAX} users"
            ));
        }
        let mut seen = BTreeSet::new();
        for entry in &self.users {
            if !valid_user(&entry.user) {
                let shown: String = entry.user.chars().take(80).collect();
                return Err(format!("the group's roles name {shown:?}, not a user"));
            }
            if !seen.insert(entry.user.as_str()) {
                return Err(format!("the group's roles list {} twice", entry.user));
            }
        }
        Ok(())
    }
}

/// A group name as members may set it: at most [`NAME_BYTES_MAX`] bytes, no control
/// characters, and no `@`, so that a group never passes for a user.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "a group's name is at most {NAME_BYTES_MAX} bytes, this one is {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a group's name may not contain control characters".into());
    }
    if name.contains('@') {
        return Err("a group's name may not contain @, so that it never passes for a user".into());
    }
    Ok(())
}

/// `name@domain` with the characters the relay allows in names and domains.
pub fn valid_user(user: &str) -> bool {
    if user.len() > USER_BYTES_MAX {
        return false;
    }
    let Some((name, domain)) = user.split_once('@') else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(allowed)
        && !domain.is_empty()
        && domain.chars().all(allowed)
}

/// The roles in force: who is in the group, longest-standing first, and who is admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Whether the group has the extension; without it every member is an admin.
    pub governed: bool,
    /// The group's users, longest-standing first: those the extension lists, then any it
    /// does not (added by a client that did not record them), by name.
    pub order: Vec<String>,
    /// The admins, in the same order.
    pub admins: Vec<String>,
    /// The admin in force only because no listed admin is left in the group.
    pub successor: Option<String>,
}

impl Roles {
    /// The roles of a group whose tree holds `present` users.
    pub fn of(governance: Option<&Governance>, present: &BTreeSet<String>) -> Roles {
        let Some(governance) = governance else {
            let order: Vec<String> = present.iter().cloned().collect();
            return Roles {
                governed: false,
                admins: order.clone(),
                order,
                successor: None,
            };
        };
        let mut order: Vec<String> = governance
            .users
            .iter()
            .filter(|e| present.contains(&e.user))
            .map(|e| e.user.clone())
            .collect();
        for user in present {
            if !order.contains(user) {
                order.push(user.clone());
            }
        }
        let mut admins: Vec<String> = order
            .iter()
            .filter(|u| governance.lists_admin(u))
            .cloned()
            .collect();
        let mut successor = None;
        if admins.is_empty()
            && let Some(first) = order.first()
        {
            admins.push(first.clone());
            successor = Some(first.clone());
        }
        Roles {
            governed: true,
            order,
            admins,
            successor,
        }
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }
}

/// Who asked for a device's removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedBy {
    /// The device itself: its user leaves the group.
    Itself,
    /// Another device of the same user: one's own lost or replaced device.
    Sibling,
    /// The relay, as external sender: a revoked device, or a departure it carries on.
    Relay,
    /// The committer, for another user's device: an admin's removal.
    Committer,
}

/// A device a commit removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub user: String,
    /// The device's signature key.
    pub key: Vec<u8>,
    pub by: RemovedBy,
}

/// What a commit changes that governance is about, read from the group before it and the
/// commit (`review`), as plain data: the rule (`Change::authorize`) needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub committer: String,
    pub before: Option<Governance>,
    pub after: Option<Governance>,
    /// The users the tree holds before and after the commit.
    pub present_before: BTreeSet<String>,
    pub present_after: BTreeSet<String>,
    /// The users whose devices the commit adds (new users or new devices of present ones).
    pub added: BTreeSet<String>,
    pub removed: Vec<Removed>,
    /// Whether any group-context extension other than this one and the external senders
    /// changes (the external senders are checked on their own, and may never change).
    pub other_extensions_changed: bool,
}

/// Why a commit or proposal is refused: it needs an admin and its committer is not one, or
/// it is malformed whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotAdmin(String),
    Invalid(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotAdmin(text) | Refused::Invalid(text) => f.write_str(text),
        }
    }
}

impl From<Refused> for crate::Refusal {
    fn from(refused: Refused) -> crate::Refusal {
        match refused {
            Refused::NotAdmin(text) => crate::Refusal::NotGroupAdmin(text),
            Refused::Invalid(text) => crate::Refusal::InvalidCommit(text),
        }
    }
}

impl Change {
    pub fn roles_before(&self) -> Roles {
        Roles::of(self.before.as_ref(), &self.present_before)
    }

    pub fn roles_after(&self) -> Roles {
        Roles::of(self.after.as_ref(), &self.present_after)
    }

    /// The users the commit brings into the group.
    pub fn new_users(&self) -> BTreeSet<String> {
        self.present_after
            .difference(&self.present_before)
            .cloned()
            .collect()
    }

    /// Users who leave: a device of theirs proposed its own removal.
    pub fn leaving(&self) -> BTreeSet<String> {
        self.removed
            .iter()
            .filter(|r| r.by == RemovedBy::Itself)
            .map(|r| r.user.clone())
            .collect()
    }

    /// The rule: what the commit does that needs an admin, refused when its committer is
    /// not one; and what no commit may do.
    pub fn authorize(&self) -> Result<(), Refused> {
        if let Some(after) = &self.after {
            after.validate().map_err(Refused::Invalid)?;
        }
        let mut needs = Vec::new();
        for user in self
            .removed
            .iter()
            .filter(|r| r.by == RemovedBy::Committer)
            .map(|r| r.user.as_str())
            .collect::<BTreeSet<_>>()
        {
            needs.push(format!("removing {user}"));
        }
        match (&self.before, &self.after) {
            (Some(_), None) => {
                return Err(Refused::Invalid(
                    "a commit may not remove the group's roles".into(),
                ));
            }
            (Some(before), Some(after)) => {
                let recorded = before.recorded(&self.present_before, &self.present_after);
                if after.name != before.name {
                    needs.push(format!("renaming the group to {:?}", after.name));
                } else if *after != recorded && after != before {
                    needs.push("changing the group's roles".into());
                } else if *after != recorded && !self.new_users().is_empty() {
                    // Not an admin matter: a commit that brings users in records them, or
                    // a user who left would come back with the role the roster remembered.
                    needs.push(format!(
                        "adding {} without recording them in the group's roles",
                        join(&self.new_users())
                    ));
                }
            }
            (None, Some(_)) => needs.push("giving the group roles".into()),
            (None, None) => {}
        }
        if self.other_extensions_changed {
            needs.push("changing the group's extensions".into());
        }
        let roles = self.roles_before();
        if needs.is_empty() || roles.is_admin(&self.committer) {
            return Ok(());
        }
        Err(Refused::NotAdmin(format!(
            "{} is not an admin of this group, and {} needs one; ask {}",
            self.committer,
            needs.join(" and "),
            join(&roles.admins)
        )))
    }
}

/// Names joined for a sentence.
fn join<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends an RFC 9420 variable-size vector: its length in 1, 2 or 4 bytes (§2.1.2),
/// then its bytes.
fn put_vector(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.extend_from_slice(&(0x4000 | len as u16).to_be_bytes());
    } else {
        // Longer than 2^30 cannot come from here: names and users are bounded far below.
        out.extend_from_slice(&(0x8000_0000 | len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Reads an RFC 9420 variable-size vector, refusing a length not in its shortest form.
fn take_vector<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let first = take(rest, 1)?[0];
    let (len, min) = match first >> 6 {
        0 => (usize::from(first & 0x3f), 0),
        1 => {
            let low = take(rest, 1)?[0];
            (usize::from(u16::from_be_bytes([first & 0x3f, low])), 1 << 6)
        }
        2 => {
            let low = take(rest, 3)?;
            let len = u32::from_be_bytes([first & 0x3f, low[0], low[1], low[2]]);
            (len as usize, 1 << 14)
        }
        _ => return Err("the group's roles use a reserved length prefix".into()),
    };
    if len < min {
        return Err("the group's roles encode a length in more bytes than it needs".into());
    }
    take(rest, len)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("the group's roles are truncated".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

#[cfg(test)]
mod tests;
