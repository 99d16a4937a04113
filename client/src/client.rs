//! The high-level client: enroll, connect, converse, receive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use openmls::prelude::{MlsGroup, OpenMlsProvider as _};
use prost::Message as _;
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use crate::connection::Connection;
use crate::mls::{self, Mls};
use crate::state::{Conversation, State};
use crate::{ClientError, ReceivedMessage, keyfile, now_ms};

/// One-time KeyPackages kept on the server; refilled when fewer than half remain.
const KEY_PACKAGES_TARGET: u32 = 20;
/// Deliveries processed before their acknowledgement is sent.
const ACK_BATCH: usize = 256;
/// How long a drain waits for one more delivery before it considers the queue empty.
const DRAIN_IDLE: Duration = Duration::from_millis(50);
/// Attempts at a commit that keeps losing to concurrent commits.
const COMMIT_ATTEMPTS: usize = 5;

/// A device: its keys, its state, and (when connected) its connection.
pub struct Client {
    home: PathBuf,
    state: State,
    pub(crate) mls: Mls,
    key: Zeroizing<[u8; 32]>,
    user: String,
    device_id: String,
    server: String,
    ca: PathBuf,
    connection: Option<Connection>,
    /// Deliveries the server said were queued at authentication and not yet processed.
    backlog: u64,
    /// A group in which the server proposed something (a removal) that this device
    /// should commit once the delivery is stored.
    pub(crate) pending_proposal_group: Option<Vec<u8>>,
}

