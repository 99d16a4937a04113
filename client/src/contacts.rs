//! Trust users can see (D14): the devices each contact has, the safety number a user
//! compares with a contact out of band, which contacts the user verified, and the
//! membership changes every conversation shows.
//!
//! A contact's devices are those the MLS groups on this device hold for them now: every
//! device enters a group only through a commit that all members verify, so the relay cannot
//! add one unseen. A contact is verified while the set of their devices is the one the user
//! confirmed; a new device (an operator could enroll one for anybody) makes them unverified
//! again until the user compares numbers anew. `docs/reference/safety-numbers.md` gives the
//! derivation so that any client computes the same number.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha512};

use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};

use crate::mls::Mls;
use crate::state::State;
use crate::{Client, ClientError, now_ms};

/// Iterations of SHA-512 per fingerprint, as Signal's numeric fingerprints: they make a
/// search for another key set with the same number cost that many hashes per try.
const ITERATIONS: usize = 5200;
/// The derivation's version, hashed first: a new derivation gives other numbers.
const VERSION: [u8; 2] = [0, 1];
/// The prefix of the QR payload, so a scanner knows what it reads.
pub const QR_PREFIX: &str = "relais-safety:1:";

/// A device key in the hex form the client shows.
pub type DeviceKey = String;

/// The 30 digits one user contributes: SHA-512 iterated over the version, the user's
/// sorted device keys and the user name, then six 5-byte chunks, each read as a big-endian
/// number modulo 100,000.
fn fingerprint(user: &str, keys: &BTreeSet<Vec<u8>>) -> String {
    let mut set = Vec::with_capacity(keys.len() * 32);
    for key in keys {
        set.extend_from_slice(&(key.len() as u16).to_be_bytes());
        set.extend_from_slice(key);
    }
    let mut hash = Sha512::new()
        .chain_update(VERSION)
        .chain_update(&set)
        .chain_update(user.as_bytes())
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(&set)
            .finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|chunk| {
            let n = chunk.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The 60-digit safety number of two users, the same on both sides: both fingerprints,
/// the smaller first.
pub fn safety_number(
    user_a: &str,
    keys_a: &BTreeSet<Vec<u8>>,
    user_b: &str,
    keys_b: &BTreeSet<Vec<u8>>,
) -> String {
    let (a, b) = (fingerprint(user_a, keys_a), fingerprint(user_b, keys_b));
    if a <= b { a + &b } else { b + &a }
}

/// A safety number in twelve groups of five digits, as people read it aloud.
pub fn grouped(number: &str) -> String {
    number
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `relais verify` shows about a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    pub contact: String,
    /// 60 digits, without spaces.
    pub number: String,
    /// What a QR code of it carries.
    pub qr_payload: String,
    /// The contact's devices, as key prefixes in hex.
    pub devices: Vec<String>,
    pub verified: bool,
    /// The contact was verified once and has had a device added or removed since.
    pub changed_since_verified: bool,
}

/// One of this user's devices, as the relay lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnDevice {
    pub device_id: String,
    pub public_key: Vec<u8>,
    pub enrolled_at_ms: i64,
    /// When it last authenticated, if ever since enrollment.
    pub last_seen_ms: Option<i64>,
    pub this_device: bool,
}

impl Client {
    /// This user's active devices, this one included.
    pub async fn devices(&mut self) -> Result<Vec<OwnDevice>, ClientError> {
        let Resp::Devices(list) = self.call(Req::ListDevices(pb::ListDevices {})).await? else {
            return Err(ClientError::Protocol(
                "the relay answered ListDevices with something else".into(),
            ));
        };
        Ok(list
            .devices
            .into_iter()
            .map(|d| OwnDevice {
                device_id: d.device_id,
                public_key: d.public_key,
                enrolled_at_ms: d.enrolled_at_ms,
                last_seen_ms: (d.last_seen_ms > 0).then_some(d.last_seen_ms),
                this_device: d.this_device,
            })
            .collect())
    }

    /// Revokes another device of this user (a lost laptop): the relay cuts it off, audits
    /// it, and has its groups drop it.
    pub async fn revoke_device(&mut self, device_id: &str) -> Result<(), ClientError> {
        self.call(Req::RevokeDevice(pb::RevokeDevice {
            device_id: device_id.to_owned(),
        }))
        .await?;
        Ok(())
    }

    /// Adds this user's other devices to every conversation of this device that lacks one
    /// of them (D14: a user's devices add each other), and to this user's own groups of
    /// devices (`transfer.rs`), one commit per group, with the usual rebase on a concurrent
    /// commit. Every member sees the new device in their history, this user included.
    /// Returns how many conversations and own groups it changed.
    pub async fn add_own_devices(&mut self) -> Result<usize, ClientError> {
        let siblings: Vec<String> = self
            .devices()
            .await?
            .into_iter()
            .filter(|d| !d.this_device)
            .map(|d| hex::encode(d.public_key))
            .collect();
        if siblings.is_empty() {
            return Ok(0);
        }
        let me = [self.user().to_owned()];
        let mut changed = 0;
        let mut groups: Vec<Vec<u8>> = self
            .state_conversations()
            .await?
            .into_iter()
            .map(|c| c.group_id)
            .collect();
        groups.extend(self.own_devices_groups().await?);
        for group_id in groups {
            let Some(group) = self.mls.load(&group_id)? else {
                continue;
            };
            // Nor into a group this user left: that would undo the departure.
            if !group.is_active() || Mls::is_leaving(&group) || self.departing(&group_id).await? {
                continue;
            }
            let present: BTreeSet<String> = Mls::members(&group)
                .into_iter()
                .map(|(_, key)| key)
                .collect();
            if siblings.iter().all(|key| present.contains(key)) {
                continue;
            }
            self.add_users(&group_id, &me).await?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Every user's current devices across this device's conversations.
    pub(crate) async fn devices_by_user(
        &self,
    ) -> Result<BTreeMap<String, BTreeSet<Vec<u8>>>, ClientError> {
        self.devices_by_user_except(None).await
    }

    /// The same, leaving out one conversation.
    async fn devices_by_user_except(
        &self,
        except: Option<&[u8]>,
    ) -> Result<BTreeMap<String, BTreeSet<Vec<u8>>>, ClientError> {
        let mut users: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for conversation in self.state_conversations().await? {
            if except == Some(conversation.group_id.as_slice()) {
                continue;
            }
            let Some(group) = self.mls.load(&conversation.group_id)? else {
                continue;
            };
            for (user, key) in Mls::members(&group) {
                users
                    .entry(user)
                    .or_default()
                    .insert(hex::decode(key).unwrap_or_default());
            }
        }
        users
            .entry(self.user().to_owned())
            .or_default()
            .insert(self.public_key().to_vec());
        Ok(users)
    }

    /// The safety number this user shares with `contact`, and whether it is verified.
    pub async fn safety_number(&self, contact: &str) -> Result<SafetyNumber, ClientError> {
        let contact = self.qualify(contact);
        if contact == self.user() {
            return Err(ClientError::Usage(
                "a safety number is between you and another user; name a contact".into(),
            ));
        }
        let devices = self.devices_by_user().await?;
        let Some(theirs) = devices.get(&contact) else {
            return Err(ClientError::Usage(format!(
                "no conversation here holds a device of {contact}; write to them first"
            )));
        };
        let ours = &devices[self.user()];
        let number = safety_number(self.user(), ours, &contact, theirs);
        let confirmed = self.state.verified_devices(&contact).await?;
        let current = key_list(theirs);
        Ok(SafetyNumber {
            qr_payload: format!("{QR_PREFIX}{}:{}:{number}", self.user(), contact),
            devices: theirs
                .iter()
                .map(|k| hex::encode(&k[..8.min(k.len())]))
                .collect(),
            verified: confirmed.as_deref() == Some(current.as_str()),
            changed_since_verified: confirmed.is_some_and(|c| c != current),
            contact,
            number,
        })
    }

    /// Marks `contact` verified if `number` (spaces ignored) is the current safety number.
    pub async fn confirm_safety_number(
        &self,
        contact: &str,
        number: &str,
    ) -> Result<SafetyNumber, ClientError> {
        let current = self.safety_number(contact).await?;
        let given: String = number.chars().filter(|c| !c.is_whitespace()).collect();
        if given != current.number {
            return Err(ClientError::Usage(format!(
                "that is not the safety number you share with {}: compare again, digit by \
                 digit, in person or on a call you trust",
                current.contact
            )));
        }
        let devices = self.devices_by_user().await?;
        let theirs = key_list(&devices[&current.contact]);
        self.state
            .set_verified_devices(&current.contact, &theirs, now_ms())
            .await?;
        self.safety_number(&current.contact).await
    }

    /// The users of a conversation that the user verified once and that have had a device
    /// added or removed since: sending there may reach a device nobody checked. Compares
    /// device sets, so it costs no safety-number computation.
    pub async fn unverified_in(&self, group_id: &[u8]) -> Result<Vec<String>, ClientError> {
        let group = self.group(group_id)?;
        let users: BTreeSet<String> = Mls::members(&group)
            .into_iter()
            .map(|(user, _)| user)
            .filter(|user| user != self.user())
            .collect();
        let verified = self.state.all_verified().await?;
        if !users.iter().any(|u| verified.contains_key(u)) {
            return Ok(Vec::new());
        }
        let devices = self.devices_by_user().await?;
        Ok(users
            .into_iter()
            .filter(|user| {
                verified.get(user).is_some_and(|confirmed| {
                    devices.get(user).map(key_list).as_deref() != Some(confirmed.as_str())
                })
            })
            .collect())
    }

    /// Refuses to send into a conversation with a contact whose devices changed since the
    /// user verified them, when the user asked for that (`require_verified`), unless the
    /// user was shown that contact's change and chose to send anyway (`acknowledged`).
    pub(crate) async fn check_verified_before_send(
        &self,
        group_id: &[u8],
        acknowledged: &[String],
    ) -> Result<(), ClientError> {
        if !self.require_verified().await? {
            return Ok(());
        }
        let mut changed = self.unverified_in(group_id).await?;
        changed.retain(|contact| !acknowledged.contains(contact));
        if changed.is_empty() {
            return Ok(());
        }
        Err(ClientError::Unverified(changed.join(", ")))
    }

    /// Each contact the user verified once, and whether their devices are still those
    /// confirmed (for a session, to announce the changes).
    pub(crate) async fn verification_states(&self) -> Result<BTreeMap<String, bool>, ClientError> {
        let confirmed = self.state.all_verified().await?;
        if confirmed.is_empty() {
            return Ok(BTreeMap::new());
        }
        let devices = self.devices_by_user().await?;
        Ok(confirmed
            .into_iter()
            .map(|(contact, keys)| {
                let verified =
                    devices.get(&contact).map(key_list).as_deref() == Some(keys.as_str());
                (contact, verified)
            })
            .collect())
    }

    /// Whether sending waits for verified contacts (a setting of this device).
    pub async fn require_verified(&self) -> Result<bool, ClientError> {
        Ok(self.state.meta("require_verified").await?.as_deref() == Some(b"1"))
    }

    pub async fn set_require_verified(&self, on: bool) -> Result<(), ClientError> {
        self.state
            .set_meta("require_verified", if on { b"1" } else { b"0" })
            .await
    }
}

impl Client {
    /// The history lines for a change of `group_id`'s members from `before` to `after`.
    /// What each user had before is read only when a device was added, from the other
    /// conversations and `before`, so a commit that adds nobody costs no extra reads.
    /// `relay_removed` holds the keys of the devices removed at the relay's request (a
    /// revocation the relay proposed), which this device's own commit applied.
    pub(crate) async fn membership_events(
        &self,
        group_id: &[u8],
        committer: Option<&str>,
        before: &[(String, DeviceKey)],
        after: &[(String, DeviceKey)],
        relay_removed: &BTreeSet<DeviceKey>,
    ) -> Result<Vec<String>, ClientError> {
        if self.is_own_devices_group(group_id).await? {
            // This user's own group of devices is no conversation: it shows no line.
            return Ok(Vec::new());
        }
        if after.iter().all(|m| before.contains(m)) {
            return Ok(membership_events(
                Some(self.user()),
                committer,
                Change {
                    before,
                    after,
                    relay_removed,
                },
                &BTreeMap::new(),
                &BTreeMap::new(),
            ));
        }
        let mut seen = self.devices_by_user_except(Some(group_id)).await?;
        for (user, key) in before {
            seen.entry(user.clone())
                .or_default()
                .insert(hex::decode(key).unwrap_or_default());
        }
        let verified = self.state.all_verified().await?;
        Ok(membership_events(
            Some(self.user()),
            committer,
            Change {
                before,
                after,
                relay_removed,
            },
            &seen,
            &verified,
        ))
    }
}

/// The line for a device removed at the relay's request: the relay proposes the removal
/// of a revoked device (or of a departed user's), and whichever member's device commits it
/// only carries it out.
pub(crate) fn relay_removal_line(user: &str, short_key: &str) -> String {
    format!("{user}'s device {short_key} was removed at the relay's request (a revoked device)")
}

/// Records membership events in a conversation's history, in the transaction that stores
/// the commit's result.
pub(crate) async fn record_events(
    tx: &mut crate::state::Tx,
    group_id: &[u8],
    events: &[String],
) -> Result<(), ClientError> {
    let at = now_ms();
    for event in events {
        State::add_history(
            tx,
            group_id,
            "",
            &crate::client::new_message_id(),
            at,
            event,
            at,
        )
        .await?;
    }
    Ok(())
}

/// Refuses a proposal that names a device the group does not hold: the removal of a leaf
/// that is blank or beyond the tree. openmls refuses such a removal only when a commit
/// applies it, and a stored proposal that no commit can apply would stop this device from
/// committing or sending in the group; so it is refused here, before it is stored, and
/// nothing changes. Only the relay may propose a removal of another user's device, so a
/// relay that does this is broken or hostile.
pub(crate) fn check_removed_devices(
    group: &openmls::prelude::MlsGroup,
    proposal: &openmls::prelude::QueuedProposal,
) -> Result<(), String> {
    let openmls::prelude::Proposal::Remove(remove) = proposal.proposal() else {
        return Ok(());
    };
    let removed = remove.removed();
    if group.members().any(|m| m.index == removed) {
        return Ok(());
    }
    let from = match proposal.sender() {
        openmls::prelude::Sender::External(_) => "the relay",
        _ => "a member",
    };
    Err(format!(
        "refused a proposal from {from} to remove the device at leaf {}, which the group \
         does not hold; nothing was changed (report it to the relay's operator)",
        removed.u32()
    ))
}

/// What a handshake or application message that openmls refused tried, in words: a
/// commit that removes a device the group does not hold says so.
pub(crate) fn unprocessable<E: std::fmt::Display>(
    error: &openmls::prelude::ProcessMessageError<E>,
) -> String {
    use openmls::prelude::{ProcessMessageError, ProposalValidationError, StageCommitError};
    match error {
        ProcessMessageError::InvalidCommit(StageCommitError::ProposalValidationError(
            ProposalValidationError::UnknownMemberRemoval,
        )) => "refused a commit that removes a device the group does not hold; nothing was \
               changed"
            .into(),
        other => format!("cannot process: {other}"),
    }
}

#[doc(hidden)]
impl Client {
    /// The relay's proposal to remove the device at `leaf` of a conversation, signed with
    /// the relay's MLS signing key `relay_seed`, as the relay would send it: for tests of
    /// what a member does with a hostile relay's proposals. Nothing else has the relay's
    /// key.
    pub async fn relay_removal_for_tests(
        &self,
        conversation: &str,
        relay_seed: &[u8; 32],
        leaf: u32,
    ) -> Result<Vec<u8>, ClientError> {
        use openmls::prelude::{ExternalProposal, LeafNodeIndex, SenderExtensionIndex};
        let c = self.conversation(conversation).await?;
        let group = self.group(&c.group_id)?;
        let public = ed25519_dalek::SigningKey::from_bytes(relay_seed)
            .verifying_key()
            .to_bytes();
        let relay = openmls_basic_credential::SignatureKeyPair::from_raw(
            openmls::prelude::SignatureScheme::ED25519,
            relay_seed.to_vec(),
            public.to_vec(),
        );
        let proposal = ExternalProposal::new_remove::<openmls_rust_crypto::OpenMlsRustCrypto>(
            LeafNodeIndex::new(leaf),
            group.group_id().clone(),
            group.epoch(),
            &relay,
            SenderExtensionIndex::new(0),
        )
        .map_err(|e| ClientError::Mls(format!("cannot build the proposal: {e}")))?;
        crate::mls::serialize(proposal)
    }
}

/// A set of device keys as stored for a verified contact: sorted hex, comma-separated.
fn key_list(keys: &BTreeSet<Vec<u8>>) -> String {
    keys.iter().map(hex::encode).collect::<Vec<_>>().join(",")
}

/// A group's devices before and after a change, and those of the removed that the relay
/// asked to remove.
pub(crate) struct Change<'a> {
    pub before: &'a [(String, DeviceKey)],
    pub after: &'a [(String, DeviceKey)],
    pub relay_removed: &'a BTreeSet<DeviceKey>,
}

/// The membership changes between two states of a group, as the lines its history shows.
/// `seen` says which devices each user had before anywhere on this device, so that a
/// device of a known user is announced as new; `committer` is None for the state a Welcome
/// brought, where only such new devices of other users are worth a line (this user's own,
/// on a device that has just joined, are no news: "my devices" lists them, from the
/// relay), and is `own` (this user) for this device's own commits, whose additions the
/// user made and needs no line for, unless they bring a known user's new device. A device
/// removed at the relay's request is said to be, not to have been removed by the member
/// whose device happened to commit the relay's proposal.
pub(crate) fn membership_events(
    own: Option<&str>,
    committer: Option<&str>,
    change: Change<'_>,
    seen: &BTreeMap<String, BTreeSet<Vec<u8>>>,
    verified: &BTreeMap<String, String>,
) -> Vec<String> {
    let Change {
        before,
        after,
        relay_removed,
    } = change;
    let short = |key: &str| format!("{}…", &key[..key.len().min(8)]);
    let mut events = Vec::new();
    for (user, key) in after.iter().filter(|m| !before.contains(m)) {
        if committer.is_none() && own == Some(user.as_str()) {
            continue;
        }
        let known_user = seen.get(user).is_some_and(|keys| !keys.is_empty());
        let known_device = seen
            .get(user)
            .is_some_and(|keys| keys.contains(&hex::decode(key).unwrap_or_default()));
        if known_user && !known_device {
            let state = if verified.contains_key(user) {
                format!("{user} is no longer verified: compare safety numbers again")
            } else {
                "not verified".to_owned()
            };
            let by = match committer {
                Some(committer) => format!("added by {committer}"),
                None => "in the group you joined".to_owned(),
            };
            events.push(format!(
                "{user} has a new device {} ({by}; {state})",
                short(key)
            ));
        } else if let Some(committer) = committer.filter(|c| Some(*c) != own) {
            events.push(format!("{committer} added {user} (device {})", short(key)));
        }
    }
    if let Some(committer) = committer {
        for (user, key) in before.iter().filter(|m| !after.contains(m)) {
            events.push(if relay_removed.contains(key) {
                relay_removal_line(user, &short(key))
            } else {
                format!("{committer} removed {user}'s device {}", short(key))
            });
        }
    }
    events
}

impl State {
    /// The device keys of `contact` as the user confirmed them, if ever.
    pub async fn verified_devices(&self, contact: &str) -> Result<Option<String>, ClientError> {
        Ok(self
            .meta(&format!("verified:{contact}"))
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub async fn set_verified_devices(
        &self,
        contact: &str,
        keys: &str,
        _at_ms: i64,
    ) -> Result<(), ClientError> {
        self.set_meta(&format!("verified:{contact}"), keys.as_bytes())
            .await
    }

    /// Every contact the user verified, with the device keys confirmed.
    pub async fn all_verified(&self) -> Result<BTreeMap<String, String>, ClientError> {
        self.meta_with_prefix("verified:").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[u8]) -> BTreeSet<Vec<u8>> {
        list.iter().map(|b| vec![*b; 32]).collect()
    }

    #[test]
    fn both_sides_compute_the_same_number_and_any_change_shows() {
        let (alice, bob) = (keys(&[1]), keys(&[2]));
        let number = safety_number("alice@x", &alice, "bob@x", &bob);
        assert_eq!(number.len(), 60);
        assert!(number.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(number, safety_number("bob@x", &bob, "alice@x", &alice));
        assert_ne!(
            number,
            safety_number("alice@x", &alice, "bob@x", &keys(&[2, 3])),
            "a new device of bob's"
        );
        assert_ne!(
            number,
            safety_number("alice@x", &alice, "carol@x", &bob),
            "the same key under another name"
        );
        assert_eq!(grouped(&number).split(' ').count(), 12);
    }

    #[test]
    fn a_known_users_new_device_is_announced() {
        let key = |b: u8| hex::encode([b; 32]);
        let before = vec![("alice@x".to_owned(), key(1)), ("bob@x".to_owned(), key(2))];
        let mut after = before.clone();
        after.push(("bob@x".to_owned(), key(9)));
        after.push(("carol@x".to_owned(), key(3)));
        let seen: BTreeMap<String, BTreeSet<Vec<u8>>> = [
            ("alice@x".to_owned(), keys(&[7])),
            ("bob@x".to_owned(), keys(&[2])),
        ]
        .into_iter()
        .collect();
        let verified: BTreeMap<String, String> =
            [("bob@x".to_owned(), key(2))].into_iter().collect();
        let none = BTreeSet::new();
        let change = |before, after, relay_removed| Change {
            before,
            after,
            relay_removed,
        };
        let events = membership_events(
            None,
            Some("alice@x"),
            change(&before, &after, &none),
            &seen,
            &verified,
        );
        assert_eq!(
            events,
            [
                "bob@x has a new device 09090909… (added by alice@x; bob@x is no longer \
                 verified: compare safety numbers again)",
                "alice@x added carol@x (device 03030303…)",
            ]
        );
        let events = membership_events(
            None,
            Some("dave@x"),
            change(&after, &before, &none),
            &seen,
            &BTreeMap::new(),
        );
        assert_eq!(
            events,
            [
                "dave@x removed bob@x's device 09090909…",
                "dave@x removed carol@x's device 03030303…"
            ]
        );
        // The relay asked for bob's removal (a revoked device): dave only carried it out.
        let revoked = [key(9)].into_iter().collect();
        let events = membership_events(
            Some("dave@x"),
            Some("dave@x"),
            change(&after, &before, &revoked),
            &seen,
            &BTreeMap::new(),
        );
        assert_eq!(
            events,
            [
                "bob@x's device 09090909… was removed at the relay's request (a revoked device)",
                "dave@x removed carol@x's device 03030303…"
            ]
        );
        // Joining: only the new devices of other users already known here; this user's
        // own devices (alice's first, seen here only as the key 07…) are no news.
        let events = membership_events(
            Some("alice@x"),
            None,
            change(&[], &after, &none),
            &seen,
            &BTreeMap::new(),
        );
        assert_eq!(
            events,
            ["bob@x has a new device 09090909… (in the group you joined; not verified)"]
        );
        // This user's own commit: only the new device of a known user is worth a line.
        let events = membership_events(
            Some("alice@x"),
            Some("alice@x"),
            change(&before, &after, &none),
            &seen,
            &BTreeMap::new(),
        );
        assert_eq!(
            events,
            ["bob@x has a new device 09090909… (added by alice@x; not verified)"]
        );
    }
}
