//! History transfer (D14, `docs/reference/history-transfer.md`): a new device asks its
//! user's other devices, once, for the last entries of each conversation, and one of them
//! sends them end to end, in chunks, in the user's own MLS group of devices.
//!
//! - **The own group.** The asking device creates an MLS group of this user's devices
//!   alone (roles with an empty name, like a direct conversation's), which the relay
//!   treats like any group and cannot read. A device that joins a group holding only its
//!   user's devices and no name keeps it apart (`own_devices:` in the state's meta): it is
//!   no conversation, writes no history line and is announced by no session event.
//! - **Asking.** At enrollment and at each connection until it has asked, a device with
//!   other devices (as the relay lists them) sends a `HistoryRequest` there; a device that
//!   was its user's first has nothing to ask and never asks.
//! - **Answering.** A device that receives a request from one of its user's active
//!   devices stores that it owes an answer (`history_owed:`), adds the new device to its
//!   conversations (`Client::add_own_devices`), then sends the newest
//!   [`ENTRIES_PER_CONVERSATION`] entries of each conversation the new device is now in, as
//!   `HistoryChunk`s of at most [`CHUNK_BYTES`], newest first; an answer cut short by a
//!   lost connection is sent again at the next one.
//! - **Importing.** The asking device imports a chunk only if it answers its own open
//!   request and comes from another of its user's active devices, in a group of their
//!   devices alone, and only if every conversation it names is one this device is in and
//!   every entry's sender is a member of it. Anything else is refused whole, with a
//!   warning, and nothing stored changes. Entries land before everything the history
//!   holds, already shown, each kept once (sender, message id), with one line saying how
//!   many were copied.
//!
//! `chunks` is the wire shape of history: how entries are cut into chunks and how a chunk
//! is checked before anything of it is imported.

mod chunks;

use std::collections::{BTreeMap, BTreeSet};

use openmls::prelude::{LeafNodeIndex, MlsGroup};
use prost::Message as _;
use relais_core::mls::governance::Governance;
use relais_protocol::pb::{self, request::Body as Req};
use serde::{Deserialize, Serialize};

use crate::mls::Mls;
use crate::state::{State, Tx};
use crate::{Client, ClientError, new_message_id, now_ms};
use chunks::{ENTRY_TEXT_BYTES_MAX, Here, Imported, check_chunk, split};

/// Entries of each conversation a new device asks for: a working day of a busy group,
/// a few weeks of a quiet one.
pub const ENTRIES_PER_CONVERSATION: u32 = 1_000;
/// The most entries per conversation a device sends for one request, whatever it asks.
const ENTRIES_PER_CONVERSATION_MAX: u32 = 10_000;
/// The size a chunk's entries are cut at: a quarter of the relay's default largest
/// application message (`limits.message_bytes_max`, 1 MiB), leaving room for the MLS
/// framing and for relays configured below the default.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The largest chunk a device accepts, in bytes of content: the relay's default largest
/// application message, which no honest chunk comes near.
const CHUNK_BYTES_ACCEPTED_MAX: usize = 1024 * 1024;
/// Entries a device accepts in answer to one request, however many devices answer: 200
/// conversations of 1,000 entries.
const REQUEST_ENTRIES_MAX: u64 = 200_000;
/// How long after asking a device accepts answers: a week lets another device that was
/// switched off come back and answer, and closes the door on late or replayed chunks.
const REQUEST_OPEN_MS: i64 = 7 * 24 * 3600 * 1000;

/// The meta entry that says whether this device asked, and what.
const ASKED: &str = "history_request";
/// The prefix of the meta entries naming this user's own groups of devices.
const OWN_GROUP_PREFIX: &str = "own_devices:";
/// The prefix of the meta entries for requests this device owes an answer to.
const OWED_PREFIX: &str = "history_owed:";

/// What this device asked its other devices for (the meta entry [`ASKED`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Asked {
    /// In hex; none when there was nobody to ask.
    request_id: Option<String>,
    asked_at_ms: i64,
    /// Whether the request left: until then it is sent again, with the same id.
    sent: bool,
    /// Entries received in answers so far, against [`REQUEST_ENTRIES_MAX`].
    received: u64,
}

