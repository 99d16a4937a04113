//! The device's MLS side through openmls: its identity, KeyPackages, and group operations.
//!
//! The device's Ed25519 key is both its authentication key and its MLS signature key, and
//! its credential is a basic credential naming its user, as the server checks. Handshake
//! messages are sent as PublicMessage (the server verifies them); every group lists the
//! server as external sender so it can propose the removal of revoked devices, and carries
//! its name and roles (`relais_core::mls::governance`), which every leaf supports.

use std::collections::{BTreeSet, HashMap};

use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, ExternalSender, GroupId, KeyPackage,
    KeyPackageIn, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, OpenMlsProvider, PURE_PLAINTEXT_WIRE_FORMAT_POLICY, Proposal,
    ProtocolVersion, Sender, SenderRatchetConfiguration, SignaturePublicKey, SignatureScheme,
    StagedWelcome,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use relais_core::mls::governance::{self, Governance, Roles};

use crate::ClientError;

/// RFC 9420's mandatory ciphersuite, the only one the server accepts today.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Past epochs whose secrets are kept, so messages sent just before a commit still decrypt;
/// the server accepts application messages this many epochs behind.
pub const PAST_EPOCHS: usize = 4;

/// The device's MLS identity and state.
pub struct Mls {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    credential: CredentialWithKey,
    external_sender: ExternalSender,
    /// The user's domain, whose relay is the external sender `relais@DOMAIN`.
    domain: String,
}

fn mls_error(context: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Mls(format!("{context}: {e}"))
}

impl Mls {
    /// Builds the MLS side from the device key, the user name, the server's key and the
    /// stored MLS state.
    pub fn new(
        secret: &[u8; 32],
        public: &[u8; 32],
        user: &str,
        server_key: &[u8],
        values: HashMap<Vec<u8>, Vec<u8>>,
    ) -> Mls {
        let provider = OpenMlsRustCrypto::default();
        *provider
            .storage()
            .values
            .write()
            .unwrap_or_else(|e| e.into_inner()) = values;
        let signer =
            SignatureKeyPair::from_raw(SignatureScheme::ED25519, secret.to_vec(), public.to_vec());
        let credential = CredentialWithKey {
            credential: BasicCredential::new(user.as_bytes().to_vec()).into(),
            signature_key: SignaturePublicKey::from(public.to_vec()),
        };
        let domain = user.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
        Mls {
            provider,
            signer,
            credential,
            external_sender: external_sender(&domain, server_key),
            domain,
        }
    }

    /// Names `server_key` as the relay's key in groups created from now on.
    pub fn set_server_key(&mut self, server_key: &[u8]) {
        self.external_sender = external_sender(&self.domain, server_key);
    }

    /// A copy of the MLS key-value state, to persist.
    pub fn values(&self) -> HashMap<Vec<u8>, Vec<u8>> {
        self.provider
            .storage()
            .values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New KeyPackages, TLS-serialized as MLS messages.
    pub fn key_packages(
        &self,
        count: usize,
        last_resort: bool,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        (0..count)
            .map(|_| {
                // Every leaf declares the last-resort extension, so any of its packages may
                // carry it, and the roles extension, which every group carries.
                let mut builder =
                    KeyPackage::builder().leaf_node_capabilities(governance::leaf_capabilities());
                if last_resort {
                    builder = builder.mark_as_last_resort();
                }
                let bundle = builder
                    .build(
                        CIPHERSUITE,
                        &self.provider,
                        &self.signer,
                        self.credential.clone(),
                    )
                    .map_err(|e| mls_error("cannot build a KeyPackage", e))?;
                serialize(MlsMessageOut::from(bundle.key_package().clone()))
            })
            .collect()
    }

    fn join_config() -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(PAST_EPOCHS)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
            .build()
    }

