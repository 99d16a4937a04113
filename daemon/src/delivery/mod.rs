//! The MLS delivery service: group registration, commit verification and ordering,
//! Welcome routing, application-message checks, and KeyPackage validation.
//!
//! Handshake messages arrive as PublicMessage and are verified against the group's public
//! state; application messages must be PrivateMessage, of which only the header (group,
//! epoch, content type) is read. The first valid commit for an epoch wins: the store's
//! compare-and-set on the epoch decides, not this process's memory.

mod quota;
mod removals;

use std::collections::HashSet;

use bytes::Bytes;
use openmls::prelude::{
    BasicCredential, Ciphersuite, ContentType, Credential, ExternalSender, KeyPackageIn,
    MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, Proposal, ProtocolMessage,
    ProtocolVersion, PublicGroup, RatchetTreeIn, Sender, SignaturePublicKey, SignatureScheme,
    tls_codec::Deserialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

use crate::group_state::{self, GroupState};
pub use quota::KEY_PACKAGE_BYTES_MAX;
use relais_core::Refusal;
use relais_store::{
    Accepted, CommitRequest, Device, DeviceId, Store, SubmitError, SubmitRequest, Submitted,
};

/// The only ciphersuite accepted for now (RFC 9420's mandatory one).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

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
    crypto: RustCrypto,
    /// The external sender clients must list in every group (D2).
    external_sender: ExternalSender,
    /// Signs the service's own proposals (removal of revoked devices).
    signer: SignatureKeyPair,
    quotas: quota::Quotas,
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
        let server_signature_key = signing.verifying_key().to_bytes().to_vec();
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            signing.to_bytes().to_vec(),
            server_signature_key.clone(),
        );
        let credential: Credential =
            BasicCredential::new(format!("relais@{domain}").into_bytes()).into();
        DeliveryService {
            store,
            crypto: RustCrypto::default(),
            external_sender: ExternalSender::new(
                SignaturePublicKey::from(server_signature_key),
                credential,
            ),
            signer,
            quotas: quota::Quotas::new(limits, database),
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

    /// Validates a KeyPackage for `device`; returns its bytes and whether it is last-resort.
    pub fn validate_key_package(&self, device: &Device, bytes: &[u8]) -> Result<bool, DsError> {
        let invalid = |m: String| DsError::Refused(Refusal::InvalidKeyPackage(m));
        if bytes.len() > KEY_PACKAGE_BYTES_MAX {
            return Err(DsError::Refused(Refusal::LimitExceeded(format!(
                "a KeyPackage is at most {KEY_PACKAGE_BYTES_MAX} bytes, this one is {}; publish ordinary KeyPackages",
                bytes.len()
            ))));
        }
        let message =
            MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| invalid(e.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
            return Err(invalid("the message does not contain a KeyPackage".into()));
        };
        let key_package: KeyPackageIn = key_package;
        let key_package = key_package
            .validate(&self.crypto, ProtocolVersion::Mls10)
            .map_err(|e| invalid(e.to_string()))?;
        if key_package.ciphersuite() != CIPHERSUITE {
            return Err(invalid(format!(
                "ciphersuite {:?} is not accepted; use MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
                key_package.ciphersuite()
            )));
        }
        let leaf = key_package.leaf_node();
        check_leaf(device, leaf.signature_key().as_slice(), leaf.credential()).map_err(invalid)?;
        Ok(key_package.last_resort())
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
        let invalid = |m: String| DsError::Refused(Refusal::InvalidMessage(m));
        let message =
            MlsMessageIn::tls_deserialize_exact(group_info).map_err(|e| invalid(e.to_string()))?;
        let MlsMessageBodyIn::GroupInfo(group_info) = message.extract() else {
            return Err(invalid("group_info does not contain a GroupInfo".into()));
        };
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
            .map_err(|e| invalid(e.to_string()))?;
        let storage = MemoryStorage::default();
        let (group, _) = PublicGroup::from_external(
            &self.crypto,
            &storage,
            tree,
            group_info,
            openmls::group::ProposalStore::new(),
        )
        .map_err(|e| invalid(format!("the group does not verify: {e}")))?;
        if group.ciphersuite() != CIPHERSUITE {
            return Err(invalid("the group's ciphersuite is not accepted".into()));
        }
        let members: Vec<_> = group.members().collect();
        let [creator] = members.as_slice() else {
            return Err(invalid(
                "a new group must contain only its creator; add members with a commit".into(),
            ));
        };
        check_leaf(device, &creator.signature_key, &creator.credential).map_err(invalid)?;
        let has_us = group
            .group_context()
            .extensions()
            .external_senders()
            .is_some_and(|senders| senders.contains(&self.external_sender));
        if !has_us {
            return Err(invalid(
                "the group must list this server in its external_senders extension".into(),
            ));
        }
        let group_id = group.group_id().as_slice().to_vec();
        let epoch = group.group_context().epoch().as_u64();
        if epoch != 0 {
            return Err(invalid(format!(
                "a new group must be registered at epoch 0, not {epoch}"
            )));
        }
        let state = group_state::encode(&storage);
        if !self
            .store
            .create_group(&group_id, epoch, &state, device.id, now_ms)
            .await?
        {
            return Err(DsError::Refused(Refusal::GroupExists));
        }
        Ok((group_id, epoch))
    }

    /// Verifies a commit against the group's state and hands it to the store to order.
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
        let invalid = |m: String| DsError::Refused(Refusal::InvalidCommit(m));
        let message = MlsMessageIn::tls_deserialize_exact(&commit[..])
            .map_err(|e| DsError::Refused(Refusal::InvalidMessage(e.to_string())))?;
        let protocol = message.try_into_protocol_message().map_err(|_| {
            DsError::Refused(Refusal::InvalidMessage(
                "expected an MLS PublicMessage with a commit".into(),
            ))
        })?;
        let ProtocolMessage::PublicMessage(_) = &protocol else {
            return Err(DsError::Refused(Refusal::InvalidMessage(
                "handshake messages must be sent as PublicMessage (set the wire-format policy to plaintext)".into(),
            )));
        };
        if protocol.content_type() != ContentType::Commit {
            return Err(DsError::Refused(Refusal::InvalidMessage(
                "expected a commit".into(),
            )));
        }
        let group_id = protocol.group_id().as_slice().to_vec();
        let (current, state) = self
            .store
            .group(&group_id)
            .await?
            .ok_or(DsError::Refused(Refusal::UnknownGroup))?;
        let epoch = protocol.epoch().as_u64();
        if epoch < current {
            return Err(DsError::Refused(Refusal::EpochConflict { current }));
        }
        if epoch > current {
            return Err(invalid(format!(
                "the commit is for epoch {epoch}, ahead of the group's epoch {current}"
            )));
        }
        let GroupState { storage, mut group } =
            GroupState::decode(&group_id, &state).map_err(|e| DsError::Internal(e.to_string()))?;
        let processed = group
            .process_message(&self.crypto, protocol)
            .map_err(|e| invalid(e.to_string()))?;
        let Sender::Member(leaf_index) = processed.sender() else {
            return Err(invalid("only members may commit".into()));
        };
        let committer = group
            .leaf(*leaf_index)
            .ok_or_else(|| invalid("unknown committer".into()))?;
        if committer.signature_key().as_slice() != device.public_key.as_slice() {
            return Err(DsError::Refused(Refusal::NotAMember));
        }
        // The committer's leaf as it stands must be the device's too, credential included:
        // a group from before identity changes were checked may hold one that is not.
        check_leaf(
            device,
            committer.signature_key().as_slice(),
            committer.credential(),
        )
        .map_err(|m| DsError::Refused(Refusal::CredentialMismatch(m)))?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(invalid("expected a commit".into()));
        };
        self.check_identities(&group, device, &staged)?;
        // Every added device must be enrolled, not revoked, and carry its user's credential.
        let mut added_keys = Vec::new();
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            added_keys.push((
                leaf.signature_key().as_slice().to_vec(),
                leaf.credential().clone(),
            ));
        }
        let added_devices = self
            .store
            .devices_by_keys(
                &added_keys
                    .iter()
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut welcomed = Vec::new();
        for (key, credential) in &added_keys {
            let Some(added) = added_devices.iter().find(|d| &d.public_key == key) else {
                return Err(invalid(
                    "the commit adds a device that is not enrolled here".into(),
                ));
            };
            if added.revoked_at_ms.is_some() {
                return Err(invalid("the commit adds a revoked device".into()));
            }
            check_leaf(added, key, credential).map_err(invalid)?;
            welcomed.push(added.id);
        }
        let welcome = match (welcome, welcomed.is_empty()) {
            (Some(w), false) => {
                check_welcome(&w)?;
                Some((w, welcomed))
            }
            (None, true) => None,
            (Some(_), true) => {
                return Err(invalid(
                    "a Welcome was sent but the commit adds nobody".into(),
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "the commit adds members but no Welcome was sent".into(),
                ));
            }
        };
        group
            .merge_commit(&storage, *staged)
            .map_err(|e| DsError::Internal(format!("cannot merge a verified commit: {e}")))?;
        let member_keys: Vec<Vec<u8>> = group.members().map(|m| m.signature_key).collect();
        let member_devices = self.store.devices_by_keys(&member_keys).await?;
        let revoked_remain = member_devices.iter().any(|d| d.revoked_at_ms.is_some());
        let members_after: Vec<DeviceId> = member_devices
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_none())
            .map(|d| d.id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let accepted_group_id = group_id.clone();
        let accepted = self
            .store
            .commit(CommitRequest {
                sender: device.id,
                sender_user: device.user.clone(),
                sender_fingerprint: device.fingerprint.clone(),
                message_id,
                group_id,
                from_epoch: current,
                state: group_state::encode(&storage),
                members_after,
                commit,
                welcome,
                now_ms,
            })
            .await?;
        if revoked_remain && !accepted.duplicate {
            // The commit did not remove every revoked device: propose it again for the new epoch.
            if let Err(e) = self.propose_removals(&accepted_group_id, now_ms).await {
                tracing::warn!(error = %e, "cannot propose the removal of revoked devices");
            }
        }
        Ok(accepted)
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
        let message = MlsMessageIn::tls_deserialize_exact(&bytes[..])
            .map_err(|e| DsError::Refused(Refusal::InvalidMessage(e.to_string())))?;
        let Ok(ProtocolMessage::PrivateMessage(private)) = message.try_into_protocol_message()
        else {
            return Err(DsError::Refused(Refusal::InvalidMessage(
                "application messages must be MLS PrivateMessages".into(),
            )));
        };
        if private.content_type() != ContentType::Application {
            return Err(DsError::Refused(Refusal::InvalidMessage(
                "only application data may be sent as PrivateMessage; send handshake messages as commits".into(),
            )));
        }
        Ok(SubmitRequest {
            sender: device.id,
            sender_user: device.user.clone(),
            sender_fingerprint: device.fingerprint.clone(),
            message_id,
            group_id: private.group_id().as_slice().to_vec(),
            epoch: private.epoch().as_u64(),
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

impl DeliveryService {
    /// Refuses a commit that changes who a member is: the committer's new leaf and every
    /// Update must keep the device's enrolled key and its user's credential, and the group
    /// must keep this server as external sender (D2), or revoked devices could no longer be
    /// proposed for removal. openmls verifies signatures, not identities: this is ours.
    fn check_identities(
        &self,
        group: &PublicGroup,
        device: &Device,
        staged: &openmls::prelude::StagedCommit,
    ) -> Result<(), DsError> {
        let mismatch = |m: String| DsError::Refused(Refusal::CredentialMismatch(m));
        if let Some(leaf) = staged.update_path_leaf_node() {
            check_leaf(device, leaf.signature_key().as_slice(), leaf.credential()).map_err(
                |e| {
                    mismatch(format!(
                        "the commit's update path changes the committer: {e}"
                    ))
                },
            )?;
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
        // one could propose as well), so a relay that let one through would leave every
        // honest member behind an epoch it refuses.
        let senders = |extensions: &openmls::prelude::Extensions<
            openmls::prelude::GroupContext,
        >| { extensions.external_senders().cloned().unwrap_or_default() };
        if senders(staged.group_context().extensions())
            != senders(group.group_context().extensions())
        {
            return Err(mismatch(
                "a commit may not change the group's external_senders (this server's key)".into(),
            ));
        }
        // Proposals no client of this service makes and that the service cannot verify
        // against the group's public state: members could fail on them where the service
        // did not, and the group would split.
        for queued in staged.queued_proposals() {
            if matches!(
                queued.proposal(),
                Proposal::PreSharedKey(_) | Proposal::ReInit(_) | Proposal::ExternalInit(_)
            ) {
                return Err(DsError::Refused(Refusal::InvalidCommit(
                    "PreSharedKey, ReInit and ExternalInit proposals are not accepted".into(),
                )));
            }
        }
        Ok(())
    }
}

/// A leaf belongs to `device` when it has the device's key and its user's basic credential.
fn check_leaf(
    device: &Device,
    signature_key: &[u8],
    credential: &Credential,
) -> Result<(), String> {
    if signature_key != device.public_key.as_slice() {
        return Err("the signature key is not the enrolled key of this device".into());
    }
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| "only basic credentials are accepted".to_string())?;
    if basic.identity() != device.user.as_bytes() {
        // The presented name is the sender's own input, shown back to it only, and cut
        // short so that a long one cannot swell the answer.
        let presented = String::from_utf8_lossy(basic.identity());
        let presented: String = presented.chars().take(80).collect();
        return Err(format!(
            "the credential names {presented:?}, but the device is enrolled for {}",
            device.user
        ));
    }
    Ok(())
}

fn check_welcome(bytes: &[u8]) -> Result<(), DsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| DsError::Refused(Refusal::InvalidMessage(format!("welcome: {e}"))))?;
    match message.extract() {
        MlsMessageBodyIn::Welcome(_) => Ok(()),
        _ => Err(DsError::Refused(Refusal::InvalidMessage(
            "welcome does not contain a Welcome".into(),
        ))),
    }
}
