//! Submitting to the relay durably: every commit and message is stored in the outbox, with
//! the MLS state that produced it, before it is sent, and leaves the outbox only once the
//! relay answered. After a broken connection it is resent with the same message id, which
//! the relay de-duplicates, so nothing is lost and nothing is delivered twice. What became
//! of each is recorded for a running session once stored (`session/journal.rs`).

use std::time::Duration;

use openmls::prelude::OpenMlsProvider as _;
use prost::Message as _;
use relais_protocol::pb::{self, ErrorCode, request::Body as Req};

use crate::ClientError;
use crate::client::{COMMIT_ATTEMPTS, Client, PreparedCommit, new_message_id};
use crate::mls::{self, Mls};
use crate::session::{Committed, DeliveryState};
use crate::state::{OutboxEntry, OutboxKind, State};

/// Attempts at a message the relay refuses with a retryable error (a full queue, a busy
/// store) before giving up; the waits between them grow linearly.
const MESSAGE_ATTEMPTS: u64 = 5;
/// The first wait between two attempts at a refused message.
const MESSAGE_RETRY_BASE: Duration = Duration::from_millis(200);

/// Whether the relay answered (accepting or refusing) or the answer was lost.
enum Answer {
    Accepted,
    Refused(ClientError),
}

impl Client {
    /// Submits a prepared commit; on success it is merged and the new members are told what
    /// the conversation is, on refusal it is discarded and the relay's error returned (for
    /// EPOCH_CONFLICT: sync, then prepare again). A prepared commit that adds nobody is a
    /// no-op.
    pub async fn submit_prepared(&mut self, prepared: PreparedCommit) -> Result<(), ClientError> {
        if prepared.commit.is_empty() {
            return Ok(());
        }
        let adds = !prepared.welcome.is_empty();
        let group_id = prepared.group_id.clone();
        let entry = self
            .stage_outbox(
                &prepared.group_id,
                &prepared.message_id,
                OutboxKind::Commit,
                prepared.commit,
                prepared.welcome,
            )
            .await?;
        match self.submit_commit(&entry).await? {
            Answer::Accepted => {
                if adds {
                    // New members learn what the conversation is, end to end.
                    self.send_info(&group_id).await?;
                }
                Ok(())
            }
            Answer::Refused(e) => Err(e),
        }
    }

