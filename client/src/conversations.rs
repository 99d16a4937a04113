//! Conversations: creating them, adding members (rebasing on concurrent commits), and
//! sending text into them.

use std::time::Duration;

use openmls::prelude::{BasicCredential, KeyPackage, OpenMlsProvider as _};
use relais_core::mls::governance::{self, Governance};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};

use crate::client::{COMMIT_ATTEMPTS, Client, PreparedCommit, new_message_id};
use crate::mls::{self, Mls};
use crate::state::{Conversation, State};
use crate::{ClientError, ReceivedMessage, now_ms};

/// A conversation as `relais conversations` lists it.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    /// The other user for a direct conversation, the group's name otherwise.
    pub name: String,
    /// The MLS group id, in hex: stable where names can change (as events give it).
    pub group_id: String,
    /// `direct`, `group`, or `unknown` until the creator's info message arrives.
    pub kind: String,
    /// Texts and events not yet shown by `recv`.
    pub unread: u64,
    /// Entries after the conversation's read mark ([`Client::mark_read`]): what a display
    /// that marks what its user read, such as the desktop app, shows as unread.
    pub after_read_mark: u64,
    pub last: Option<ReceivedMessage>,
}

/// A history entry with its place in the conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Where the entry stands in this device's history: stable, and smaller for older
    /// entries; a page of older entries starts before the first one shown.
    pub position: i64,
    /// The id the entry came with, in hex: a text this device sent has the `message_id`
    /// of its `delivery` events.
    pub message_id: String,
    pub message: ReceivedMessage,
}

/// A page of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
    /// How many entries the conversation's history holds in all.
    pub total: u64,
}

