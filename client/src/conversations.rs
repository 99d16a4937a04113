//! Conversations: creating them, adding members (rebasing on concurrent commits), and
//! sending text into them.

use std::time::Duration;

use openmls::prelude::{BasicCredential, KeyPackage, OpenMlsProvider as _};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};

use crate::client::{COMMIT_ATTEMPTS, Client, PreparedCommit, new_message_id};
use crate::mls::{self, Mls};
use crate::state::{Conversation, State};
use crate::{ClientError, now_ms};

/// How long a rebase waits for the commit that won to arrive.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Sends `text` to `peer` (`name` or `name@domain`) in the direct conversation with
    /// them, creating it on first use.
    pub async fn send(&mut self, peer: &str, text: &str) -> Result<(), ClientError> {
        let peer = self.qualify(peer);
        self.drain().await?;
        let existing = self
            .find(&|c| c.kind == "direct" && c.title == peer)
            .await?;
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
        self.send_text(&group_id, text).await
    }

    /// Creates a named group with the given members (all their devices) and this user's
    /// other devices.
    pub async fn create_group(&mut self, title: &str, members: &[&str]) -> Result<(), ClientError> {
        if title.is_empty() {
            return Err(ClientError::Usage("a group needs a name".into()));
        }
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
        self.drain().await?;
        let conversation = self.conversation(title).await?;
        self.send_text(&conversation.group_id, text).await
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
        let group = self.mls.create_group()?;
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
    async fn add_users(&mut self, group_id: &[u8], users: &[String]) -> Result<(), ClientError> {
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
        self.mls
            .validate_key_packages(&bytes)?
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
        let (commit, welcome, _) = group
            .add_members(&self.mls.provider, &self.mls.signer, &key_packages)
            .map_err(|e| ClientError::Mls(format!("cannot add members: {e}")))?;
        self.save().await?;
        prepared.commit = mls::serialize(commit)?;
        prepared.welcome = mls::serialize(welcome)?;
        Ok(prepared)
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
        let info = pb::Content {
            message_id: new_message_id().to_vec(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::Info(pb::ConversationInfo {
                kind: if direct {
                    pb::conversation_info::Kind::Direct
                } else {
                    pb::conversation_info::Kind::Group
                } as i32,
                title: if direct {
                    String::new()
                } else {
                    conversation.title
                },
            })),
        };
        self.send_content(group_id, info).await
    }

    async fn send_text(&mut self, group_id: &[u8], text: &str) -> Result<(), ClientError> {
        let content = pb::Content {
            message_id: new_message_id().to_vec(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::Text(text.to_owned())),
        };
        self.send_content(group_id, content).await
    }
}
