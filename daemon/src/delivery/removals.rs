//! The service's own proposals: as each group's external sender (D2), it proposes the
//! removal of revoked devices (`relais_core::mls` makes and records them), and queues them
//! for every member.

use std::collections::HashSet;

use bytes::Bytes;
use relais_core::Refusal;
use relais_store::ProposalRequest;

use super::{DeliveryService, DsError};

impl DeliveryService {
    /// Proposes, as the group's external sender, the removal of every revoked device still
    /// in the group, unless already proposed in this epoch. Returns how many were proposed.
    pub async fn propose_removals(&self, group_id: &[u8], now_ms: i64) -> Result<usize, DsError> {
        let (epoch, state) = self
            .store
            .group(group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let removals = self.checker.removals(group_id, &state)?;
        let revoked: HashSet<Vec<u8>> = self
            .store
            .devices_by_keys(&removals.member_keys())
            .await?
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_some())
            .map(|d| d.public_key)
            .collect();
        let Some(proposed) = removals.propose(&self.checker, &revoked)? else {
            return Ok(0);
        };
        let count = proposed.proposals.len();
        self.store
            .propose(ProposalRequest {
                group_id: group_id.to_vec(),
                epoch,
                state: proposed.state,
                proposals: proposed.proposals.into_iter().map(Bytes::from).collect(),
                now_ms,
            })
            .await?;
        tracing::info!(proposals = count, "proposed the removal of revoked devices");
        Ok(count)
    }
}
