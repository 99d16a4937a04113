//! A commit, from its bytes to the group state after it: parsed, then verified against the
//! group's public state by openmls, then checked against the identities and the group's
//! roles (`governance`), then held while the delivery service looks up the devices it adds,
//! then merged.

use std::collections::BTreeSet;

use openmls::prelude::{
    ContentType, MlsMessageIn, ProcessedMessageContent, Proposal, ProtocolMessage, PublicGroup,
    Sender, StagedCommit, tls_codec::Deserialize as _,
};
use openmls_rust_crypto::MemoryStorage;

use super::governance::{self, Change};
use super::state::{self, GroupState};
use super::{CheckError, Checker, Identity, check_leaf};
use crate::Refusal;

/// A handshake message as read from the wire: a PublicMessage, for a group and epoch,
/// carrying a commit or (to leave) a proposal.
#[derive(Debug)]
pub struct ParsedCommit {
    pub(super) message: ProtocolMessage,
    pub group_id: Vec<u8>,
    pub epoch: u64,
}

/// What a `SubmitCommit` carries: a commit, or a member's departure (the Remove proposal
/// of its own leaf).
#[derive(Debug)]
pub enum Handshake {
    Commit(ParsedCommit),
    Departure(ParsedCommit),
}

impl Handshake {
    /// Reads a commit or a proposal; handshake messages must be PublicMessages, so the
    /// relay can verify them.
    pub fn parse(bytes: &[u8]) -> Result<Handshake, Refusal> {
        let parsed = ParsedCommit::read(bytes)?;
        match parsed.message.content_type() {
            ContentType::Commit => Ok(Handshake::Commit(parsed)),
            ContentType::Proposal => Ok(Handshake::Departure(parsed)),
            ContentType::Application => Err(Refusal::InvalidMessage(
                "expected a commit, or the proposal of your own removal".into(),
            )),
        }
    }
}

impl ParsedCommit {
    /// Reads a commit; handshake messages must be PublicMessages, so the relay can verify them.
    pub fn parse(bytes: &[u8]) -> Result<ParsedCommit, Refusal> {
        let parsed = ParsedCommit::read(bytes)?;
        if parsed.message.content_type() != ContentType::Commit {
            return Err(Refusal::InvalidMessage("expected a commit".into()));
        }
        Ok(parsed)
    }

    fn read(bytes: &[u8]) -> Result<ParsedCommit, Refusal> {
        let invalid = Refusal::InvalidMessage;
        let message =
            MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| invalid(e.to_string()))?;
        let message = message
            .try_into_protocol_message()
            .map_err(|_| invalid("expected an MLS PublicMessage with a commit".into()))?;
        let ProtocolMessage::PublicMessage(_) = &message else {
            return Err(invalid(
                "handshake messages must be sent as PublicMessage (set the wire-format policy to plaintext)".into(),
            ));
        };
        Ok(ParsedCommit {
            group_id: message.group_id().as_slice().to_vec(),
            epoch: message.epoch().as_u64(),
            message,
        })
    }
}

/// A commit that verified, not yet merged: the delivery service checks the devices it
/// adds (`added`, `check_added`) against its directory, then merges it.
pub struct PendingCommit {
    storage: MemoryStorage,
    group: PublicGroup,
    staged: Box<StagedCommit>,
    /// The signature key and credential of each device the commit adds, in order.
    added: Vec<(Vec<u8>, openmls::prelude::Credential)>,
    /// What the commit changes in the group's membership and roles.
    change: Change,
}

/// The group after a commit: its state to store, and its members' signature keys.
#[derive(Debug)]
pub struct Merged {
    pub state: Vec<u8>,
    pub member_keys: Vec<Vec<u8>>,
}

impl Checker {
    /// Verifies a commit of `committer` against the group's stored `state` at epoch
    /// `current`: the committer must be the member it signs as, no member's identity
    /// (key or credential) nor the group's external senders may change, and what needs an
    /// admin of the group must come from one (`governance`).
    pub fn verify_commit(
        &self,
        commit: ParsedCommit,
        current: u64,
        stored: &[u8],
        committer: Identity<'_>,
    ) -> Result<PendingCommit, CheckError> {
        let invalid = |m: String| CheckError::Refused(Refusal::InvalidCommit(m));
        if commit.epoch < current {
            return Err(Refusal::EpochConflict { current }.into());
        }
        if commit.epoch > current {
            return Err(invalid(format!(
                "the commit is for epoch {}, ahead of the group's epoch {current}",
                commit.epoch
            )));
        }
        let GroupState { storage, group } = GroupState::decode(&commit.group_id, stored)
            .map_err(|e| CheckError::Broken(e.to_string()))?;
        let processed = group
            .process_message(&self.crypto, commit.message)
            .map_err(|e| invalid(e.to_string()))?;
        let Sender::Member(leaf_index) = *processed.sender() else {
            return Err(invalid("only members may commit".into()));
        };
        let leaf = group
            .leaf(leaf_index)
            .ok_or_else(|| invalid("unknown committer".into()))?;
        if leaf.signature_key().as_slice() != committer.key {
            return Err(Refusal::NotAMember.into());
        }
        // The committer's leaf as it stands must be the device's too, credential included:
        // a group from before identity changes were checked may hold one that is not.
        check_leaf(
            committer,
            leaf.signature_key().as_slice(),
            leaf.credential(),
        )
        .map_err(Refusal::CredentialMismatch)?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(invalid("expected a commit".into()));
        };
        check_identities(&group, committer, &staged)?;
        let change = governance::check_commit(&group, leaf_index, &staged)
            .map_err(|refused| CheckError::Refused(refused.into()))?;
        let added = staged
            .add_proposals()
            .map(|add| {
                let leaf = add.add_proposal().key_package().leaf_node();
                (
                    leaf.signature_key().as_slice().to_vec(),
                    leaf.credential().clone(),
                )
            })
            .collect();
        Ok(PendingCommit {
            storage,
            group,
            staged,
            added,
            change,
        })
    }
}

