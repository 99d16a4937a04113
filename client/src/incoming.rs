//! Applying deliveries: joining from Welcomes, merging commits, storing proposals, and
//! decrypting application messages. The sender shown is the MLS-authenticated one, never
//! the server's routing metadata.

use openmls::prelude::{
    BasicCredential, ContentType, MlsMessageIn, ProcessedMessageContent, Sender,
    tls_codec::Deserialize as _,
};
use std::time::{Duration, Instant};

use prost::Message as _;
use relais_protocol::pb::{self, request::Body as Req};

use crate::DRAIN_IDLE;
use crate::client::{Client, Effect};
use crate::mls::Mls;
use crate::session::{Committed, short_id};
use crate::state::{Conversation, State};
use crate::{Ack, ClientError, ReceivedMessage, now_ms};

impl Client {
    /// Processes deliveries: waits up to `wait` for the first if none is pending, then
    /// takes whatever else arrives promptly. Returns how many were processed.
    pub async fn sync(&mut self, wait: Duration) -> Result<usize, ClientError> {
        let mut processed = self.drain_for(wait).await?;
        processed += self.drain().await?;
        Ok(processed)
    }

    /// Processes deliveries, then returns the texts not yet shown, oldest first. Membership
    /// events are marked shown too: [`Client::receive_with_events`] returns them.
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<ReceivedMessage>, ClientError> {
        let mut all = self.receive_with_events(wait).await?;
        all.retain(|m| !m.event);
        Ok(all)
    }

    /// Processes deliveries, then returns the texts and membership events not yet shown,
    /// oldest first.
    pub async fn receive_with_events(
        &mut self,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let pending = self.state.take_unshown().await?;
        if pending.is_empty() {
            self.sync(wait).await?;
        } else {
            self.drain().await?;
        }
        let mut rows = pending;
        rows.extend(self.state.take_unshown().await?);
        self.shown(rows).await
    }

    /// History rows as the caller shows them, each with its conversation's name.
    pub(crate) async fn shown(
        &self,
        rows: Vec<crate::state::HistoryRow>,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let conversations = self.state.conversations().await?;
        Ok(rows
            .into_iter()
            .map(|row| ReceivedMessage {
                conversation: conversations
                    .iter()
                    .find(|c| c.group_id == row.group_id)
                    .map_or_else(|| short_id(&row.group_id), |c| c.title.clone()),
                event: row.sender.is_empty(),
                sender: row.sender,
                sent_at_ms: row.sent_at_ms,
                text: row.text,
            })
            .collect())
    }

    /// Processes what is pending without waiting for new deliveries, but first whatever
    /// the server said was queued at authentication. Alone, a client waits `DRAIN_IDLE` for
    /// a delivery on its way and confirms its acknowledgements; in a session, which
    /// processes each delivery as it arrives and acknowledges on its own timer, what has
    /// arrived is all there is to take.
    pub(crate) async fn drain(&mut self) -> Result<usize, ClientError> {
        let mut processed = 0;
        while self.backlog > 0 {
            let n = self.drain_for(Duration::from_secs(10)).await?;
            if n == 0 {
                break;
            }
            processed += n;
        }
        if self.live.attached() {
            return Ok(processed + self.take_arrived().await?);
        }
        Ok(processed + self.process_batch(DRAIN_IDLE).await?)
    }

    /// Processes the deliveries that have already arrived, without waiting for more.
    async fn take_arrived(&mut self) -> Result<usize, ClientError> {
        let mut processed = 0;
        while let Some(delivery) = self.next_delivery(Duration::ZERO).await? {
            self.take_delivery(delivery).await?;
            processed += 1;
        }
        Ok(processed)
    }

    pub(crate) async fn drain_for(&mut self, wait: Duration) -> Result<usize, ClientError> {
        let mut total = 0;
        let mut first_wait = wait;
        loop {
            let n = self.process_batch_first(first_wait).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            first_wait = DRAIN_IDLE;
        }
    }

