//! Request handlers: turn a decoded request into a response, mapping every failure to a
//! stable error code. Authentication happens here; MLS checks live in `delivery`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};

use crate::config::{Enrollment, Limits};
use crate::delivery::DsError;
use crate::directory;
use crate::directory::{ClaimLimiter, FailureLimiter};
use crate::metrics::{ErrorKind, ErrorSource, METRICS};
use crate::shared::{Accounts, ConnInfo, Services};
use relais_core::{Refusal, RevokedBy};
use relais_store::{AuditEvent, ClaimError, Device, EnrollError, StoreError};

/// Sequences one Acknowledge may carry.
const ACK_SEQUENCES_MAX: usize = 4096;
/// Message ids are client-chosen: long enough for 16 random bytes, short enough to index.
const MESSAGE_ID_BYTES_MAX: usize = 64;

/// What a device's requests reach: accounts, the relay's services, the limits, the rules of
/// linking devices, and the limiters of failed authentications and KeyPackage claims.
pub struct Relay {
    pub accounts: Arc<Accounts>,
    pub services: Arc<Services>,
    pub limits: Limits,
    /// Linking a device from another: whether, and within which bounds.
    pub enrollment: Enrollment,
    /// Held while a device's code is counted against the bounds and issued, so that
    /// devices asking at the same moment on this node are counted one after the other.
    pub issuing_codes: tokio::sync::Mutex<()>,
    pub limiter: FailureLimiter,
    pub claims: ClaimLimiter,
    /// The delivery service's MLS signature key, which an authenticated device is told.
    pub server_signature_key: Vec<u8>,
}

pub fn storage(e: StoreError) -> pb::Error {
    crate::metrics::METRICS.error(
        crate::metrics::ErrorKind::Storage,
        crate::metrics::ErrorSource::Storage,
    );
    tracing::error!(error = %e, "storage failure while serving a request");
    Refusal::StorageUnavailable("storage unavailable; retry later").to_wire()
}

impl From<DsError> for pb::Error {
    fn from(e: DsError) -> pb::Error {
        match e {
            DsError::Refused(refusal) => refused(refusal),
            DsError::Storage(e) => storage(e),
            DsError::Internal(detail) => {
                METRICS.error(ErrorKind::Internal, ErrorSource::Internal);
                tracing::error!(error = %detail, "delivery service failure");
                Refusal::Internal("the server could not complete this request; retry later")
                    .to_wire()
            }
        }
    }
}

/// The frame for a refusal of the delivery service, counted by whose fault it is.
fn refused(refusal: Refusal) -> pb::Error {
    let kind = match refusal {
        Refusal::InvalidMessage(_)
        | Refusal::InvalidCommit(_)
        | Refusal::InvalidKeyPackage(_)
        | Refusal::CredentialMismatch(_) => ErrorKind::Mls,
        _ => ErrorKind::Protocol,
    };
    METRICS.error(kind, ErrorSource::Peer);
    if let Refusal::RateLimited(_) = refusal {
        METRICS.rate_limited.inc();
    }
    refusal.to_wire()
}

fn rate_limited(message: &str) -> pb::Error {
    Refusal::RateLimited(message.to_owned()).to_wire()
}

/// Enrolls a device with a one-time code and the signed challenge.
///
/// Every attempt takes a slot of the failure limiter before the store is asked, so that
/// concurrent guesses are never evaluated beyond the limit; a success gives it back.
pub async fn enroll(
    relay: &Relay,
    info: &ConnInfo,
    nonce: &[u8],
    enroll: pb::Enroll,
) -> Result<Device, pb::Error> {
    let source = directory::Source::from(info.peer.ip());
    let user = relay.accounts.user_name(&enroll.user).ok();
    let transcript = relais_protocol::auth::transcript(&info.exporter, nonce);
    let signed = directory::verify_signature(&enroll.public_key, &transcript, &enroll.signature);
    let Some(reservation) =
        relay
            .limiter
            .try_reserve_enrollment(source, user.as_deref(), Instant::now())
    else {
        crate::metrics::METRICS.enrolled(crate::metrics::EnrollOutcome::RateLimited);
        return Err(rate_limited(
            "too many failed enrollments for this user or from this address; wait a minute",
        ));
    };
    // Refusals below keep the reservation: they count as failures.
    let Some(user) = user else {
        return Err(Refusal::InvalidEnrollmentCode.to_wire());
    };
    if !signed {
        return Err(Refusal::BadEnrollmentSignature.to_wire());
    }
    let code_hash = relay.accounts.code_hash(&enroll.code);
    let fingerprint = directory::fingerprint(&enroll.public_key);
    match relay
        .services
        .store
        .enroll(
            &user,
            &code_hash,
            &enroll.public_key,
            &fingerprint,
            crate::now_ms(),
        )
        .await
    {
        Ok(device) => {
            reservation.refund();
            enrolled(relay, info, &device).await;
            Ok(device)
        }
        Err(EnrollError::InvalidCode) => {
            invalid_code(relay, info, source, &user, reservation).await;
            Err(Refusal::InvalidEnrollmentCode.to_wire())
        }
        Err(EnrollError::KeyInUse) => {
            crate::metrics::METRICS.enrolled(crate::metrics::EnrollOutcome::Refused);
            Err(Refusal::AlreadyEnrolled.to_wire())
        }
        Err(EnrollError::Store(e)) => {
            reservation.refund();
            Err(storage(e))
        }
    }
}

