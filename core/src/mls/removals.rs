//! The service's own proposals: as each group's external sender (D2), it proposes the
//! removal of revoked devices, and records the proposals in the group's state so that a
//! member's commit by reference verifies.

use std::collections::HashSet;

use openmls::prelude::{
    ExternalProposal, LeafNodeIndex, MlsMessageIn, ProcessedMessageContent, Proposal,
    SenderExtensionIndex, tls_codec::Deserialize as _, tls_codec::Serialize as _,
};
use openmls_rust_crypto::MemoryStorage;

use super::state::{self, GroupState};
use super::{CheckError, Checker};
use crate::Refusal;

/// A group's state, read to propose the removal of its revoked members.
pub struct Removals {
    storage: MemoryStorage,
    group: openmls::prelude::PublicGroup,
}

/// The proposals made, and the group's state that records them.
#[derive(Debug)]
pub struct Proposed {
    pub state: Vec<u8>,
    /// TLS-serialized PublicMessages, one proposal each.
    pub proposals: Vec<Vec<u8>>,
}

impl Checker {
    /// Reads a group's stored state to propose removals from it.
    pub fn removals(&self, group_id: &[u8], stored: &[u8]) -> Result<Removals, CheckError> {
        let GroupState { storage, group } =
            GroupState::decode(group_id, stored).map_err(|e| CheckError::Broken(e.to_string()))?;
        Ok(Removals { storage, group })
    }
}

impl Removals {
    /// The signature keys of the group's members, for the directory to say which are revoked.
    pub fn member_keys(&self) -> Vec<Vec<u8>> {
        self.group.members().map(|m| m.signature_key).collect()
    }

    /// Proposes the removal of every member whose key is in `revoked`, unless already
    /// proposed in this epoch; `None` when there is nothing to propose.
    pub fn propose(
        mut self,
        checker: &Checker,
        revoked: &HashSet<Vec<u8>>,
    ) -> Result<Option<Proposed>, CheckError> {
        let broken = |e: &dyn std::fmt::Display| CheckError::Broken(e.to_string());
        let already: HashSet<LeafNodeIndex> = self
            .group
            .queued_proposals(&self.storage)
            .map_err(|e| broken(&e))?
            .iter()
            .filter_map(|(_, queued)| match queued.proposal() {
                Proposal::Remove(remove) => Some(remove.removed()),
                _ => None,
            })
            .collect();
        let Some(sender_index) = self
            .group
            .group_context()
            .extensions()
            .external_senders()
            .and_then(|senders| senders.iter().position(|s| *s == checker.external_sender))
        else {
            return Err(Refusal::InvalidMessage(
                "the group does not list this server as external sender".into(),
            )
            .into());
        };
        let members: Vec<_> = self
            .group
            .members()
            .filter(|m| revoked.contains(&m.signature_key) && !already.contains(&m.index))
            .collect();
        let mut proposals = Vec::new();
        for member in members {
            let proposal = ExternalProposal::new_remove::<openmls_rust_crypto::OpenMlsRustCrypto>(
                member.index,
                self.group.group_id().clone(),
                self.group.group_context().epoch(),
                &checker.signer,
                SenderExtensionIndex::new(sender_index as u32),
            )
            .map_err(|e| CheckError::Broken(format!("cannot create a removal proposal: {e}")))?;
            let bytes = proposal.tls_serialize_detached().map_err(|e| broken(&e))?;
            // Run our own proposal through the group so its store knows it when a member
            // commits it by reference.
            let protocol = MlsMessageIn::tls_deserialize_exact(&bytes[..])
                .map_err(|e| broken(&e))?
                .try_into_protocol_message()
                .map_err(|e| broken(&e))?;
            let processed = self
                .group
                .process_message(&checker.crypto, protocol)
                .map_err(|e| {
                    CheckError::Broken(format!("own removal proposal does not verify: {e}"))
                })?;
            let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
                return Err(CheckError::Broken(
                    "own removal proposal was not a proposal".into(),
                ));
            };
            self.group
                .add_proposal(&self.storage, *queued)
                .map_err(|e| broken(&e))?;
            proposals.push(bytes);
        }
        if proposals.is_empty() {
            return Ok(None);
        }
        Ok(Some(Proposed {
            state: state::encode(&self.storage),
            proposals,
        }))
    }
}