/// A request this device owes an answer to (a meta entry under [`OWED_PREFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owed {
    /// The own group the request came in, in hex.
    group_id: String,
    /// The asking device's signature key, in hex.
    requester_key: String,
    request_id: String,
    entries_per_conversation: u32,
}

/// What a message in the own group makes this device store, in the transaction that marks
/// its delivery processed.
#[derive(Debug)]
pub(crate) enum Received {
    /// A Welcome into an own group of devices.
    OwnGroup(Vec<u8>),
    /// A request to answer once stored.
    Owed { key: String, owed: Owed },
    /// Checked entries to import, and the request's count after them.
    History {
        conversations: Imported,
        from_device: String,
        asked: Asked,
    },
}

impl Received {
    /// Whether this device must answer a request once it is stored.
    pub(crate) fn owes_answer(&self) -> bool {
        matches!(self, Received::Owed { .. })
    }

    pub(crate) async fn store(self, tx: &mut Tx) -> Result<(), ClientError> {
        match self {
            Received::OwnGroup(group_id) => {
                State::put_meta(tx, &own_group_key(&group_id), b"1").await
            }
            Received::Owed { key, owed } => State::put_meta(tx, &key, &encode(&owed)).await,
            Received::History {
                conversations,
                from_device,
                asked,
            } => {
                for (group_id, entries) in &conversations {
                    let added = State::import_history(tx, group_id, entries).await?;
                    if added > 0 {
                        let what = if added == 1 { "message" } else { "messages" };
                        let line = format!(
                            "{added} earlier {what} copied from your other device {from_device}"
                        );
                        let at = now_ms();
                        let id = new_message_id();
                        State::add_history(tx, group_id, "", &id, at, &line, at).await?;
                    }
                }
                State::put_meta(tx, ASKED, &encode(&asked)).await
            }
        }
    }
}

impl Client {
    /// Asks this user's other devices for history if this device never did, and sends the
    /// answers this device owes; at enrollment and at every connection. What the relay
    /// refuses is a warning, and is tried again at the next connection.
    pub(crate) async fn resume_history_transfer(&mut self) -> Result<(), ClientError> {
        let asked = self.ask_history_once().await;
        self.warn_unless_local(asked, "could not ask your other devices for history yet")?;
        let answered = self.answer_history_requests().await;
        self.warn_unless_local(answered, "could not send history to your new device yet")
    }

    /// A device enrolled beside others asks them for history at once, so that a device
    /// they run a session on answers within seconds. It is enrolled whatever happens here:
    /// a failure is a warning, and it asks again at its next connection.
    pub(crate) async fn ask_history_after_enrollment(&mut self) {
        if let Err(e) = self.resume_history_transfer().await {
            self.warnings.push(format!(
                "could not ask your other devices for history yet (asked again at the next \
                 connection): {e}"
            ));
        }
    }

