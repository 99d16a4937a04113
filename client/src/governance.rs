//! Groups their members govern: the member list with roles, removing a user, leaving,
//! renaming and promoting, and the lines every member's history shows for them. The roles
//! live in the group's MLS context (`relais_core::mls::governance`, which also holds the
//! rule the relay and `trust.rs` apply); this device checks its own commits against the
//! same rule before it sends them.
//!
//! Leaving: MLS forbids a member to commit its own removal, so the leaving device sends the
//! Remove proposal of its own leaf, which the relay keeps and delivers and the next member
//! to commit takes in. The relay proposes again what a commit leaves out, and the removal
//! of the user's other devices (a departure is the user's). The decision is kept on the
//! device (`departing:` in the state's meta) until the group drops it, so that a departure
//! whose answer was lost is sent again at the next connection, and so that this user's
//! devices never add each other back into a group the user left.

use std::collections::BTreeSet;

use openmls::prelude::{LeafNodeIndex, MlsGroup, OpenMlsProvider as _, QueuedProposal, Sender};
use relais_core::mls::governance::{self, Change, Governance, RemovedBy};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req};

use crate::client::{COMMIT_ATTEMPTS, Client, Effect, PreparedCommit, new_message_id};
use crate::mls::{self, Mls};
use crate::state::{Conversation, State};
use crate::{ClientError, now_ms};

/// A device of a group, as `relais group members` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub user: String,
    /// The device's signature key, in hex.
    pub device_key: String,
    /// Whether its user is an admin of the group (roles are per user, not per device).
    pub admin: bool,
}

/// A change of a group that needs an admin.
enum Governed {
    Remove(String),
    Rename(String),
    Promote(String),
}

impl Client {
    /// A conversation's devices with their users' roles, admins first, then by user, once
    /// pending deliveries are processed.
    pub async fn group_members(
        &mut self,
        conversation: &str,
    ) -> Result<Vec<GroupMember>, ClientError> {
        self.drain().await?;
        let c = self.conversation(conversation).await?;
        let group = self.group(&c.group_id)?;
        let roles = Mls::roles(&group)?;
        let mut members: Vec<GroupMember> = Mls::members(&group)
            .into_iter()
            .map(|(user, device_key)| GroupMember {
                admin: roles.is_admin(&user),
                user,
                device_key,
            })
            .collect();
        members.sort_by(|a, b| {
            (!a.admin, &a.user, &a.device_key).cmp(&(!b.admin, &b.user, &b.device_key))
        });
        Ok(members)
    }

    /// Removes `user` (all their devices) from a group: an admin's right.
    pub async fn remove_member(
        &mut self,
        conversation: &str,
        user: &str,
    ) -> Result<(), ClientError> {
        let user = self.qualify(user);
        if user == self.user() {
            return Err(ClientError::Usage(format!(
                "to leave {conversation}, run `relais group leave {conversation}`"
            )));
        }
        self.govern(conversation, Governed::Remove(user)).await
    }

    /// Renames a group for every member: an admin's right.
    pub async fn rename_group(
        &mut self,
        conversation: &str,
        name: &str,
    ) -> Result<(), ClientError> {
        if name.is_empty() {
            return Err(ClientError::Usage("a group needs a name".into()));
        }
        governance::check_name(name).map_err(ClientError::Usage)?;
        self.govern(conversation, Governed::Rename(name.to_owned()))
            .await
    }

    /// Makes `user` an admin of a group: an admin's right.
    pub async fn promote(&mut self, conversation: &str, user: &str) -> Result<(), ClientError> {
        let user = self.qualify(user);
        self.govern(conversation, Governed::Promote(user)).await
    }

