//! A member leaving a group. In MLS a member cannot commit its own removal, so the leaving
//! device sends the Remove proposal of its own leaf; the relay checks it here, keeps it in
//! the group's state so that a commit taking it in by reference verifies, and delivers it
//! to every member, the next of whom to commit takes it in. If a commit wins the epoch
//! without it, the relay proposes the removal again as external sender
//! (`PendingCommit::removals_to_carry`), so the departure holds even when the leaving device
//! is long gone.

use openmls::prelude::{ProcessedMessageContent, Proposal, Sender};

use super::commit::ParsedCommit;
use super::governance;
use super::state::{self, GroupState};
use super::{CheckError, Checker, Identity, check_leaf};
use crate::Refusal;

/// A departure that verified: the group's state to store with the proposal queued, or
/// nothing to store when the same removal is already queued in this epoch (a resubmission).
#[derive(Debug)]
pub struct Departure {
    pub state: Option<Vec<u8>>,
}

impl Checker {
    /// Verifies a proposal of `sender`'s against the group's stored `state` at epoch
    /// `current`: it must come from the member it signs as, and remove one of that
    /// member's own user's devices.
    pub fn verify_departure(
        &self,
        proposal: ParsedCommit,
        current: u64,
        stored: &[u8],
        sender: Identity<'_>,
    ) -> Result<Departure, CheckError> {
        let invalid = |m: String| CheckError::Refused(Refusal::InvalidMessage(m));
        if proposal.epoch < current {
            return Err(Refusal::EpochConflict { current }.into());
        }
        if proposal.epoch > current {
            return Err(invalid(format!(
                "the proposal is for epoch {}, ahead of the group's epoch {current}",
                proposal.epoch
            )));
        }
        let GroupState { storage, mut group } = GroupState::decode(&proposal.group_id, stored)
            .map_err(|e| CheckError::Broken(e.to_string()))?;
        let processed = group
            .process_message(&self.crypto, proposal.message)
            .map_err(|e| invalid(e.to_string()))?;
        let Sender::Member(proposer) = *processed.sender() else {
            return Err(invalid("only members may propose their departure".into()));
        };
        let leaf = group
            .leaf(proposer)
            .ok_or_else(|| invalid("unknown proposer".into()))?;
        if leaf.signature_key().as_slice() != sender.key {
            return Err(Refusal::NotAMember.into());
        }
        check_leaf(sender, leaf.signature_key().as_slice(), leaf.credential())
            .map_err(Refusal::CredentialMismatch)?;
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(invalid("expected a proposal".into()));
        };
        governance::check_member_proposal(&group, &queued)
            .map_err(|refused| invalid(refused.to_string()))?;
        let Proposal::Remove(remove) = queued.proposal() else {
            return Err(invalid("expected a Remove proposal".into()));
        };
        let removed = remove.removed();
        let already = group
            .queued_proposals(&storage)
            .map_err(|e| CheckError::Broken(format!("cannot read queued proposals: {e}")))?
            .iter()
            .any(|(_, q)| matches!(q.proposal(), Proposal::Remove(r) if r.removed() == removed));
        if already {
            return Ok(Departure { state: None });
        }
        group
            .add_proposal(&storage, *queued)
            .map_err(|e| CheckError::Broken(format!("cannot queue a proposal: {e}")))?;
        Ok(Departure {
            state: Some(state::encode(&storage)),
        })
    }
}
