//! Removal proposals, which members commit: the service's own, as each group's external
//! sender (D2), for revoked devices and for departures a commit left out
//! (`relais_core::mls` makes and records them), and a member's own departure; each queued
//! for every member.

use std::collections::HashSet;

use bytes::Bytes;
use relais_core::Refusal;
use relais_core::mls::ParsedCommit;
use relais_store::{Accepted, Device, ProposalRequest};

use super::{DeliveryService, DsError, identity};

impl DeliveryService {
    /// Proposes, as the group's external sender, the removal of every revoked device still
    /// in the group, unless already proposed in this epoch. Returns how many were proposed.
    pub async fn propose_removals(&self, group_id: &[u8], now_ms: i64) -> Result<usize, DsError> {
        self.propose_removals_with(group_id, &HashSet::new(), now_ms)
            .await
    }

    /// As [`DeliveryService::propose_removals`], and the removal of the members whose
    /// signature keys are in `departed` too.
    pub(super) async fn propose_removals_with(
        &self,
        group_id: &[u8],
        departed: &HashSet<Vec<u8>>,
        now_ms: i64,
    ) -> Result<usize, DsError> {
        let _proposing = self.proposing.lock().await;
        let (epoch, state) = self
            .store
            .group(group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let removals = self.checker.removals(group_id, &state)?;
        let mut revoked: HashSet<Vec<u8>> = self
            .store
            .devices_by_keys(&removals.member_keys())
            .await?
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_some())
            .map(|d| d.public_key)
            .collect();
        revoked.extend(departed.iter().cloned());
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
        tracing::info!(
            proposals = count,
            "proposed the removal of revoked or departed devices"
        );
        Ok(count)
    }

    /// Checks a member's departure (the Remove proposal of its own leaf), records it in the
    /// group's state and queues it for every member; the same departure again is answered
    /// as a duplicate and stored once.
    pub(super) async fn submit_departure(
        &self,
        device: &Device,
        proposal: ParsedCommit,
        bytes: Bytes,
        now_ms: i64,
    ) -> Result<Accepted, DsError> {
        let _proposing = self.proposing.lock().await;
        let group_id = proposal.group_id.clone();
        let (epoch, state) = self
            .store
            .group(&group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let departure = self
            .checker
            .verify_departure(proposal, epoch, &state, identity(device))?;
        let Some(state) = departure.state else {
            return Ok(Accepted {
                seq: 0,
                epoch,
                duplicate: true,
            });
        };
        let accepted = self
            .store
            .propose(ProposalRequest {
                group_id,
                epoch,
                state,
                proposals: vec![bytes],
                now_ms,
            })
            .await?;
        tracing::info!("a member proposed its departure from a group");
        Ok(accepted)
    }
}
