//! One client connection: challenge, authentication, requests, and the delivery stream.
//!
//! Every frame is hostile until decoded; a bad frame gets an error with its stable code
//! and the connection goes on, except for frames over the size limit, which close it.
//! Deliveries are sent from storage first (catch-up, page by page, interleaved with the
//! client's requests), then live from the hub; a cursor keeps them in order and unique.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rand::RngCore;
use relais_protocol::frame::{self, FrameError};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};

use relais_core::{Refusal, RevokedBy};

use crate::admission::{Ticket, UNAUTHENTICATED_READ_BYTES_MAX};
use crate::hub::Registration;
use crate::metrics::{CloseReason, METRICS, RequestType};
use crate::requests;
use crate::shared::{ConnInfo, Shared};
use relais_store::Device;

mod output;

use output::{
    Answered, Pipelined, WRITE_TIMEOUT, reply, respond, respond_ready, send, stored_frame,
    write_pushes,
};

/// Deliveries read from storage per page during catch-up.
const CATCH_UP_PAGE: i64 = 256;
/// Protocol errors tolerated on one connection before it is closed.
const PROTOCOL_ERRORS_MAX: u32 = 64;
/// Submissions and acknowledgements one connection may have waiting for the writer; no
/// further frame is read from it until one is answered. Enough to fill a batch from a
/// busy device, few enough that one device cannot crowd the writer's queue.
const PIPELINE_MAX: usize = 64;
/// Longest wait before an account with an expiry is read again: an administrator on
/// another node sharing the database may have moved the expiry, and this one would not
/// hear of it otherwise.
const ACCOUNT_RECHECK_MAX: Duration = Duration::from_secs(3600);

/// An authenticated connection's state.
pub struct Session {
    pub device: Device,
    registration: Registration,
    /// Highest sequence sent on this connection.
    cursor: i64,
    catching_up: bool,
    bucket: TokenBucket,
}

/// Why the loop ended.
enum Close {
    Quietly,
    With(pb::Error),
}

