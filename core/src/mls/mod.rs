//! The MLS checks of the delivery service (RFC 9420 §16): what a KeyPackage, a new group,
//! a commit, a member's departure, a Welcome and an application message's header must be
//! before the relay stores or orders them, and the service's own removal proposals. openmls
//! does the cryptography; the identities (a member's key is its enrolled device's, its
//! credential its user's name) and the group's roles (`governance`, which members run too)
//! are checked here.
//!
//! Everything here is computation over bytes: the delivery service reads the group's
//! state and the devices from storage, hands them in, and stores what comes out.

mod commit;
mod departure;
pub mod governance;
mod removals;
mod state;

use openmls::prelude::{
    BasicCredential, Ciphersuite, ContentType, Credential, ExternalSender, KeyPackageIn,
    MlsMessageBodyIn, MlsMessageIn, ProtocolMessage, ProtocolVersion, PublicGroup, RatchetTreeIn,
    SignaturePublicKey, SignatureScheme, tls_codec::Deserialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, RustCrypto};

pub use commit::{Handshake, Merged, ParsedCommit, PendingCommit};
pub use departure::Departure;
pub use removals::{Proposed, Removals};
pub use state::{GroupState, StateError, encode as encode_state};

use crate::Refusal;

/// The only ciphersuite accepted for now (RFC 9420's mandatory one).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Largest KeyPackage accepted, as a serialized MLSMessage. One of ciphersuite 0x0001 with
/// a basic credential is about 300 bytes (an Ed25519 and an X25519 key, a signature, the
/// lifetime, capabilities and a user name); 4 KiB leaves room for long names and future
/// extensions, and keeps `limits.key_packages_max` of them per device under half a MiB.
pub const KEY_PACKAGE_BYTES_MAX: usize = 4096;

/// A device as the checks see it: its enrolled signature key and its user's name, which
/// its MLS credential must carry.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub key: &'a [u8],
    pub user: &'a str,
}

/// Why a check did not pass: the sender's message is refused, or the relay's own state is
/// broken (a stored group that does not decode), which the client cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Broken(String),
}

/// A group registered at epoch 0, ready to store.
#[derive(Debug)]
pub struct NewGroup {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub state: Vec<u8>,
}

/// An application message's header: all the relay reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub group_id: Vec<u8>,
    pub epoch: u64,
}

/// The delivery service's MLS side: its crypto provider, and itself as every group's
/// external sender (D2), with the key that signs its proposals.
pub struct Checker {
    crypto: RustCrypto,
    external_sender: ExternalSender,
    signer: SignatureKeyPair,
}

impl Checker {
    /// The checker of the relay of `domain`, whose Ed25519 signing key is `signing_key`
    /// (32 bytes) with public key `public_key`.
    pub fn new(domain: &str, signing_key: Vec<u8>, public_key: Vec<u8>) -> Checker {
        let signer =
            SignatureKeyPair::from_raw(SignatureScheme::ED25519, signing_key, public_key.clone());
        let credential: Credential =
            BasicCredential::new(format!("relais@{domain}").into_bytes()).into();
        Checker {
            crypto: RustCrypto::default(),
            external_sender: ExternalSender::new(SignaturePublicKey::from(public_key), credential),
            signer,
        }
    }

