//! One client connection's I/O: the WebSocket, the hub's pushes and wake-ups, storage's
//! pages, the writer's answers. What each frame calls for, the authentication deadline,
//! the submission rate, the protocol-error count and the delivery cursor are decided by
//! `relais_core::session`; this module waits on all of them at once and carries out what
//! it decides.
//!
//! Every frame is hostile until decoded; a bad frame gets an error with its stable code
//! and the connection goes on, except for frames over the size limit, which close it.
//! Deliveries are sent from storage first (catch-up, page by page, interleaved with the
//! client's requests), then live from the hub; the cursor keeps them in order and unique.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rand::RngCore;
use relais_core::session::{
    self, Incoming, Limits, PIPELINE_MAX, RequestKind, Route, Session, Stream,
};
use relais_core::{Refusal, RevokedBy};
use relais_protocol::frame;
use relais_protocol::pb::{self, ErrorCode, request::Body as Req, response::Body as Resp};
use tokio::sync::watch;

use crate::admission::{Ticket, UNAUTHENTICATED_READ_BYTES_MAX};
use crate::hub::{Kick, Push, Registration};
use crate::metrics::{CloseReason, ErrorKind, ErrorSource, METRICS, RequestType};
use crate::requests::{self, Relay};
use crate::shared::ConnInfo;
use relais_store::Device;

mod output;

use output::{
    Answered, Pipelined, WRITE_TIMEOUT, reply, respond, respond_ready, send, stored_frame,
    write_pushes,
};

/// Deliveries read from storage per page during catch-up.
const CATCH_UP_PAGE: i64 = 256;

/// The device an authenticated connection serves, and its place in the hub.
struct Online {
    device: Device,
    /// Kept for its drop, which takes the device out of the hub.
    _registration: Registration,
}

/// Why the loop ended.
enum Close {
    Quietly,
    With(pb::Error),
}

/// What the loop waits on besides the socket, each there once the device is online.
#[derive(Default)]
struct Signals {
    /// The hub's live pushes for this device.
    outbox: Option<tokio::sync::mpsc::Receiver<Push>>,
    /// Revocation, replacement or shutdown of this device's connection.
    kick: Option<Arc<Kick>>,
    /// Storage has news for this device (PostgreSQL, another node).
    wake: Option<Arc<tokio::sync::Notify>>,
    /// An administrator changed the account.
    account_changed: Option<Arc<tokio::sync::Notify>>,
    /// When to read the account again (its expiry).
    account_check: Option<tokio::time::Instant>,
}