    /// Whether `group_id` is one of this user's own groups of devices.
    pub(crate) async fn is_own_devices_group(&self, group_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self
            .state
            .meta(&own_group_key(group_id))
            .await?
            .is_some_and(|v| !v.is_empty()))
    }

    /// This user's own groups of devices that this device holds.
    pub(crate) async fn own_devices_groups(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        Ok(self
            .state
            .meta_with_prefix(OWN_GROUP_PREFIX)
            .await?
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .filter_map(|(group, _)| hex::decode(group).ok())
            .collect())
    }

    /// A message in one of this user's own groups of devices: a request for history or a
    /// chunk of it, and what to store for it; anything else there is ignored.
    pub(crate) async fn on_own_devices_message(
        &mut self,
        group: &MlsGroup,
        sender: Option<LeafNodeIndex>,
        bytes: &[u8],
    ) -> Result<Option<Received>, ClientError> {
        let sender_key = sender
            .and_then(|index| group.members().find(|m| m.index == index))
            .map(|m| hex::encode(m.signature_key))
            .unwrap_or_default();
        let from = short_key(&sender_key);
        if bytes.len() > CHUNK_BYTES_ACCEPTED_MAX {
            return Err(refused(&from, "it is larger than any history chunk"));
        }
        let content = pb::Content::decode(bytes)
            .map_err(|_| refused(&from, "it is not a readable history message"))?;
        match content.body {
            Some(pb::content::Body::HistoryRequest(request)) => {
                self.on_history_request(group, &sender_key, request).await
            }
            Some(pb::content::Body::HistoryChunk(chunk)) => {
                if chunk.requester_key != self.public_key() {
                    // An answer to another new device of this user.
                    return Ok(None);
                }
                self.on_history_chunk(group, &sender_key, chunk).await
            }
            _ => Ok(None),
        }
    }

    /// The device keys of this user's other active devices, as the relay lists them.
    async fn sibling_keys(&mut self) -> Result<BTreeSet<String>, ClientError> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .filter(|d| !d.this_device)
            .map(|d| hex::encode(d.public_key))
            .collect())
    }

    async fn ask_history_once(&mut self) -> Result<(), ClientError> {
        let mut asked = match self.asked().await? {
            Some(asked) if asked.sent || asked.request_id.is_none() => return Ok(()),
            Some(asked) => asked,
            None => {
                let nobody = self.sibling_keys().await?.is_empty();
                let asked = Asked {
                    request_id: (!nobody).then(|| hex::encode(new_message_id())),
                    asked_at_ms: now_ms(),
                    sent: nobody,
                    received: 0,
                };
                // Kept before anything is sent, so that a retry asks with the same id.
                self.state.set_meta(ASKED, &encode(&asked)).await?;
                if nobody {
                    return Ok(());
                }
                asked
            }
        };
        let group_id = match self.usable_own_group().await? {
            Some(group_id) => group_id,
            None => self.create_own_group().await?,
        };
        let siblings = self.sibling_keys().await?;
        let present = |client: &Client| -> Result<BTreeSet<String>, ClientError> {
            Ok(Mls::members(&client.group(&group_id)?)
                .into_iter()
                .map(|(_, key)| key)
                .collect())
        };
        if !siblings.is_subset(&present(self)?) {
            let me = [self.user().to_owned()];
            self.add_users(&group_id, &me).await?;
        }
        if siblings.is_disjoint(&present(self)?) {
            // None of them has published keys yet: asked again at the next connection.
            return Ok(());
        }
        let request_id = asked
            .request_id
            .as_deref()
            .and_then(|id| hex::decode(id).ok());
        let content = pb::Content {
            message_id: new_message_id().to_vec(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::HistoryRequest(pb::HistoryRequest {
                request_id: request_id.unwrap_or_default(),
                entries_per_conversation: ENTRIES_PER_CONVERSATION,
            })),
        };
        self.send_content(&group_id, content).await?;
        asked.sent = true;
        self.state.set_meta(ASKED, &encode(&asked)).await
    }

    /// An own group of devices this device can still speak in.
    async fn usable_own_group(&self) -> Result<Option<Vec<u8>>, ClientError> {
        for group_id in self.own_devices_groups().await? {
            if let Some(group) = self.mls.load(&group_id)?
                && group.is_active()
                && only_devices_of(&group, self.user())
            {
                return Ok(Some(group_id));
            }
        }
        Ok(None)
    }

    /// Creates this user's own group of devices, with this device alone in it.
    async fn create_own_group(&mut self) -> Result<Vec<u8>, ClientError> {
        let group = self.mls.create_group(&Governance::new("", self.user()))?;
        let group_id = group.group_id().as_slice().to_vec();
        let (group_info, ratchet_tree) = self.mls.registration(&group)?;
        self.save().await?;
        self.call(Req::CreateGroup(pb::CreateGroup {
            group_info,
            ratchet_tree,
        }))
        .await?;
        // Only once the relay knows it: a group it refused is never used.
        self.state.set_meta(&own_group_key(&group_id), b"1").await?;
        Ok(group_id)
    }

    async fn asked(&self) -> Result<Option<Asked>, ClientError> {
        self.state
            .meta(ASKED)
            .await?
            .map(|bytes| decode::<Asked>(&bytes))
            .transpose()
    }

    /// A request from another device of this user: owed once stored.
    async fn on_history_request(
        &mut self,
        group: &MlsGroup,
        sender_key: &str,
        request: pb::HistoryRequest,
    ) -> Result<Option<Received>, ClientError> {
        let from = short_key(sender_key);
        self.check_own_sender(group, sender_key, "a request for history")
            .await?;
        if request.request_id.len() != 16
            || !(1..=ENTRIES_PER_CONVERSATION_MAX).contains(&request.entries_per_conversation)
        {
            return Err(ClientError::Protocol(format!(
                "ignored a malformed request for history from your device {from}"
            )));
        }
        let key = format!("{OWED_PREFIX}{}", hex::encode(&request.request_id));
        if self.state.meta(&key).await?.is_some() {
            // Owed or answered already: another copy of the same request.
            return Ok(None);
        }
        Ok(Some(Received::Owed {
            key,
            owed: Owed {
                group_id: hex::encode(group.group_id().as_slice()),
                requester_key: sender_key.to_owned(),
                request_id: hex::encode(&request.request_id),
                entries_per_conversation: request.entries_per_conversation,
            },
        }))
    }

    /// Refuses what does not come from another active device of this user, in a group of
    /// this user's devices alone.
    async fn check_own_sender(
        &mut self,
        group: &MlsGroup,
        sender_key: &str,
        what: &str,
    ) -> Result<(), ClientError> {
        let from = short_key(sender_key);
        if !only_devices_of(group, self.user()) {
            return Err(ClientError::Protocol(format!(
                "refused {what} from your device {from}: the group it came in holds another \
                 user's devices; history travels only between your own devices"
            )));
        }
        if !self.sibling_keys().await?.contains(sender_key) {
            return Err(ClientError::Protocol(format!(
                "refused {what} from the device {from}: it is not one of your active devices \
                 (`relais devices` lists them)"
            )));
        }
        Ok(())
    }

    /// A chunk of history for this device: checked whole, then imported.
    async fn on_history_chunk(
        &mut self,
        group: &MlsGroup,
        sender_key: &str,
        chunk: pb::HistoryChunk,
    ) -> Result<Option<Received>, ClientError> {
        let from = short_key(sender_key);
        self.check_own_sender(group, sender_key, "history").await?;
        let mut asked = self
            .asked()
            .await?
            .filter(|asked| {
                asked.request_id.as_deref() == Some(hex::encode(&chunk.request_id).as_str())
            })
            .ok_or_else(|| refused(&from, "this device did not ask for it"))?;
        if now_ms().saturating_sub(asked.asked_at_ms) > REQUEST_OPEN_MS {
            return Err(refused(
                &from,
                "it came more than 7 days after this device asked, when it no longer accepts any",
            ));
        }
        let entries: usize = chunk.conversations.iter().map(|c| c.entries.len()).sum();
        if asked.received + entries as u64 > REQUEST_ENTRIES_MAX {
            return Err(refused(
                &from,
                &format!(
                    "it brings more than the {REQUEST_ENTRIES_MAX} entries this device accepts"
                ),
            ));
        }
        let members = self.conversations_here().await?;
        let conversations = check_chunk(&chunk, &members).map_err(|e| refused(&from, &e))?;
        asked.received += entries as u64;
        Ok(Some(Received::History {
            conversations,
            from_device: from,
            asked,
        }))
    }

    /// The conversations this device is in, with their names and their users.
    async fn conversations_here(&self) -> Result<BTreeMap<Vec<u8>, Here>, ClientError> {
        let mut here = BTreeMap::new();
        for conversation in self.state_conversations().await? {
            let Some(group) = self.mls.load(&conversation.group_id)? else {
                continue;
            };
            if group.is_active() {
                here.insert(
                    conversation.group_id,
                    Here {
                        name: conversation.title,
                        users: Mls::users(&group),
                    },
                );
            }
        }
        Ok(here)
    }

    /// Answers every request this device owes, one at a time; not again while it is
    /// answering (adding the new device may process deliveries, among them a request).
    pub(crate) async fn answer_history_requests(&mut self) -> Result<(), ClientError> {
        if self.answering_history {
            return Ok(());
        }
        self.answering_history = true;
        let answered = self.answer_owed().await;
        self.answering_history = false;
        answered
    }

    async fn answer_owed(&mut self) -> Result<(), ClientError> {
        loop {
            let owed = self.state.meta_with_prefix(OWED_PREFIX).await?;
            let Some((request, owed)) = owed.into_iter().find(|(_, v)| !v.is_empty()) else {
                return Ok(());
            };
            let key = format!("{OWED_PREFIX}{request}");
            let owed = decode::<Owed>(owed.as_bytes())?;
            let answered = self.answer(&owed).await;
            self.warn_unless_local(answered, "could not send history to your new device")?;
            // Answered, or refused for good (warned): not owed any more.
            self.state.set_meta(&key, b"").await?;
        }
    }

    /// Adds the asking device to this device's conversations, then sends it their history.
    async fn answer(&mut self, owed: &Owed) -> Result<(), ClientError> {
        if !self.sibling_keys().await?.contains(&owed.requester_key) {
            // Revoked since it asked.
            return Ok(());
        }
        let added = self.add_own_devices().await.map(drop);
        self.warn_unless_local(added, "could not add your new device to every conversation")?;
        let group_id = hex::decode(&owed.group_id)
            .map_err(|_| ClientError::State("a stored history request is damaged".into()))?;
        let group = self.group(&group_id)?;
        if !group.is_active() || !only_devices_of(&group, self.user()) {
            return Err(ClientError::Usage(
                "history was not sent: the group it was asked in holds another user's devices \
                 or no longer holds this one"
                    .into(),
            ));
        }
        let chunks = self.history_chunks(owed).await?;
        for chunk in chunks {
            let content = pb::Content {
                message_id: new_message_id().to_vec(),
                sent_at_ms: now_ms(),
                body: Some(pb::content::Body::HistoryChunk(chunk)),
            };
            self.send_content(&group_id, content).await?;
        }
        Ok(())
    }

    /// The chunks of an answer: the newest entries of every conversation the asking device
    /// is in, from its members (or written by this device), newest chunk first.
    async fn history_chunks(&mut self, owed: &Owed) -> Result<Vec<pb::HistoryChunk>, ClientError> {
        let limit = owed
            .entries_per_conversation
            .min(ENTRIES_PER_CONVERSATION_MAX);
        let mut conversations = Vec::new();
        let mut left_out = 0;
        for conversation in self.state_conversations().await? {
            let Some(group) = self.mls.load(&conversation.group_id)? else {
                continue;
            };
            let members = Mls::members(&group);
            if !group.is_active() || !members.iter().any(|(_, k)| *k == owed.requester_key) {
                continue;
            }
            let users: BTreeSet<String> = members.into_iter().map(|(user, _)| user).collect();
            let rows = self.state.history(&conversation.group_id, limit).await?;
            let before = rows.len();
            let entries: Vec<pb::HistoryEntry> = rows
                .into_iter()
                .filter(|row| row.sender.is_empty() || users.contains(&row.sender))
                .filter(|row| row.text.len() <= ENTRY_TEXT_BYTES_MAX)
                .map(|row| pb::HistoryEntry {
                    sender: row.sender,
                    message_id: row.message_id,
                    sent_at_ms: row.sent_at_ms,
                    text: row.text,
                })
                .collect();
            left_out += before - entries.len();
            conversations.push(pb::HistoryConversation {
                group_id: conversation.group_id,
                entries,
            });
        }
        if left_out > 0 {
            self.warnings.push(format!(
                "{left_out} entries were not copied to your new device: their senders have \
                 left the conversation since, or they are too large"
            ));
        }
        let request_id = hex::decode(&owed.request_id)
            .map_err(|_| ClientError::State("a stored history request is damaged".into()))?;
        let requester_key = hex::decode(&owed.requester_key)
            .map_err(|_| ClientError::State("a stored history request is damaged".into()))?;
        let parts = split(conversations, CHUNK_BYTES);
        let transfer_id = new_message_id().to_vec();
        let total = parts.len() as u32;
        Ok(parts
            .into_iter()
            .enumerate()
            .map(|(index, conversations)| pb::HistoryChunk {
                request_id: request_id.clone(),
                requester_key: requester_key.clone(),
                transfer_id: transfer_id.clone(),
                index: index as u32,
                total,
                conversations,
            })
            .collect())
    }

    /// Keeps what the relay refused, or what a peer sent wrong, as a warning; gives back
    /// what must stop the caller (the connection or the local state failed).
    fn warn_unless_local(
        &mut self,
        result: Result<(), ClientError>,
        what: &str,
    ) -> Result<(), ClientError> {
        match result {
            Err(
                e @ (ClientError::Server { closed: false, .. }
                | ClientError::Unreachable(_)
                | ClientError::Usage(_)
                | ClientError::Protocol(_)
                | ClientError::Mls(_)),
            ) => {
                self.warnings.push(format!("{what}: {e}"));
                Ok(())
            }
            other => other,
        }
    }
}