/// Counts, logs and audits an enrolled device.
async fn enrolled(relay: &Relay, info: &ConnInfo, device: &Device) {
    crate::metrics::METRICS.enrolled(crate::metrics::EnrollOutcome::Ok);
    tracing::info!(user = %device.user, device = %device.fingerprint, "device enrolled");
    let subject = format!("{}/{}", device.user, device.fingerprint);
    relay
        .accounts
        .audit(AuditEvent {
            actor: &format!("address:{}", info.peer.ip()),
            action: "enroll",
            subject: &subject,
            outcome: "ok",
            detail: "",
        })
        .await;
}

/// Counts and logs a wrong enrollment code, and audits it once per source and window, so
/// that guessing cannot flood the audit log and its write path; the next entry says how
/// many were left out.
async fn invalid_code(
    relay: &Relay,
    info: &ConnInfo,
    source: directory::Source,
    user: &str,
    reservation: directory::Reservation<'_>,
) {
    crate::metrics::METRICS.enrolled(crate::metrics::EnrollOutcome::InvalidCode);
    tracing::warn!(peer = %info.peer.ip(), "enrollment refused: invalid code");
    let directory::AuditFailure::Write { unlogged } = reservation.failed(Instant::now()) else {
        return;
    };
    let detail = match unlogged {
        0 => "invalid, used or expired code".to_owned(),
        n => format!(
            "invalid, used or expired code; {n} further invalid codes from this address since \
             its previous entry"
        ),
    };
    relay
        .accounts
        .audit(AuditEvent {
            actor: &format!("address:{source}"),
            action: "enroll",
            subject: user,
            outcome: "refused",
            detail: &detail,
        })
        .await;
}

/// Authenticates an enrolled device by its signature over the channel-bound challenge.
///
/// The signature is checked first and an enrolled device that signed is never refused
/// by the failure limiter: only unknown keys and bad signatures count as failures, so
/// guessing from a shared address (a NAT, a load balancer) locks no device out.
pub async fn authenticate(
    relay: &Relay,
    info: &ConnInfo,
    nonce: &[u8],
    auth: pb::Authenticate,
) -> Result<Device, pb::Error> {
    let transcript = relais_protocol::auth::transcript(&info.exporter, nonce);
    let device = if directory::verify_signature(&auth.public_key, &transcript, &auth.signature) {
        relay
            .services
            .store
            .device_by_key(&auth.public_key)
            .await
            .map_err(storage)?
    } else {
        None
    };
    let Some(device) = device else {
        let ip = info.peer.ip();
        let source = directory::Source::from(ip);
        if !relay.limiter.authentication_failed(source, Instant::now()) {
            crate::metrics::METRICS.authenticated(crate::metrics::AuthOutcome::RateLimited);
            return Err(rate_limited(
                "too many failed authentications from this address; wait a minute",
            ));
        }
        crate::metrics::METRICS.authenticated(crate::metrics::AuthOutcome::Failed);
        tracing::warn!(peer = %ip, "authentication failed");
        return Err(Refusal::AuthenticationFailed.to_wire());
    };
    let Err(refusal) = directory::standing(&device, crate::now_ms()) else {
        crate::metrics::METRICS.authenticated(crate::metrics::AuthOutcome::Ok);
        return Ok(device);
    };
    crate::metrics::METRICS.authenticated(match refusal {
        Refusal::AccountSuspended => crate::metrics::AuthOutcome::Suspended,
        Refusal::AccountExpired => crate::metrics::AuthOutcome::Expired,
        _ => crate::metrics::AuthOutcome::Revoked,
    });
    if let directory::AuditFailure::Write { unlogged } =
        relay.limiter.device_refused(device.id, Instant::now())
    {
        let subject = format!("{}/{}", device.user, device.fingerprint);
        let detail = match unlogged {
            0 => refusal.to_string(),
            n => format!("{refusal} ({n} further refusals since this device's previous entry)"),
        };
        relay
            .accounts
            .audit(AuditEvent {
                actor: &format!("address:{}", info.peer.ip()),
                action: "authenticate",
                subject: &subject,
                outcome: "refused",
                detail: &detail,
            })
            .await;
    }
    Err(refusal.to_wire())
}