/// Serves one WebSocket session; `ticket` is its share of the connection limits, given
/// back (in part at authentication) as the session goes.
pub async fn serve(mut ws: WebSocket, shared: Arc<Shared>, info: ConnInfo, ticket: Arc<Ticket>) {
    let mut nonce = [0u8; relais_protocol::auth::NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let challenge = frame::push(pb::push::Body::Challenge(pb::Challenge {
        nonce: nonce.to_vec(),
    }));
    METRICS.connections_opened.inc();
    METRICS.connections_open.inc();
    let close = if send(&mut ws, challenge.into()).await.is_err() {
        Close::Quietly
    } else {
        run(&mut ws, &shared, &info, &ticket, &nonce).await
    };
    METRICS.closed(close_reason(&close));
    METRICS.connections_open.dec();
    if let Close::With(reason) = close {
        let _ = send(&mut ws, frame::push(pb::push::Body::Closing(reason)).into()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(None))).await;
}

/// The bounded metrics label for why a connection ended.
fn close_reason(close: &Close) -> CloseReason {
    let Close::With(error) = close else {
        return CloseReason::Client;
    };
    match ErrorCode::try_from(error.code) {
        Ok(ErrorCode::ShuttingDown) => CloseReason::Shutdown,
        Ok(ErrorCode::DeviceRevoked) => CloseReason::Revoked,
        Ok(ErrorCode::AccountSuspended | ErrorCode::AccountExpired) => CloseReason::Suspended,
        Ok(ErrorCode::Replaced) => CloseReason::Replaced,
        Ok(ErrorCode::TooSlow) => CloseReason::TooSlow,
        Ok(ErrorCode::NotAuthenticated) => CloseReason::AuthTimeout,
        Ok(ErrorCode::FrameTooLarge) => CloseReason::FrameTooLarge,
        Ok(ErrorCode::StorageUnavailable) => CloseReason::StorageError,
        _ => CloseReason::ProtocolErrors,
    }
}

/// The connection's loop. An async function keeps room for its largest await in every
/// state, idle ones included, so the paths with large futures (authentication and the
/// other unpipelined requests, a catch-up page, the drain at shutdown, and the hand-over
/// of each submission or acknowledgement to the writer, one small allocation each) are
/// boxed while they run: `serve`'s future went from 6.5 to 3.3 KiB (measured). The writes
/// are not boxed: a short-lived allocation per answer left more memory resident, not less.
async fn run(
    ws: &mut WebSocket,
    shared: &Arc<Shared>,
    info: &ConnInfo,
    ticket: &Ticket,
    nonce: &[u8],
) -> Close {
    let mut session: Option<Session> = None;
    // Taken out of the session so the select below can borrow them beside it.
    let mut outbox: Option<tokio::sync::mpsc::Receiver<crate::hub::Push>> = None;
    let mut kick: Option<Arc<crate::hub::Kick>> = None;
    let mut wake: Option<Arc<tokio::sync::Notify>> = None;
    // Told when an administrator changes the account; and when to read it again.
    let mut account_changed: Option<Arc<tokio::sync::Notify>> = None;
    let mut account_check: Option<tokio::time::Instant> = None;
    let mut shutdown = shared.shutdown.clone();
    // Counted from the TCP accept: TLS and the upgrade are part of the time allowed.
    let auth_deadline =
        ticket.accepted + Duration::from_secs(shared.config.limits.auth_timeout_seconds);
    let mut errors = 0u32;
    let mut pipeline: FuturesOrdered<Pipelined> = FuturesOrdered::new();
    loop {
        let authenticated = session.is_some();
        let live = session.as_ref().is_some_and(|s| !s.catching_up);
        let catching_up = session.as_ref().is_some_and(|s| s.catching_up);
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                // Answer what the writer already has, so clients need not resend it.
                let drain = async {
                    while let Some(answered) = pipeline.next().await {
                        if respond(ws, &mut errors, answered).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(WRITE_TIMEOUT, Box::pin(drain)).await;
                return Close::With(Refusal::ShuttingDown.to_wire());
            }
            reason = kicked(&kick), if authenticated => return Close::With(reason),
            _ = tokio::time::sleep_until(auth_deadline), if !authenticated => {
                return Close::With(Refusal::AuthenticationDeadline.to_wire());
            }
            _ = until(account_check), if authenticated => {
                let Some(s) = session.as_mut() else { continue };
                match Box::pin(account_standing(shared, s)).await {
                    Ok(next) => account_check = next,
                    Err(close) => return close,
                }
            }
            _ = woken(&account_changed), if authenticated => {
                let Some(s) = session.as_mut() else { continue };
                match Box::pin(account_standing(shared, s)).await {
                    Ok(next) => account_check = next,
                    Err(close) => return close,
                }
            }
            answered = pipeline.next(), if !pipeline.is_empty() => {
                let Some(first) = answered else { continue };
                if let Err(close) = respond_ready(ws, &mut errors, first, &mut pipeline).await {
                    return close;
                }
                if errors > PROTOCOL_ERRORS_MAX {
                    return Close::With(Refusal::TooManyProtocolErrors.to_wire());
                }
            }
            _ = woken(&wake), if live => {
                // Another node (or this one, on PostgreSQL) stored messages for this
                // device: read them from storage after the cursor.
                if let Some(s) = session.as_mut() {
                    s.catching_up = true;
                }
            }
            push = next_push(&mut outbox), if live => {
                let Some(push) = push else { return Close::Quietly };
                let Some(s) = session.as_mut() else { continue };
                if write_pushes(ws, s, push, &mut outbox).await.is_err() {
                    return Close::Quietly;
                }
            }
            incoming = ws.recv(), if pipeline.len() < PIPELINE_MAX => {
                let bytes = match incoming {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(_))) => {
                        errors += 1;
                        if reply(ws, 0, Resp::Error(Refusal::MalformedFrame("frames must be binary protobuf envelopes".into()).to_wire())).await.is_err() {
                            return Close::Quietly;
                        }
                        continue;
                    }
                    Some(Err(_)) if ticket.exhausted() => {
                        return Close::With(Refusal::FrameTooLarge(format!("authenticate first: before authentication a connection may send {UNAUTHENTICATED_READ_BYTES_MAX} bytes in all")).to_wire());
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Close::Quietly,
                };
                match frame::decode_envelope(&bytes, shared.config.limits.frame_bytes_max) {
                    Err(e @ FrameError::TooLarge { .. }) => {
                        return Close::With(Refusal::from(&e).to_wire());
                    }
                    Err(e) => {
                        errors += 1;
                        METRICS.error(crate::metrics::ErrorKind::Protocol, crate::metrics::ErrorSource::Peer);
                        if reply(ws, 0, Resp::Error(Refusal::from(&e).to_wire())).await.is_err() {
                            return Close::Quietly;
                        }
                    }
                    Ok(envelope) => {
                        let Some(pb::envelope::Kind::Request(request)) = envelope.kind else {
                            errors += 1;
                            if reply(ws, 0, Resp::Error(Refusal::NotARequest.to_wire())).await.is_err() {
                                return Close::Quietly;
                            }
                            continue;
                        };
                        let id = request.id;
                        let kind = request.body.as_ref().map_or(RequestType::Unknown, request_type);
                        match (session.as_mut(), request.body) {
                            (Some(s), Some(body)) if requests::pipelined(&body) => {
                                let quiet = matches!(&body, Req::Acknowledge(ack) if ack.quiet);
                                let answered = move |response| Answered { id, kind, quiet, response };
                                let answer: Pipelined = match admit(s, &body) {
                                    Err(error) => Box::pin(std::future::ready(answered(Err(error)))),
                                    Ok(()) => match Box::pin(requests::enqueue(shared, &s.device, body)).await {
                                        Ok(answer) => Box::pin(async move { answered(answer.await) }),
                                        Err(error) => Box::pin(std::future::ready(answered(Err(error)))),
                                    },
                                };
                                pipeline.push_back(answer);
                            }
                            (_, body) => {
                                // Answers go out in request order: earlier pipelined ones first.
                                while let Some(answered) = pipeline.next().await {
                                    if let Err(close) = respond(ws, &mut errors, answered).await {
                                        return close;
                                    }
                                }
                                let response = match body {
                                    None => Err(Refusal::UnknownRequest.to_wire()),
                                    Some(body) => Box::pin(handle(shared, info, nonce, &mut session, body)).await,
                                };
                                if let Some(s) = session.as_mut() && kick.is_none() {
                                    ticket.authenticated();
                                    kick = Some(s.registration.kick.clone());
                                    wake = Some(s.registration.wake.clone());
                                    account_changed = Some(s.registration.account_changed.clone());
                                    account_check = next_account_check(&s.device, crate::now_ms());
                                    outbox = s.registration.outbox.take();
                                }
                                if let Err(close) = respond(ws, &mut errors, Answered::new(id, kind, response)).await {
                                    return close;
                                }
                                if session.as_ref().is_some_and(|s| s.device.revoked_at_ms.is_some()) {
                                    return Close::With(Refusal::DeviceRevoked(RevokedBy::Unknown).to_wire());
                                }
                            }
                        }
                    }
                }
                if errors > PROTOCOL_ERRORS_MAX {
                    return Close::With(Refusal::TooManyProtocolErrors.to_wire());
                }
            }
            _ = std::future::ready(()), if catching_up => {
                let Some(s) = session.as_mut() else { continue };
                if let Err(close) = Box::pin(catch_up_page(ws, shared, s, &mut outbox)).await {
                    return close;
                }
            }
        }
    }
}