#[doc(hidden)]
impl Client {
    /// This user's own groups of devices on this device, for tests that speak in them.
    pub async fn own_devices_groups_for_tests(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        self.own_devices_groups().await
    }

    /// The id of the history request this device sent, if it sent one.
    pub async fn history_request_id_for_tests(&self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .asked()
            .await?
            .and_then(|asked| asked.request_id)
            .and_then(|id| hex::decode(id).ok()))
    }

    /// Encrypts `content` as it is (any bytes, a crafted `Content` or not) for the group
    /// and sends it through the relay, without the outbox: for tests of what receivers
    /// refuse.
    pub async fn send_raw_content_for_tests(
        &mut self,
        group_id: &[u8],
        content: &[u8],
    ) -> Result<(), ClientError> {
        let mut group = self.group(group_id)?;
        let message = group
            .create_message(&self.mls.provider, &self.mls.signer, content)
            .map_err(|e| ClientError::Mls(format!("cannot encrypt: {e}")))?;
        self.save().await?;
        self.call(Req::SubmitMessage(pb::SubmitMessage {
            message_id: new_message_id().to_vec(),
            mls_message: crate::mls::serialize(message)?,
        }))
        .await?;
        Ok(())
    }
}

/// Whether every member of `group` is a device of `user`, and the group has no name: what
/// a user's own group of devices is, and what no conversation is.
pub(crate) fn only_devices_of(group: &MlsGroup, user: &str) -> bool {
    let named = !matches!(Mls::governance(group), Ok(Some(g)) if g.name.is_empty());
    !named && Mls::members(group).iter().all(|(u, _)| u == user)
}

