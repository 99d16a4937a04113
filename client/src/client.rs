//! The high-level client: enroll, connect, converse, receive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use openmls::prelude::MlsGroup;
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use zeroize::Zeroizing;

use crate::connection::{Connection, Opened, Trust};
use crate::mls::Mls;
use crate::state::{Conversation, State};
use crate::{AckBatch, ClientError, HomeLock, Secret, SecretKind, keyfile};

/// One-time KeyPackages kept on the server: with the relay's default of 10 claims per hour
/// per (claiming device, user), one device needs four hours of claiming to leave this
/// device with only its last-resort KeyPackage, and a refill comes at every connection.
/// Each one costs the relay a signature check when published, so not more: below the
/// relay's `limits.key_packages_max` (100).
const KEY_PACKAGES_TARGET: u32 = 40;
/// Refill to [`KEY_PACKAGES_TARGET`] once fewer than this many remain: a quarter used is
/// worth a publication, and three quarters still stand between a claimer and the last
/// resort.
const KEY_PACKAGES_REFILL_BELOW: u32 = 30;
/// Attempts at a commit that keeps losing to concurrent commits.
pub(crate) const COMMIT_ATTEMPTS: usize = 5;
/// How long an enrollment waits for another process to release the home (see
/// [`HomeLock`]): as long as the `relais` commands and [`crate::Session::open`] wait, so
/// that two enrollments of one home, or an enrollment and a command, are told the same.
const ENROLL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// A device: its keys, its state, and (when connected) its connection.
pub struct Client {
    home: PathBuf,
    pub(crate) state: State,
    pub(crate) mls: Mls,
    /// The MLS key-value state as the database holds it, so a save writes only changes.
    saved: HashMap<Vec<u8>, Vec<u8>>,
    key: Zeroizing<[u8; 32]>,
    pub(crate) user: String,
    device_id: String,
    server: String,
    ca: PathBuf,
    connection: Option<Connection>,
    /// Processed deliveries to acknowledge on this connection, and those acknowledged
    /// quietly; what a lost connection left unconfirmed is redelivered, or forgotten on
    /// the next connection.
    pub(crate) acks: AckBatch,
    /// Deliveries the server said were queued at authentication and not yet processed.
    pub(crate) backlog: u64,
    /// A group in which the server proposed something (a removal) that this device
    /// should commit once the delivery is stored.
    pub(crate) pending_proposal_group: Option<Vec<u8>>,
    /// Set while this device answers a request for history (`transfer.rs`), which may
    /// process deliveries, among them another request: that one waits its turn.
    pub(crate) answering_history: bool,
    /// See [`Client::take_warnings`].
    pub(crate) warnings: Warnings,
    /// What a running [`crate::Session`] needs from processing (`session/journal.rs`).
    pub(crate) live: crate::session::Live,
}

/// Warnings kept until the caller takes them: far more than one command meets, and a
/// bound for a program that never asks.
const WARNINGS_MAX: usize = 1024;

/// What the library noticed but did not fail for, until the caller takes it: past
/// [`WARNINGS_MAX`] warnings are counted, not kept.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    kept: Vec<String>,
    dropped: u64,
}

impl Warnings {
    pub(crate) fn push(&mut self, warning: String) {
        if self.kept.len() < WARNINGS_MAX {
            self.kept.push(warning);
        } else {
            self.dropped += 1;
        }
    }

    fn take(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.kept);
        if self.dropped > 0 {
            warnings.push(format!("{} more warnings were not kept", self.dropped));
            self.dropped = 0;
        }
        warnings
    }
}

impl Client {
    /// Enrolls a new device in `home` with a one-time code, and leaves it connected. The
    /// home is not encrypted (and says so once, the first time it is opened); see
    /// [`Client::enroll_with`].
    pub async fn enroll(
        home: &Path,
        server: &str,
        ca_pem: &Path,
        user: &str,
        code: &str,
    ) -> Result<Client, ClientError> {
        Self::enroll_with(home, server, ca_pem, user, code, None).await
    }

    /// Enrolls a new device in `home` with a one-time code, and leaves it connected. With a
    /// `secret`, the home is encrypted under it from the start: its device key and state
    /// are never written in the clear.
    pub async fn enroll_with(
        home: &Path,
        server: &str,
        ca_pem: &Path,
        user: &str,
        code: &str,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        let ca = std::path::absolute(ca_pem)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", ca_pem.display())))?;
        Self::enroll_trusting(home, server, Trust::CaFile(&ca), user, code, secret).await
    }