async fn kicked(kick: &Option<Arc<crate::hub::Kick>>) -> pb::Error {
    match kick {
        Some(k) => k.kicked().await,
        None => std::future::pending().await,
    }
}

/// Waits until `at`, forever when there is none.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the device's account again (its expiry came, or an administrator changed it):
/// the connection ends as authentication would refuse it now, and otherwise returns when
/// to look again.
async fn account_standing(
    shared: &Shared,
    s: &mut Session,
) -> Result<Option<tokio::time::Instant>, Close> {
    let fresh = shared
        .store
        .device_by_key(&s.device.public_key)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a device's account");
            Close::With(
                Refusal::StorageUnavailable("storage unavailable; reconnect later").to_wire(),
            )
        })?;
    let now = crate::now_ms();
    let refusal = match &fresh {
        None => Some(Refusal::DeviceRevoked(RevokedBy::Unknown)),
        Some(device) => crate::directory::standing(device, now).err(),
    };
    if let Some(refusal) = refusal {
        tracing::info!(user = %s.device.user, device = %s.device.fingerprint, code = ?refusal.code(), "closing the connection of an account no longer active");
        return Err(Close::With(refusal.to_wire()));
    }
    if let Some(fresh) = fresh {
        s.device.account = fresh.account;
    }
    Ok(next_account_check(&s.device, now))
}