/// Serves one WebSocket session; `ticket` is its share of the connection limits, given
/// back (in part at authentication) as the session goes.
pub async fn serve(
    mut ws: WebSocket,
    relay: Arc<Relay>,
    shutdown: watch::Receiver<bool>,
    info: ConnInfo,
    ticket: Arc<Ticket>,
) {
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
        run(&mut ws, &relay, shutdown, &info, &ticket, &nonce).await
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
/// boxed while they run, which halves what every idle connection holds. The writes are not
/// boxed: a short-lived allocation per answer left more memory resident, not less.
async fn run(
    ws: &mut WebSocket,
    relay: &Relay,
    mut shutdown: watch::Receiver<bool>,
    info: &ConnInfo,
    ticket: &Ticket,
    nonce: &[u8],
) -> Close {
    let limits = &relay.limits;
    let mut session = Session::new(
        Limits {
            frame_bytes_max: limits.frame_bytes_max,
            // Counted from the TCP accept: TLS and the upgrade are part of the time allowed.
            authentication_time: Duration::from_secs(limits.auth_timeout_seconds),
            messages_per_second: limits.messages_per_second,
            messages_burst: limits.messages_burst,
        },
        ticket.accepted.into_std(),
    );
    let mut online: Option<Online> = None;
    let mut signals = Signals::default();
    let mut pipeline: FuturesOrdered<Pipelined> = FuturesOrdered::new();
    loop {
        let authenticated = session.is_authenticated();
        let stream = session.stream();
        let deadline = session.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.changed() => return Box::pin(drain(ws, &mut session, &mut pipeline)).await,
            reason = kicked(&signals.kick), if authenticated => return Close::With(reason),
            _ = until(deadline), if !authenticated => {
                return Close::With(Refusal::AuthenticationDeadline.to_wire());
            }
            _ = until(signals.account_check), if authenticated => {
                if let Err(close) = Box::pin(account_standing(relay, &mut online, &mut signals)).await {
                    return close;
                }
            }
            _ = woken(&signals.account_changed), if authenticated => {
                if let Err(close) = Box::pin(account_standing(relay, &mut online, &mut signals)).await {
                    return close;
                }
            }
            answered = pipeline.next(), if !pipeline.is_empty() => {
                let Some(first) = answered else { continue };
                if let Err(close) = respond_ready(ws, &mut session, first, &mut pipeline).await {
                    return close;
                }
            }
            _ = woken(&signals.wake), if stream == Stream::Live => session.woken(),
            push = next_push(&mut signals.outbox), if stream == Stream::Live => {
                let Some(push) = push else { return Close::Quietly };
                if write_pushes(ws, &mut session, push, &mut signals.outbox).await.is_err() {
                    return Close::Quietly;
                }
            }
            incoming = ws.recv(), if pipeline.len() < PIPELINE_MAX => {
                let incoming = match incoming {
                    Some(Ok(Message::Binary(bytes))) => session.on_frame(&bytes, Instant::now()),
                    Some(Ok(Message::Text(_))) => session.on_text(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(_)) if ticket.exhausted() => {
                        return Close::With(Refusal::FrameTooLarge(format!("authenticate first: before authentication a connection may send {UNAUTHENTICATED_READ_BYTES_MAX} bytes in all")).to_wire());
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Close::Quietly,
                };
                let served = match incoming {
                    Incoming::Close(reason) => return Close::With(reason.to_wire()),
                    Incoming::Error(refusal) => {
                        METRICS.error(ErrorKind::Protocol, ErrorSource::Peer);
                        reply(ws, 0, Resp::Error(refusal.to_wire())).await.map_err(|()| Close::Quietly)
                    }
                    Incoming::Request { id, kind, quiet, body, route } => {
                        let request = Request { id, kind, quiet, body };
                        let mut ctx = Context { ws: &mut *ws, relay, info, nonce, ticket, session: &mut session, online: &mut online, signals: &mut signals, pipeline: &mut pipeline };
                        ctx.serve(request, route).await
                    }
                };
                if let Err(close) = served {
                    return close;
                }
            }
            _ = std::future::ready(()), if stream == Stream::CatchingUp => {
                let Some(online) = online.as_ref() else { continue };
                if let Err(close) = Box::pin(catch_up_page(ws, relay, &mut session, online, &mut signals.outbox)).await {
                    return close;
                }
            }
        }
        if let Some(reason) = session.too_many_errors() {
            return Close::With(reason.to_wire());
        }
    }
}

/// Answers what the writer already has, so that clients need not resend it, and closes.
async fn drain(
    ws: &mut WebSocket,
    session: &mut Session,
    pipeline: &mut FuturesOrdered<Pipelined>,
) -> Close {
    let drain = async {
        while let Some(answered) = pipeline.next().await {
            if respond(ws, session, answered).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, drain).await;
    Close::With(Refusal::ShuttingDown.to_wire())
}

/// A request as read, before it is served.
struct Request {
    id: u64,
    kind: RequestKind,
    quiet: bool,
    body: Option<Req>,
}

/// What serving a request may touch.
struct Context<'a> {
    ws: &'a mut WebSocket,
    relay: &'a Relay,
    info: &'a ConnInfo,
    nonce: &'a [u8],
    ticket: &'a Ticket,
    session: &'a mut Session,
    online: &'a mut Option<Online>,
    signals: &'a mut Signals,
    pipeline: &'a mut FuturesOrdered<Pipelined>,
}

impl Context<'_> {
    /// Serves a request as its route says; every answer goes out in request order.
    async fn serve(&mut self, request: Request, route: Route) -> Result<(), Close> {
        let Request {
            id,
            kind,
            quiet,
            body,
        } = request;
        let kind_label = request_type(kind);
        let answered = move |response| Answered {
            id,
            kind: kind_label,
            quiet,
            response,
        };
        match (route, body, self.online.as_ref()) {
            (Route::Pipelined, Some(body), Some(online)) => {
                let answer: Pipelined =
                    match Box::pin(requests::enqueue(self.relay, &online.device, body)).await {
                        Ok(answer) => Box::pin(async move { answered(answer.await) }),
                        Err(error) => Box::pin(std::future::ready(answered(Err(error)))),
                    };
                self.pipeline.push_back(answer);
                Ok(())
            }
            (Route::Refused(refusal), _, _) => {
                if let Refusal::RateLimited(_) = refusal {
                    METRICS.rate_limited.inc();
                }
                // Answered even when quiet: a refusal here is not an acknowledgement's.
                let answer = Answered::new(id, kind_label, Err(refusal.to_wire()));
                self.pipeline
                    .push_back(Box::pin(std::future::ready(answer)));
                Ok(())
            }
            (_, body, _) => {
                // Served alone: earlier pipelined answers go out first.
                while let Some(earlier) = self.pipeline.next().await {
                    respond(self.ws, self.session, earlier).await?;
                }
                let response = match body {
                    Some(body) => Box::pin(self.serial(body)).await,
                    None => Err(Refusal::UnknownRequest.to_wire()),
                };
                respond(
                    self.ws,
                    self.session,
                    Answered::new(id, kind_label, response),
                )
                .await?;
                if self
                    .online
                    .as_ref()
                    .is_some_and(|o| o.device.revoked_at_ms.is_some())
                {
                    return Err(Close::With(
                        Refusal::DeviceRevoked(RevokedBy::Unknown).to_wire(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Serves a request routed `Serial`: authentication, or a request of the online device.
    async fn serial(&mut self, body: Req) -> Result<Resp, pb::Error> {
        let relay = self.relay;
        match body {
            Req::Enroll(enroll) => {
                let device = requests::enroll(relay, self.info, self.nonce, enroll).await?;
                let result = pb::EnrollResult {
                    device_id: device.fingerprint.clone(),
                    user: device.user.clone(),
                    server_signature_key: relay.server_signature_key.clone(),
                };
                self.go_online(device).await?;
                Ok(Resp::Enrolled(result))
            }
            Req::Authenticate(auth) => {
                let device = requests::authenticate(relay, self.info, self.nonce, auth).await?;
                let queued = relay
                    .services
                    .store
                    .queue_len(device.id)
                    .await
                    .map_err(requests::storage)?;
                let result = pb::AuthenticateResult {
                    device_id: device.fingerprint.clone(),
                    user: device.user.clone(),
                    queued: queued as u64,
                    server_signature_key: relay.server_signature_key.clone(),
                };
                self.go_online(device).await?;
                Ok(Resp::Authenticated(result))
            }
            body => match self.online.as_ref() {
                Some(online) => requests::handle(relay, &online.device, body).await,
                None => Err(Refusal::NotAuthenticated.to_wire()),
            },
        }
    }

    /// Registers an authenticated device with the hub and starts its catch-up.
    async fn go_online(&mut self, mut device: Device) -> Result<(), pb::Error> {
        let relay = self.relay;
        let mut registration = relay
            .services
            .hub
            .register(device.id, relay.limits.push_frames_max);
        // A revocation between the check and the registration would otherwise be missed.
        let fresh = relay
            .services
            .store
            .device_by_key(&device.public_key)
            .await
            .map_err(requests::storage)?;
        match fresh {
            Some(d) if d.revoked_at_ms.is_none() && d.account.active(crate::now_ms()) => {
                // The expiry the connection waits for is the latest.
                device.account = d.account;
            }
            _ => return Err(Refusal::DeviceRevoked(RevokedBy::Unknown).to_wire()),
        }
        let _ = relay
            .services
            .store
            .device_connected(device.id, crate::now_ms())
            .await;
        tracing::info!(user = %device.user, device = %device.fingerprint, "device authenticated");
        self.ticket.authenticated();
        self.session.authenticated();
        *self.signals = Signals {
            outbox: registration.outbox.take(),
            kick: Some(registration.kick.clone()),
            wake: Some(registration.wake.clone()),
            account_changed: Some(registration.account_changed.clone()),
            account_check: account_check(&device, crate::now_ms()),
        };
        *self.online = Some(Online {
            device,
            _registration: registration,
        });
        Ok(())
    }
}

async fn kicked(kick: &Option<Arc<Kick>>) -> pb::Error {
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
/// the connection ends as authentication would refuse it now, and otherwise it sets when
/// to look again.
async fn account_standing(
    relay: &Relay,
    online: &mut Option<Online>,
    signals: &mut Signals,
) -> Result<(), Close> {
    let Some(online) = online.as_mut() else {
        return Ok(());
    };
    let fresh = relay
        .services
        .store
        .device_by_key(&online.device.public_key)
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
        tracing::info!(user = %online.device.user, device = %online.device.fingerprint, code = ?refusal.code(), "closing the connection of an account no longer active");
        return Err(Close::With(refusal.to_wire()));
    }
    if let Some(fresh) = fresh {
        online.device.account = fresh.account;
    }
    signals.account_check = account_check(&online.device, now);
    Ok(())
}

/// When to read the device's account again, if it has an expiry.
fn account_check(device: &Device, now_ms: i64) -> Option<tokio::time::Instant> {
    session::account_recheck(device.account.expires_at_ms, now_ms)
        .map(|wait| tokio::time::Instant::now() + wait)
}

async fn woken(wake: &Option<Arc<tokio::sync::Notify>>) {
    match wake {
        Some(w) => w.notified().await,
        None => std::future::pending().await,
    }
}

async fn next_push(outbox: &mut Option<tokio::sync::mpsc::Receiver<Push>>) -> Option<Push> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends one page of the stored queue after the cursor.
async fn catch_up_page(
    ws: &mut WebSocket,
    relay: &Relay,
    session: &mut Session,
    online: &Online,
    outbox: &mut Option<tokio::sync::mpsc::Receiver<Push>>,
) -> Result<(), Close> {
    let page = relay
        .services
        .store
        .queue_page(online.device.id, session.cursor(), CATCH_UP_PAGE)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a device queue");
            Close::With(
                Refusal::StorageUnavailable("storage unavailable; reconnect later").to_wire(),
            )
        })?;
    let short = (page.len() as i64) < CATCH_UP_PAGE;
    for message in page {
        session.sent_stored(message.seq);
        send(ws, stored_frame(&message))
            .await
            .map_err(|_| Close::Quietly)?;
        METRICS.deliveries_pushed.inc();
    }
    // Live pushes that arrived meanwhile: any beyond the cursor is read from storage by
    // the next page, since the writer pushes only after commit.
    let mut newer = false;
    if let Some(rx) = outbox.as_mut() {
        while let Ok(push) = rx.try_recv() {
            newer |= push.seq > session.cursor();
        }
    }
    session.page_sent(short, newer);
    Ok(())
}

/// The metrics label of a request kind.
fn request_type(kind: RequestKind) -> RequestType {
    match kind {
        RequestKind::Enroll => RequestType::Enroll,
        RequestKind::Authenticate => RequestType::Authenticate,
        RequestKind::PublishKeyPackages => RequestType::PublishKeyPackages,
        RequestKind::ClaimKeyPackages => RequestType::ClaimKeyPackages,
        RequestKind::CreateGroup => RequestType::CreateGroup,
        RequestKind::SubmitCommit => RequestType::SubmitCommit,
        RequestKind::SubmitMessage => RequestType::SubmitMessage,
        RequestKind::Acknowledge => RequestType::Acknowledge,
        RequestKind::KeyPackageStatus => RequestType::KeyPackageStatus,
        RequestKind::ListDevices => RequestType::ListDevices,
        RequestKind::RevokeDevice => RequestType::RevokeDevice,
        RequestKind::IssueDeviceCode => RequestType::IssueDeviceCode,
        RequestKind::Unknown => RequestType::Unknown,
    }
}