    /// [`Client::enroll_with`], trusting the relay by `trust`. The relay is checked (its
    /// chain, or an enrollment link's pin) before anything is written to the home; with a
    /// pin, the pinned certificate becomes the home's `ca.pem` once the relay accepted.
    ///
    /// The home's lock ([`HomeLock`]) is held for the whole enrollment, so that two
    /// processes enrolling one home cannot remove each other's pending key or database;
    /// one that finds it held waits as the commands do, then fails with
    /// [`ClientError::HomeInUse`] having touched nothing. It is released when this returns:
    /// whoever goes on with the device locks the home again (as [`crate::Session::open`]
    /// does). A failed enrollment in a home it found empty leaves it empty.
    pub(crate) async fn enroll_trusting(
        home: &Path,
        server: &str,
        trust: Trust<'_>,
        user: &str,
        code: &str,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        keyfile::private_dir(home)?;
        let lock = HomeLock::acquire(home, ENROLL_LOCK_WAIT).await?;
        let enrolled = Self::enroll_locked(home, server, trust, user, code, secret).await;
        if enrolled.is_err() && holds_only_lock(home) {
            // Its error matters more than a lock file left behind.
            let _ = lock.remove();
        }
        enrolled
    }

    /// [`Client::enroll_trusting`] once the home is locked.
    async fn enroll_locked(
        home: &Path,
        server: &str,
        trust: Trust<'_>,
        user: &str,
        code: &str,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        finish_interrupted_enrollment(home).await?;
        if let Some(secret) = secret {
            secret.check_new()?;
        }
        refuse_enrolled(home, secret).await?;
        let opened = Connection::open_trusting(server, trust).await?;
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let public = signing.verifying_key().to_bytes();
        let pending = Pending::store(home, &signing, secret).await?;
        let (connection, enrolled) = match enroll_device(opened, &signing, user, code).await {
            Ok(enrolled) => enrolled,
            Err(e) => {
                pending.discard(home).await;
                return Err(e);
            }
        };
        let ca = crate::enroll_link::home_ca(home, trust, &connection)?;
        let ca_text = ca.to_string_lossy();
        let state = pending
            .accept(
                home,
                &[
                    ("server", server.as_bytes()),
                    ("ca", ca_text.as_bytes()),
                    ("user", enrolled.user.as_bytes()),
                    ("device_id", enrolled.device_id.as_bytes()),
                    ("server_signature_key", &enrolled.server_signature_key[..]),
                ],
            )
            .await?;
        let mls = Mls::new(
            &signing.to_bytes(),
            &public,
            &enrolled.user,
            &enrolled.server_signature_key,
            HashMap::new(),
        );
        let mut client = Client {
            home: home.to_owned(),
            state,
            mls,
            saved: HashMap::new(),
            key: Zeroizing::new(signing.to_bytes()),
            user: enrolled.user,
            device_id: enrolled.device_id,
            server: server.to_owned(),
            ca,
            connection: Some(connection),
            acks: AckBatch::default(),
            backlog: 0,
            pending_proposal_group: None,
            answering_history: false,
            warnings: Warnings::default(),
            live: Default::default(),
        };
        client.refill_key_packages().await?;
        client.ask_history_after_enrollment().await;
        Ok(client)
    }

    /// Opens an enrolled device's state without connecting; an encrypted home fails with
    /// [`ClientError::Locked`] (see [`Client::open_with`]).
    pub async fn open(home: &Path) -> Result<Client, ClientError> {
        Self::open_with(home, None).await
    }

    /// Opens an enrolled device's state without connecting, unlocking it with `secret` if
    /// the home is encrypted; an unencrypted home needs none, and warns once that it is
    /// not encrypted.
    pub async fn open_with(home: &Path, secret: Option<&Secret>) -> Result<Client, ClientError> {
        finish_interrupted_enrollment(home).await?;
        let (state, key) = open_device(home, secret).await?;
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
        let mut warnings = Warnings::default();
        warn_if_unencrypted(home, &state, &mut warnings).await?;
        let public = SigningKey::from_bytes(&key).verifying_key().to_bytes();
        let saved = state.mls_values().await?;
        let mls = Mls::new(&key, &public, &user, &server_key, saved.clone());
        Ok(Client {
            home: home.to_owned(),
            state,
            mls,
            saved,
            key,
            user,
            device_id,
            server,
            ca,
            connection: None,
            acks: AckBatch::default(),
            backlog: 0,
            pending_proposal_group: None,
            answering_history: false,
            warnings,
            live: Default::default(),
        })
    }