    /// Checks a KeyPackage of `device`; returns whether it is a last-resort one.
    pub fn key_package(&self, device: Identity<'_>, bytes: &[u8]) -> Result<bool, Refusal> {
        let invalid = Refusal::InvalidKeyPackage;
        if bytes.len() > KEY_PACKAGE_BYTES_MAX {
            return Err(Refusal::LimitExceeded(format!(
                "a KeyPackage is at most {KEY_PACKAGE_BYTES_MAX} bytes, this one is {}; publish ordinary KeyPackages",
                bytes.len()
            )));
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

    /// Checks a group its creator registers: a GroupInfo and ratchet tree that verify, at
    /// epoch 0, with the creator alone, this relay as external sender, and roles that make
    /// the creator an admin.
    pub fn new_group(
        &self,
        creator: Identity<'_>,
        group_info: &[u8],
        ratchet_tree: &[u8],
    ) -> Result<NewGroup, Refusal> {
        let invalid = Refusal::InvalidMessage;
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
        let [only] = members.as_slice() else {
            return Err(invalid(
                "a new group must contain only its creator; add members with a commit".into(),
            ));
        };
        check_leaf(creator, &only.signature_key, &only.credential).map_err(invalid)?;
        if !self.is_external_sender_of(&group) {
            return Err(invalid(
                "the group must list this server in its external_senders extension".into(),
            ));
        }
        match governance::Governance::of(group.group_context().extensions()) {
            Ok(Some(roles)) if roles.lists_admin(creator.user) => {}
            Ok(Some(_)) => {
                return Err(invalid(
                    "the group's roles must make its creator an admin".into(),
                ));
            }
            Ok(None) => {
                return Err(invalid(format!(
                    "a new group must carry its roles (group-context extension {:#06x}); update the client",
                    governance::EXTENSION_TYPE
                )));
            }
            Err(e) => return Err(invalid(e)),
        }
        let epoch = group.group_context().epoch().as_u64();
        if epoch != 0 {
            return Err(invalid(format!(
                "a new group must be registered at epoch 0, not {epoch}"
            )));
        }
        Ok(NewGroup {
            group_id: group.group_id().as_slice().to_vec(),
            epoch,
            state: state::encode(&storage),
        })
    }

    fn is_external_sender_of(&self, group: &PublicGroup) -> bool {
        group
            .group_context()
            .extensions()
            .external_senders()
            .is_some_and(|senders| senders.contains(&self.external_sender))
    }
}

/// Reads an application message's header (never its ciphertext): it must be an MLS
/// PrivateMessage carrying application data.
pub fn application_header(bytes: &[u8]) -> Result<Header, Refusal> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| Refusal::InvalidMessage(e.to_string()))?;
    let Ok(ProtocolMessage::PrivateMessage(private)) = message.try_into_protocol_message() else {
        return Err(Refusal::InvalidMessage(
            "application messages must be MLS PrivateMessages".into(),
        ));
    };
    if private.content_type() != ContentType::Application {
        return Err(Refusal::InvalidMessage(
            "only application data may be sent as PrivateMessage; send handshake messages as commits".into(),
        ));
    }
    Ok(Header {
        group_id: private.group_id().as_slice().to_vec(),
        epoch: private.epoch().as_u64(),
    })
}

/// A Welcome must come with a commit that adds someone, and only then.
pub fn check_welcome(welcome: Option<&[u8]>, adds_anyone: bool) -> Result<(), Refusal> {
    let invalid = Refusal::InvalidCommit;
    match (welcome, adds_anyone) {
        (Some(bytes), true) => {
            let message = MlsMessageIn::tls_deserialize_exact(bytes)
                .map_err(|e| Refusal::InvalidMessage(format!("welcome: {e}")))?;
            match message.extract() {
                MlsMessageBodyIn::Welcome(_) => Ok(()),
                _ => Err(Refusal::InvalidMessage(
                    "welcome does not contain a Welcome".into(),
                )),
            }
        }
        (None, false) => Ok(()),
        (Some(_), false) => Err(invalid(
            "a Welcome was sent but the commit adds nobody".into(),
        )),
        (None, true) => Err(invalid(
            "the commit adds members but no Welcome was sent".into(),
        )),
    }
}

/// A leaf belongs to `device` when it has the device's key and its user's basic credential.
pub fn check_leaf(
    device: Identity<'_>,
    signature_key: &[u8],
    credential: &Credential,
) -> Result<(), String> {
    if signature_key != device.key {
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

#[cfg(test)]
mod tests;