/// When to read an account with an expiry again: at the expiry, or after
/// `ACCOUNT_RECHECK_MAX` if that comes first; never for an account without one.
fn next_account_check(device: &Device, now_ms: i64) -> Option<tokio::time::Instant> {
    let at = device.account.expires_at_ms?;
    let left = Duration::from_millis(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0));
    Some(tokio::time::Instant::now() + left.min(ACCOUNT_RECHECK_MAX))
}

async fn woken(wake: &Option<Arc<tokio::sync::Notify>>) {
    match wake {
        Some(w) => w.notified().await,
        None => std::future::pending().await,
    }
}

async fn next_push(
    outbox: &mut Option<tokio::sync::mpsc::Receiver<crate::hub::Push>>,
) -> Option<crate::hub::Push> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends one page of the stored queue; switches to live mode when storage is drained.
async fn catch_up_page(
    ws: &mut WebSocket,
    shared: &Shared,
    s: &mut Session,
    outbox: &mut Option<tokio::sync::mpsc::Receiver<crate::hub::Push>>,
) -> Result<(), Close> {
    let page = shared
        .store
        .queue_page(s.device.id, s.cursor, CATCH_UP_PAGE)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a device queue");
            Close::With(
                Refusal::StorageUnavailable("storage unavailable; reconnect later").to_wire(),
            )
        })?;
    let short = (page.len() as i64) < CATCH_UP_PAGE;
    for message in page {
        s.cursor = message.seq;
        send(ws, stored_frame(&message))
            .await
            .map_err(|_| Close::Quietly)?;
        METRICS.deliveries_pushed.inc();
    }
    // Drain live pushes that arrived meanwhile: any beyond the cursor will be read from
    // storage by the next page, since the writer pushes only after commit.
    let mut newer = false;
    if let Some(rx) = outbox.as_mut() {
        while let Ok(push) = rx.try_recv() {
            newer |= push.seq > s.cursor;
        }
    }
    if short && !newer {
        s.catching_up = false;
    }
    Ok(())
}

async fn handle(
    shared: &Arc<Shared>,
    info: &ConnInfo,
    nonce: &[u8],
    session: &mut Option<Session>,
    body: Req,
) -> Result<Resp, pb::Error> {
    match (session.as_mut(), body) {
        (None, Req::Enroll(enroll)) => {
            let device = requests::enroll(shared, info, nonce, enroll).await?;
            let result = pb::EnrollResult {
                device_id: device.fingerprint.clone(),
                user: device.user.clone(),
                server_signature_key: shared.server_signature_key.clone(),
            };
            *session = Some(start_session(shared, device).await?);
            Ok(Resp::Enrolled(result))
        }
        (None, Req::Authenticate(auth)) => {
            let device = requests::authenticate(shared, info, nonce, auth).await?;
            let queued = shared
                .store
                .queue_len(device.id)
                .await
                .map_err(requests::storage)?;
            let result = pb::AuthenticateResult {
                device_id: device.fingerprint.clone(),
                user: device.user.clone(),
                queued: queued as u64,
                server_signature_key: shared.server_signature_key.clone(),
            };
            *session = Some(start_session(shared, device).await?);
            Ok(Resp::Authenticated(result))
        }
        (None, _) => Err(Refusal::NotAuthenticated.to_wire()),
        (Some(_), Req::Enroll(_) | Req::Authenticate(_)) => {
            Err(Refusal::AlreadyAuthenticated.to_wire())
        }
        (Some(s), body) => {
            admit(s, &body)?;
            requests::handle(shared, &s.device, body).await
        }
    }
}