impl PendingCommit {
    /// The signature keys of the devices the commit adds, in order.
    pub fn added_keys(&self) -> Vec<Vec<u8>> {
        self.added.iter().map(|(key, _)| key.clone()).collect()
    }

    /// Whether the commit adds anyone.
    pub fn adds_anyone(&self) -> bool {
        !self.added.is_empty()
    }

    /// The signature keys of the devices whose removal must be proposed again once the
    /// commit is in, so that a departure is not lost: every removal queued in this epoch
    /// that the commit does not apply (it was built before the proposal arrived), and the
    /// other devices of each user who leaves in this commit (a departure is the user's,
    /// and the leaving device proposes only its own removal).
    pub fn removals_to_carry(&self) -> Result<Vec<Vec<u8>>, CheckError> {
        let committed: BTreeSet<&[u8]> = self
            .change
            .removed
            .iter()
            .map(|r| r.key.as_slice())
            .collect();
        let queued = self
            .group
            .queued_proposals(&self.storage)
            .map_err(|e| CheckError::Broken(format!("cannot read queued proposals: {e}")))?;
        let mut carry: BTreeSet<Vec<u8>> = queued
            .iter()
            .filter_map(|(_, queued)| match queued.proposal() {
                Proposal::Remove(remove) => self.group.leaf(remove.removed()),
                _ => None,
            })
            .map(|leaf| leaf.signature_key().as_slice().to_vec())
            .collect();
        let leaving = self.change.leaving();
        for member in self.group.members() {
            let user = openmls::prelude::BasicCredential::try_from(member.credential)
                .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                .unwrap_or_default();
            if leaving.contains(&user) {
                carry.insert(member.signature_key);
            }
        }
        Ok(carry
            .into_iter()
            .filter(|key| !committed.contains(key.as_slice()))
            .collect())
    }

    /// Checks the device the directory found for the `index`th added key: it carries its
    /// user's credential. `None` when the key is not an enrolled device's, `Some(true)`
    /// when the device is revoked.
    pub fn check_added(
        &self,
        index: usize,
        device: Option<(Identity<'_>, bool)>,
    ) -> Result<(), Refusal> {
        let invalid = Refusal::InvalidCommit;
        let (key, credential) = &self.added[index];
        let Some((device, revoked)) = device else {
            return Err(invalid(
                "the commit adds a device that is not enrolled here".into(),
            ));
        };
        if revoked {
            return Err(invalid("the commit adds a revoked device".into()));
        }
        check_leaf(device, key, credential).map_err(invalid)
    }

    /// Merges the commit into the group.
    pub fn merge(self) -> Result<Merged, CheckError> {
        let PendingCommit {
            storage,
            mut group,
            staged,
            ..
        } = self;
        group
            .merge_commit(&storage, *staged)
            .map_err(|e| CheckError::Broken(format!("cannot merge a verified commit: {e}")))?;
        Ok(Merged {
            member_keys: group.members().map(|m| m.signature_key).collect(),
            state: state::encode(&storage),
        })
    }
}

/// Refuses a commit that changes who a member is: the committer's new leaf and every
/// Update must keep the device's enrolled key and its user's credential, and the group
/// must keep this server as external sender (D2), or revoked devices could no longer be
/// proposed for removal. openmls verifies signatures, not identities: this is ours.
fn check_identities(
    group: &PublicGroup,
    committer: Identity<'_>,
    staged: &StagedCommit,
) -> Result<(), Refusal> {
    let mismatch = Refusal::CredentialMismatch;
    if let Some(leaf) = staged.update_path_leaf_node() {
        check_leaf(
            committer,
            leaf.signature_key().as_slice(),
            leaf.credential(),
        )
        .map_err(|e| {
            mismatch(format!(
                "the commit's update path changes the committer: {e}"
            ))
        })?;
    }
    for update in staged.update_proposals() {
        let Sender::Member(index) = update.sender() else {
            return Err(mismatch("only a member may update its own leaf".into()));
        };
        let before = group
            .leaf(*index)
            .ok_or_else(|| mismatch("an update for a leaf that is not in the group".into()))?;
        let after = update.update_proposal().leaf_node();
        if after.signature_key() != before.signature_key()
            || after.credential() != before.credential()
        {
            return Err(mismatch(
                "an update may not change a member's signature key or credential".into(),
            ));
        }
    }
    // Exactly as they were: members refuse any change to the external senders (a second
    // one could propose as well), so a relay that let one through would leave every honest
    // member behind an epoch it refuses.
    let senders = |extensions: &openmls::prelude::Extensions<openmls::prelude::GroupContext>| {
        extensions.external_senders().cloned().unwrap_or_default()
    };
    if senders(staged.group_context().extensions()) != senders(group.group_context().extensions()) {
        return Err(mismatch(
            "a commit may not change the group's external_senders (this server's key)".into(),
        ));
    }
    // Proposals no client of this service makes and that the service cannot verify against
    // the group's public state: members could fail on them where the service did not, and
    // the group would split.
    for queued in staged.queued_proposals() {
        if matches!(
            queued.proposal(),
            Proposal::PreSharedKey(_) | Proposal::ReInit(_) | Proposal::ExternalInit(_)
        ) {
            return Err(Refusal::InvalidCommit(
                "PreSharedKey, ReInit and ExternalInit proposals are not accepted".into(),
            ));
        }
    }
    Ok(())
}
