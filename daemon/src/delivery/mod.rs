//! The MLS delivery service: group registration, commit verification and ordering,
//! members' departures, Welcome routing, application-message checks, and KeyPackage
//! validation.
//!
//! The checks themselves are `relais_core::mls`'s; this service reads what they need from
//! storage (a group's state, the devices a commit adds), applies the per-device quotas,
//! and hands what passed to the store's writer. The first valid commit for an epoch wins:
//! the writer's epoch compare-and-set decides, not this process's memory.

mod quota;
mod removals;

use std::collections::HashSet;

use bytes::Bytes;
use relais_core::Refusal;
use relais_core::mls::{self, Checker, Handshake, Identity};
use relais_store::{
    Accepted, CommitRequest, Device, DeviceId, Store, SubmitError, SubmitRequest, Submitted,
};

/// Why the delivery service did not carry out a request: refused (the client learns why),
/// or failed (the cause goes to the log, the client is told to retry).
#[derive(Debug, thiserror::Error)]
pub enum DsError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Storage(#[from] relais_store::StoreError),
    /// A state the service should never see (a stored group that does not decode, a
    /// verified commit that does not merge).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SubmitError> for DsError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Refused(refusal) => DsError::Refused(refusal),
            SubmitError::Failed => DsError::Storage(relais_store::StoreError::BatchFailed),
        }
    }
}

/// The delivery service; shared by every connection.
pub struct DeliveryService {
    store: Store,
    /// The MLS checks, with this server as every group's external sender (D2) and the key
    /// that signs its own proposals.
    checker: Checker,
    quotas: quota::Quotas,
    /// Held while a proposal is read, checked and stored: two proposals for one group
    /// computed from the same stored state would each store a state without the other's,
    /// and a commit taking both in would then not verify. One lock for every group, since
    /// proposals are rare (revocations, departures); it orders this node's proposals only.
    proposing: tokio::sync::Mutex<()>,
}

/// A device as the MLS checks see it.
fn identity(device: &Device) -> Identity<'_> {
    Identity {
        key: &device.public_key,
        user: &device.user,
    }
}

impl From<mls::CheckError> for DsError {
    fn from(e: mls::CheckError) -> Self {
        match e {
            mls::CheckError::Refused(refusal) => DsError::Refused(refusal),
            mls::CheckError::Broken(detail) => DsError::Internal(detail),
        }
    }
}

