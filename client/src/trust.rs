//! What a member accepts from others. openmls verifies signatures and the tree, and leaves
//! to the application whether a credential may be what it says (`credentials_to_verify`):
//! these checks are that part, run on every commit and proposal before anything is merged
//! or stored. A refused handshake message changes nothing on this device.
//!
//! - A commit's update path and every Update keep the member's signature key and
//!   credential: nobody can take another user's name inside a conversation.
//! - An Add names a well-formed user with a basic credential, as the relay enrolls them.
//! - The group keeps its external senders (the relay's key), so revoked devices can still be
//!   proposed for removal.
//! - From the relay (the external sender) only Remove proposals are accepted: it may ask to
//!   take out a revoked device, never to add one or to change the group.

use openmls::prelude::{
    BasicCredential, Credential, LeafNodeIndex, MlsGroup, Proposal, QueuedProposal, Sender,
    StagedCommit,
};

/// Checks a commit from the member at `committer` against the group as it is before the
/// commit; the error says what the commit tried.
pub fn check_commit(
    group: &MlsGroup,
    committer: LeafNodeIndex,
    staged: &StagedCommit,
) -> Result<(), String> {
    let member = |index: LeafNodeIndex| {
        group
            .members()
            .find(|m| m.index == index)
            .map(|m| (m.signature_key, m.credential))
    };
    if let Some(leaf) = staged.update_path_leaf_node() {
        let (key, credential) =
            member(committer).ok_or("the committer is not a member of the group")?;
        if leaf.signature_key().as_slice() != key.as_slice() || *leaf.credential() != credential {
            return Err(format!(
                "{} tried to change its identity to {}",
                identity(&credential),
                identity(leaf.credential())
            ));
        }
    }
    for queued in staged.queued_proposals() {
        match (queued.sender(), queued.proposal()) {
            (Sender::External(_), Proposal::Remove(_)) => {}
            (Sender::External(_), _) => {
                return Err(
                    "the commit applies a proposal from the relay that is not a \
                            removal"
                        .into(),
                );
            }
            (Sender::Member(proposer), Proposal::Update(update)) => {
                let (key, credential) =
                    member(*proposer).ok_or("an update from a leaf that is not in the group")?;
                let leaf = update.leaf_node();
                if leaf.signature_key().as_slice() != key.as_slice()
                    || *leaf.credential() != credential
                {
                    return Err(format!(
                        "{} tried to change its identity to {}",
                        identity(&credential),
                        identity(leaf.credential())
                    ));
                }
            }
            (_, Proposal::Add(add)) => {
                let credential = add.key_package().leaf_node().credential();
                let user = user_of(credential)
                    .ok_or("the commit adds a device without a user's basic credential")?;
                if !valid_user(&user) {
                    return Err(format!("the commit adds a device for {user:?}, not a user"));
                }
            }
            _ => {}
        }
    }
    let senders = |extensions: &openmls::prelude::Extensions<openmls::prelude::GroupContext>| {
        extensions.external_senders().cloned().unwrap_or_default()
    };
    if senders(staged.group_context().extensions()) != senders(group.extensions()) {
        return Err("the commit changes the group's external senders (the relay's key)".into());
    }
    Ok(())
}

/// Checks a proposal before it is stored to be committed later: only the relay's removals.
pub fn check_proposal(proposal: &QueuedProposal) -> Result<(), String> {
    match (proposal.sender(), proposal.proposal()) {
        (Sender::External(_), Proposal::Remove(_)) => Ok(()),
        (Sender::External(_), other) => Err(format!(
            "the relay proposed {}; only removals of revoked devices are accepted from it",
            kind(other)
        )),
        (_, other) => Err(format!(
            "a {} proposal sent on its own; members change the group by commits only",
            kind(other)
        )),
    }
}

/// The user a basic credential names.
pub fn user_of(credential: &Credential) -> Option<String> {
    BasicCredential::try_from(credential.clone())
        .ok()
        .and_then(|c| String::from_utf8(c.identity().to_vec()).ok())
}

