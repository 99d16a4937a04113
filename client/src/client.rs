//! The high-level client: enroll, connect, converse, receive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use openmls::prelude::MlsGroup;
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use crate::connection::Connection;
use crate::mls::Mls;
use crate::state::{Conversation, State};
use crate::{ClientError, keyfile};

/// One-time KeyPackages kept on the server; refilled when fewer than half remain.
const KEY_PACKAGES_TARGET: u32 = 20;
/// Deliveries processed before their acknowledgement is sent.
pub(crate) const ACK_BATCH: usize = 256;
/// How long a drain waits for one more delivery before it considers the queue empty.
pub(crate) const DRAIN_IDLE: Duration = Duration::from_millis(50);
/// Attempts at a commit that keeps losing to concurrent commits.
pub(crate) const COMMIT_ATTEMPTS: usize = 5;

/// A device: its keys, its state, and (when connected) its connection.
pub struct Client {
    home: PathBuf,
    pub(crate) state: State,
    pub(crate) mls: Mls,
    key: Zeroizing<[u8; 32]>,
    pub(crate) user: String,
    device_id: String,
    server: String,
    ca: PathBuf,
    connection: Option<Connection>,
    /// Deliveries the server said were queued at authentication and not yet processed.
    pub(crate) backlog: u64,
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

    pub(crate) fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        self.connection.as_mut().ok_or(ClientError::NotConnected)
    }

    pub(crate) async fn call(&mut self, body: Req) -> Result<Resp, ClientError> {
        self.connection()?.call(body).await
    }

    pub(crate) async fn refill_key_packages(&mut self) -> Result<(), ClientError> {
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
    /// Closes the connection and the state database.
    pub async fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
        self.state.close().await;
    }

    pub(crate) fn qualify(&self, user: &str) -> String {
        if user.contains('@') {
            user.to_ascii_lowercase()
        } else {
            let domain = self.user.rsplit_once('@').map_or("", |(_, d)| d);
            format!("{}@{domain}", user.to_ascii_lowercase())
        }
    }

    pub(crate) async fn find(
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

    pub(crate) async fn conversation(&self, name: &str) -> Result<Conversation, ClientError> {
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
}

/// A commit built but not yet submitted.
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    pub(crate) group_id: Vec<u8>,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Vec<u8>,
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