    pub(crate) async fn process_batch(&mut self, idle: Duration) -> Result<usize, ClientError> {
        let mut total = 0;
        loop {
            let n = self.process_batch_first(idle).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Takes deliveries (waiting `first` for the first, then as `AckBatch` says),
    /// processes them, stores the result, then acknowledges them. When none came, confirms
    /// the quiet acknowledgements, so that a drain ends with nothing unconfirmed.
    pub(crate) async fn process_batch_first(
        &mut self,
        first: Duration,
    ) -> Result<usize, ClientError> {
        loop {
            let wait = match self.acks.due() {
                None => first,
                Some(due) => due.saturating_duration_since(Instant::now()),
            };
            if wait.is_zero() {
                break;
            }
            let Some(delivery) = self.next_delivery(wait).await? else {
                break;
            };
            self.take_delivery(delivery).await?;
        }
        self.send_acks().await
    }

    /// Processes a delivery (unless an earlier connection already did) and adds it to the
    /// batch to acknowledge.
    pub(crate) async fn take_delivery(
        &mut self,
        delivery: pb::Delivery,
    ) -> Result<(), ClientError> {
        let sequence = delivery.sequence;
        if let Some(below) = self.acks.received(sequence) {
            self.state.forget_processed_below(below).await?;
        }
        if !self.state.is_processed(sequence).await? {
            self.process(delivery).await?;
        }
        self.acks.push(sequence, Instant::now());
        self.backlog = self.backlog.saturating_sub(1);
        Ok(())
    }

    /// Acknowledges the batch now, or when it is empty confirms the quiet acknowledgements
    /// sent before; returns how many deliveries it acknowledged.
    pub(crate) async fn send_acks(&mut self) -> Result<usize, ClientError> {
        let ack = if !self.acks.is_empty() {
            self.acks.take(Instant::now())
        } else if self.acks.unconfirmed() > 0 {
            self.acks.confirmation()
        } else {
            return Ok(0);
        };
        let n = ack.sequences.len();
        self.acknowledge(ack).await?;
        Ok(n)
    }

    /// Acknowledges everything processed and has the relay confirm it, so that nothing
    /// comes again: before a connection is closed on purpose.
    pub(crate) async fn flush_acks(&mut self) -> Result<(), ClientError> {
        if !self.acks.is_empty() {
            let ack = self.acks.take(Instant::now());
            self.acknowledge(ack).await?;
        }
        if self.acks.unconfirmed() > 0 {
            let confirmation = self.acks.confirmation();
            self.acknowledge(confirmation).await?;
        }
        Ok(())
    }

    /// The next delivery, waiting at most `wait`; like [`Client::call`], a failed
    /// connection is dropped.
    pub(crate) async fn next_delivery(
        &mut self,
        wait: Duration,
    ) -> Result<Option<pb::Delivery>, ClientError> {
        let result = self.connection()?.next_delivery(wait).await;
        self.settle(result)
    }

    /// Sends an acknowledgement. A quiet one is not answered. The answer to any other
    /// confirms the quiet ones before it too: acknowledged deliveries are deleted on the
    /// relay and never come again, so their records are no longer needed, and the table
    /// holds only what awaits confirmation.
    async fn acknowledge(&mut self, ack: Ack) -> Result<(), ClientError> {
        if ack.quiet {
            let result = self.connection()?.post(Req::Acknowledge(ack.into())).await;
            return self.settle(result);
        }
        let sequences = ack.sequences.clone();
        self.call(Req::Acknowledge(ack.into())).await?;
        let confirmed = self.acks.confirmed(&sequences);
        self.state.forget_processed(&confirmed).await
    }

    /// Applies one delivery and records it as processed, in one local transaction.
    pub(crate) async fn process(&mut self, delivery: pb::Delivery) -> Result<(), ClientError> {
        let kind =
            pb::DeliveryKind::try_from(delivery.kind).unwrap_or(pb::DeliveryKind::Unspecified);
        let outcome = match kind {
            pb::DeliveryKind::Welcome => self.on_welcome(&delivery).await.map(|e| (e, None)),
            pb::DeliveryKind::Commit
            | pb::DeliveryKind::Proposal
            | pb::DeliveryKind::Application => self.on_message(&delivery).await,
            pb::DeliveryKind::Unspecified => Ok((Effect::None, None)),
        };
        let mut failed = false;
        let (effect, change) = match outcome {
            Ok(outcome) => outcome,
            // One bad message must not block the queue: it is counted, reported (without
            // its content) and acknowledged. Local failures are not the message's fault:
            // they stop processing, and the delivery comes again.
            Err(e @ (ClientError::Mls(_) | ClientError::Protocol(_))) => {
                self.warnings.push(format!(
                    "delivery {} could not be processed: {e}",
                    delivery.sequence
                ));
                failed = true;
                (Effect::None, None)
            }
            Err(e) => return Err(e),
        };
        let owes_history = matches!(&effect, Effect::Transfer(r) if r.owes_answer());
        let mut saving = self.begin_save().await?;
        if failed {
            State::count_failed_delivery(&mut saving.tx).await?;
        }
        effect.store(&mut saving.tx).await?;
        State::mark_processed(&mut saving.tx, delivery.sequence).await?;
        self.finish_save(saving).await?;
        if let Some(change) = change {
            self.live.record(change);
        }
        if let Some(proposal_group) = self.pending_proposal_group.take() {
            self.commit_proposals(&proposal_group).await?;
        }
        if owes_history {
            // Boxed: answering may process deliveries, which may owe another answer.
            Box::pin(self.answer_history_requests()).await?;
        }
        Ok(())
    }

    pub(crate) async fn on_welcome(
        &mut self,
        delivery: &pb::Delivery,
    ) -> Result<Effect, ClientError> {
        let group = self.mls.join(&delivery.mls_message)?;
        let group_id = group.group_id().as_slice().to_vec();
        if crate::transfer::only_devices_of(&group, self.user()) {
            // This user's own group of devices (`transfer.rs`), not a conversation.
            return Ok(Effect::Transfer(crate::transfer::Received::OwnGroup(
                group_id,
            )));
        }
        self.forget_departure(&group_id).await?;
        let new_devices = self
            .membership_events(
                &group_id,
                None,
                &[],
                &Mls::members(&group),
                &Default::default(),
            )
            .await?;
        let known = self
            .state_conversations()
            .await?
            .into_iter()
            .find(|c| c.group_id == group_id);
        Ok(match known {
            Some(_) => Effect::None,
            // Named once the creator's info message arrives, right after the Welcome.
            None => Effect::Joined {
                conversation: Conversation {
                    title: short_id(&group_id),
                    group_id,
                    kind: "unknown".into(),
                },
                lines: new_devices,
            },
        })
    }

    /// A commit, proposal or application message; with a merged commit's membership change
    /// for a session, to record once the effect is stored.
    pub(crate) async fn on_message(
        &mut self,
        delivery: &pb::Delivery,
    ) -> Result<(Effect, Option<Committed>), ClientError> {
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
            return Ok((Effect::None, None));
        }
        let own_group = self.is_own_devices_group(&group_id).await?;
        let processed = group
            .process_message(&self.mls.provider, protocol)
            .map_err(|e| bad(crate::contacts::unprocessable(&e)))?;
        let sender = BasicCredential::try_from(processed.credential().clone())
            .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
            .unwrap_or_default();
        if sender.is_empty() {
            // Every member carries its user's basic credential; an empty name would read as
            // one of this client's own membership events.
            return Err(bad(
                "a message from a member without a user's credential".into()
            ));
        }
        let committer = match processed.sender() {
            Sender::Member(index) => Some(*index),
            _ => None,
        };
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) if own_group => self
                .on_own_devices_message(&group, committer, &app.into_bytes())
                .await
                .map(|received| (received.map_or(Effect::None, Effect::Transfer), None)),
            ProcessedMessageContent::ApplicationMessage(app) => self
                .on_application(&group, sender, &app.into_bytes())
                .await
                .map(|effect| (effect, None)),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let committer =
                    committer.ok_or_else(|| bad("a commit from outside the group".into()))?;
                let outcome = self.on_commit(group, committer, &sender, *staged).await?;
                if own_group {
                    // This user's own group of devices shows no line and no event.
                    return Ok((Effect::None, None));
                }
                Ok(outcome)
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                crate::contacts::check_removed_devices(&group, &proposal).map_err(bad)?;
                self.on_proposal(&mut group, *proposal)?;
                Ok((Effect::None, None))
            }
            _ => Ok((Effect::None, None)),
        }
    }
}