    /// Leaves a conversation: this user's devices are taken out of it by the next member
    /// to commit, even if this device never connects again. The history stays here.
    pub async fn leave(&mut self, conversation: &str) -> Result<(), ClientError> {
        self.drain().await?;
        let c = self.conversation(conversation).await?;
        let group = self.group(&c.group_id)?;
        if !group.is_active() {
            return Err(ClientError::Usage(format!(
                "you are no longer a member of {conversation}"
            )));
        }
        if Mls::users(&group).iter().all(|u| u == self.user()) {
            return Err(ClientError::Usage(format!(
                "you are the only member of {conversation}: nobody is left to take you out of it"
            )));
        }
        self.state
            .set_meta(&departing_key(&c.group_id), b"1")
            .await?;
        self.propose_departure(&c.group_id).await
    }

    /// Processes `mls_message` as if the relay had delivered it, acknowledging nothing: for
    /// tests and tools that must show what this device does with a message an honest relay
    /// refuses (a hostile member's commit, say). What it refuses is counted and reported in
    /// the warnings, as for any delivery.
    pub async fn process_unrelayed(
        &mut self,
        kind: pb::DeliveryKind,
        mls_message: Vec<u8>,
    ) -> Result<(), ClientError> {
        // Sequences the relay gives grow from 1; this one it never will, and it is not kept.
        let sequence = u64::MAX >> 1;
        self.process(pb::Delivery {
            sequence,
            kind: kind as i32,
            mls_message,
            ..Default::default()
        })
        .await?;
        self.state.forget_processed(&[sequence]).await
    }

    /// Sends again the departures this device decided and that did not take effect yet
    /// (their answer was lost, or a commit left them out while this device was away).
    pub(crate) async fn resume_departures(&mut self) -> Result<(), ClientError> {
        for conversation in self.state_conversations().await? {
            if !self.departing(&conversation.group_id).await? {
                continue;
            }
            let Some(group) = self.mls.load(&conversation.group_id)? else {
                continue;
            };
            if group.is_active() {
                self.propose_departure(&conversation.group_id).await?;
            }
        }
        Ok(())
    }

    /// Whether this user left (or is leaving) the group: this device decided it, or learnt
    /// it from another device of the user's departure.
    pub(crate) async fn departing(&self, group_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self
            .state
            .meta(&departing_key(group_id))
            .await?
            .is_some_and(|v| !v.is_empty()))
    }

    /// Forgets a departure: this device joined the group again.
    pub(crate) async fn forget_departure(&self, group_id: &[u8]) -> Result<(), ClientError> {
        if self.departing(group_id).await? {
            self.state.set_meta(&departing_key(group_id), b"").await?;
        }
        Ok(())
    }

    /// A standalone proposal: checked (`trust.rs`) and stored for the next commit, which
    /// this device makes at once unless it is leaving the group itself. Its own departure,
    /// which the relay delivers back, is already stored.
    pub(crate) fn on_proposal(
        &mut self,
        group: &mut MlsGroup,
        proposal: QueuedProposal,
    ) -> Result<(), ClientError> {
        let own = group.own_leaf_index();
        if matches!(proposal.sender(), Sender::Member(index) if *index == own) {
            return Ok(());
        }
        crate::trust::check_proposal(group, &proposal)
            .map_err(|e| ClientError::Mls(format!("refused a proposal: {e}")))?;
        group
            .store_pending_proposal(self.mls.provider.storage(), proposal)
            .map_err(|e| ClientError::Mls(format!("cannot store a proposal: {e}")))?;
        if !Mls::is_leaving(group) {
            self.pending_proposal_group = Some(group.group_id().as_slice().to_vec());
        }
        Ok(())
    }

    /// The history lines for another member's commit: the membership lines
    /// (`contacts.rs`) for the devices it adds, and for the users and devices it removes,
    /// roles and name, this module's.
    pub(crate) async fn commit_lines(
        &self,
        group_id: &[u8],
        committer: &str,
        change: &Change,
        before: &[(String, crate::contacts::DeviceKey)],
        after: &[(String, crate::contacts::DeviceKey)],
    ) -> Result<Vec<String>, ClientError> {
        let kept: Vec<_> = before
            .iter()
            .filter(|m| after.contains(m))
            .cloned()
            .collect();
        let mut lines = self
            .membership_events(group_id, Some(committer), &kept, after, &BTreeSet::new())
            .await?;
        lines.extend(removal_lines(change).into_iter().map(|(_, line)| line));
        lines.extend(role_lines(change));
        Ok(lines)
    }

    /// What another member's merged commit stores: its lines, and the conversation's new
    /// name when it renamed the group. When another device of this user left, this one
    /// leaves too (`resume_departures`, and the relay proposes it).
    pub(crate) async fn commit_effect(
        &self,
        group_id: Vec<u8>,
        change: &Change,
        lines: Vec<String>,
    ) -> Result<Effect, ClientError> {
        if change.leaving().contains(self.user()) {
            self.state.set_meta(&departing_key(&group_id), b"1").await?;
        }
        match self.renamed(&group_id, change).await? {
            Some(conversation) => Ok(Effect::Renamed {
                conversation,
                lines,
            }),
            None => Ok(Effect::Events { group_id, lines }),
        }
    }

    /// A ConversationInfo as a governed group's extension names it: for a group, the name
    /// in its roles, whatever a member's info message says.
    pub(crate) fn named_info(
        group: &MlsGroup,
        info: &pb::ConversationInfo,
    ) -> pb::ConversationInfo {
        let mut info = info.clone();
        if info.kind == pb::conversation_info::Kind::Group as i32
            && let Ok(Some(governance)) = Mls::governance(group)
        {
            info.title = governance.name;
        }
        info
    }
}