/// Serves a request of an authenticated device (routed `Serial` by
/// `relais_core::session::route`; the pipelined kinds come here only when served alone).
pub async fn handle(relay: &Relay, device: &Device, body: Req) -> Result<Resp, pb::Error> {
    match body {
        Req::Enroll(_) | Req::Authenticate(_) => Err(Refusal::AlreadyAuthenticated.to_wire()),
        Req::PublishKeyPackages(publish) => publish_key_packages(relay, device, publish).await,
        Req::ListDevices(_) => list_devices(relay, device).await,
        Req::RevokeDevice(revoke) => revoke_sibling(relay, device, &revoke.device_id).await,
        Req::IssueDeviceCode(_) => issue_device_code(relay, device).await,
        Req::KeyPackageStatus(_) => key_package_status(relay, device).await,
        Req::ClaimKeyPackages(claim) => claim_key_packages(relay, device, claim).await,
        Req::CreateGroup(create) => create_group(relay, device, create).await,
        Req::SubmitCommit(commit) => submit_commit(relay, device, commit).await,
        Req::SubmitMessage(_) | Req::Acknowledge(_) => enqueue(relay, device, body).await?.await,
    }
}

/// Stores a device's KeyPackages: one-time ones up to `limits.key_packages_max`, and one
/// last-resort one that replaces the previous.
async fn publish_key_packages(
    relay: &Relay,
    device: &Device,
    publish: pb::PublishKeyPackages,
) -> Result<Resp, pb::Error> {
    let limits = &relay.limits;
    relay.services.ds.count_publication(device)?;
    if publish.key_packages.len() as i64 > limits.key_packages_max + 1 {
        return Err(Refusal::LimitExceeded(format!(
            "at most {} KeyPackages per device",
            limits.key_packages_max
        ))
        .to_wire());
    }
    let mut one_time = Vec::new();
    let mut last_resort = None;
    for bytes in publish.key_packages {
        if relay.services.ds.validate_key_package(device, &bytes)? {
            last_resort = Some(bytes);
        } else {
            one_time.push(bytes);
        }
    }
    let available = relay
        .services
        .store
        .add_key_packages(
            device.id,
            &one_time,
            last_resort.as_deref(),
            limits.key_packages_max,
        )
        .await
        .map_err(storage)?
        .ok_or_else(|| {
            Refusal::LimitExceeded(format!(
                "a device may store at most {} one-time KeyPackages",
                limits.key_packages_max
            ))
            .to_wire()
        })?;
    Ok(Resp::KeyPackagesPublished(pb::PublishKeyPackagesResult {
        available,
    }))
}

/// The user's active devices, this one marked.
async fn list_devices(relay: &Relay, device: &Device) -> Result<Resp, pb::Error> {
    let devices = relay
        .services
        .store
        .list_devices(&device.user)
        .await
        .map_err(storage)?;
    Ok(Resp::Devices(pb::ListDevicesResult {
        devices: devices
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_none())
            .map(|d| pb::OwnDevice {
                this_device: d.id == device.id,
                device_id: d.fingerprint,
                public_key: d.public_key,
                enrolled_at_ms: d.enrolled_at_ms,
                last_seen_ms: d.last_seen_at_ms.unwrap_or(0),
            })
            .collect(),
    }))
}

/// How many one-time KeyPackages the device has left, and whether a last-resort one.
async fn key_package_status(relay: &Relay, device: &Device) -> Result<Resp, pb::Error> {
    let (available, has_last_resort) = relay
        .services
        .store
        .key_package_status(device.id)
        .await
        .map_err(storage)?;
    Ok(Resp::KeyPackageStatus(pb::KeyPackageStatusResult {
        available,
        has_last_resort,
    }))
}