fn identity(credential: &Credential) -> String {
    user_of(credential).unwrap_or_else(|| "a credential that is not a user's".into())
}

/// `name@domain` with the characters the relay allows in names and domains.
fn valid_user(user: &str) -> bool {
    let Some((name, domain)) = user.split_once('@') else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(allowed)
        && !domain.is_empty()
        && domain.len() <= 253
        && domain.chars().all(allowed)
}

fn kind(proposal: &Proposal) -> &'static str {
    match proposal {
        Proposal::Add(_) => "an Add",
        Proposal::Update(_) => "an Update",
        Proposal::Remove(_) => "a Remove",
        Proposal::PreSharedKey(_) => "a PreSharedKey",
        Proposal::ReInit(_) => "a ReInit",
        Proposal::ExternalInit(_) => "an ExternalInit",
        Proposal::GroupContextExtensions(_) => "a GroupContextExtensions",
        _ => "an unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ed25519_dalek::SigningKey;
    use openmls::prelude::{
        CredentialWithKey, Extensions, ExternalProposal, LeafNodeParameters, MlsMessageIn,
        MlsMessageOut, ProcessedMessage, ProcessedMessageContent, SenderExtensionIndex,
        SignaturePublicKey, SignatureScheme, tls_codec::Deserialize as _,
    };
    use openmls_basic_credential::SignatureKeyPair;

    use super::*;
    use crate::mls::{Mls, serialize};

    struct Device {
        mls: Mls,
        key: SigningKey,
    }

    fn device(user: &str, server_key: &[u8]) -> Device {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let mls = Mls::new(
            &key.to_bytes(),
            &key.verifying_key().to_bytes(),
            user,
            server_key,
            HashMap::new(),
        );
        Device { mls, key }
    }

    /// mallory's group with dave in it, as each of them holds it, and the relay's signer.
    struct Scene {
        mallory: Device,
        dave: Device,
        mallory_group: MlsGroup,
        dave_group: MlsGroup,
        relay: SignatureKeyPair,
    }

    fn scene() -> Scene {
        let server = SigningKey::generate(&mut rand::rngs::OsRng);
        let server_key = server.verifying_key().to_bytes();
        let relay = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            server.to_bytes().to_vec(),
            server_key.to_vec(),
        );
        let mallory = device("mallory@localhost", &server_key);
        let dave = device("dave@localhost", &server_key);
        let mut mallory_group = mallory.mls.create_group().expect("create");
        let key_package = mallory
            .mls
            .validate_key_packages(&dave.mls.key_packages(1, false).expect("kp"))
            .expect("valid");
        let (_, welcome, _) = mallory_group
            .add_members(&mallory.mls.provider, &mallory.mls.signer, &key_package)
            .expect("add");
        mallory_group
            .merge_pending_commit(&mallory.mls.provider)
            .expect("merge");
        let dave_group = dave
            .mls
            .join(&serialize(welcome).expect("welcome"))
            .expect("join");
        Scene {
            mallory,
            dave,
            mallory_group,
            dave_group,
            relay,
        }
    }

    fn receive(device: &Device, group: &mut MlsGroup, message: MlsMessageOut) -> ProcessedMessage {
        let bytes = serialize(message).expect("serialize");
        let protocol = MlsMessageIn::tls_deserialize_exact(&bytes[..])
            .expect("message")
            .try_into_protocol_message()
            .expect("protocol message");
        group
            .process_message(&device.mls.provider, protocol)
            .expect("openmls accepts it: the check is ours")
    }

    fn staged_commit(processed: ProcessedMessage) -> (LeafNodeIndex, Box<StagedCommit>) {
        let Sender::Member(committer) = *processed.sender() else {
            panic!("a member's commit");
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            panic!("a commit");
        };
        (committer, staged)
    }

    #[test]
    fn a_commit_taking_another_users_name_is_refused() {
        let Scene {
            mallory,
            dave,
            mut mallory_group,
            mut dave_group,
            ..
        } = scene();
        // What the red team did: keep her own key, carry alice's basic credential.
        let as_alice = LeafNodeParameters::builder()
            .with_credential_with_key(CredentialWithKey {
                credential: BasicCredential::new(b"alice@localhost".to_vec()).into(),
                signature_key: SignaturePublicKey::from(
                    mallory.key.verifying_key().to_bytes().to_vec(),
                ),
            })
            .build();
        let bundle = mallory_group
            .self_update(&mallory.mls.provider, &mallory.mls.signer, as_alice)
            .expect("openmls builds it");
        let (commit, _, _) = bundle.into_contents();
        let (committer, staged) = staged_commit(receive(&dave, &mut dave_group, commit));
        let refused = check_commit(&dave_group, committer, &staged).expect_err("impersonation");
        assert!(
            refused.contains("mallory@localhost tried to change its identity to alice@localhost"),
            "{refused}"
        );
    }

    #[test]
    fn an_honest_update_and_add_pass() {
        let Scene {
            mallory,
            dave,
            mut mallory_group,
            mut dave_group,
            ..
        } = scene();
        let bundle = mallory_group
            .self_update(
                &mallory.mls.provider,
                &mallory.mls.signer,
                LeafNodeParameters::default(),
            )
            .expect("update");
        let (commit, _, _) = bundle.into_contents();
        let (committer, staged) = staged_commit(receive(&dave, &mut dave_group, commit));
        assert_eq!(check_commit(&dave_group, committer, &staged), Ok(()));
    }

    #[test]
    fn a_commit_dropping_the_relay_from_external_senders_is_refused() {
        let Scene {
            mallory,
            dave,
            mut mallory_group,
            mut dave_group,
            ..
        } = scene();
        let (commit, _, _) = mallory_group
            .update_group_context_extensions(
                &mallory.mls.provider,
                Extensions::empty(),
                &mallory.mls.signer,
            )
            .expect("openmls builds it");
        let (committer, staged) = staged_commit(receive(&dave, &mut dave_group, commit));
        let refused = check_commit(&dave_group, committer, &staged).expect_err("no relay");
        assert!(refused.contains("external senders"), "{refused}");
    }

    #[test]
    fn the_relay_may_propose_removals_only() {
        let Scene {
            mallory,
            dave,
            mallory_group,
            mut dave_group,
            relay,
        } = scene();
        let ghost = device("dave@localhost", b"");
        let ghost_package = dave
            .mls
            .validate_key_packages(&ghost.mls.key_packages(1, false).expect("kp"))
            .expect("valid")
            .remove(0);
        let add = ExternalProposal::new_add::<openmls_rust_crypto::OpenMlsRustCrypto>(
            ghost_package,
            dave_group.group_id().clone(),
            dave_group.epoch(),
            &relay,
            SenderExtensionIndex::new(0),
        )
        .expect("an external Add");
        let ProcessedMessageContent::ProposalMessage(proposal) =
            receive(&dave, &mut dave_group, add).into_content()
        else {
            panic!("a proposal");
        };
        let refused = check_proposal(&proposal).expect_err("a ghost device");
        assert!(refused.contains("the relay proposed an Add"), "{refused}");

        let remove = ExternalProposal::new_remove::<openmls_rust_crypto::OpenMlsRustCrypto>(
            mallory_group.own_leaf_index(),
            dave_group.group_id().clone(),
            dave_group.epoch(),
            &relay,
            SenderExtensionIndex::new(0),
        )
        .expect("an external Remove");
        let ProcessedMessageContent::ProposalMessage(proposal) =
            receive(&dave, &mut dave_group, remove).into_content()
        else {
            panic!("a proposal");
        };
        assert_eq!(check_proposal(&proposal), Ok(()));
        drop(mallory);
    }

    #[test]
    fn user_names() {
        for (user, valid) in [
            ("alice@interieur.gouv.fr", true),
            ("a.b-c_d@x", true),
            ("alice", false),
            ("@x", false),
            ("Alice@x", false),
            ("alice@", false),
            ("al ice@x", false),
        ] {
            assert_eq!(valid_user(user), valid, "{user}");
        }
    }
}