    /// Encrypts the unencrypted home `home` under `secret`: every secret or content-bearing
    /// value of its state and its device key are sealed in one transaction (interrupted, the
    /// home stays as it was, or is finished when next opened), then the database is rebuilt
    /// so that no plaintext is left in its files, and the key file is overwritten and
    /// removed. The caller keeps other processes off the home (see [`crate::HomeLock`]).
    pub async fn encrypt_home(home: &Path, secret: &Secret) -> Result<(), ClientError> {
        finish_interrupted_enrollment(home).await?;
        let (state, key) = match open_device(home, None).await {
            Err(ClientError::Locked { .. }) => {
                return Err(ClientError::Usage(format!(
                    "{} is already encrypted; change its passphrase with `relais passphrase change`",
                    home.display()
                )));
            }
            opened => opened?,
        };
        let state = state.encrypt(secret, &key).await?;
        finish_encryption(home, &state, &key).await?;
        state.close().await;
        Ok(())
    }

    /// Protects the encrypted home `home`, unlocked by `current`, with `new` instead (a new
    /// passphrase, or a key file), wrapping its data key anew with today's Argon2id
    /// parameters; the old one opens nothing left in the home's files. The caller keeps
    /// other processes off the home.
    pub async fn change_home_secret(
        home: &Path,
        current: &Secret,
        new: &Secret,
    ) -> Result<(), ClientError> {
        let (state, _) = open_device(home, Some(current)).await?;
        let changed = match state.rewrap(new).await {
            Ok(()) => state.scrub().await,
            Err(e) => Err(e),
        };
        state.close().await;
        changed
    }

    /// What protects this device's home: a passphrase, a key file, or nothing.
    pub fn protection(&self) -> Option<SecretKind> {
        self.state.protection()
    }

    /// The device's secret key, for the tests that check it is nowhere on disk in the
    /// clear (`daemon/tests/relay/at_rest.rs`); nothing else has a use for it.
    #[doc(hidden)]
    pub fn secret_key_for_tests(&self) -> Zeroizing<[u8; 32]> {
        self.key.clone()
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// This device's Ed25519 key, which is also its MLS signature key.
    pub fn public_key(&self) -> &[u8] {
        self.mls.signer.public()
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The relay's address, `https://HOST:PORT`.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// How many deliveries could not be processed (undecryptable or malformed) since
    /// this device was enrolled; they were acknowledged so the queue moves on.
    pub async fn failed_deliveries(&self) -> Result<u64, ClientError> {
        self.state.failed_deliveries().await
    }

    /// Connects and authenticates, then tops up KeyPackages. An open connection is
    /// closed first.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if let Some(old) = self.connection.take() {
            old.close().await;
        }
        let opened = Connection::open(&self.server, &self.ca).await?;
        let mut connection = opened.connection;
        let signing = SigningKey::from_bytes(&self.key);
        let signature = signing.sign(&relais_protocol::auth::transcript(
            &opened.exporter,
            &opened.nonce,
        ));
        let Resp::Authenticated(result) = connection
            .call(Req::Authenticate(pb::Authenticate {
                public_key: signing.verifying_key().to_bytes().to_vec(),
                signature: signature.to_bytes().to_vec(),
            }))
            .await?
        else {
            return Err(ClientError::Protocol(
                "the relay answered Authenticate with something else; check the server address"
                    .into(),
            ));
        };
        if !result.server_signature_key.is_empty()
            && self.state.meta("server_signature_key").await?.as_deref()
                != Some(&result.server_signature_key[..])
        {
            // The relay's MLS key changed (a key rotation): groups created from now on
            // name the new one as external sender.
            self.state
                .set_meta("server_signature_key", &result.server_signature_key)
                .await?;
            self.mls.set_server_key(&result.server_signature_key);
        }
        self.backlog = result.queued;
        self.connection = Some(connection);
        self.acks = AckBatch::default();
        self.flush_outbox().await?;
        self.refill_key_packages().await?;
        // A sibling that cannot be added now (it has no KeyPackage yet, or the groups kept
        // changing) is tried again at the next connection; the caller hears of it.
        if let Err(e) = self.add_own_devices().await {
            if !matches!(e, ClientError::Server { .. } | ClientError::Unreachable(_)) {
                return Err(e);
            }
            self.warnings.push(format!(
                "could not add your other devices to every conversation yet: {e}"
            ));
        }
        // A departure whose answer was lost, or that a commit left out, goes again.
        if let Err(e) = self.resume_departures().await {
            if !matches!(e, ClientError::Server { .. } | ClientError::Protocol(_)) {
                return Err(e);
            }
            self.warnings.push(format!(
                "could not send your departure from a group yet: {e}"
            ));
        }
        // History asked for once, and answers owed to a new device of this user.
        self.resume_history_transfer().await?;
        Ok(())
    }