impl DeliveryService {
    /// The delivery service of `domain`, with the per-device quotas of `limits`; its disk
    /// guard watches `data` (the database's directory).
    pub fn new(
        store: Store,
        signing: &ed25519_dalek::SigningKey,
        domain: &str,
        limits: &crate::config::Limits,
        database: Option<&std::path::Path>,
    ) -> DeliveryService {
        DeliveryService {
            store,
            checker: Checker::new(
                domain,
                signing.to_bytes().to_vec(),
                signing.verifying_key().to_bytes().to_vec(),
            ),
            quotas: quota::Quotas::new(limits, database),
            proposing: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts a PublishKeyPackages request of `device` against
    /// `limits.key_package_publications_per_hour`.
    pub fn count_publication(&self, device: &Device) -> Result<(), DsError> {
        let publications = &self.quotas.publications;
        if !publications.take(device.id, std::time::Instant::now()) {
            return Err(DsError::Refused(Refusal::RateLimited(format!(
                "this device published KeyPackages {} times within the hour; wait, then publish again",
                publications.per_hour()
            ))));
        }
        Ok(())
    }

    /// Validates a KeyPackage for `device`; returns whether it is last-resort.
    pub fn validate_key_package(&self, device: &Device, bytes: &[u8]) -> Result<bool, DsError> {
        Ok(self.checker.key_package(identity(device), bytes)?)
    }

    /// Registers a group created by `device` at epoch 0 with itself as the only member.
    pub async fn create_group(
        &self,
        device: &Device,
        group_info: &[u8],
        ratchet_tree: &[u8],
        now_ms: i64,
    ) -> Result<(Vec<u8>, u64), DsError> {
        // Counted before the (costly) verification, so junk counts too.
        let created = &self.quotas.groups_created;
        if !created.take(device.id, std::time::Instant::now()) {
            return Err(DsError::Refused(Refusal::RateLimited(format!(
                "this device created {} groups within the hour; wait before creating more",
                created.per_hour()
            ))));
        }
        // One connection per device, and its CreateGroup requests are served one at a
        // time: counting before registering cannot let the device pass the cap.
        let max = self.quotas.groups_created_max;
        if self.store.groups_created(device.id).await? >= max {
            return Err(DsError::Refused(Refusal::LimitExceeded(format!(
                "this device already created {max} groups it is still in; leave one before creating another"
            ))));
        }
        let group = self
            .checker
            .new_group(identity(device), group_info, ratchet_tree)?;
        if !self
            .store
            .create_group(
                &group.group_id,
                group.epoch,
                &group.state,
                device.id,
                now_ms,
            )
            .await?
        {
            return Err(DsError::Refused(Refusal::GroupExists));
        }
        Ok((group.group_id, group.epoch))
    }

    /// Verifies a commit against the group's state and hands it to the store to order; a
    /// member's departure (a proposal) goes to `submit_departure` instead.
    pub async fn submit_commit(
        &self,
        device: &Device,
        message_id: Vec<u8>,
        commit: Bytes,
        welcome: Option<Bytes>,
        now_ms: i64,
    ) -> Result<Accepted, DsError> {
        if let Some((seq, epoch)) = self.store.submission(device.id, &message_id).await? {
            return Ok(Accepted {
                seq,
                epoch,
                duplicate: true,
            });
        }
        let parsed = match Handshake::parse(&commit)? {
            Handshake::Commit(parsed) => parsed,
            Handshake::Departure(proposal) => {
                if welcome.is_some() {
                    return Err(DsError::Refused(Refusal::InvalidMessage(
                        "a departure comes without a Welcome".into(),
                    )));
                }
                return self
                    .submit_departure(device, proposal, commit, now_ms)
                    .await;
            }
        };
        let group_id = parsed.group_id.clone();
        let (current, state) = self
            .store
            .group(&group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let pending = self
            .checker
            .verify_commit(parsed, current, &state, identity(device))?;
        let welcomed = self.added_devices(&pending).await?;
        mls::check_welcome(welcome.as_deref(), pending.adds_anyone())?;
        let carried = pending.removals_to_carry()?;
        let merged = pending.merge()?;
        let (members_after, revoked_remain) = self.members(&merged.member_keys).await?;
        let accepted = self
            .store
            .commit(CommitRequest {
                sender: device.id,
                sender_user: device.user.clone(),
                sender_fingerprint: device.fingerprint.clone(),
                message_id,
                group_id: group_id.clone(),
                from_epoch: current,
                state: merged.state,
                members_after,
                commit,
                welcome: welcome.map(|w| (w, welcomed)),
                now_ms,
            })
            .await?;
        if (revoked_remain || !carried.is_empty()) && !accepted.duplicate {
            // The commit did not remove every revoked device, or left a departure out, or
            // took in a departure of a user with other devices: propose their removal for
            // the new epoch.
            let carried = carried.into_iter().collect();
            if let Err(e) = self
                .propose_removals_with(&group_id, &carried, now_ms)
                .await
            {
                tracing::warn!(error = %e, "cannot propose the removal of departed or revoked devices");
            }
        }
        Ok(accepted)
    }

    /// The devices a verified commit adds, each enrolled here, not revoked, and carrying
    /// its user's credential.
    async fn added_devices(&self, pending: &mls::PendingCommit) -> Result<Vec<DeviceId>, DsError> {
        let keys = pending.added_keys();
        let found = self.store.devices_by_keys(&keys).await?;
        let mut welcomed = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let device = found.iter().find(|d| &d.public_key == key);
            pending.check_added(
                index,
                device.map(|d| (identity(d), d.revoked_at_ms.is_some())),
            )?;
            welcomed.extend(device.map(|d| d.id));
        }
        Ok(welcomed)
    }

    /// The devices behind a group's members' keys, revoked ones left out, and whether any
    /// revoked one remains.
    async fn members(&self, keys: &[Vec<u8>]) -> Result<(Vec<DeviceId>, bool), DsError> {
        let devices = self.store.devices_by_keys(keys).await?;
        let revoked_remain = devices.iter().any(|d| d.revoked_at_ms.is_some());
        let members: Vec<DeviceId> = devices
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_none())
            .map(|d| d.id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        Ok((members, revoked_remain))
    }

    /// Checks an application message's header and hands it to the store.
    /// Checks an application message's header (never its ciphertext) and makes the
    /// request the writer stores; the writer checks the epoch and membership.
    pub fn prepare_message(
        &self,
        device: &Device,
        message_id: Vec<u8>,
        bytes: Bytes,
        now_ms: i64,
    ) -> Result<SubmitRequest, DsError> {
        // Only application messages: commits must still go, or groups would fork, and
        // acknowledgements free space.
        if self.quotas.disk.low() {
            return Err(DsError::Refused(Refusal::StorageFull));
        }
        let header = mls::application_header(&bytes)?;
        Ok(SubmitRequest {
            sender: device.id,
            sender_user: device.user.clone(),
            sender_fingerprint: device.fingerprint.clone(),
            message_id,
            group_id: header.group_id,
            epoch: header.epoch,
            body: bytes,
            now_ms,
        })
    }

    /// Hands a prepared application message to the writer; the returned future resolves
    /// once it is durable (or refused).
    pub async fn enqueue_message(
        &self,
        request: SubmitRequest,
    ) -> Result<impl Future<Output = Result<Submitted, DsError>> + Send + 'static, DsError> {
        let answer = self.store.enqueue_submit(request).await?;
        Ok(async move { Ok(answer.await?) })
    }
}