/// Hands out one KeyPackage of every device of the named users, within the claim limits.
async fn claim_key_packages(
    relay: &Relay,
    device: &Device,
    claim: pb::ClaimKeyPackages,
) -> Result<Resp, pb::Error> {
    let limits = &relay.limits;
    if claim.users.len() > limits.claim_users_max {
        return Err(Refusal::LimitExceeded(format!(
            "at most {} users per claim",
            limits.claim_users_max
        ))
        .to_wire());
    }
    let mut users = Vec::with_capacity(claim.users.len());
    for user in &claim.users {
        let canonical = relay
            .accounts
            .user_name(user)
            .map_err(|e| Refusal::UnknownUser(e).to_wire())?;
        if !users.contains(&canonical) {
            users.push(canonical);
        }
    }
    // A device adds its own user's other devices to every group it makes; what it
    // takes from them its user could take anyway.
    let others: Vec<String> = users
        .iter()
        .filter(|u| **u != device.user)
        .cloned()
        .collect();
    if let Err(refused) = relay.claims.check(device.id, &others, Instant::now()) {
        crate::metrics::METRICS.rate_limited.inc();
        return Err(Refusal::RateLimited(refused).to_wire());
    }
    match relay
        .services
        .store
        .claim_key_packages(&users, device.id)
        .await
        .map_err(storage)?
    {
        Ok(claimed) => {
            let taken: Vec<String> = others
                .into_iter()
                .filter(|u| claimed.iter().any(|c| c.user == *u))
                .collect();
            relay.claims.claimed(device.id, &taken, Instant::now());
            Ok(Resp::KeyPackagesClaimed(pb::ClaimKeyPackagesResult {
                key_packages: claimed
                    .into_iter()
                    .map(|c| pb::ClaimedKeyPackage {
                        user: c.user,
                        device_id: c.fingerprint,
                        key_package: c.data,
                    })
                    .collect(),
            }))
        }
        Err(e @ ClaimError::UnknownUser(_)) => Err(Refusal::UnknownUser(e.to_string()).to_wire()),
        Err(e @ ClaimError::NoKeyPackage(_)) => Err(Refusal::NoKeyPackage(e.to_string()).to_wire()),
    }
}

/// Registers a group its creator made.
async fn create_group(
    relay: &Relay,
    device: &Device,
    create: pb::CreateGroup,
) -> Result<Resp, pb::Error> {
    let (group_id, epoch) = relay
        .services
        .ds
        .create_group(
            device,
            &create.group_info,
            &create.ratchet_tree,
            crate::now_ms(),
        )
        .await?;
    Ok(Resp::GroupCreated(pb::CreateGroupResult {
        group_id,
        epoch,
    }))
}

/// Verifies a commit and hands it to the writer to order.
async fn submit_commit(
    relay: &Relay,
    device: &Device,
    commit: pb::SubmitCommit,
) -> Result<Resp, pb::Error> {
    check_message_id(&commit.message_id)?;
    let welcome = (!commit.welcome.is_empty()).then(|| Bytes::from(commit.welcome));
    let accepted = relay
        .services
        .ds
        .submit_commit(
            device,
            commit.message_id,
            Bytes::from(commit.commit),
            welcome,
            crate::now_ms(),
        )
        .await?;
    Ok(submitted(accepted, 0))
}

/// Revokes another device of the requesting device's user, as `relaisd admin device
/// revoke` would, with this device as the audited actor.
async fn revoke_sibling(relay: &Relay, device: &Device, target: &str) -> Result<Resp, pb::Error> {
    let target = target.to_ascii_lowercase();
    let actor = format!("device:{}/{}", device.user, device.fingerprint);
    let subject = format!("{}/{target}", device.user);
    if target == device.fingerprint {
        return Err(Refusal::BadRequest("a device cannot revoke itself; revoke it from another of your devices, or ask an administrator".into()).to_wire());
    }
    let revoked = relay
        .services
        .store
        .revoke_device(&device.user, &target, crate::now_ms())
        .await
        .map_err(storage)?;
    let Some(revoked) = revoked else {
        relay
            .accounts
            .audit(AuditEvent {
                actor: &actor,
                action: "device_revoke",
                subject: &subject,
                outcome: "refused",
                detail: "no such device",
            })
            .await;
        return Err(Refusal::UnknownDevice(format!(
            "you have no active device {target}; list yours with `relais devices`"
        ))
        .to_wire());
    };
    let cut = relay.services.cut_off(&revoked, RevokedBy::Sibling).await;
    let outcome = if cut.is_ok() { "ok" } else { "failed" };
    relay
        .accounts
        .audit(AuditEvent {
            actor: &actor,
            action: "device_revoke",
            subject: &subject,
            outcome,
            detail: "by a sibling device",
        })
        .await;
    cut.map_err(|e| {
        tracing::error!(error = %e, "revoking a device for its sibling");
        Refusal::StorageUnavailable(
            "the device is revoked, but its groups could not all be told; it stays cut off",
        )
        .to_wire()
    })?;
    Ok(Resp::DeviceRevoked(pb::RevokeDeviceResult {}))
}

