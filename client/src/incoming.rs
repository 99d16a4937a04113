//! Applying deliveries: joining from Welcomes, merging commits, storing proposals, and
//! decrypting application messages. The sender shown is the MLS-authenticated one, never
//! the server's routing metadata.

use openmls::prelude::{
    BasicCredential, ContentType, MlsMessageIn, OpenMlsProvider as _, ProcessedMessageContent,
    tls_codec::Deserialize as _,
};
use prost::Message as _;
use relais_protocol::pb::{self, ErrorCode, request::Body as Req};

use crate::ClientError;
use crate::client::{Client, Effect, random_id};
use crate::mls::{self, Mls};
use crate::state::Conversation;

impl Client {
    pub(crate) async fn on_welcome(
        &mut self,
        delivery: &pb::Delivery,
    ) -> Result<Effect, ClientError> {
        let group = self.mls.join(&delivery.mls_message)?;
        let group_id = group.group_id().as_slice().to_vec();
        let known = self
            .state_conversations()
            .await?
            .into_iter()
            .find(|c| c.group_id == group_id);
        Ok(match known {
            Some(_) => Effect::None,
            // Named once the creator's info message arrives, right after the Welcome.
            None => Effect::Conversation(Conversation {
                title: hex::encode(&group_id[..4]),
                group_id,
                kind: "unknown".into(),
            }),
        })
    }

    pub(crate) async fn on_message(
        &mut self,
        delivery: &pb::Delivery,
    ) -> Result<Effect, ClientError> {
        let bad = |e: String| ClientError::Mls(e);
        let message = MlsMessageIn::tls_deserialize_exact(&delivery.mls_message[..])
            .map_err(|e| bad(e.to_string()))?;
        let protocol = message
            .try_into_protocol_message()
            .map_err(|e| bad(e.to_string()))?;
        let group_id = protocol.group_id().as_slice().to_vec();
        let Some(mut group) = self.mls.load(&group_id)? else {
            return Err(bad("a message for a group this device is not in".into()));
        };
        if protocol.content_type() != ContentType::Application && protocol.epoch() < group.epoch() {
            // A handshake message for an epoch this device already left (it lost a race
            // and rebased): nothing to do.
            return Ok(Effect::None);
        }
        let processed = group
            .process_message(&self.mls.provider, protocol)
            .map_err(|e| bad(format!("cannot process: {e}")))?;
        let sender = BasicCredential::try_from(processed.credential().clone())
            .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
            .unwrap_or_default();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let content = pb::Content::decode(&app.into_bytes()[..])
                    .map_err(|e| bad(format!("undecodable content: {e}")))?;
                match content.body {
                    Some(pb::content::Body::Text(text)) => Ok(Effect::Text {
                        sender,
                        message_id: content.message_id,
                        sent_at_ms: content.sent_at_ms,
                        text,
                    }),
                    Some(pb::content::Body::Info(info)) => {
                        let direct = info.kind == pb::conversation_info::Kind::Direct as i32;
                        let title = if direct {
                            // The other user: the sender, unless it is one of our own devices.
                            if sender != self.user() {
                                sender
                            } else {
                                Mls::members(&group)
                                    .into_iter()
                                    .map(|(user, _)| user)
                                    .find(|u| u != self.user())
                                    .unwrap_or(sender)
                            }
                        } else {
                            info.title
                        };
                        Ok(Effect::Conversation(Conversation {
                            group_id,
                            kind: if direct { "direct" } else { "group" }.into(),
                            title,
                        }))
                    }
                    None => Ok(Effect::None),
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group
                    .merge_staged_commit(&self.mls.provider, *staged)
                    .map_err(|e| bad(format!("cannot merge a commit: {e}")))?;
                Ok(Effect::None)
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                group
                    .store_pending_proposal(self.mls.provider.storage(), *proposal)
                    .map_err(|e| bad(format!("cannot store a proposal: {e}")))?;
                self.pending_proposal_group = Some(group_id);
                Ok(Effect::None)
            }
            _ => Ok(Effect::None),
        }
    }

    /// Commits proposals the server made (the removal of a revoked device). Every member
    /// tries; the first commit wins and the others, refused with EPOCH_CONFLICT, drop theirs.
    pub(crate) async fn commit_pending_proposals(
        &mut self,
        group_id: &[u8],
    ) -> Result<(), ClientError> {
        let mut group = self.group(group_id)?;
        if group.pending_proposals().next().is_none() || !group.is_active() {
            return Ok(());
        }
        let (commit, welcome, _) = group
            .commit_to_pending_proposals(&self.mls.provider, &self.mls.signer)
            .map_err(|e| ClientError::Mls(format!("cannot commit pending proposals: {e}")))?;
        let commit = mls::serialize(commit)?;
        let welcome = welcome.map(mls::serialize).transpose()?.unwrap_or_default();
        self.save(|_| Box::pin(async { Ok(()) })).await?;
        let result = self
            .call(Req::SubmitCommit(pb::SubmitCommit {
                message_id: random_id(),
                commit,
                welcome,
            }))
            .await;
        match result {
            Ok(_) => group
                .merge_pending_commit(&self.mls.provider)
                .map_err(|e| ClientError::Mls(e.to_string()))?,
            Err(e) => {
                group
                    .clear_pending_commit(self.mls.provider.storage())
                    .map_err(|e| ClientError::Mls(e.to_string()))?;
                if !matches!(
                    e,
                    ClientError::Server {
                        code: ErrorCode::EpochConflict,
                        ..
                    }
                ) {
                    eprintln!("warning: could not commit the server's proposal: {e}");
                }
            }
        }
        self.save(|_| Box::pin(async { Ok(()) })).await
    }
}