    /// Commits proposals the relay made (the removal of a revoked device). Every member
    /// tries; the first commit wins and the others, refused with EPOCH_CONFLICT, drop theirs
    /// and merge the winner's when it arrives.
    pub(crate) async fn commit_pending_proposals(
        &mut self,
        group_id: &[u8],
    ) -> Result<(), ClientError> {
        let mut group = self.group(group_id)?;
        if group.pending_proposals().next().is_none() || !group.is_active() {
            return Ok(());
        }
        if group.pending_commit().is_some() {
            group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?;
        }
        let (commit, welcome, _) = group
            .commit_to_pending_proposals(&self.mls.provider, &self.mls.signer)
            .map_err(|e| ClientError::Mls(format!("cannot commit pending proposals: {e}")))?;
        let commit = mls::serialize(commit)?;
        let welcome = welcome.map(mls::serialize).transpose()?.unwrap_or_default();
        let entry = self
            .stage_outbox(
                group_id,
                &new_message_id(),
                OutboxKind::Commit,
                commit,
                welcome,
            )
            .await?;
        match self.submit_commit(&entry).await? {
            Answer::Refused(e) if !e.is_server(ErrorCode::EpochConflict) => {
                self.warnings
                    .push(format!("could not commit the relay's proposal: {e}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Encrypts `content` for the group and submits it, retrying retryable refusals with
    /// the same message id.
    pub(crate) async fn send_content(
        &mut self,
        group_id: &[u8],
        content: pb::Content,
    ) -> Result<(), ClientError> {
        // openmls refuses to encrypt while proposals are pending: commit them first (or
        // merge whoever else committed them).
        for _ in 0..COMMIT_ATTEMPTS {
            if self.group(group_id)?.pending_proposals().next().is_none() {
                break;
            }
            self.commit_pending_proposals(group_id).await?;
            if self.group(group_id)?.pending_proposals().next().is_some() {
                self.drain_for(Duration::from_secs(1)).await?;
            }
        }
        let mut group = self.group(group_id)?;
        let message = group
            .create_message(
                &self.mls.provider,
                &self.mls.signer,
                &content.encode_to_vec(),
            )
            .map_err(|e| ClientError::Mls(format!("cannot encrypt: {e}")))?;
        // The ratchet advanced: it is stored with the ciphertext before the ciphertext
        // leaves, so a crash can never make this device reuse a key or lose the message.
        let entry = self
            .stage_outbox(
                group_id,
                &content.message_id,
                OutboxKind::Message,
                mls::serialize(message)?,
                Vec::new(),
            )
            .await?;
        match self.submit_message(&entry).await? {
            Answer::Accepted => Ok(()),
            Answer::Refused(e) => Err(e),
        }
    }

    /// Resends what a broken connection left in the outbox, oldest first.
    pub(crate) async fn flush_outbox(&mut self) -> Result<(), ClientError> {
        for entry in self.state.outbox().await? {
            let answer = match entry.kind {
                OutboxKind::Commit => {
                    if self.group(&entry.group_id)?.pending_commit().is_none() {
                        // The commit was already resolved; only the bookkeeping is left.
                        let mut saving = self.begin_save().await?;
                        State::delete_outbox(&mut saving.tx, entry.id).await?;
                        self.finish_save(saving).await?;
                        continue;
                    }
                    let adds = !entry.welcome.is_empty();
                    let answer = self.submit_commit(&entry).await?;
                    if adds && matches!(answer, Answer::Accepted) {
                        self.send_info(&entry.group_id).await?;
                    }
                    answer
                }
                OutboxKind::Message => self.submit_message(&entry).await?,
            };
            if let Answer::Refused(e) = answer {
                self.warnings.push(format!(
                    "the relay refused a submission left from an earlier connection: {e}"
                ));
            }
        }
        Ok(())
    }

    /// Stores a submission, with the MLS state that made it, before it is sent.
    async fn stage_outbox(
        &mut self,
        group_id: &[u8],
        message_id: &[u8],
        kind: OutboxKind,
        body: Vec<u8>,
        welcome: Vec<u8>,
    ) -> Result<OutboxEntry, ClientError> {
        let mut entry = OutboxEntry {
            id: 0,
            group_id: group_id.to_vec(),
            message_id: message_id.to_vec(),
            kind,
            body,
            welcome,
        };
        let mut saving = self.begin_save().await?;
        entry.id = State::put_outbox(
            &mut saving.tx,
            &entry.group_id,
            &entry.message_id,
            entry.kind,
            &entry.body,
            &entry.welcome,
        )
        .await?;
        self.finish_save(saving).await?;
        Ok(entry)
    }

    /// Sends a staged commit: merged when accepted, discarded when refused, kept pending
    /// (with its outbox entry) when the answer was lost.
    async fn submit_commit(&mut self, entry: &OutboxEntry) -> Result<Answer, ClientError> {
        let result = self
            .call(Req::SubmitCommit(pb::SubmitCommit {
                message_id: entry.message_id.clone(),
                commit: entry.body.clone(),
                welcome: entry.welcome.clone(),
            }))
            .await;
        let answer = match result {
            Ok(_) => Answer::Accepted,
            Err(e) if e.is_answer() => Answer::Refused(e),
            Err(e) => return Err(e),
        };
        let mut group = self.group(&entry.group_id)?;
        let mut events = Vec::new();
        let mut change = None;
        match answer {
            Answer::Accepted => {
                let before = Mls::members(&group);
                let relay_removed = Mls::relay_removed(&group);
                group
                    .merge_pending_commit(&self.mls.provider)
                    .map_err(|e| {
                        ClientError::Mls(format!("cannot merge an accepted commit: {e}"))
                    })?;
                let after = Mls::members(&group);
                events = self
                    .membership_events(
                        &entry.group_id,
                        Some(self.user()),
                        &before,
                        &after,
                        &relay_removed,
                    )
                    .await?;
                let epoch = group.epoch().as_u64();
                change = crate::session::membership(
                    &entry.group_id,
                    self.user(),
                    epoch,
                    &before,
                    &after,
                );
            }
            Answer::Refused(_) => group
                .clear_pending_commit(self.mls.provider.storage())
                .map_err(|e| ClientError::Mls(e.to_string()))?,
        }
        let mut saving = self.begin_save().await?;
        crate::contacts::record_events(&mut saving.tx, &entry.group_id, &events).await?;
        State::delete_outbox(&mut saving.tx, entry.id).await?;
        self.finish_save(saving).await?;
        if let Some(change) = change {
            self.live.record(change);
        }
        Ok(answer)
    }

    /// Sends a staged application message, retrying retryable refusals a few times.
    async fn submit_message(&mut self, entry: &OutboxEntry) -> Result<Answer, ClientError> {
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            let request = Req::SubmitMessage(pb::SubmitMessage {
                message_id: entry.message_id.clone(),
                mls_message: entry.body.clone(),
            });
            match self.call(request).await {
                Ok(_) => break Answer::Accepted,
                Err(ClientError::Server {
                    retryable: true,
                    closed: false,
                    ..
                }) if attempt < MESSAGE_ATTEMPTS => {
                    tokio::time::sleep(MESSAGE_RETRY_BASE * attempt as u32).await;
                }
                Err(e) if e.is_answer() => break Answer::Refused(e),
                Err(e) => {
                    self.record_delivery(entry, DeliveryState::Pending, None);
                    return Err(e);
                }
            }
        };
        let mut saving = self.begin_save().await?;
        State::delete_outbox(&mut saving.tx, entry.id).await?;
        self.finish_save(saving).await?;
        match &answer {
            Answer::Accepted => self.record_delivery(entry, DeliveryState::Sent, None),
            Answer::Refused(e) => {
                self.record_delivery(entry, DeliveryState::Failed, Some(e.to_string()));
            }
        }
        Ok(answer)
    }

    /// Records what became of a submitted message, for a running session.
    fn record_delivery(
        &mut self,
        entry: &OutboxEntry,
        state: DeliveryState,
        reason: Option<String>,
    ) {
        self.live.record(Committed::Delivery {
            group_id: entry.group_id.clone(),
            message_id: entry.message_id.clone(),
            state,
            reason,
        });
    }
}