impl Client {
    /// An application message: a text, or what a conversation is.
    async fn on_application(
        &self,
        group: &openmls::prelude::MlsGroup,
        sender: String,
        bytes: &[u8],
    ) -> Result<Effect, ClientError> {
        let content = pb::Content::decode(bytes)
            .map_err(|e| ClientError::Mls(format!("undecodable content: {e}")))?;
        match content.body {
            Some(pb::content::Body::Text(text)) => Ok(Effect::Text {
                group_id: group.group_id().as_slice().to_vec(),
                sender,
                message_id: content.message_id,
                sent_at_ms: content.sent_at_ms,
                text,
            }),
            Some(pb::content::Body::Info(info)) => {
                let conversation = self.conversation_from_info(group, &info).await?;
                Ok(conversation.map_or(Effect::None, Effect::Conversation))
            }
            Some(pb::content::Body::HistoryRequest(_) | pb::content::Body::HistoryChunk(_)) => {
                let group_id = group.group_id().as_slice();
                let name = self
                    .find(&|c| c.group_id == group_id)
                    .await?
                    .map_or_else(|| short_id(group_id), |c| c.title);
                Err(crate::transfer::outside_own_group(&sender, &name))
            }
            None => Ok(Effect::None),
        }
    }

    /// Another member's commit: checked (`trust.rs`), merged, and described in the
    /// conversation's history (and, for a session, as data).
    async fn on_commit(
        &self,
        mut group: openmls::prelude::MlsGroup,
        committer: openmls::prelude::LeafNodeIndex,
        sender: &str,
        staged: openmls::prelude::StagedCommit,
    ) -> Result<(Effect, Option<Committed>), ClientError> {
        let governed = crate::trust::check_commit(&group, committer, &staged)
            .map_err(|e| ClientError::Mls(format!("refused a commit from {sender}: {e}")))?;
        let before = Mls::members(&group);
        group
            .merge_staged_commit(&self.mls.provider, staged)
            .map_err(|e| ClientError::Mls(format!("cannot merge a commit: {e}")))?;
        let after = Mls::members(&group);
        let group_id = group.group_id().as_slice().to_vec();
        let lines = self
            .commit_lines(&group_id, sender, &governed, &before, &after)
            .await?;
        let epoch = group.epoch().as_u64();
        let change = crate::session::membership(&group_id, sender, epoch, &before, &after);
        Ok((
            self.commit_effect(group_id, &governed, lines).await?,
            change,
        ))
    }

