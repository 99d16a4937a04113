//! Reading a commit or a standalone proposal, verified by openmls against the group as it
//! was before, into what governance needs: who commits, who is in the group before and
//! after, which devices come and go and at whose request, and the extension on both sides.
//! The relay (`commit.rs`) and members (`relais-client`) call the same functions.

use std::collections::{BTreeMap, BTreeSet};

use openmls::prelude::{
    BasicCredential, Credential, Extension, ExtensionType, LeafNodeIndex, Proposal, PublicGroup,
    QueuedProposal, Sender, StagedCommit,
};

use super::{Change, Governance, Refused, Removed, RemovedBy, extension_type};

/// Reads and checks a commit of the member at `committer`: the change it makes, or why
/// it is refused.
pub fn check_commit(
    group: &PublicGroup,
    committer: LeafNodeIndex,
    staged: &StagedCommit,
) -> Result<Change, Refused> {
    let change = review(group, committer, staged)?;
    change.authorize()?;
    Ok(change)
}

/// Reads a commit into a [`Change`] without judging it; refuses only what cannot be read
/// (a member without a user's credential, a malformed extension, a proposal kind this
/// service does not use).
pub fn review(
    group: &PublicGroup,
    committer: LeafNodeIndex,
    staged: &StagedCommit,
) -> Result<Change, Refused> {
    let invalid = Refused::Invalid;
    let leaves: Leaves = group
        .members()
        .map(|m| Ok((m.index, (user_of(&m.credential)?, m.signature_key))))
        .collect::<Result<_, Refused>>()?;
    let committer = user_at(&leaves, &committer)?;
    let (added, removed) = read_proposals(&leaves, staged)?;
    let gone: BTreeSet<&[u8]> = removed.iter().map(|r| r.key.as_slice()).collect();
    let present_before: BTreeSet<String> = leaves.values().map(|(u, _)| u.clone()).collect();
    let mut present_after: BTreeSet<String> = leaves
        .values()
        .filter(|(_, key)| !gone.contains(key.as_slice()))
        .map(|(u, _)| u.clone())
        .collect();
    present_after.extend(added.iter().cloned());
    let before_extensions = group.group_context().extensions();
    let after_extensions = staged.group_context().extensions();
    Ok(Change {
        committer,
        before: Governance::of(before_extensions).map_err(invalid)?,
        after: Governance::of(after_extensions).map_err(invalid)?,
        present_before,
        present_after,
        added,
        removed,
        other_extensions_changed: others(before_extensions) != others(after_extensions),
    })
}

/// Each member's leaf: its user and signature key.
type Leaves = BTreeMap<LeafNodeIndex, (String, Vec<u8>)>;

fn user_at(leaves: &Leaves, index: &LeafNodeIndex) -> Result<String, Refused> {
    leaves
        .get(index)
        .map(|(user, _)| user.clone())
        .ok_or_else(|| Refused::Invalid("a proposal names a leaf that is not in the group".into()))
}

/// The users whose devices a commit adds, and the devices it removes with who asked.
fn read_proposals(
    leaves: &Leaves,
    staged: &StagedCommit,
) -> Result<(BTreeSet<String>, Vec<Removed>), Refused> {
    let invalid = Refused::Invalid;
    let mut added = BTreeSet::new();
    let mut removed = Vec::new();
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::Add(add) => {
                added.insert(user_of(add.key_package().leaf_node().credential())?);
            }
            Proposal::Remove(remove) => {
                let index = remove.removed();
                let (user, key) = leaves.get(&index).cloned().ok_or_else(|| {
                    invalid("the commit removes a leaf that is not in the group".into())
                })?;
                let by = match queued.sender() {
                    Sender::External(_) => RemovedBy::Relay,
                    Sender::Member(proposer) if *proposer == index => RemovedBy::Itself,
                    Sender::Member(proposer) if user_at(leaves, proposer)? == user => {
                        RemovedBy::Sibling
                    }
                    Sender::Member(_) => RemovedBy::Committer,
                    _ => {
                        return Err(invalid(
                            "a removal proposed by someone outside the group".into(),
                        ));
                    }
                };
                removed.push(Removed { user, key, by });
            }
            Proposal::SelfRemove | Proposal::Custom(_) => {
                return Err(invalid(
                    "SelfRemove and custom proposals are not accepted; to leave, propose the removal of your own leaf".into(),
                ));
            }
            _ => {}
        }
    }
    Ok((added, removed))
}

/// Checks a standalone proposal from a member before anyone stores it: a member may ask
/// only for the removal of its own user's devices (leaving); everything else goes in a
/// commit. The relay's own proposals (removals only) are the caller's to check.
pub fn check_member_proposal(group: &PublicGroup, queued: &QueuedProposal) -> Result<(), Refused> {
    let invalid = Refused::Invalid;
    let Sender::Member(proposer) = queued.sender() else {
        return Err(invalid("only members propose here".into()));
    };
    let Proposal::Remove(remove) = queued.proposal() else {
        return Err(invalid(
            "a member may propose only its own departure; make other changes with a commit".into(),
        ));
    };
    let user = |index: LeafNodeIndex| {
        group
            .leaf(index)
            .ok_or_else(|| invalid("the proposal names a leaf that is not in the group".into()))
            .and_then(|leaf| user_of(leaf.credential()))
    };
    if user(*proposer)? != user(remove.removed())? {
        return Err(invalid(
            "a member may propose only the removal of its own user's devices; an admin removes others with a commit".into(),
        ));
    }
    Ok(())
}

/// The user a member's basic credential names.
fn user_of(credential: &Credential) -> Result<String, Refused> {
    BasicCredential::try_from(credential.clone())
        .ok()
        .and_then(|c| String::from_utf8(c.identity().to_vec()).ok())
        .ok_or_else(|| Refused::Invalid("a member without a user's basic credential".into()))
}

/// The group-context extensions other than governance and the external senders, in a
/// comparable order.
fn others(
    extensions: &openmls::prelude::Extensions<openmls::prelude::GroupContext>,
) -> Vec<Extension> {
    let mut kept: Vec<Extension> = extensions
        .iter()
        .filter(|e| {
            let kind = e.extension_type();
            kind != extension_type() && kind != ExtensionType::ExternalSenders
        })
        .cloned()
        .collect();
    kept.sort_by_key(|e| u16::from(e.extension_type()));
    kept
}