/// How long a rebase waits for the commit that won to arrive.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Sends `text` to `peer` (`name` or `name@domain`) in the direct conversation with
    /// them, creating it on first use.
    pub async fn send(&mut self, peer: &str, text: &str) -> Result<(), ClientError> {
        self.send_acknowledging(peer, text, &[]).await
    }

    /// [`Client::send`] once the user, who asked to send to verified contacts only
    /// (`require_verified`), was shown that the contacts `acknowledged` changed devices
    /// and chose to send anyway: refused only if another contact changed meanwhile.
    pub async fn send_acknowledging(
        &mut self,
        peer: &str,
        text: &str,
        acknowledged: &[String],
    ) -> Result<(), ClientError> {
        let peer = self.qualify(peer);
        self.drain().await?;
        let existing = self.direct_with(&peer).await?;
        let group_id = match existing {
            Some(c) => {
                // The peer may have had no device left in it (all revoked, then a new one
                // enrolled): bring their current devices in before writing. With none at
                // all, the text still goes to this user's other devices.
                let present = Mls::members(&self.group(&c.group_id)?)
                    .iter()
                    .any(|(user, _)| *user == peer);
                if !present {
                    match self
                        .add_users(&c.group_id, std::slice::from_ref(&peer))
                        .await
                    {
                        Err(ClientError::Unreachable(_)) => {}
                        other => other?,
                    }
                }
                c.group_id
            }
            None => {
                self.create(
                    pb::conversation_info::Kind::Direct,
                    &peer,
                    std::slice::from_ref(&peer),
                )
                .await?
            }
        };
        self.send_text(&group_id, text, acknowledged).await
    }

    /// The direct conversation with `peer`: the one whose MLS group verifiably holds this
    /// user and `peer` and nobody else, never one a member merely named so. One from which
    /// every device of `peer` was removed (revoked) is found by the name this device gave it.
    async fn direct_with(&self, peer: &str) -> Result<Option<Conversation>, ClientError> {
        for c in self.state_conversations().await? {
            if c.kind != "direct" {
                continue;
            }
            let others = Mls::other_users(&self.group(&c.group_id)?, self.user());
            let verified = others.len() == 1 && others[0] == peer;
            if verified || (others.is_empty() && c.title == peer) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Creates a named group with the given members (all their devices) and this user's
    /// other devices.
    pub async fn create_group(&mut self, title: &str, members: &[&str]) -> Result<(), ClientError> {
        if title.is_empty() {
            return Err(ClientError::Usage("a group needs a name".into()));
        }
        governance::check_name(title).map_err(ClientError::Usage)?;
        self.drain().await?;
        if self.find(&|c| c.title == title).await?.is_some() {
            return Err(ClientError::Usage(format!(
                "a conversation named {title:?} already exists here; choose another name"
            )));
        }
        let members: Vec<String> = members.iter().map(|m| self.qualify(m)).collect();
        self.create(pb::conversation_info::Kind::Group, title, &members)
            .await?;
        Ok(())
    }

    /// Sends `text` to the named group.
    pub async fn group_send(&mut self, title: &str, text: &str) -> Result<(), ClientError> {
        self.group_send_acknowledging(title, text, &[]).await
    }

    /// [`Client::group_send`] after the user chose to send anyway to the contacts
    /// `acknowledged`, as [`Client::send_acknowledging`].
    pub async fn group_send_acknowledging(
        &mut self,
        title: &str,
        text: &str,
        acknowledged: &[String],
    ) -> Result<(), ClientError> {
        self.drain().await?;
        let conversation = self.conversation(title).await?;
        self.send_text(&conversation.group_id, text, acknowledged)
            .await
    }

    /// Adds users (all their devices) to a conversation, rebasing on concurrent commits.
    pub async fn add_members(
        &mut self,
        conversation: &str,
        users: &[&str],
    ) -> Result<(), ClientError> {
        self.drain().await?;
        let group_id = self.conversation(conversation).await?.group_id;
        let users: Vec<String> = users.iter().map(|u| self.qualify(u)).collect();
        self.add_users(&group_id, &users).await
    }

    /// Builds, without syncing or sending, a commit adding `users`' devices that are not in
    /// the conversation yet; the commit stays pending in the group until
    /// [`Client::submit_prepared`]. For tests of concurrent commits.
    pub async fn prepare_add_members(
        &mut self,
        conversation: &str,
        users: &[&str],
    ) -> Result<PreparedCommit, ClientError> {
        let group_id = self.conversation(conversation).await?.group_id;
        let users: Vec<String> = users.iter().map(|u| self.qualify(u)).collect();
        self.prepare_add(&group_id, &users).await
    }

    /// Builds, without syncing or sending, a commit that `build` makes with openmls on the
    /// conversation's group, this device's provider and signer: for tests and tools that
    /// need commits this client never makes (a hostile member's, another implementation's).
    /// The commit stays pending until [`Client::submit_prepared`].
    pub async fn prepare_commit_with(
        &mut self,
        conversation: &str,
        build: impl FnOnce(
            &mut openmls::prelude::MlsGroup,
            &openmls_rust_crypto::OpenMlsRustCrypto,
            &openmls_basic_credential::SignatureKeyPair,
        ) -> Result<openmls::prelude::MlsMessageOut, String>,
    ) -> Result<PreparedCommit, ClientError> {
        let group_id = self.conversation(conversation).await?.group_id;
        let mut group = self.group(&group_id)?;
        let commit =
            build(&mut group, &self.mls.provider, &self.mls.signer).map_err(ClientError::Mls)?;
        self.save().await?;
        Ok(PreparedCommit {
            group_id,
            message_id: new_message_id().to_vec(),
            commit: mls::serialize(commit)?,
            welcome: Vec::new(),
        })
    }

    /// The contacts in a conversation (a user for a direct one, or a group's name) whom the
    /// user verified and who changed devices since: what a sender should be warned about.
    pub async fn unverified_contacts(
        &self,
        conversation: &str,
    ) -> Result<Vec<String>, ClientError> {
        let peer = self.qualify(conversation);
        let found = match self.direct_with(&peer).await? {
            Some(direct) => Some(direct),
            None => self.conversation(conversation).await.ok(),
        };
        match found {
            Some(c) => self.unverified_in(&c.group_id).await,
            None => Ok(Vec::new()),
        }
    }

    /// A conversation's MLS epoch.
    pub async fn conversation_epoch(&self, conversation: &str) -> Result<u64, ClientError> {
        let c = self.conversation(conversation).await?;
        Ok(self.group(&c.group_id)?.epoch().as_u64())
    }

    /// A conversation's members: the user and signature key (hex) of each device, sorted.
    pub async fn conversation_members(
        &self,
        conversation: &str,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let c = self.conversation(conversation).await?;
        let mut members = Mls::members(&self.group(&c.group_id)?);
        members.sort();
        Ok(members)
    }

    /// A conversation's MLS group id (for tools that talk to the relay directly).
    pub async fn conversation_group_id(&self, conversation: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self.conversation(conversation).await?.group_id)
    }

    /// The names of this device's conversations: the peer for direct ones, the title for
    /// groups, a short id for those whose name has not arrived yet.
    pub async fn conversations(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .state
            .conversations()
            .await?
            .into_iter()
            .map(|c| c.title)
            .collect())
    }

    /// Creates a group, registers it, adds `members` (and this user's other devices), and
    /// tells everyone what the conversation is. Every member must have a device.
    async fn create(
        &mut self,
        kind: pb::conversation_info::Kind,
        title: &str,
        members: &[String],
    ) -> Result<Vec<u8>, ClientError> {
        let mut users = members.to_vec();
        users.push(self.user().to_owned());
        // Claimed first, so that nothing is created for someone who cannot be reached.
        let key_packages = self.claim(&users).await?;
        for member in members {
            if !key_packages.iter().any(|(user, _)| user == member) {
                return Err(ClientError::Unreachable(member.clone()));
            }
        }
        // The creator is the group's first admin; a direct conversation's name is its other
        // user's, so its roles carry none.
        let name = if kind == pb::conversation_info::Kind::Direct {
            ""
        } else {
            title
        };
        let group = self.mls.create_group(&Governance::new(name, self.user()))?;
        let group_id = group.group_id().as_slice().to_vec();
        let (group_info, ratchet_tree) = self.mls.registration(&group)?;
        self.save().await?;
        self.call(Req::CreateGroup(pb::CreateGroup {
            group_info,
            ratchet_tree,
        }))
        .await?;
        let conversation = Conversation {
            group_id: group_id.clone(),
            kind: if kind == pb::conversation_info::Kind::Direct {
                "direct"
            } else {
                "group"
            }
            .into(),
            title: title.to_owned(),
        };
        let mut saving = self.begin_save().await?;
        State::put_conversation(&mut saving.tx, &conversation, now_ms()).await?;
        self.finish_save(saving).await?;
        let key_packages = key_packages.into_iter().map(|(_, kp)| kp).collect();
        let prepared = self.stage_add(&group_id, key_packages).await?;
        match self.submit_prepared(prepared).await {
            // Nobody else knows the group yet, so this cannot really happen; if it does,
            // the ordinary rebase applies.
            Err(e) if e.is_server(ErrorCode::EpochConflict) => {
                self.add_users(&group_id, &users).await?
            }
            other => other?,
        }
        Ok(group_id)
    }

    /// Adds the devices of `users` not yet in the group, rebasing on concurrent commits.
    pub(crate) async fn add_users(
        &mut self,
        group_id: &[u8],
        users: &[String],
    ) -> Result<(), ClientError> {
        for attempt in 1..=COMMIT_ATTEMPTS {
            let prepared = self.prepare_add(group_id, users).await?;
            match self.submit_prepared(prepared).await {
                Err(ClientError::Server {
                    code: ErrorCode::EpochConflict,
                    current_epoch,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    self.catch_up(group_id, current_epoch).await?;
                }
                other => return other,
            }
        }
        Err(ClientError::Protocol(
            "the conversation kept changing while adding members; try again".into(),
        ))
    }

    /// Claims KeyPackages for `users` and stages a commit adding the devices not yet in
    /// the group. An empty commit means there was nobody to add.
    async fn prepare_add(
        &mut self,
        group_id: &[u8],
        users: &[String],
    ) -> Result<PreparedCommit, ClientError> {
        if self.departing(group_id).await? || Mls::is_leaving(&self.group(group_id)?) {
            return Err(ClientError::Usage(
                "you are leaving this conversation: you can no longer add anyone to it".into(),
            ));
        }
        let claimed = self.claim(users).await?;
        let group = self.group(group_id)?;
        let members = Mls::members(&group);
        for user in users {
            let reachable =
                claimed.iter().any(|(u, _)| u == user) || members.iter().any(|(u, _)| u == user);
            if !reachable && user != self.user() {
                return Err(ClientError::Unreachable(user.clone()));
            }
        }
        let key_packages = claimed.into_iter().map(|(_, kp)| kp).collect();
        self.stage_add(group_id, key_packages).await
    }

    /// Claims one KeyPackage per device of each user (except this device) and validates
    /// them; each comes with the user its credential names, which must be one asked for.
    async fn claim(&mut self, users: &[String]) -> Result<Vec<(String, KeyPackage)>, ClientError> {
        let Resp::KeyPackagesClaimed(claimed) = self
            .call(Req::ClaimKeyPackages(pb::ClaimKeyPackages {
                users: users.to_vec(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol(
                "the relay answered ClaimKeyPackages with something else".into(),
            ));
        };
        let bytes: Vec<Vec<u8>> = claimed
            .key_packages
            .into_iter()
            .map(|k| k.key_package)
            .collect();
        let supported = governance::leaf_capabilities();
        let (key_packages, old): (Vec<KeyPackage>, Vec<KeyPackage>) = self
            .mls
            .validate_key_packages(&bytes)?
            .into_iter()
            .partition(|kp| {
                let extensions = kp.leaf_node().capabilities().extensions();
                supported
                    .extensions()
                    .iter()
                    .all(|e| extensions.contains(e))
            });
        for key_package in &old {
            // Every group carries roles, which such a device cannot follow: adding it would
            // be refused. The others are added without it.
            self.warnings.push(format!(
                "a device of {} ({}) runs a relais too old for group roles and was left out; \
                 it can join once it is updated and has published new keys",
                crate::trust::user_of(key_package.leaf_node().credential()).unwrap_or_default(),
                hex::encode(&key_package.leaf_node().signature_key().as_slice()[..4]),
            ));
        }
        key_packages
            .into_iter()
            .map(|key_package| {
                let user = BasicCredential::try_from(key_package.leaf_node().credential().clone())
                    .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
                    .unwrap_or_default();
                if users.contains(&user) {
                    Ok((user, key_package))
                } else {
                    Err(ClientError::Protocol(
                        "the relay returned a KeyPackage for a user not asked for; report it"
                            .into(),
                    ))
                }
            })
            .collect()
    }

    /// Stages a commit adding the given devices, skipping those already in the group.
    async fn stage_add(
        &mut self,
        group_id: &[u8],
        key_packages: Vec<KeyPackage>,
    ) -> Result<PreparedCommit, ClientError> {
        let mut group = self.group(group_id)?;
        if group.pending_commit().is_some() {
            // A commit prepared earlier and never submitted: it can no longer be used.
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        let present: Vec<String> = Mls::members(&group)
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        let key_packages: Vec<KeyPackage> = key_packages
            .into_iter()
            .filter(|kp| !present.contains(&hex::encode(kp.leaf_node().signature_key().as_slice())))
            .collect();
        let mut prepared = PreparedCommit {
            group_id: group_id.to_vec(),
            message_id: new_message_id().to_vec(),
            commit: Vec::new(),
            welcome: Vec::new(),
        };
        if key_packages.is_empty() {
            return Ok(prepared);
        }
        let (commit, welcome) = self.commit_adds(&mut group, key_packages)?;
        self.save().await?;
        prepared.commit = commit;
        prepared.welcome = welcome;
        Ok(prepared)
    }

    /// Stages a commit adding `key_packages` that records the users it brings in in the
    /// group's roles (`Governance::recorded`, which any member may write), checked by the
    /// rule the relay applies before it leaves.
    fn commit_adds(
        &self,
        group: &mut openmls::prelude::MlsGroup,
        key_packages: Vec<KeyPackage>,
    ) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let failed =
            |e: &dyn std::fmt::Display| ClientError::Mls(format!("cannot add members: {e}"));
        let before = Mls::users(group);
        let added = key_packages
            .iter()
            .filter_map(|kp| crate::trust::user_of(kp.leaf_node().credential()))
            .collect();
        let after = crate::governance::users_after(group, &[], &added);
        let extensions = match Mls::governance(group)? {
            Some(current) => {
                let recorded = current.recorded(&before, &after);
                (recorded != current)
                    .then(|| governance::with_governance(group.extensions(), &recorded))
                    .transpose()
                    .map_err(ClientError::Mls)?
            }
            None => None,
        };
        let mut builder = group
            .commit_builder()
            .propose_adds(key_packages)
            .force_self_update(true);
        if let Some(extensions) = extensions {
            builder = builder
                .propose_group_context_extensions(extensions)
                .map_err(|e| failed(&e))?;
        }
        let bundle = builder
            .load_psks(self.mls.provider.storage())
            .map_err(|e| failed(&e))?
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .map_err(|e| failed(&e))?
            .stage_commit(&self.mls.provider)
            .map_err(|e| failed(&e))?;
        let welcome = bundle
            .to_welcome_msg()
            .ok_or_else(|| ClientError::Mls("a commit that adds devices has no Welcome".into()))?;
        let (commit, _, _) = bundle.into_contents();
        let own = group.own_leaf_index();
        if let Some(staged) = group.pending_commit()
            && let Err(refused) = governance::check_commit(group.public_group(), own, staged)
        {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
            return Err(ClientError::Usage(refused.to_string()));
        }
        Ok((mls::serialize(commit)?, mls::serialize(welcome)?))
    }

    /// Processes deliveries until the group reaches `epoch` (or nothing more arrives).
    pub(crate) async fn catch_up(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while self.group(group_id)?.epoch().as_u64() < epoch
            && tokio::time::Instant::now() < deadline
        {
            self.drain_for(Duration::from_secs(1)).await?;
        }
        Ok(())
    }

    /// Tells the group's members the conversation's kind and name.
    pub(crate) async fn send_info(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let Some(conversation) = self.find(&|c| c.group_id == group_id).await? else {
            return Ok(());
        };
        let direct = conversation.kind == "direct";
        // A governed group's name is the one its roles carry: this device's own title may
        // be numbered to tell it from another of the same name.
        let title = match Mls::governance(&self.group(group_id)?)? {
            Some(governance) if !direct => governance.name,
            _ => conversation.title,
        };
        let info = pb::Content {
            message_id: new_message_id().to_vec(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::Info(pb::ConversationInfo {
                kind: if direct {
                    pb::conversation_info::Kind::Direct
                } else {
                    pb::conversation_info::Kind::Group
                } as i32,
                title: if direct { String::new() } else { title },
            })),
        };
        self.send_content(group_id, info).await
    }

    async fn send_text(
        &mut self,
        group_id: &[u8],
        text: &str,
        acknowledged: &[String],
    ) -> Result<(), ClientError> {
        let group = self.group(group_id)?;
        if !group.is_active() {
            return Err(ClientError::Usage(
                "you are no longer a member of this conversation; its history stays here".into(),
            ));
        }
        if Mls::is_leaving(&group) || self.departing(group_id).await? {
            return Err(ClientError::Usage(
                "you left this conversation; its history stays here".into(),
            ));
        }
        self.check_verified_before_send(group_id, acknowledged)
            .await?;
        let message_id = new_message_id().to_vec();
        let sent_at_ms = now_ms();
        let content = pb::Content {
            message_id: message_id.clone(),
            sent_at_ms,
            body: Some(pb::content::Body::Text(text.to_owned())),
        };
        self.send_content(group_id, content).await?;
        let mut saving = self.begin_save().await?;
        let user = self.user().to_owned();
        State::add_own_history(
            &mut saving.tx,
            group_id,
            &user,
            &message_id,
            sent_at_ms,
            text,
        )
        .await?;
        self.finish_save(saving).await
    }

    /// This device's conversations, newest activity first, with the entries not yet shown
    /// and the last one. Processes pending deliveries first.
    pub async fn conversation_list(&mut self) -> Result<Vec<ConversationSummary>, ClientError> {
        self.drain().await?;
        let mut summaries = self.state.summaries().await?;
        let mut after_marks = self.state.unread_after_marks().await?;
        let mut list = Vec::new();
        for c in self.state.conversations().await? {
            let (unread, last) = summaries.remove(&c.group_id).unwrap_or((0, None));
            list.push(ConversationSummary {
                group_id: hex::encode(&c.group_id),
                after_read_mark: after_marks.remove(&c.group_id).unwrap_or(0),
                last: last.map(|row| shown_in(&c.title, row)),
                name: c.title,
                kind: c.kind,
                unread,
            });
        }
        list.sort_by_key(|s| std::cmp::Reverse(s.last.as_ref().map_or(0, |m| m.sent_at_ms)));
        Ok(list)
    }

    /// The last `limit` texts and events of a conversation, oldest first; shown or not.
    pub async fn history(
        &self,
        conversation: &str,
        limit: u32,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let peer = self.qualify(conversation);
        let c = match self.direct_with(&peer).await? {
            Some(direct) => direct,
            None => self.conversation(conversation).await?,
        };
        let rows = self.state.history(&c.group_id, limit).await?;
        self.shown(rows).await
    }

    /// A page of a conversation's history: up to `limit` entries before `before` (a
    /// [`HistoryEntry::position`]; the newest when `None`), oldest first, and how many it
    /// holds, for a display that pages through a long history.
    pub async fn history_page(
        &self,
        group_id: &[u8],
        before: Option<i64>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let c = self
            .find(&|c| c.group_id == group_id)
            .await?
            .ok_or_else(|| ClientError::Usage("no such conversation on this device".into()))?;
        let (rows, total) = self.state.history_page(group_id, before, limit).await?;
        let entries = rows
            .into_iter()
            .map(|(position, row)| HistoryEntry {
                position,
                message_id: hex::encode(&row.message_id),
                message: shown_in(&c.title, row),
            })
            .collect();
        Ok(HistoryPage { entries, total })
    }

    /// Marks a conversation read up to the entry at `position` (a mark never moves back):
    /// [`ConversationSummary::after_read_mark`] counts what comes after.
    pub async fn mark_read(&self, group_id: &[u8], position: i64) -> Result<(), ClientError> {
        self.state.mark_read(group_id, position).await
    }

    /// Gives each conversation without a read mark one at its last entry already shown; a
    /// display calls it before its session starts announcing, so that what the session
    /// announces stays unread until the user reads it. Conversations that appear later have
    /// no mark until one is set: all the entries this device received there are unread
    /// (history copied from another device of the user's is not).
    pub async fn start_read_marks(&self) -> Result<(), ClientError> {
        self.state.start_read_marks().await
    }

    /// Texts and events on this device that contain `needle`, newest first.
    pub async fn search(
        &self,
        needle: &str,
        limit: u32,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        if needle.is_empty() {
            return Err(ClientError::Usage(
                "search for at least one character".into(),
            ));
        }
        let rows = self.state.search(needle, limit).await?;
        self.shown(rows).await
    }
}

/// A stored entry as the library gives it, in the conversation titled `title`.
fn shown_in(title: &str, row: crate::state::HistoryRow) -> ReceivedMessage {
    ReceivedMessage {
        conversation: title.to_owned(),
        event: row.sender.is_empty(),
        sender: row.sender,
        sent_at_ms: row.sent_at_ms,
        text: row.text,
    }
}