    /// What a conversation-info message may say. A direct conversation is named after the
    /// one other user the MLS group verifiably holds, never after what a member sends; a
    /// conversation's kind and name, once known, are not changed by a member's later info;
    /// a group whose name is already taken here gets a number, so that no conversation can
    /// pose as another.
    async fn conversation_from_info(
        &self,
        group: &openmls::prelude::MlsGroup,
        info: &pb::ConversationInfo,
    ) -> Result<Option<Conversation>, ClientError> {
        let group_id = group.group_id().as_slice().to_vec();
        let info = &Client::named_info(group, info);
        let direct = info.kind == pb::conversation_info::Kind::Direct as i32;
        let conversations = self.state_conversations().await?;
        let known = conversations.iter().find(|c| c.group_id == group_id);
        if let Some(known) = known.filter(|c| c.kind != "unknown") {
            let kind = if direct { "direct" } else { "group" };
            // A name this device numbered or marked stays the same name.
            let same_name =
                known.title == info.title || known.title.starts_with(&format!("{} (", info.title));
            if known.kind != kind || (!direct && !same_name) {
                return Err(ClientError::Mls(format!(
                    "ignored a change of the conversation {:?} to a {kind} named {:?}",
                    known.title, info.title
                )));
            }
            return Ok(None);
        }
        let title = if direct {
            match Mls::other_users(group, self.user()).as_slice() {
                [peer] => peer.clone(),
                _ => {
                    return Err(ClientError::Mls(
                        "a conversation said to be direct does not hold exactly one other user"
                            .into(),
                    ));
                }
            }
        } else {
            let taken = |t: &str| {
                conversations
                    .iter()
                    .any(|c| c.group_id != group_id && c.title == t)
            };
            // A group may not pass for a person: a name with an @ is marked as a group's.
            let base = if info.title.contains('@') {
                format!("{} (group)", info.title)
            } else {
                info.title.clone()
            };
            let mut title = base.clone();
            let mut n = 2;
            while taken(&title) {
                title = format!("{base} ({n})");
                n += 1;
            }
            title
        };
        Ok(Some(Conversation {
            group_id,
            kind: if direct { "direct" } else { "group" }.into(),
            title,
        }))
    }
}

impl Effect {
    /// Stores what processing a delivery changed, in the transaction that marks it done.
    async fn store(self, tx: &mut crate::state::Tx) -> Result<(), ClientError> {
        match self {
            Effect::None => {}
            Effect::Conversation(c) => {
                State::put_conversation(tx, &c, now_ms()).await?;
            }
            Effect::Joined {
                conversation,
                lines,
            }
            | Effect::Renamed {
                conversation,
                lines,
            } => {
                State::put_conversation(tx, &conversation, now_ms()).await?;
                crate::contacts::record_events(tx, &conversation.group_id, &lines).await?;
            }
            Effect::Events { group_id, lines } => {
                crate::contacts::record_events(tx, &group_id, &lines).await?;
            }
            Effect::Transfer(received) => received.store(tx).await?,
            Effect::Text {
                group_id,
                sender,
                message_id,
                sent_at_ms,
                text,
            } => {
                State::add_history(
                    tx,
                    &group_id,
                    &sender,
                    &message_id,
                    sent_at_ms,
                    &text,
                    now_ms(),
                )
                .await?;
            }
        }
        Ok(())
    }
}