/// Issues an enrollment code for a new device of the requesting device's user, as
/// `relaisd admin code issue` would, with this device as the audited actor; the client puts
/// it in an enrollment link. A code is a credential for the account, so the device's
/// standing is read again from storage rather than trusted from its authentication, both
/// before the code is issued and after: a device revoked, or an account suspended or
/// expired, while the connection was still open (the cut-off in flight, or made on another
/// node) gets no code, and one issued as it happened is cancelled. Within the user's waiting
/// codes and active devices, counted and issued one request at a time on this node; only
/// devices of one user asking at the same moment through different nodes (PostgreSQL) may
/// pass the bounds together.
async fn issue_device_code(relay: &Relay, device: &Device) -> Result<Resp, pb::Error> {
    let rules = &relay.enrollment;
    if !rules.device_linking {
        return Err(Refusal::DeviceLinkingDisabled.to_wire());
    }
    let _one_at_a_time = relay.issuing_codes.lock().await;
    let now = crate::now_ms();
    current_standing(relay, device, now).await?;
    within_link_bounds(relay, device, now).await?;
    let code = directory::generate_code();
    let ttl_ms = i64::try_from(rules.device_link_code_ttl_seconds.saturating_mul(1000))
        .unwrap_or(i64::MAX / 2);
    let expires_at_ms = now.saturating_add(ttl_ms);
    let hash = relay.accounts.code_hash(&code);
    let store = &relay.services.store;
    // A user deleted since has no row to attach a code to.
    if !store
        .issue_code(&device.user, &hash, now, expires_at_ms)
        .await
        .map_err(storage)?
    {
        return Err(Refusal::DeviceRevoked(RevokedBy::AccountDeleted).to_wire());
    }
    if let Err(refused) = current_standing(relay, device, now).await {
        withdraw_codes_issued_at(relay, device, now).await;
        return Err(refused);
    }
    relay
        .accounts
        .audit(AuditEvent {
            actor: &device_actor(device),
            action: "code_issue",
            subject: &device.user,
            outcome: "ok",
            detail: "by a device of the user, to link a new one",
        })
        .await;
    Ok(Resp::DeviceCodeIssued(pb::IssueDeviceCodeResult {
        code,
        user: device.user.clone(),
        expires_at_ms,
    }))
}

/// How the audit log names a device acting for its user.
fn device_actor(device: &Device) -> String {
    format!("device:{}/{}", device.user, device.fingerprint)
}

/// Refuses a device whose standing storage no longer grants (revoked, its account deleted,
/// suspended or expired), as authentication would now, and tells its connection to read
/// its account again, which then closes; the refusal is audited.
async fn current_standing(relay: &Relay, device: &Device, now: i64) -> Result<(), pb::Error> {
    let fresh = relay
        .services
        .store
        .device_by_key(&device.public_key)
        .await
        .map_err(storage)?;
    let refusal = match &fresh {
        None => Refusal::DeviceRevoked(RevokedBy::Unknown),
        Some(fresh) => match directory::standing(fresh, now) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        },
    };
    relay.services.hub.account_changed(device.id);
    tracing::info!(user = %device.user, device = %device.fingerprint, code = ?refusal.code(), "refused an enrollment code to a device no longer in standing");
    relay
        .accounts
        .audit(AuditEvent {
            actor: &device_actor(device),
            action: "code_issue",
            subject: &device.user,
            outcome: "refused",
            detail: &refusal.to_string(),
        })
        .await;
    Err(refusal.to_wire())
}

