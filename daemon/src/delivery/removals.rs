//! The service's own proposals: as each group's external sender (D2), it proposes the
//! removal of revoked devices, and records the proposals so a member's commit by reference
//! verifies.

use std::collections::HashSet;

use bytes::Bytes;
use openmls::prelude::{
    ExternalProposal, LeafNodeIndex, MlsMessageIn, ProcessedMessageContent, Proposal,
    SenderExtensionIndex, tls_codec::Deserialize as _, tls_codec::Serialize as _,
};

use relais_core::Refusal;

use super::{DeliveryService, DsError};
use crate::group_state::{self, GroupState};
use relais_store::ProposalRequest;

impl DeliveryService {
    /// Proposes, as the group's external sender, the removal of every revoked device still
    /// in the group, unless already proposed in this epoch. Returns how many were proposed.
    pub async fn propose_removals(&self, group_id: &[u8], now_ms: i64) -> Result<usize, DsError> {
        let (epoch, state) = self
            .store
            .group(group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let GroupState { storage, mut group } =
            GroupState::decode(group_id, &state).map_err(|e| DsError::Internal(e.to_string()))?;
        let members: Vec<_> = group.members().collect();
        let keys: Vec<Vec<u8>> = members.iter().map(|m| m.signature_key.clone()).collect();
        let revoked: HashSet<Vec<u8>> = self
            .store
            .devices_by_keys(&keys)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_some())
            .map(|d| d.public_key)
            .collect();
        let already: HashSet<LeafNodeIndex> = group
            .queued_proposals(&storage)
            .map_err(|e| DsError::Internal(e.to_string()))?
            .iter()
            .filter_map(|(_, queued)| match queued.proposal() {
                Proposal::Remove(remove) => Some(remove.removed()),
                _ => None,
            })
            .collect();
        let Some(sender_index) = group
            .group_context()
            .extensions()
            .external_senders()
            .and_then(|senders| senders.iter().position(|s| *s == self.external_sender))
        else {
            return Err(DsError::Refused(Refusal::InvalidMessage(
                "the group does not list this server as external sender".into(),
            )));
        };
        let mut proposals = Vec::new();
        for member in members
            .iter()
            .filter(|m| revoked.contains(&m.signature_key) && !already.contains(&m.index))
        {
            let proposal = ExternalProposal::new_remove::<openmls_rust_crypto::OpenMlsRustCrypto>(
                member.index,
                group.group_id().clone(),
                group.group_context().epoch(),
                &self.signer,
                SenderExtensionIndex::new(sender_index as u32),
            )
            .map_err(|e| DsError::Internal(format!("cannot create a removal proposal: {e}")))?;
            let bytes = proposal
                .tls_serialize_detached()
                .map_err(|e| DsError::Internal(e.to_string()))?;
            // Run our own proposal through the group so its store knows it when a member
            // commits it by reference.
            let protocol = MlsMessageIn::tls_deserialize_exact(&bytes[..])
                .map_err(|e| DsError::Internal(e.to_string()))?
                .try_into_protocol_message()
                .map_err(|e| DsError::Internal(e.to_string()))?;
            let processed = group.process_message(&self.crypto, protocol).map_err(|e| {
                DsError::Internal(format!("own removal proposal does not verify: {e}"))
            })?;
            let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
                return Err(DsError::Internal(
                    "own removal proposal was not a proposal".into(),
                ));
            };
            group
                .add_proposal(&storage, *queued)
                .map_err(|e| DsError::Internal(e.to_string()))?;
            proposals.push(Bytes::from(bytes));
        }
        if proposals.is_empty() {
            return Ok(0);
        }
        let count = proposals.len();
        self.store
            .propose(ProposalRequest {
                group_id: group_id.to_vec(),
                epoch,
                state: group_state::encode(&storage),
                proposals,
                now_ms,
            })
            .await?;
        tracing::info!(proposals = count, "proposed the removal of revoked devices");
        Ok(count)
    }
}