    /// A new group with this device alone in it, at epoch 0, with the given name and roles.
    pub fn create_group(&self, roles: &Governance) -> Result<MlsGroup, ClientError> {
        let extensions = governance::group_extensions(self.external_sender.clone(), roles)
            .map_err(ClientError::Mls)?;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(PAST_EPOCHS)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
            .capabilities(governance::leaf_capabilities())
            .with_group_context_extensions(extensions)
            .build();
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(&id),
            self.credential.clone(),
        )
        .map_err(|e| mls_error("cannot create the group", e))
    }

    /// The GroupInfo and ratchet tree the server needs to register a new group.
    pub fn registration(&self, group: &MlsGroup) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .map_err(|e| mls_error("cannot export the group info", e))?;
        let tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|e| mls_error("cannot serialize the ratchet tree", e))?;
        Ok((serialize(info)?, tree))
    }

    /// Joins a group from a Welcome.
    pub fn join(&self, welcome: &[u8]) -> Result<MlsGroup, ClientError> {
        let message = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| mls_error("bad welcome", e))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(ClientError::Mls("the delivery is not a Welcome".into()));
        };
        StagedWelcome::new_from_welcome(&self.provider, &Self::join_config(), welcome, None)
            .and_then(|staged| staged.into_group(&self.provider))
            .map_err(|e| mls_error("cannot join from the Welcome", e))
    }

    pub fn load(&self, group_id: &[u8]) -> Result<Option<MlsGroup>, ClientError> {
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(group_id))
            .map_err(|e| mls_error("cannot load a group", e))
    }

    /// Validates claimed KeyPackages.
    pub fn validate_key_packages(
        &self,
        claimed: &[Vec<u8>],
    ) -> Result<Vec<KeyPackage>, ClientError> {
        claimed
            .iter()
            .map(|bytes| {
                let message = MlsMessageIn::tls_deserialize_exact(bytes)
                    .map_err(|e| mls_error("bad KeyPackage", e))?;
                let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
                    return Err(ClientError::Mls(
                        "a claimed KeyPackage is not a KeyPackage".into(),
                    ));
                };
                let key_package: KeyPackageIn = key_package;
                let key_package = key_package
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .map_err(|e| mls_error("a claimed KeyPackage does not verify", e))?;
                if key_package.ciphersuite() != CIPHERSUITE {
                    return Err(ClientError::Mls(
                        "a claimed KeyPackage uses another ciphersuite; upgrade this client".into(),
                    ));
                }
                Ok(key_package)
            })
            .collect()
    }

    /// The users of a group other than `me`, each once, sorted: who a conversation is
    /// with, as MLS verified it.
    pub fn other_users(group: &MlsGroup, me: &str) -> Vec<String> {
        let mut users: Vec<String> = Self::members(group)
            .into_iter()
            .map(|(user, _)| user)
            .filter(|u| u != me)
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// The users the group holds, each once.
    pub fn users(group: &MlsGroup) -> BTreeSet<String> {
        Self::members(group)
            .into_iter()
            .map(|(user, _)| user)
            .collect()
    }

    /// The group's name and roles as its extension says; `None` for a group from before
    /// roles. A malformed extension cannot be here: every commit that set it was checked.
    pub fn governance(group: &MlsGroup) -> Result<Option<Governance>, ClientError> {
        Governance::of(group.extensions())
            .map_err(|e| ClientError::Mls(format!("the group's roles do not read: {e}")))
    }

    /// The roles in force in a group.
    pub fn roles(group: &MlsGroup) -> Result<Roles, ClientError> {
        Ok(Roles::of(
            Self::governance(group)?.as_ref(),
            &Self::users(group),
        ))
    }

    /// Whether this device asked to leave the group: the removal of its own leaf is among
    /// the proposals waiting for a commit. Such a device commits nothing more there, since
    /// any commit of its would take in its own removal, which MLS forbids.
    pub fn is_leaving(group: &MlsGroup) -> bool {
        let own = group.own_leaf_index();
        group.pending_proposals().any(|queued| {
            matches!(queued.proposal(), openmls::prelude::Proposal::Remove(r) if r.removed() == own)
        })
    }

    /// The users of a group's members, and each member's signature key in hex.
    pub fn members(group: &MlsGroup) -> Vec<(String, String)> {
        group
            .members()
            .map(|m| {
                let user = BasicCredential::try_from(m.credential)
                    .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                    .unwrap_or_default();
                (user, hex::encode(&m.signature_key))
            })
            .collect()
    }

    /// The signature keys (hex) of the devices the group's pending commit removes at the
    /// relay's request: removals the relay proposed as the group's external sender.
    pub fn relay_removed(group: &MlsGroup) -> BTreeSet<String> {
        let Some(staged) = group.pending_commit() else {
            return BTreeSet::new();
        };
        staged
            .queued_proposals()
            .filter_map(|queued| match (queued.proposal(), queued.sender()) {
                (Proposal::Remove(remove), Sender::External(_)) => group
                    .member_at(remove.removed())
                    .map(|m| hex::encode(&m.signature_key)),
                _ => None,
            })
            .collect()
    }
}

