//! Conversations: creating them, adding members (with rebase on concurrent commits), and
//! sending text into them.

use std::time::Duration;

use openmls::prelude::OpenMlsProvider as _;
use prost::Message as _;
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};

use crate::client::{COMMIT_ATTEMPTS, Client, PreparedCommit, random_id};
use crate::mls::{self, Mls};
use crate::state::{Conversation, State};
use crate::{ClientError, now_ms};

impl Client {
    pub async fn send(&mut self, peer: &str, text: &str) -> Result<(), ClientError> {
        let peer = self.qualify(peer);
        self.drain().await?;
        let group_id = match self
            .find(&|c| c.kind == "direct" && c.title == peer)
            .await?
        {
            Some(c) => c.group_id,
            None => {
                self.create(pb::conversation_info::Kind::Direct, &peer, &[peer.as_str()])
                    .await?
            }
        };
        self.send_text(&group_id, text).await
    }

    /// Creates a named group with the given members (and this user's other devices).
    pub async fn create_group(&mut self, title: &str, members: &[&str]) -> Result<(), ClientError> {
        self.drain().await?;
        if self
            .find(&|c| c.kind == "group" && c.title == title)
            .await?
            .is_some()
        {
            return Err(ClientError::Usage(format!(
                "a group named {title:?} already exists here"
            )));
        }
        let members: Vec<String> = members.iter().map(|m| self.qualify(m)).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        self.create(pb::conversation_info::Kind::Group, title, &refs)
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
        for attempt in 1..=COMMIT_ATTEMPTS {
            let prepared = self.prepare_add(&group_id, &users).await?;
            match self.submit_prepared(prepared).await {
                Err(ClientError::Server {
                    code: ErrorCode::EpochConflict,
                    current_epoch,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    self.catch_up(&group_id, current_epoch).await?;
                }
                other => return other,
            }
        }
        Err(ClientError::Protocol(
            "the group kept changing; try again".into(),
        ))
    }

    /// Builds (without sending) a commit adding `users`; the commit stays pending in the group.
    pub async fn prepare_add_members(
        &mut self,
        conversation: &str,
        users: &[&str],
    ) -> Result<PreparedCommit, ClientError> {
        let group_id = self.conversation(conversation).await?.group_id;
        let users: Vec<String> = users.iter().map(|u| self.qualify(u)).collect();
        self.prepare_add(&group_id, &users).await
    }

    /// Submits a prepared commit; on success it is merged, on failure discarded.
    pub async fn submit_prepared(&mut self, prepared: PreparedCommit) -> Result<(), ClientError> {
        let added = !prepared.welcome.is_empty();
        let result = self
            .call(Req::SubmitCommit(pb::SubmitCommit {
                message_id: random_id(),
                commit: prepared.commit,
                welcome: prepared.welcome,
            }))
            .await;
        let mut group = self.group(&prepared.group_id)?;
        match result {
            Ok(_) => group
                .merge_pending_commit(&self.mls.provider)
                .map_err(|e| ClientError::Mls(e.to_string()))?,
            Err(e) => {
                group
                    .clear_pending_commit(self.mls.provider.storage())
                    .map_err(|e| ClientError::Mls(e.to_string()))?;
                self.save(|_| Box::pin(async { Ok(()) })).await?;
                return Err(e);
            }
        }
        self.save(|_| Box::pin(async { Ok(()) })).await?;
        if added {
            // New members learn what the conversation is, end to end.
            self.send_info(&prepared.group_id).await?;
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
            message_id: random_id(),
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

    /// A conversation's MLS epoch.
    pub async fn conversation_epoch(&self, conversation: &str) -> Result<u64, ClientError> {
        let c = self.conversation(conversation).await?;
        Ok(self.group(&c.group_id)?.epoch().as_u64())
    }

    /// A conversation's members: user and signature key (hex) of each device.
    pub async fn conversation_members(
        &self,
        conversation: &str,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let c = self.conversation(conversation).await?;
        let mut members = Mls::members(&self.group(&c.group_id)?);
        members.sort();
        Ok(members)
    }

    /// Creates a group, registers it, adds `members` (and this user's other devices), and
    /// tells everyone what the conversation is.
    pub(crate) async fn create(
        &mut self,
        kind: pb::conversation_info::Kind,
        title: &str,
        members: &[&str],
    ) -> Result<Vec<u8>, ClientError> {
        let group = self.mls.create_group()?;
        let group_id = group.group_id().as_slice().to_vec();
        let (group_info, ratchet_tree) = self.mls.registration(&group)?;
        self.save(|_| Box::pin(async { Ok(()) })).await?;
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
        self.save(|tx| {
            Box::pin(async move { State::put_conversation(tx, &conversation, now_ms()).await })
        })
        .await?;
        let mut users: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        users.push(self.user().to_owned());
        for attempt in 1..=COMMIT_ATTEMPTS {
            let prepared = self.prepare_add(&group_id, &users).await?;
            if prepared.commit.is_empty() {
                break;
            }
            match self.submit_prepared(prepared).await {
                Ok(()) => break,
                Err(ClientError::Server {
                    code: ErrorCode::EpochConflict,
                    current_epoch,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    self.catch_up(&group_id, current_epoch).await?;
                }
                Err(e) => return Err(e),
            }
        }

        Ok(group_id)
    }

    /// Claims KeyPackages for the devices of `users` not yet in the group and stages a commit.
    /// An empty commit means there was nobody to add.
    pub(crate) async fn prepare_add(
        &mut self,
        group_id: &[u8],
        users: &[String],
    ) -> Result<PreparedCommit, ClientError> {
        let mut group = self.group(group_id)?;
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        let Resp::KeyPackagesClaimed(claimed) = self
            .call(Req::ClaimKeyPackages(pb::ClaimKeyPackages {
                users: users.to_vec(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol(
                "unexpected answer to ClaimKeyPackages".into(),
            ));
        };
        let present: Vec<String> = Mls::members(&group)
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        let bytes: Vec<Vec<u8>> = claimed
            .key_packages
            .into_iter()
            .map(|k| k.key_package)
            .collect();
        let key_packages: Vec<_> = self
            .mls
            .validate_key_packages(&bytes)?
            .into_iter()
            .filter(|kp| !present.contains(&hex::encode(kp.leaf_node().signature_key().as_slice())))
            .collect();
        if key_packages.is_empty() {
            return Ok(PreparedCommit {
                group_id: group_id.to_vec(),
                commit: Vec::new(),
                welcome: Vec::new(),
            });
        }
        let (commit, welcome, _) = group
            .add_members(&self.mls.provider, &self.mls.signer, &key_packages)
            .map_err(|e| ClientError::Mls(format!("cannot add members: {e}")))?;
        self.save(|_| Box::pin(async { Ok(()) })).await?;
        Ok(PreparedCommit {
            group_id: group_id.to_vec(),
            commit: mls::serialize(commit)?,
            welcome: mls::serialize(welcome)?,
        })
    }

    /// Processes deliveries until the group reaches `epoch` (or nothing more arrives).
    pub(crate) async fn catch_up(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.group(group_id)?.epoch().as_u64() < epoch
            && tokio::time::Instant::now() < deadline
        {
            self.drain_for(Duration::from_secs(1)).await?;
        }
        Ok(())
    }

    pub(crate) async fn send_text(
        &mut self,
        group_id: &[u8],
        text: &str,
    ) -> Result<(), ClientError> {
        let content = pb::Content {
            message_id: random_id(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::Text(text.to_owned())),
        };
        self.send_content(group_id, content).await
    }

    pub(crate) async fn send_content(
        &mut self,
        group_id: &[u8],
        content: pb::Content,
    ) -> Result<(), ClientError> {
        let mut group = self.group(group_id)?;
        let message = group
            .create_message(
                &self.mls.provider,
                &self.mls.signer,
                &content.encode_to_vec(),
            )
            .map_err(|e| ClientError::Mls(format!("cannot encrypt: {e}")))?;
        let bytes = mls::serialize(message)?;
        // The ratchet advanced: store it before the ciphertext leaves, so a crash can
        // never make this device reuse a key.
        self.save(|_| Box::pin(async { Ok(()) })).await?;
        let message_id = content.message_id;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = Req::SubmitMessage(pb::SubmitMessage {
                message_id: message_id.clone(),
                mls_message: bytes.clone(),
            });
            match self.call(request).await {
                Ok(_) => return Ok(()),
                Err(ClientError::Server {
                    retryable: true, ..
                }) if attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