    /// What the library noticed but did not fail for, since the last call, for the caller
    /// to show: the library itself never prints.
    pub fn take_warnings(&mut self) -> Vec<String> {
        self.warnings.take()
    }

    /// Whether a connection is open (it may still turn out to be broken).
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Closes the connection, keeping the device open: what it left unacknowledged comes
    /// again on the next one.
    pub async fn disconnect(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
    }

    pub(crate) fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        self.connection.as_mut().ok_or(ClientError::NotConnected)
    }

    /// Sends a request and waits for its answer. When the transport fails, the
    /// connection is dropped: whether the relay got the request is unknown, so whatever
    /// the outbox holds must be resent (by `connect`) before anything else is sent.
    pub(crate) async fn call(&mut self, body: Req) -> Result<Resp, ClientError> {
        let result = self.connection()?.call(body).await;
        self.settle(result)
    }

    /// Drops the connection when `result` is a failure of the transport rather than the
    /// relay's answer (see [`Client::call`]).
    pub(crate) fn settle<T>(&mut self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result
            && !e.is_answer()
        {
            self.connection = None;
        }
        result
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
        if status.available < KEY_PACKAGES_REFILL_BELOW {
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
        self.save().await?;
        self.call(Req::PublishKeyPackages(pb::PublishKeyPackages {
            key_packages: fresh,
        }))
        .await?;
        Ok(())
    }

    /// Persists the MLS state.
    pub(crate) async fn save(&mut self) -> Result<(), ClientError> {
        let saving = self.begin_save().await?;
        self.finish_save(saving).await
    }

    /// Starts a transaction holding the MLS state's changes; the caller adds its own
    /// writes to `saving.tx`, then calls [`Client::finish_save`].
    pub(crate) async fn begin_save(&self) -> Result<Saving, ClientError> {
        let current = self.mls.values();
        let mut tx = self.state.begin().await?;
        State::save_mls(&mut tx, &self.saved, &current).await?;
        Ok(Saving { tx, current })
    }

    /// Commits a transaction from [`Client::begin_save`].
    pub(crate) async fn finish_save(&mut self, saving: Saving) -> Result<(), ClientError> {
        saving.tx.commit().await?;
        self.saved = saving.current;
        Ok(())
    }

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
        predicate: &(dyn Fn(&Conversation) -> bool + Sync),
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

/// Finishes an enrollment of an unencrypted home that stopped between the relay's
/// acceptance (recorded in the state) and the key's move into place.
async fn finish_interrupted_enrollment(home: &Path) -> Result<(), ClientError> {
    let (key_path, fresh_key_path) = (home.join("device.key"), home.join("device.key.new"));
    if key_path.exists() || !fresh_key_path.exists() || !home.join("state.db").exists() {
        return Ok(());
    }
    let state = State::open_with(&home.join("state.db"), None).await?;
    let accepted = state.meta("device_id").await?.is_some();
    state.close().await;
    if accepted {
        keyfile::install(&fresh_key_path, &key_path)?;
    }
    Ok(())
}

/// Whether `home` holds nothing but its lock file: all a failed enrollment in an empty
/// home leaves.
fn holds_only_lock(home: &Path) -> bool {
    std::fs::read_dir(home).is_ok_and(|entries| {
        entries
            .map(|entry| entry.map(|e| e.file_name() == "lock"))
            .all(|only_lock| only_lock.unwrap_or(false))
    })
}

/// Refuses a home that holds an enrolled device, and clears what an enrollment that never
/// got the relay's acceptance left (a state without a device id holds nothing of value).
async fn refuse_enrolled(home: &Path, secret: Option<&Secret>) -> Result<(), ClientError> {
    let database = home.join("state.db");
    let enrolled = if home.join("device.key").exists() {
        true
    } else if database.exists() {
        let state = State::open_with(&database, secret).await?;
        let accepted = state.meta("device_id").await?.is_some();
        state.close().await;
        if !accepted {
            remove_database(&database)?;
        }
        accepted
    } else {
        false
    };
    if enrolled {
        return Err(ClientError::Usage(format!(
            "{} already holds an enrolled device; use another --home",
            home.display()
        )));
    }
    Ok(())
}

/// A new device's key, stored before the relay learns it, so that an enrolled device can
/// never have lost its key.
enum Pending {
    /// In an unencrypted home: `device.key.new`, which becomes `device.key` once the relay
    /// accepted it.
    File(PathBuf),
    /// In an encrypted home: sealed in the state, which holds no device id until the relay
    /// accepted it.
    Sealed(State),
}

impl Pending {
    async fn store(
        home: &Path,
        signing: &SigningKey,
        secret: Option<&Secret>,
    ) -> Result<Pending, ClientError> {
        let Some(secret) = secret else {
            let fresh_key_path = home.join("device.key.new");
            let _ = std::fs::remove_file(&fresh_key_path);
            keyfile::write(&fresh_key_path, &signing.to_bytes())?;
            return Ok(Pending::File(fresh_key_path));
        };
        let state = State::open_with(&home.join("state.db"), None).await?;
        Ok(Pending::Sealed(
            state.encrypt(secret, &signing.to_bytes()).await?,
        ))
    }

    /// Forgets the key of an enrollment the relay refused.
    async fn discard(self, home: &Path) {
        match self {
            Pending::File(fresh_key_path) => {
                let _ = std::fs::remove_file(fresh_key_path);
            }
            Pending::Sealed(state) => {
                state.close().await;
                let _ = remove_database(&home.join("state.db"));
            }
        }
    }

    /// Records what the relay said in the state, in one transaction, then puts the key in
    /// place; returns the state.
    async fn accept(self, home: &Path, meta: &[(&str, &[u8])]) -> Result<State, ClientError> {
        let state = match &self {
            Pending::File(_) => State::open_with(&home.join("state.db"), None).await?,
            Pending::Sealed(state) => state.clone(),
        };
        let mut tx = state.begin().await?;
        for (key, value) in meta {
            State::put_meta(&mut tx, key, value).await?;
        }
        tx.commit().await?;
        if let Pending::File(fresh_key_path) = self {
            keyfile::install(&fresh_key_path, &home.join("device.key"))?;
        }
        Ok(state)
    }
}

/// Opens a home's state and device key: the key file of an unencrypted home, or the key
/// sealed in an encrypted one (whose interrupted encryption is finished first).
async fn open_device(
    home: &Path,
    secret: Option<&Secret>,
) -> Result<(State, Zeroizing<[u8; 32]>), ClientError> {
    let (key_path, database) = (home.join("device.key"), home.join("state.db"));
    if !key_path.exists() && !database.exists() {
        return Err(ClientError::NotEnrolled(home.to_owned()));
    }
    let state = State::open_with(&database, secret).await?;
    let key = match state.protection() {
        None if !key_path.exists() => Err(ClientError::NotEnrolled(home.to_owned())),
        None => keyfile::read(&key_path),
        Some(_) => match state.device_key().await {
            Ok(None) => Err(ClientError::NotEnrolled(home.to_owned())),
            Ok(Some(key)) if key_path.exists() => {
                finish_encryption(home, &state, &key).await.map(|()| key)
            }
            Ok(Some(key)) => Ok(key),
            Err(e) => Err(e),
        },
    };
    match key {
        Ok(key) => Ok((state, key)),
        Err(e) => {
            state.close().await;
            Err(e)
        }
    }
}

/// Finishes encrypting a home once its values are sealed: no plaintext left in the
/// database's files, and the old key file overwritten and removed. Also run on opening a
/// home whose encryption stopped after its transaction.
async fn finish_encryption(home: &Path, state: &State, key: &[u8; 32]) -> Result<(), ClientError> {
    let key_path = home.join("device.key");
    if *keyfile::read(&key_path)? != *key {
        return Err(ClientError::State(format!(
            "{} holds another key than this encrypted home's device key; move it out of {}",
            key_path.display(),
            home.display()
        )));
    }
    state.scrub().await?;
    keyfile::wipe(&key_path)
}

/// Warns once per home, the first time it is opened, that it is not encrypted.
async fn warn_if_unencrypted(
    home: &Path,
    state: &State,
    warnings: &mut Warnings,
) -> Result<(), ClientError> {
    if state.protection().is_none() && state.take_plaintext_warning().await? {
        warnings.push(format!(
            "{} is not encrypted: anyone who can read its files can read this device's key \
             and messages; protect it with `relais passphrase set` (said once)",
            home.display()
        ));
    }
    Ok(())
}

/// Removes a state database and the files SQLite keeps beside it.
fn remove_database(database: &Path) -> Result<(), ClientError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ClientError::State(format!(
                    "cannot remove {}: {e}",
                    Path::new(&path).display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Enrolls `signing`'s public key with the one-time `code` on an opened connection.
async fn enroll_device(
    opened: Opened,
    signing: &SigningKey,
    user: &str,
    code: &str,
) -> Result<(Connection, pb::EnrollResult), ClientError> {
    let mut connection = opened.connection;
    let signature = signing.sign(&relais_protocol::auth::transcript(
        &opened.exporter,
        &opened.nonce,
    ));
    match connection
        .call(Req::Enroll(pb::Enroll {
            user: user.to_owned(),
            code: code.to_owned(),
            public_key: signing.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        }))
        .await?
    {
        Resp::Enrolled(enrolled) => Ok((connection, enrolled)),
        _ => Err(ClientError::Protocol(
            "the relay answered Enroll with something else; check the server address".into(),
        )),
    }
}

/// A transaction that already holds the MLS state's changes.
pub(crate) struct Saving {
    pub(crate) tx: crate::state::Tx,
    current: HashMap<Vec<u8>, Vec<u8>>,
}

/// A commit built but not yet submitted.
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    pub(crate) group_id: Vec<u8>,
    pub(crate) message_id: Vec<u8>,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Vec<u8>,
}

/// What processing a delivery changes locally.
pub(crate) enum Effect {
    None,
    Conversation(Conversation),
    /// A conversation joined from a Welcome, with the new devices of known users in it.
    Joined {
        conversation: Conversation,
        lines: Vec<String>,
    },
    /// Membership changes a merged commit made, as history lines.
    Events {
        group_id: Vec<u8>,
        lines: Vec<String>,
    },
    /// A commit renamed the group: its conversation under the new name, and its lines.
    Renamed {
        conversation: Conversation,
        lines: Vec<String>,
    },
    /// What a message in this user's own group of devices stores (`transfer.rs`).
    Transfer(crate::transfer::Received),
    /// A text, in the group the MLS message authenticated (not the relay's routing data).
    Text {
        group_id: Vec<u8>,
        sender: String,
        message_id: Vec<u8>,
        sent_at_ms: i64,
        text: String,
    },
}

/// A new message id: a UUIDv7 (RFC 9562), 48 bits of Unix time in milliseconds and then
/// random bits. Ids that grow with time are added at the end of the relay's index of a
/// sender's ids (its duplicate check) rather than on a random page of it, so the relay
/// writes a few pages per commit instead of one per message.
pub fn new_message_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    id[..6].copy_from_slice(&crate::now_ms().to_be_bytes()[2..]);
    id[6] = 0x70 | (id[6] & 0x0f); // version 7
    id[8] = 0x80 | (id[8] & 0x3f); // variant 0b10
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_uuidv7_that_grow_with_time() {
        let before_ms = crate::now_ms();
        let first = new_message_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_message_id();
        let stamp_ms = first[..6].iter().fold(0, |ms, b| ms << 8 | i64::from(*b));
        let (version, variant) = (first[6] >> 4, first[8] >> 6);
        assert!((before_ms..before_ms + 1_000).contains(&stamp_ms));
        assert_eq!((version, variant), (7, 0b10));
        assert!(second > first, "a later id sorts after an earlier one");
        let (a, b) = (new_message_id(), new_message_id());
        assert_ne!(a[6..], b[6..], "the rest is random");
    }

    #[tokio::test]
    async fn an_enrollment_interrupted_after_acceptance_is_finished_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        assert!(matches!(
            Client::open(&home).await,
            Err(ClientError::NotEnrolled(_))
        ));
        keyfile::private_dir(&home).expect("home");
        keyfile::write(&home.join("device.key.new"), &[3; 32]).expect("key");
        let state = State::open(&home.join("state.db")).await.expect("state");
        for (key, value) in [
            ("server", &b"https://localhost:1"[..]),
            ("ca", b"/nonexistent/ca.pem"),
            ("user", b"alice@localhost"),
            ("device_id", b"0123456789abcdef"),
            ("server_signature_key", &[5; 32]),
        ] {
            state.set_meta(key, value).await.expect("meta");
        }
        state.close().await;

        let client = Client::open(&home).await.expect("open");
        assert_eq!(client.user(), "alice@localhost");
        assert_eq!(client.device_id(), "0123456789abcdef");
        assert!(home.join("device.key").exists() && !home.join("device.key.new").exists());
        let mut client = client;
        assert!(matches!(
            client.send("bob", "hi").await,
            Err(ClientError::NotConnected)
        ));
        client.close().await;
    }

    /// An encryption that stopped after its transaction committed, before the scrub and the
    /// key file's removal: the next opening finishes it.
    #[tokio::test]
    async fn an_encryption_interrupted_after_its_commit_is_finished_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        keyfile::private_dir(&home).expect("home");
        keyfile::write(&home.join("device.key"), &[0xC3; 32]).expect("key");
        let state = State::open(&home.join("state.db")).await.expect("state");
        for (key, value) in [
            ("server", &b"https://localhost:1"[..]),
            ("ca", b"/nonexistent/ca.pem"),
            ("user", b"alice-marker@localhost"),
            ("device_id", b"0123456789abcdef"),
            ("server_signature_key", &[5; 32]),
        ] {
            state.set_meta(key, value).await.expect("meta");
        }
        let passphrase = Secret::passphrase("a passphrase long enough");
        let sealed = state
            .encrypt(&passphrase, &[0xC3; 32])
            .await
            .expect("encrypt");
        sealed.close().await;
        assert!(home.join("device.key").exists(), "stopped before the end");

        let client = Client::open_with(&home, Some(&passphrase))
            .await
            .expect("open");
        assert_eq!(client.user(), "alice-marker@localhost");
        assert_eq!(*client.key, [0xC3; 32]);
        client.close().await;
        assert!(!home.join("device.key").exists(), "removed once finished");
        for entry in std::fs::read_dir(&home).expect("home").flatten() {
            let bytes = std::fs::read(entry.path()).expect("read");
            for needle in [&b"alice-marker"[..], &[0xC3; 32]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "plaintext left in {}",
                    entry.path().display()
                );
            }
        }
    }

    /// An enrollment into a home another holds fails as a command would, having written
    /// nothing; one that fails in an empty home (here, on its CA file) leaves it empty.
    #[tokio::test]
    async fn an_enrollment_holds_the_home_and_leaves_an_empty_one_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let names = || -> Vec<String> {
            std::fs::read_dir(&home)
                .expect("home")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        let ca = dir.path().join("missing-ca.pem");
        let enroll = || Client::enroll(&home, "https://127.0.0.1:1", &ca, "alice", "CODE");
        keyfile::private_dir(&home).expect("home");
        let held = HomeLock::acquire(&home, Duration::ZERO)
            .await
            .expect("lock");
        let refused = enroll().await.map(|_| ()).expect_err("in use");
        assert!(
            matches!(refused, ClientError::HomeInUse { pid: Some(pid), .. }
                if pid == std::process::id()),
            "{refused:?}"
        );
        assert_eq!(names(), ["lock"], "nothing but the holder's lock");
        drop(held);
        let failed = enroll().await.map(|_| ()).expect_err("no CA file");
        assert!(failed.to_string().contains("missing-ca.pem"), "{failed}");
        assert!(names().is_empty(), "left empty: {:?}", names());
    }

    #[test]
    fn warnings_are_bounded_and_taken_once() {
        let mut warnings = Warnings::default();
        for i in 0..WARNINGS_MAX + 3 {
            warnings.push(format!("warning {i}"));
        }
        let taken = warnings.take();
        assert_eq!(taken.len(), WARNINGS_MAX + 1);
        assert_eq!(taken[0], "warning 0");
        assert_eq!(taken[WARNINGS_MAX], "3 more warnings were not kept");
        assert!(warnings.take().is_empty());
    }
}
