//! What the relay's parts share while it serves: the configuration, storage, the delivery
//! service, the hub of online devices, the keys and the limiters, and the few actions that
//! need several of them (revoking a device, expiring old messages). It imports none of the
//! parts that use it (server, connection, requests, admin, metrics listener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use relais_core::{Refusal, RevokedBy};
use relais_store::{Device, Store, StoreError};
use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::DeliveryService;
use crate::directory::{ClaimLimiter, FailureLimiter};
use crate::hub::Hub;
use crate::keys::{KeySource, ServerKeys};

/// Message ids are remembered this much longer than messages, so a late resubmission is
/// still recognised after the original expired (D6).
const SUBMISSION_IDS_EXTRA_DAYS: i64 = 30;

/// Everything connections share.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub ds: DeliveryService,
    pub hub: Arc<Hub>,
    pub keys: ServerKeys,
    /// Where the keys came from; the TLS key is read again from there on SIGHUP.
    pub key_source: KeySource,
    pub server_signature_key: Vec<u8>,
    pub limiter: FailureLimiter,
    pub claims: ClaimLimiter,
    pub shutdown: watch::Receiver<bool>,
    pub ready: AtomicBool,
    pub started: std::time::Instant,
    /// When the client certificate expires (Unix seconds, 0 when unknown), for the
    /// metrics; updated when the certificate is reloaded.
    pub certificate_expiry: AtomicI64,
    /// Whether the key source answered the last time it was asked: at start (or the
    /// daemon would not be serving) and at each SIGHUP reload since.
    pub key_provider_up: AtomicBool,
}

/// What the TLS layer knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// TLS exporter keying material for channel binding.
    pub exporter: Arc<[u8]>,
}

impl Shared {
    /// When the certificate served to clients expires, in Unix seconds.
    pub fn certificate_expiry(&self) -> Option<i64> {
        Some(self.certificate_expiry.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    /// Deletes messages older than the retention period, and message ids older than that
    /// plus a margin; returns how many messages expired.
    pub async fn expire_now(&self) -> Result<u64, StoreError> {
        let day_ms = 86_400_000i64;
        let now = crate::now_ms();
        let days = i64::from(self.config.retention.days);
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