fn own_group_key(group_id: &[u8]) -> String {
    format!("{OWN_GROUP_PREFIX}{}", hex::encode(group_id))
}

fn short_key(key_hex: &str) -> String {
    format!("{}…", &key_hex[..key_hex.len().min(8)])
}

fn refused(from: &str, why: &str) -> ClientError {
    ClientError::Protocol(format!(
        "refused history from your device {from}: {why}; nothing of it was imported"
    ))
}

/// Refuses history messages anywhere but in an own group of devices.
pub(crate) fn outside_own_group(sender: &str, conversation: &str) -> ClientError {
    ClientError::Protocol(format!(
        "refused a history message from {sender} in {conversation:?}: history travels only \
         between your own devices, in a group of theirs; nothing of it was imported"
    ))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|_| {
        ClientError::State(
            "a stored history-transfer entry is damaged; was this home used by a newer relais?"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HistoryRow;

    #[tokio::test]
    async fn imports_land_before_the_history_once_and_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(&dir.path().join("state.db"))
            .await
            .expect("open");
        let group = [1u8; 16];
        let row = |sender: &str, id: u8, text: &str| HistoryRow {
            group_id: group.to_vec(),
            sender: sender.into(),
            message_id: vec![id; 16],
            sent_at_ms: i64::from(id),
            text: text.into(),
        };
        let mut tx = state.begin().await.expect("begin");
        State::add_history(&mut tx, &group, "bob@x", &[9; 16], 9, "live", 9)
            .await
            .expect("add");
        tx.commit().await.expect("commit");
        assert_eq!(state.take_unshown().await.expect("unshown").len(), 1);
        let mut tx = state.begin().await.expect("begin");
        // The newest chunk first, then an older one; the newest repeats the live entry.
        let newest = [row("alice@x", 5, "five"), row("bob@x", 9, "live")];
        assert_eq!(
            State::import_history(&mut tx, &group, &newest)
                .await
                .expect("import"),
            1
        );
        let older = [row("bob@x", 3, "three"), row("", 4, "four")];
        assert_eq!(
            State::import_history(&mut tx, &group, &older)
                .await
                .expect("import"),
            2
        );
        assert_eq!(
            State::import_history(&mut tx, &group, &older)
                .await
                .expect("again"),
            0
        );
        tx.commit().await.expect("commit");
        let texts: Vec<String> = state
            .history(&group, 10)
            .await
            .expect("history")
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(texts, ["three", "four", "five", "live"]);
        assert!(
            state.take_unshown().await.expect("unshown").is_empty(),
            "shown already"
        );
    }
}