/// Applies the device's message rate limit to submissions.
fn admit(s: &mut Session, body: &Req) -> Result<(), pb::Error> {
    let submission = matches!(body, Req::SubmitMessage(_) | Req::SubmitCommit(_));
    if submission && !s.bucket.take(Instant::now()) {
        METRICS.rate_limited.inc();
        return Err(Refusal::RateLimited(
            "too many messages from this device; slow down and retry".into(),
        )
        .to_wire());
    }
    Ok(())
}

/// Registers an authenticated device with the hub and starts its catch-up.
async fn start_session(shared: &Arc<Shared>, mut device: Device) -> Result<Session, pb::Error> {
    let registration = shared
        .hub
        .register(device.id, shared.config.limits.push_frames_max);
    // A revocation between the check and the registration would otherwise be missed.
    let fresh = shared
        .store
        .device_by_key(&device.public_key)
        .await
        .map_err(requests::storage)?;
    match fresh {
        Some(d) if d.revoked_at_ms.is_none() && d.account.active(crate::now_ms()) => {
            // The expiry the connection waits for is the latest.
            device.account = d.account;
        }
        _ => {
            return Err(Refusal::DeviceRevoked(RevokedBy::Unknown).to_wire());
        }
    }
    let _ = shared
        .store
        .device_connected(device.id, crate::now_ms())
        .await;
    tracing::info!(user = %device.user, device = %device.fingerprint, "device authenticated");
    let limits = &shared.config.limits;
    Ok(Session {
        device,
        registration,
        cursor: 0,
        catching_up: true,
        bucket: TokenBucket::new(limits.messages_per_second, limits.messages_burst),
    })
}

fn request_type(body: &Req) -> RequestType {
    match body {
        Req::Enroll(_) => RequestType::Enroll,
        Req::Authenticate(_) => RequestType::Authenticate,
        Req::PublishKeyPackages(_) => RequestType::PublishKeyPackages,
        Req::ClaimKeyPackages(_) => RequestType::ClaimKeyPackages,
        Req::CreateGroup(_) => RequestType::CreateGroup,
        Req::SubmitCommit(_) => RequestType::SubmitCommit,
        Req::SubmitMessage(_) => RequestType::SubmitMessage,
        Req::Acknowledge(_) => RequestType::Acknowledge,
        Req::KeyPackageStatus(_) => RequestType::KeyPackageStatus,
        Req::ListDevices(_) => RequestType::ListDevices,
        Req::RevokeDevice(_) => RequestType::RevokeDevice,
    }
}

/// Per-device submission rate: `rate` per second sustained, `burst` at once.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relais_store::{AccountState, DeviceId};

    fn device(expires_at_ms: Option<i64>) -> Device {
        Device {
            id: DeviceId(1),
            user: "alice@localhost".into(),
            public_key: vec![1; 32],
            fingerprint: "f".into(),
            enrolled_at_ms: 0,
            last_seen_at_ms: None,
            revoked_at_ms: None,
            account: AccountState {
                expires_at_ms,
                ..AccountState::default()
            },
        }
    }

    #[tokio::test]
    async fn accounts_are_read_again_at_their_expiry_or_within_the_hour() {
        let now_ms = 1_000_000;
        let cases = [
            (None, None),
            (Some(now_ms + 2_000), Some(Duration::from_secs(2))),
            (Some(now_ms - 5_000), Some(Duration::ZERO)),
            (Some(now_ms + 86_400_000), Some(ACCOUNT_RECHECK_MAX)),
        ];
        for (expires_at_ms, expected) in cases {
            let start = tokio::time::Instant::now();
            let at = next_account_check(&device(expires_at_ms), now_ms);
            let end = tokio::time::Instant::now();
            match (at, expected) {
                (None, None) => {}
                (Some(at), Some(wait)) => {
                    assert!(at >= start + wait && at <= end + wait, "{expires_at_ms:?}");
                }
                other => panic!("{expires_at_ms:?}: {other:?}"),
            }
        }
    }
}
