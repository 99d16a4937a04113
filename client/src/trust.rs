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
//! - From a member, a standalone proposal is accepted only as the removal of its own user's
//!   device: leaving.
//! - What needs an admin of the group comes from one: the same rule the relay runs
//!   (`relais_core::mls::governance`), so that a relay that let such a commit through would
//!   still see it refused here.

use openmls::prelude::{
    BasicCredential, Credential, LeafNodeIndex, MlsGroup, Proposal, QueuedProposal, Sender,
    StagedCommit,
};
use relais_core::mls::governance::{self, Change};

/// Checks a commit from the member at `committer` against the group as it is before the
/// commit, and returns what it changes in the group's membership and roles; the error says
/// what the commit tried.
pub fn check_commit(
    group: &MlsGroup,
    committer: LeafNodeIndex,
    staged: &StagedCommit,
) -> Result<Change, String> {
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
                if !governance::valid_user(&user) {
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
    governance::check_commit(group.public_group(), committer, staged).map_err(|e| e.to_string())
}

/// Checks a proposal before it is stored to be committed later: the relay's removals, and a
/// member's removal of its own user's device (leaving).
pub fn check_proposal(group: &MlsGroup, proposal: &QueuedProposal) -> Result<(), String> {
    match (proposal.sender(), proposal.proposal()) {
        (Sender::External(_), Proposal::Remove(_)) => Ok(()),
        (Sender::External(_), other) => Err(format!(
            "the relay proposed {}; only removals of revoked devices are accepted from it",
            kind(other)
        )),
        (Sender::Member(_), Proposal::Remove(_)) => {
            governance::check_member_proposal(group.public_group(), proposal)
                .map_err(|e| e.to_string())
        }
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
    use openmls::prelude::OpenMlsProvider as _;
    use relais_core::mls::governance::Governance;

    struct Device {
        mls: Mls,
        key: SigningKey,
        user: String,
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
        Device {
            mls,
            key,
            user: user.to_owned(),
        }
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
        let (mallory_group, mut joined) = group_of(&mallory, &[&dave]);
        let dave_group = joined.remove(0);
        Scene {
            mallory,
            dave,
            mallory_group,
            dave_group,
            relay,
        }
    }

    /// `creator`'s new group "ops", with `others` added (one commit) and joined.
    fn group_of(creator: &Device, others: &[&Device]) -> (MlsGroup, Vec<MlsGroup>) {
        let roles = Governance::new("ops", &creator.user);
        let mut group = creator.mls.create_group(&roles).expect("create");
        let mut key_packages = Vec::new();
        for other in others {
            key_packages.extend(
                creator
                    .mls
                    .validate_key_packages(&other.mls.key_packages(1, false).expect("kp"))
                    .expect("valid"),
            );
        }
        let (_, welcome, _) = group
            .add_members(&creator.mls.provider, &creator.mls.signer, &key_packages)
            .expect("add");
        group
            .merge_pending_commit(&creator.mls.provider)
            .expect("merge");
        let welcome = serialize(welcome).expect("welcome");
        let joined = others
            .iter()
            .map(|other| other.mls.join(&welcome).expect("join"))
            .collect();
        (group, joined)
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
        assert_eq!(
            check_commit(&dave_group, committer, &staged).map(|c| c.removed),
            Ok(Vec::new())
        );
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
        let refused = check_proposal(&dave_group, &proposal).expect_err("a ghost device");
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
        assert_eq!(check_proposal(&dave_group, &proposal), Ok(()));
        drop(mallory);
    }

    /// mallory's group with dave and erin; dave is not an admin. Each one's group state.
    fn governed() -> ([Device; 3], Vec<MlsGroup>) {
        let server = SigningKey::generate(&mut rand::rngs::OsRng);
        let server_key = server.verifying_key().to_bytes();
        let devices = [
            device("mallory@localhost", &server_key),
            device("dave@localhost", &server_key),
            device("erin@localhost", &server_key),
        ];
        let (mallory_group, joined) = group_of(&devices[0], &[&devices[1], &devices[2]]);
        let groups = std::iter::once(mallory_group).chain(joined).collect();
        (devices, groups)
    }

    /// The red team's next try, built by hand with openmls: dave, not an admin, removes
    /// erin, then makes himself an admin. mallory's device refuses both before merging,
    /// with the same rule the relay applies.
    #[test]
    fn a_non_admins_removal_and_a_forged_role_change_are_refused() {
        let (devices, mut groups) = governed();
        let [mallory, dave, _] = &devices;
        let erin_leaf = groups[2].own_leaf_index();
        let (commit, _, _) = groups[1]
            .remove_members(&dave.mls.provider, &dave.mls.signer, &[erin_leaf])
            .expect("openmls builds it");
        let (committer, staged) = staged_commit(receive(mallory, &mut groups[0], commit));
        let refused = check_commit(&groups[0], committer, &staged).expect_err("not an admin");
        assert!(
            refused.contains("dave@localhost is not an admin")
                && refused.contains("removing erin@localhost")
                && refused.contains("ask mallory@localhost"),
            "{refused}"
        );

        groups[1]
            .clear_pending_commit(dave.mls.provider.storage())
            .expect("clear");
        let roles = Mls::governance(&groups[1])
            .expect("roles")
            .expect("present");
        let forged = governance::with_governance(
            groups[1].extensions(),
            &roles.with_admin("dave@localhost"),
        )
        .expect("extensions");
        let (commit, _, _) = groups[1]
            .update_group_context_extensions(&dave.mls.provider, forged, &dave.mls.signer)
            .expect("openmls builds it");
        let (committer, staged) = staged_commit(receive(mallory, &mut groups[0], commit));
        let refused = check_commit(&groups[0], committer, &staged).expect_err("forged roles");
        assert!(refused.contains("changing the group's roles"), "{refused}");
        assert_eq!(
            Mls::roles(&groups[0]).expect("roles").admins,
            ["mallory@localhost"],
            "nothing was merged"
        );
    }

    /// An admin's removal and renaming pass; a member's own departure is accepted as a
    /// proposal, the removal of someone else is not.
    #[test]
    fn an_admins_changes_and_a_departure_pass() {
        let (devices, mut groups) = governed();
        let [mallory, dave, erin] = &devices;
        let proposal = groups[2]
            .leave_group(&erin.mls.provider, &erin.mls.signer)
            .expect("erin leaves");
        let ProcessedMessageContent::ProposalMessage(departure) =
            receive(dave, &mut groups[1], proposal).into_content()
        else {
            panic!("a proposal");
        };
        assert_eq!(check_proposal(&groups[1], &departure), Ok(()));
        let (hostile, _) = groups[1]
            .propose_remove_member(&dave.mls.provider, &dave.mls.signer, LeafNodeIndex::new(0))
            .expect("openmls builds it");
        let ProcessedMessageContent::ProposalMessage(hostile) =
            receive(erin, &mut groups[2], hostile).into_content()
        else {
            panic!("a proposal");
        };
        let refused = check_proposal(&groups[2], &hostile).expect_err("not his own");
        assert!(refused.contains("its own user's devices"), "{refused}");

        let roles = Mls::governance(&groups[0])
            .expect("roles")
            .expect("present");
        let renamed =
            governance::with_governance(groups[0].extensions(), &roles.with_name("cellule"))
                .expect("extensions");
        let (commit, _, _) = groups[0]
            .update_group_context_extensions(&mallory.mls.provider, renamed, &mallory.mls.signer)
            .expect("rename");
        let (committer, staged) = staged_commit(receive(dave, &mut groups[1], commit));
        let change = check_commit(&groups[1], committer, &staged).expect("an admin renames");
        assert_eq!(change.after.map(|g| g.name).as_deref(), Some("cellule"));
    }
}