impl Client {
    /// Makes a change that needs an admin, checked here by the rule the relay applies,
    /// rebasing on concurrent commits; records its lines once the relay took it.
    async fn govern(&mut self, conversation: &str, what: Governed) -> Result<(), ClientError> {
        self.drain().await?;
        let c = self.conversation(conversation).await?;
        for attempt in 1..=COMMIT_ATTEMPTS {
            let Some((prepared, change)) = self.prepare_governed(&c, &what).await? else {
                return Ok(());
            };
            match self.submit_prepared(prepared).await {
                Err(ClientError::Server {
                    code: ErrorCode::EpochConflict,
                    current_epoch,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    self.catch_up(&c.group_id, current_epoch).await?;
                }
                Err(e) => return Err(e),
                Ok(()) => return self.record_own(&c.group_id, &change).await,
            }
        }
        Err(ClientError::Protocol(format!(
            "{conversation} kept changing meanwhile; try again"
        )))
    }

    /// Builds the commit for `what`, or `None` when there is nothing to do.
    async fn prepare_governed(
        &mut self,
        c: &Conversation,
        what: &Governed,
    ) -> Result<Option<(PreparedCommit, Change)>, ClientError> {
        let mut group = self.group(&c.group_id)?;
        let name = &c.title;
        if !group.is_active() {
            return Err(ClientError::Usage(format!(
                "you are no longer a member of {name}"
            )));
        }
        if Mls::is_leaving(&group) || self.departing(&c.group_id).await? {
            return Err(ClientError::Usage(format!("you are leaving {name}")));
        }
        let roles = Mls::roles(&group)?;
        if !roles.is_admin(self.user()) {
            return Err(ClientError::Usage(format!(
                "only an admin of {name} may do that; ask {}",
                roles.admins.join(", ")
            )));
        }
        let Some(Plan {
            removed,
            roles: next,
        }) = planned(&group, &roles, name, what)?
        else {
            return Ok(None);
        };
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        let current = Mls::governance(&group)?;
        let extensions = match next.filter(|n| Some(n) != current.as_ref()) {
            Some(next) => Some(
                governance::with_governance(group.extensions(), &next).map_err(ClientError::Mls)?,
            ),
            None => None,
        };
        let (commit, welcome) = build_commit(&self.mls, &mut group, removed, extensions)?;
        let change = self.check_own(&mut group)?;
        self.save().await?;
        Ok(Some((
            PreparedCommit {
                group_id: c.group_id.clone(),
                message_id: new_message_id().to_vec(),
                commit,
                welcome,
            },
            change,
        )))
    }

    /// Checks this device's pending commit by the rule the relay applies, so that what it
    /// would refuse never leaves; a commit that fails is dropped.
    fn check_own(&self, group: &mut MlsGroup) -> Result<Change, ClientError> {
        let own = group.own_leaf_index();
        let checked = match group.pending_commit() {
            Some(staged) => governance::check_commit(group.public_group(), own, staged)
                .map_err(|e| e.to_string()),
            None => Err("the commit was not staged".to_owned()),
        };
        checked.or_else(|e| {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
            Err(ClientError::Usage(e))
        })
    }

    /// Records the lines of this device's own accepted commit that `submit.rs` does not
    /// (it writes the devices added and removed): the users gone, roles and name, and the
    /// new name here.
    async fn record_own(&mut self, group_id: &[u8], change: &Change) -> Result<(), ClientError> {
        let mut lines: Vec<String> = removal_lines(change)
            .into_iter()
            .filter(|(per_device, _)| !per_device)
            .map(|(_, line)| line)
            .collect();
        lines.extend(role_lines(change));
        let renamed = self.renamed(group_id, change).await?;
        let mut saving = self.begin_save().await?;
        if let Some(conversation) = &renamed {
            State::put_conversation(&mut saving.tx, conversation, now_ms()).await?;
        }
        crate::contacts::record_events(&mut saving.tx, group_id, &lines).await?;
        self.finish_save(saving).await
    }

    /// The conversation under the name a commit gave the group, if it renamed it: numbered
    /// when another conversation here has that name, so that none can pose as another. A
    /// direct conversation keeps the other user's name.
    async fn renamed(
        &self,
        group_id: &[u8],
        change: &Change,
    ) -> Result<Option<Conversation>, ClientError> {
        let (Some(before), Some(after)) = (&change.before, &change.after) else {
            return Ok(None);
        };
        if before.name == after.name {
            return Ok(None);
        }
        let conversations = self.state_conversations().await?;
        let Some(known) = conversations.iter().find(|c| c.group_id == group_id) else {
            return Ok(None);
        };
        if known.kind == "direct" {
            return Ok(None);
        }
        let taken = |t: &str| {
            conversations
                .iter()
                .any(|c| c.group_id != group_id && c.title == t)
        };
        let mut title = after.name.clone();
        let mut n = 2;
        while taken(&title) {
            title = format!("{} ({n})", after.name);
            n += 1;
        }
        Ok(Some(Conversation {
            title,
            ..known.clone()
        }))
    }

    /// Commits the proposals waiting in a group (the relay's removals, members'
    /// departures), recording the lines the other members see too: whoever commits a
    /// departure shows "… left". Every member tries; the first commit wins and the others,
    /// refused with EPOCH_CONFLICT, merge the winner's when it arrives. A device that is
    /// leaving commits nothing: its own removal would be among them.
    pub(crate) async fn commit_proposals(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let mut group = self.group(group_id)?;
        if group.pending_proposals().next().is_none()
            || !group.is_active()
            || Mls::is_leaving(&group)
        {
            return Ok(());
        }
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        let (commit, welcome) = build_commit(&self.mls, &mut group, Vec::new(), None)?;
        let change = match self.check_own(&mut group) {
            Ok(change) => change,
            Err(e) => {
                self.warnings
                    .push(format!("did not commit the waiting proposals: {e}"));
                return self.save().await;
            }
        };
        self.save().await?;
        let prepared = PreparedCommit {
            group_id: group_id.to_vec(),
            message_id: new_message_id().to_vec(),
            commit,
            welcome,
        };
        // Boxed: submitting may process deliveries (to rebase, or to tell added members
        // what the group is), which may commit proposals again.
        match Box::pin(self.submit_prepared(prepared)).await {
            Ok(()) => self.record_own(group_id, &change).await,
            Err(e) if e.is_server(ErrorCode::EpochConflict) => Ok(()),
            Err(e) if e.is_answer() => {
                self.warnings
                    .push(format!("could not commit the waiting proposals: {e}"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the Remove proposal of this device's own leaf, rebasing when the group moved
    /// on; the same departure sent twice is stored once by the relay.
    async fn propose_departure(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        for attempt in 1..=COMMIT_ATTEMPTS {
            let mut group = self.group(group_id)?;
            if !group.is_active() {
                return Ok(());
            }
            if group.pending_commit().is_some() {
                group
                    .clear_pending_commit(self.mls.provider.storage())
                    .map_err(|e| ClientError::Mls(e.to_string()))?;
            }
            // Deterministic: within one epoch, the same proposal (and reference) each time.
            let proposal = group
                .leave_group(&self.mls.provider, &self.mls.signer)
                .map_err(|e| ClientError::Mls(format!("cannot propose your departure: {e}")))?;
            self.save().await?;
            let request = Req::SubmitCommit(pb::SubmitCommit {
                message_id: new_message_id().to_vec(),
                commit: mls::serialize(proposal)?,
                welcome: Vec::new(),
            });
            match self.call(request).await {
                Ok(_) => return Ok(()),
                Err(ClientError::Server {
                    code: ErrorCode::EpochConflict,
                    current_epoch,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    self.catch_up(group_id, current_epoch).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol(
            "the conversation kept changing; your departure is sent again at the next connection"
                .into(),
        ))
    }
}

/// What an admin's change does to the group.
struct Plan {
    /// The devices it takes out.
    removed: Vec<LeafNodeIndex>,
    /// The roles it writes; `None` for a group from before roles, whose removals change no
    /// roles.
    roles: Option<Governance>,
}

/// The plan of an admin's change; `None` when it would change nothing.
fn planned(
    group: &MlsGroup,
    roles: &governance::Roles,
    name: &str,
    what: &Governed,
) -> Result<Option<Plan>, ClientError> {
    let current = Mls::governance(group)?;
    // A role held only by succession is written down with any change its holder makes:
    // naming another admin would otherwise take it away.
    let base = current.as_ref().map(|g| {
        roles
            .admins
            .iter()
            .fold(g.clone(), |g, admin| g.with_admin(admin))
    });
    let users = Mls::users(group);
    let absent = |user: &str| ClientError::Usage(format!("{user} is not a member of {name}"));
    let (removed, roles) = match what {
        Governed::Remove(user) => {
            let leaves: Vec<LeafNodeIndex> = group
                .members()
                .filter(|m| crate::trust::user_of(&m.credential).as_deref() == Some(user))
                .map(|m| m.index)
                .collect();
            if leaves.is_empty() {
                return Err(absent(user));
            }
            let after = users_after(group, &leaves, &BTreeSet::new());
            (leaves, base.map(|g| g.recorded(&users, &after)))
        }
        Governed::Rename(new) => (Vec::new(), Some(governed(&base, name)?.with_name(new))),
        Governed::Promote(user) => {
            if !users.contains(user) {
                return Err(absent(user));
            }
            if governed(&current, name)?.lists_admin(user) {
                return Ok(None);
            }
            (Vec::new(), Some(governed(&base, name)?.with_admin(user)))
        }
    };
    Ok(Some(Plan { removed, roles }))
}

/// The extension to change, or why a group from before roles cannot be changed so.
fn governed<'a>(
    current: &'a Option<Governance>,
    name: &str,
) -> Result<&'a Governance, ClientError> {
    current.as_ref().ok_or_else(|| {
        ClientError::Usage(format!(
            "{name} was created before groups had roles: every member is an admin in it, and \
             it has no name or roles to change; create a new group for that"
        ))
    })
}

/// Stages a commit removing `removed` and setting `extensions`, with whatever proposals
/// wait (the relay's removals, departures); returns the commit and the Welcome, if any.
fn build_commit(
    mls: &Mls,
    group: &mut MlsGroup,
    removed: Vec<LeafNodeIndex>,
    extensions: Option<openmls::prelude::Extensions<openmls::prelude::GroupContext>>,
) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let failed =
        |e: &dyn std::fmt::Display| ClientError::Mls(format!("cannot build the commit: {e}"));
    let mut builder = group.commit_builder().propose_removals(removed);
    if let Some(extensions) = extensions {
        builder = builder
            .propose_group_context_extensions(extensions)
            .map_err(|e| failed(&e))?;
    }
    let bundle = builder
        .load_psks(mls.provider.storage())
        .map_err(|e| failed(&e))?
        .build(
            mls.provider.rand(),
            mls.provider.crypto(),
            &mls.signer,
            |_| true,
        )
        .map_err(|e| failed(&e))?
        .stage_commit(&mls.provider)
        .map_err(|e| failed(&e))?;
    let welcome = bundle.to_welcome_msg().map(mls::serialize).transpose()?;
    let (commit, _, _) = bundle.into_contents();
    Ok((mls::serialize(commit)?, welcome.unwrap_or_default()))
}

/// The users a commit of this device would leave in the group: all but those whose every
/// device it removes (`removed`, and the removals waiting in the proposal store, which
/// every commit takes in), and `added`.
pub(crate) fn users_after(
    group: &MlsGroup,
    removed: &[LeafNodeIndex],
    added: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut gone: BTreeSet<LeafNodeIndex> = removed.iter().copied().collect();
    for queued in group.pending_proposals() {
        if let openmls::prelude::Proposal::Remove(remove) = queued.proposal() {
            gone.insert(remove.removed());
        }
    }
    let mut users: BTreeSet<String> = group
        .members()
        .filter(|m| !gone.contains(&m.index))
        .filter_map(|m| crate::trust::user_of(&m.credential))
        .collect();
    users.extend(added.iter().cloned());
    users
}

/// Where this device keeps a departure decided or learnt, per group.
fn departing_key(group_id: &[u8]) -> String {
    format!("departing:{}", hex::encode(group_id))
}

/// A device key as history lines show it.
fn short(key: &[u8]) -> String {
    format!("{}…", hex::encode(&key[..key.len().min(4)]))
}

/// The lines for the users and devices a commit removes: one per user who is gone (left,
/// removed by an admin, or at the relay's request), and one per device of a user who
/// stays. Those marked `true` say only which device the committer removed, as
/// `submit.rs` writes for this device's own commits.
fn removal_lines(change: &Change) -> Vec<(bool, String)> {
    let committer = &change.committer;
    let mut lines = Vec::new();
    let users: BTreeSet<&str> = change.removed.iter().map(|r| r.user.as_str()).collect();
    for user in users {
        let removed: Vec<_> = change.removed.iter().filter(|r| r.user == user).collect();
        let by = |kind: RemovedBy| removed.iter().any(|r| r.by == kind);
        if !change.present_after.contains(user) {
            lines.push((false, if by(RemovedBy::Itself) {
                format!("{user} left")
            } else if by(RemovedBy::Committer) {
                format!("{committer} removed {user}")
            } else if by(RemovedBy::Relay) {
                format!("{committer} removed {user} at the relay's request (a revoked device, or a departure)")
            } else {
                format!("{user} removed their own devices")
            }));
            continue;
        }
        for r in removed {
            let key = short(&r.key);
            lines.push(match r.by {
                RemovedBy::Itself => (false, format!("{user} left on device {key}")),
                RemovedBy::Sibling => (false, format!("{user} removed their device {key}")),
                RemovedBy::Committer => {
                    (true, format!("{committer} removed {user}'s device {key}"))
                }
                RemovedBy::Relay => (true, crate::contacts::relay_removal_line(user, &key)),
            });
        }
    }
    lines
}

/// The lines for a commit's change of name and roles: a rename, a promotion, the next in
/// line becoming admin when no admin is left, a role taken away.
fn role_lines(change: &Change) -> Vec<String> {
    let committer = &change.committer;
    let mut lines = Vec::new();
    match (&change.before, &change.after) {
        (Some(before), Some(after)) if before.name != after.name => {
            lines.push(format!("{committer} renamed the group to {}", after.name));
        }
        (None, Some(_)) => lines.push(format!("{committer} gave the group roles")),
        _ => {}
    }
    let (before, after) = (change.roles_before(), change.roles_after());
    for user in after.admins.iter().filter(|u| !before.is_admin(u)) {
        if after.successor.as_ref() == Some(user) {
            lines.push(format!(
                "{user} is now an admin: no admin was left in the group"
            ));
        } else {
            lines.push(format!("{committer} made {user} an admin"));
        }
    }
    for user in before
        .admins
        .iter()
        .filter(|u| !after.is_admin(u) && change.present_after.contains(*u))
    {
        lines.push(format!("{user} is no longer an admin"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use relais_core::mls::governance::{Entry, Removed};

    const ALICE: &str = "alice@x";
    const BOB: &str = "bob@x";
    const CAROL: &str = "carol@x";

    fn set(users: &[&str]) -> BTreeSet<String> {
        users.iter().map(|u| (*u).to_owned()).collect()
    }

    fn cell(admins: &[&str]) -> Governance {
        Governance {
            name: "ops".into(),
            users: [ALICE, BOB, CAROL]
                .iter()
                .map(|u| Entry {
                    user: (*u).into(),
                    admin: admins.contains(u),
                })
                .collect(),
        }
    }

    fn change(committer: &str, removed: &[(&str, RemovedBy)], after: Governance) -> Change {
        let mut present_after = set(&[ALICE, BOB, CAROL]);
        for (user, _) in removed {
            present_after.remove(*user);
        }
        Change {
            committer: committer.into(),
            before: Some(cell(&[ALICE])),
            after: Some(after),
            present_before: set(&[ALICE, BOB, CAROL]),
            present_after,
            added: BTreeSet::new(),
            removed: removed
                .iter()
                .map(|(user, by)| Removed {
                    user: (*user).into(),
                    key: vec![0xab; 32],
                    by: *by,
                })
                .collect(),
            other_extensions_changed: false,
        }
    }

    #[test]
    fn every_governance_change_reads_as_what_happened() {
        let lines = |c: &Change| -> Vec<String> {
            removal_lines(c).into_iter().map(|(_, line)| line).collect()
        };
        let removed = change(ALICE, &[(CAROL, RemovedBy::Committer)], cell(&[ALICE]));
        assert_eq!(lines(&removed), ["alice@x removed carol@x"]);
        let left = change(BOB, &[(CAROL, RemovedBy::Itself)], cell(&[ALICE]));
        assert_eq!(lines(&left), ["carol@x left"]);
        let renamed = change(ALICE, &[], cell(&[ALICE]).with_name("cellule"));
        assert_eq!(
            role_lines(&renamed),
            ["alice@x renamed the group to cellule"]
        );
        let promoted = change(ALICE, &[], cell(&[ALICE, BOB]));
        assert_eq!(role_lines(&promoted), ["alice@x made bob@x an admin"]);
        // The last admin leaves: bob, next in line, is admin from that commit on.
        let last = change(CAROL, &[(ALICE, RemovedBy::Itself)], cell(&[ALICE]));
        assert_eq!(lines(&last), ["alice@x left"]);
        assert_eq!(
            role_lines(&last),
            ["bob@x is now an admin: no admin was left in the group"]
        );
    }
}