impl Client {
    /// Enrolls a new device in `home` with a one-time code, and leaves it connected.
    pub async fn enroll(
        home: &Path,
        server: &str,
        ca_pem: &Path,
        user: &str,
        code: &str,
    ) -> Result<Client, ClientError> {
        keyfile::private_dir(home)?;
        let key_path = home.join("device.key");
        if key_path.exists() {
            return Err(ClientError::Usage(format!(
                "{} already holds an enrolled device; use another --home",
                home.display()
            )));
        }
        let ca = std::path::absolute(ca_pem)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", ca_pem.display())))?;
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let public = signing.verifying_key().to_bytes();
        let opened = Connection::open(server, &ca).await?;
        let mut connection = opened.connection;
        let signature = signing.sign(&relais_protocol::auth::transcript(
            &opened.exporter,
            &opened.nonce,
        ));
        let enrolled = match connection
            .call(Req::Enroll(pb::Enroll {
                user: user.to_owned(),
                code: code.to_owned(),
                public_key: public.to_vec(),
                signature: signature.to_bytes().to_vec(),
            }))
            .await?
        {
            Resp::Enrolled(enrolled) => enrolled,
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected answer to Enroll: {other:?}"
                )));
            }
        };
        // The key is written only once the server accepted it.
        keyfile::write(&key_path, &signing.to_bytes())?;
        let state = State::open(&home.join("state.db")).await?;
        for (key, value) in [
            ("server", server.as_bytes()),
            ("ca", ca.to_string_lossy().as_bytes()),
            ("user", enrolled.user.as_bytes()),
            ("device_id", enrolled.device_id.as_bytes()),
            ("server_signature_key", &enrolled.server_signature_key[..]),
        ] {
            state.set_meta(key, value).await?;
        }
        let mls = Mls::new(
            &signing.to_bytes(),
            &public,
            &enrolled.user,
            &enrolled.server_signature_key,
            Default::default(),
        );
        let mut client = Client {
            home: home.to_owned(),
            state,
            mls,
            key: Zeroizing::new(signing.to_bytes()),
            user: enrolled.user,
            device_id: enrolled.device_id,
            server: server.to_owned(),
            ca,
            connection: Some(connection),
            backlog: 0,
            pending_proposal_group: None,
        };
        client.refill_key_packages().await?;
        Ok(client)
    }

    /// Opens an enrolled device's state without connecting.
    pub async fn open(home: &Path) -> Result<Client, ClientError> {
        let key_path = home.join("device.key");
        if !key_path.exists() {
            return Err(ClientError::NotEnrolled(home.to_owned()));
        }
        let key = keyfile::read(&key_path)?;
        let state = State::open(&home.join("state.db")).await?;
        let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
        let missing = || {
            ClientError::State(format!(
                "{} is incomplete; enroll this device again",
                home.display()
            ))
        };
        let server = text(state.meta("server").await?).ok_or_else(missing)?;
        let ca = PathBuf::from(text(state.meta("ca").await?).ok_or_else(missing)?);
        let user = text(state.meta("user").await?).ok_or_else(missing)?;
        let device_id = text(state.meta("device_id").await?).ok_or_else(missing)?;
        let server_key = state
            .meta("server_signature_key")
            .await?
            .ok_or_else(missing)?;
        let public = SigningKey::from_bytes(&key).verifying_key().to_bytes();
        let mls = Mls::new(&key, &public, &user, &server_key, state.mls_values().await?);
        Ok(Client {
            home: home.to_owned(),
            state,
            mls,
            key,
            user,
            device_id,
            server,
            ca,
            connection: None,
            backlog: 0,
            pending_proposal_group: None,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Connects and authenticates, then tops up KeyPackages.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        let opened = Connection::open(&self.server, &self.ca).await?;
        let mut connection = opened.connection;
        let signing = SigningKey::from_bytes(&self.key);
        let signature = signing.sign(&relais_protocol::auth::transcript(
            &opened.exporter,
            &opened.nonce,
        ));
        let result = match connection
            .call(Req::Authenticate(pb::Authenticate {
                public_key: signing.verifying_key().to_bytes().to_vec(),
                signature: signature.to_bytes().to_vec(),
            }))
            .await?
        {
            Resp::Authenticated(result) => result,
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected answer to Authenticate: {other:?}"
                )));
            }
        };
        self.backlog = result.queued;
        self.connection = Some(connection);
        self.refill_key_packages().await
    }

    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        self.connection.as_mut().ok_or(ClientError::NotConnected)
    }

    pub(crate) async fn call(&mut self, body: Req) -> Result<Resp, ClientError> {
        self.connection()?.call(body).await
    }

    async fn refill_key_packages(&mut self) -> Result<(), ClientError> {
        let Resp::KeyPackageStatus(status) = self
            .call(Req::KeyPackageStatus(pb::KeyPackageStatus {}))
            .await?
        else {
            return Err(ClientError::Protocol(
                "unexpected answer to KeyPackageStatus".into(),
            ));
        };
        let mut fresh = Vec::new();
        if status.available < KEY_PACKAGES_TARGET / 2 {
            fresh.extend(
                self.mls
                    .key_packages((KEY_PACKAGES_TARGET - status.available) as usize, false)?,
            );
        }
        if !status.has_last_resort {
            fresh.extend(self.mls.key_packages(1, true)?);
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // The private halves must be stored before the server can hand the packages out.
        self.save(|_| Box::pin(async { Ok(()) })).await?;
        self.call(Req::PublishKeyPackages(pb::PublishKeyPackages {
            key_packages: fresh,
        }))
        .await?;
        Ok(())
    }

    /// Persists the MLS state, plus whatever `extra` writes, in one transaction.
    pub(crate) async fn save<F>(&self, extra: F) -> Result<(), ClientError>
    where
        F: for<'t> FnOnce(
            &'t mut sqlx::Transaction<'static, sqlx::Sqlite>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), ClientError>> + Send + 't>,
        >,
    {
        let mut tx = self.state.begin().await?;
        State::save_mls(&mut tx, &self.mls.values()).await?;
        extra(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends `text` to `peer`, creating the direct conversation on first use.
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
    async fn send_info(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
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

    /// Processes deliveries: waits up to `wait` for the first if none is pending, then
    /// takes whatever else arrives promptly. Returns how many were processed.
    pub async fn sync(&mut self, wait: Duration) -> Result<usize, ClientError> {
        let mut processed = self.drain_for(wait).await?;
        processed += self.drain().await?;
        Ok(processed)
    }

    /// Processes deliveries, then returns the texts not yet shown, oldest first.
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<ReceivedMessage>, ClientError> {
        let pending = self.state.take_unshown().await?;
        if pending.is_empty() {
            self.sync(wait).await?;
        } else {
            self.drain().await?;
        }
        let mut rows = pending;
        rows.extend(self.state.take_unshown().await?);
        let conversations = self.state.conversations().await?;
        Ok(rows
            .into_iter()
            .map(|row| ReceivedMessage {
                conversation: conversations
                    .iter()
                    .find(|c| c.group_id == row.group_id)
                    .map_or_else(
                        || hex::encode(&row.group_id[..4.min(row.group_id.len())]),
                        |c| c.title.clone(),
                    ),
                sender: row.sender,
                sent_at_ms: row.sent_at_ms,
                text: row.text,
            })
            .collect())
    }

    /// Closes the connection and the state database.
    pub async fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
        self.state.close().await;
    }

    fn qualify(&self, user: &str) -> String {
        if user.contains('@') {
            user.to_ascii_lowercase()
        } else {
            let domain = self.user.rsplit_once('@').map_or("", |(_, d)| d);
            format!("{}@{domain}", user.to_ascii_lowercase())
        }
    }

    async fn find(
        &self,
        predicate: &dyn Fn(&Conversation) -> bool,
    ) -> Result<Option<Conversation>, ClientError> {
        Ok(self
            .state
            .conversations()
            .await?
            .into_iter()
            .find(|c| predicate(c)))
    }

    async fn conversation(&self, name: &str) -> Result<Conversation, ClientError> {
        let qualified = self.qualify(name);
        self.find(&|c| c.title == name || (c.kind == "direct" && c.title == qualified))
            .await?
            .ok_or_else(|| {
                ClientError::Usage(format!("no conversation named {name:?} on this device"))
            })
    }

    pub(crate) async fn state_conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        self.state.conversations().await
    }

    pub(crate) fn group(&self, group_id: &[u8]) -> Result<MlsGroup, ClientError> {
        self.mls.load(group_id)?.ok_or_else(|| {
            ClientError::State("a conversation's MLS group is missing from this device".into())
        })
    }

    /// Creates a group, registers it, adds `members` (and this user's other devices), and
    /// tells everyone what the conversation is.
    async fn create(
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
        users.push(self.user.clone());
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
    async fn prepare_add(
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
    async fn catch_up(&mut self, group_id: &[u8], epoch: u64) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.group(group_id)?.epoch().as_u64() < epoch
            && tokio::time::Instant::now() < deadline
        {
            self.drain_for(Duration::from_secs(1)).await?;
        }
        Ok(())
    }

    async fn send_text(&mut self, group_id: &[u8], text: &str) -> Result<(), ClientError> {
        let content = pb::Content {
            message_id: random_id(),
            sent_at_ms: now_ms(),
            body: Some(pb::content::Body::Text(text.to_owned())),
        };
        self.send_content(group_id, content).await
    }

    async fn send_content(
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

    /// Processes what is pending without waiting for new deliveries, but first whatever
    /// the server said was queued at authentication.
    async fn drain(&mut self) -> Result<usize, ClientError> {
        let mut processed = 0;
        while self.backlog > 0 {
            let n = self.drain_for(Duration::from_secs(10)).await?;
            if n == 0 {
                break;
            }
            processed += n;
        }
        Ok(processed + self.process_batch(DRAIN_IDLE).await?)
    }

    async fn drain_for(&mut self, wait: Duration) -> Result<usize, ClientError> {
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

    async fn process_batch(&mut self, idle: Duration) -> Result<usize, ClientError> {
        let mut total = 0;
        loop {
            let n = self.process_batch_first(idle).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Takes up to ACK_BATCH deliveries (waiting `first` for the first, DRAIN_IDLE for
    /// the others), processes them, stores the result, then acknowledges them.
    async fn process_batch_first(&mut self, first: Duration) -> Result<usize, ClientError> {
        let mut sequences = Vec::new();
        let mut wait = first;
        while sequences.len() < ACK_BATCH {
            let Some(delivery) = self.connection()?.next_delivery(wait).await? else {
                break;
            };
            wait = Duration::from_millis(20);
            let sequence = delivery.sequence;
            if !self.state.is_processed(sequence).await? {
                self.process(delivery).await?;
            }
            sequences.push(sequence);
            self.backlog = self.backlog.saturating_sub(1);
        }
        if sequences.is_empty() {
            return Ok(0);
        }
        self.call(Req::Acknowledge(pb::Acknowledge {
            sequences: sequences.clone(),
        }))
        .await?;
        Ok(sequences.len())
    }

    /// Applies one delivery and records it as processed, in one local transaction.
    async fn process(&mut self, delivery: pb::Delivery) -> Result<(), ClientError> {
        let kind =
            pb::DeliveryKind::try_from(delivery.kind).unwrap_or(pb::DeliveryKind::Unspecified);
        let outcome = match kind {
            pb::DeliveryKind::Welcome => self.on_welcome(&delivery).await,
            pb::DeliveryKind::Commit
            | pb::DeliveryKind::Proposal
            | pb::DeliveryKind::Application => self.on_message(&delivery).await,
            pb::DeliveryKind::Unspecified => Ok(Effect::None),
        };
        let effect = match outcome {
            Ok(effect) => effect,
            Err(e) => {
                // One bad message must not block the queue; it is acknowledged and reported.
                eprintln!(
                    "warning: delivery {} could not be processed: {e}",
                    delivery.sequence
                );
                Effect::None
            }
        };
        let sequence = delivery.sequence;
        let group_id = delivery.group_id.clone();
        self.save(move |tx| {
            Box::pin(async move {
                match effect {
                    Effect::None => {}
                    Effect::Conversation(c) => State::put_conversation(tx, &c, now_ms()).await?,
                    Effect::Text {
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
                        .await?
                    }
                }
                State::mark_processed(tx, sequence).await
            })
        })
        .await?;
        if let Some(proposal_group) = self.pending_proposal_group.take() {
            self.commit_pending_proposals(&proposal_group).await?;
        }
        Ok(())
    }
}

/// A commit built but not yet submitted.
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    group_id: Vec<u8>,
    commit: Vec<u8>,
    welcome: Vec<u8>,
}

/// What processing a delivery changes locally.
pub(crate) enum Effect {
    None,
    Conversation(Conversation),
    Text {
        sender: String,
        message_id: Vec<u8>,
        sent_at_ms: i64,
        text: String,
    },
}

pub(crate) fn random_id() -> Vec<u8> {
    let mut id = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    id
}
