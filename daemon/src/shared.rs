//! What the relay's parts share while it serves, in three small contexts that the server
//! assembles and hands out, each part taking only those it uses:
//! - [`Health`]: whether the relay serves and what the probes and metrics report of it,
//!   with the chain it serves (the metrics listener, the HTTP probes, the TLS reload, the
//!   admin socket's status and enrollment links);
//! - [`Accounts`]: naming users, hashing enrollment codes and writing the audit log, the
//!   only work that needs the code secret (requests and the admin socket);
//! - [`Services`]: storage, the delivery service and the hub, and the actions that need
//!   all three: cutting a revoked device off, expiring old messages.
//!
//! It imports none of the parts that use it (server, connection, requests, admin, metrics
//! listener).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use relais_core::{Refusal, RevokedBy};
use relais_store::{AuditEvent, AuditKey, Device, Store, StoreError};
use zeroize::Zeroizing;

use crate::config::Users;
use crate::delivery::DeliveryService;
use crate::directory;
use crate::hub::Hub;
use crate::keys::Locked;
use crate::tls::{ChainPin, ServedChain};

/// Message ids are remembered this much longer than messages, so a late resubmission is
/// still recognised after the original expired (D6).
const SUBMISSION_IDS_EXTRA_DAYS: i64 = 30;

/// Whether the relay serves, and what its probes, metrics and status report of it.
pub struct Health {
    ready: AtomicBool,
    started: Instant,
    /// When the client certificate expires (Unix seconds, 0 when unknown); updated when
    /// the certificate is reloaded.
    certificate_expiry: AtomicI64,
    /// The pin of the chain served to clients, which enrollment links carry; updated with
    /// the expiry. Kept here because the sandbox may hide the chain's file once serving.
    chain_pin: RwLock<Option<ChainPin>>,
    /// Whether the key source answered the last time it was asked: at start (or the
    /// daemon would not be serving) and at each SIGHUP reload since.
    key_provider_up: AtomicBool,
}

impl Health {
    /// A relay that is starting with `served`: not ready yet, its key source just answered.
    pub fn starting(served: ServedChain) -> Health {
        Health {
            ready: AtomicBool::new(false),
            started: Instant::now(),
            certificate_expiry: AtomicI64::new(served.expiry.unwrap_or(0)),
            chain_pin: RwLock::new(served.pin),
            key_provider_up: AtomicBool::new(true),
        }
    }

    /// Whether new connections are served: from the end of start-up to the drain.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the certificate served to clients expires, in Unix seconds.
    pub fn certificate_expiry(&self) -> Option<i64> {
        Some(self.certificate_expiry.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    /// The pin of the chain served to clients (`relaisd admin status`, enrollment links).
    pub fn chain_pin(&self) -> Option<ChainPin> {
        // A poisoned lock only means a panic elsewhere while holding it; the value inside
        // is a whole `Option`, never half-written.
        *self
            .chain_pin
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A certificate was reloaded from the key source, which therefore answered, and is
    /// served from now on.
    pub fn certificate_reloaded(&self, served: ServedChain) {
        self.certificate_expiry
            .store(served.expiry.unwrap_or(0), Ordering::Relaxed);
        *self
            .chain_pin
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = served.pin;
        self.key_provider_up.store(true, Ordering::Relaxed);
    }

    pub fn key_provider_up(&self) -> bool {
        self.key_provider_up.load(Ordering::Relaxed)
    }

    /// The key source failed to give the TLS key on a reload.
    pub fn key_provider_failed(&self) {
        self.key_provider_up.store(false, Ordering::Relaxed);
    }
}

/// The relay's accounts as requests and operators name them: which names it serves, the
/// secret its enrollment codes are hashed under, and the audit log keyed by that secret.
pub struct Accounts {
    domain: String,
    users: Users,
    store: Store,
    /// HMAC key for enrollment codes, and the root of the audit log's key.
    code_secret: Locked<Zeroizing<[u8; 32]>>,
}

impl Accounts {
    pub fn new(
        domain: String,
        users: Users,
        store: Store,
        code_secret: Locked<Zeroizing<[u8; 32]>>,
    ) -> Accounts {
        Accounts {
            domain,
            users,
            store,
            code_secret,
        }
    }

    /// The domain the relay serves.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `name` or `name@domain` as the directory stores it, or why it cannot be a user here.
    pub fn user_name(&self, input: &str) -> Result<String, String> {
        directory::canonical_user(input, &self.domain, &self.users)
    }

    /// How an enrollment code is stored and looked up.
    pub fn code_hash(&self, code: &str) -> Vec<u8> {
        directory::hash_code(self.code_secret.as_ref(), code)
    }

    /// The audit log's key. Derived at each use, so it lives no longer than the work, beside
    /// the sealed secret it comes from.
    pub fn audit_key(&self) -> AuditKey {
        AuditKey::derive(self.code_secret.as_ref())
    }

    /// Records an audit entry; a failure to store it is logged, never returned: the action
    /// it records has already happened.
    pub async fn audit(&self, event: AuditEvent<'_>) {
        crate::audit::record(&self.store, &self.audit_key(), event).await;
    }
}

/// Storage, the delivery service and the hub of online devices.
pub struct Services {
    pub store: Store,
    pub ds: DeliveryService,
    pub hub: Arc<Hub>,
}

impl Services {
    /// Deletes messages older than `retention_days`, and message ids older than that plus
    /// a margin; returns how many messages expired.
    pub async fn expire(&self, retention_days: u32) -> Result<u64, StoreError> {
        let day_ms = 86_400_000i64;
        let now = crate::now_ms();
        let days = i64::from(retention_days);
        self.store
            .expire(
                now - days * day_ms,
                now - (days + SUBMISSION_IDS_EXTRA_DAYS) * day_ms,
            )
            .await
    }

    /// Revokes a device's access everywhere: closes its connection, drops its queue and
    /// memberships, and proposes its removal from its groups (D2).
    pub async fn cut_off(&self, device: &Device, by: RevokedBy) -> Result<(), StoreError> {
        crate::metrics::METRICS.revocations.inc();
        self.hub
            .disconnect(device.id, Refusal::DeviceRevoked(by).to_wire());
        let groups = self.store.groups_of(device.id).await?;
        self.store.forget_device(device.id).await?;
        for group in groups {
            if let Err(e) = self.ds.propose_removals(&group, crate::now_ms()).await {
                tracing::warn!(error = %e, "cannot propose the removal of a revoked device");
            }
        }
        tracing::info!(user = %device.user, device = %device.fingerprint, "device cut off");
        Ok(())
    }
}

/// What the TLS layer knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// TLS exporter keying material for channel binding.
    pub exporter: Arc<[u8]>,
}