/// Refuses a code past the user's waiting codes or active devices.
async fn within_link_bounds(relay: &Relay, device: &Device, now: i64) -> Result<(), pb::Error> {
    let rules = &relay.enrollment;
    let store = &relay.services.store;
    let waiting = store
        .pending_codes(Some(&device.user), now)
        .await
        .map_err(storage)?
        .len();
    if waiting >= rules.device_link_codes_max as usize {
        return Err(Refusal::LimitExceeded(format!(
            "you already have {waiting} enrollment codes waiting, the most this relay allows; \
             enroll a device with one of them, or wait for them to expire"
        ))
        .to_wire());
    }
    let devices = store.list_devices(&device.user).await.map_err(storage)?;
    let active = devices.iter().filter(|d| d.revoked_at_ms.is_none()).count();
    if active >= rules.device_link_devices_max as usize {
        return Err(Refusal::LimitExceeded(format!(
            "you have {active} devices, the most a device may link; revoke one you no longer \
             use (`relais devices revoke`), or ask an administrator for an enrollment code"
        ))
        .to_wire());
    }
    Ok(())
}

/// Cancels the user's waiting codes issued at `now`: the one just issued to a device whose
/// standing ended meanwhile (and, should another have been issued in the same millisecond,
/// that one too: an operator issues it again, where a code left to a revoked device could
/// enroll a stranger's).
async fn withdraw_codes_issued_at(relay: &Relay, device: &Device, now: i64) {
    let store = &relay.services.store;
    let withdrawn = async {
        for code in store.pending_codes(Some(&device.user), now).await? {
            if code.created_at_ms == now {
                store.cancel_code(&device.user, code.id).await?;
            }
        }
        Ok::<(), StoreError>(())
    };
    if let Err(e) = withdrawn.await {
        tracing::error!(error = %e, user = %device.user, "cannot cancel an enrollment code issued to a device no longer in standing; cancel it with `relaisd admin code list` and `code cancel`");
    }
}

/// A response the storage writer has yet to make durable.
pub type Answer = Pin<Box<dyn Future<Output = Result<Resp, pb::Error>> + Send>>;

/// Checks a pipelined request and hands it to the writer; the answer comes later.
pub async fn enqueue(relay: &Relay, device: &Device, body: Req) -> Result<Answer, pb::Error> {
    let limits = &relay.limits;
    match body {
        Req::SubmitMessage(message) => {
            check_message_id(&message.message_id)?;
            if message.mls_message.len() > limits.message_bytes_max {
                return Err(Refusal::LimitExceeded(format!(
                    "application messages are limited to {} bytes",
                    limits.message_bytes_max
                ))
                .to_wire());
            }
            let request = relay.services.ds.prepare_message(
                device,
                message.message_id,
                Bytes::from(message.mls_message),
                crate::now_ms(),
            )?;
            let answer = relay.services.ds.enqueue_message(request).await?;
            Ok(Box::pin(async move {
                let stored = answer.await?;
                Ok(submitted(stored.accepted, stored.recipients_skipped))
            }))
        }
        Req::Acknowledge(ack) => {
            if ack.sequences.len() > ACK_SEQUENCES_MAX {
                return Err(Refusal::LimitExceeded(format!(
                    "acknowledge at most {ACK_SEQUENCES_MAX} sequences at once"
                ))
                .to_wire());
            }
            let seqs = ack
                .sequences
                .into_iter()
                .filter_map(|s| i64::try_from(s).ok())
                .collect();
            let answer = relay
                .services
                .store
                .enqueue_acknowledge(device.id, seqs)
                .await
                .map_err(storage)?;
            Ok(Box::pin(async move {
                let removed = answer.await.map_err(storage)?;
                Ok(Resp::Acknowledged(pb::AcknowledgeResult { removed }))
            }))
        }
        _ => Err(Refusal::Internal("internal error: this request cannot be pipelined").to_wire()),
    }
}

fn check_message_id(id: &[u8]) -> Result<(), pb::Error> {
    if id.is_empty() || id.len() > MESSAGE_ID_BYTES_MAX {
        return Err(Refusal::BadRequest(format!(
            "message_id must be 1 to {MESSAGE_ID_BYTES_MAX} bytes"
        ))
        .to_wire());
    }
    Ok(())
}

/// The answer to a stored submission; `recipients_skipped` is 0 for commits, which are
/// queued for everyone.
fn submitted(accepted: relais_store::Accepted, recipients_skipped: u32) -> Resp {
    Resp::Submitted(pb::SubmitResult {
        sequence: accepted.seq.max(0) as u64,
        epoch: accepted.epoch,
        duplicate: accepted.duplicate,
        recipients_skipped,
    })
}