/// The relay as external sender: its MLS key and the credential `relais@DOMAIN`.
fn external_sender(domain: &str, server_key: &[u8]) -> ExternalSender {
    ExternalSender::new(
        SignaturePublicKey::from(server_key.to_vec()),
        BasicCredential::new(format!("relais@{domain}").into_bytes()).into(),
    )
}

/// TLS-serializes an outgoing MLS message.
pub fn serialize(message: MlsMessageOut) -> Result<Vec<u8>, ClientError> {
    message
        .tls_serialize_detached()
        .map_err(|e| mls_error("cannot serialize", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use openmls::prelude::{ProcessedMessageContent, ProtocolMessage};

    fn device(user: &str, server_key: &[u8]) -> Mls {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Mls::new(
            &key.to_bytes(),
            &key.verifying_key().to_bytes(),
            user,
            server_key,
            HashMap::new(),
        )
    }

    fn protocol_message(bytes: &[u8]) -> ProtocolMessage {
        MlsMessageIn::tls_deserialize_exact(bytes)
            .expect("message")
            .try_into_protocol_message()
            .expect("protocol message")
    }

    /// Two devices converse without a relay: create, add from a serialized KeyPackage,
    /// join from the Welcome, exchange a message, and survive a state reload.
    #[test]
    fn two_devices_converse_and_reload() {
        let server = SigningKey::generate(&mut rand::rngs::OsRng);
        let server_key = server.verifying_key().to_bytes();
        let alice = device("alice@localhost", &server_key);
        let bob = device("bob@localhost", &server_key);

        let published = bob.key_packages(2, false).expect("key packages");
        let last_resort = bob.key_packages(1, true).expect("last resort");
        assert_eq!(published.len() + last_resort.len(), 3);
        let claimed = alice
            .validate_key_packages(&published[..1])
            .expect("valid KeyPackage");
        assert!(alice.validate_key_packages(&[vec![1, 2, 3]]).is_err());

        let mut group = alice
            .create_group(&Governance::new("ops", "alice@localhost"))
            .expect("create");
        let (group_info, tree) = alice.registration(&group).expect("registration");
        assert!(!group_info.is_empty() && !tree.is_empty());
        let (commit, welcome, _) = group
            .add_members(&alice.provider, &alice.signer, &claimed)
            .expect("add");
        // Handshake messages must travel as PublicMessage for the relay to verify them.
        let commit = serialize(commit).expect("commit");
        assert!(matches!(
            protocol_message(&commit),
            ProtocolMessage::PublicMessage(_)
        ));
        group.merge_pending_commit(&alice.provider).expect("merge");

        let mut joined = bob
            .join(&serialize(welcome).expect("welcome"))
            .expect("join");
        assert_eq!(joined.epoch(), group.epoch());
        let mut members = Mls::members(&joined);
        members.sort();
        let users: Vec<&str> = members.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(users, ["alice@localhost", "bob@localhost"]);

        let message = group
            .create_message(&alice.provider, &alice.signer, b"bonjour")
            .expect("encrypt");
        let message = protocol_message(&serialize(message).expect("message"));
        assert!(matches!(message, ProtocolMessage::PrivateMessage(_)));
        let processed = joined
            .process_message(&bob.provider, message)
            .expect("decrypt");
        let ProcessedMessageContent::ApplicationMessage(text) = processed.into_content() else {
            panic!("expected an application message");
        };
        assert_eq!(text.into_bytes(), b"bonjour");

        // The state map is all there is: a copy of it restores the group.
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let reloaded = Mls::new(
            &key.to_bytes(),
            &key.verifying_key().to_bytes(),
            "bob@localhost",
            &server_key,
            bob.values(),
        );
        let restored = reloaded
            .load(group.group_id().as_slice())
            .expect("load")
            .expect("the group is in the copied state");
        assert_eq!(restored.epoch(), joined.epoch());
    }
}
