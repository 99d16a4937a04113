//! One client connection's decisions, without a socket or a clock: which requests may come
//! in which state and how each is served (the routing table), the authentication deadline,
//! the per-device submission rate, the count of protocol errors that closes a connection,
//! and the delivery stream's cursor (catch-up from storage, then live pushes, then catch-up
//! again when woken). The daemon's connection task does the I/O and asks this at each step.

use std::time::{Duration, Instant};

use relais_protocol::frame::{self, FrameError};
use relais_protocol::pb::{self, ErrorCode, request::Body as Req};

use crate::Refusal;

/// Protocol errors tolerated on one connection before it is closed.
pub const PROTOCOL_ERRORS_MAX: u32 = 64;
/// Submissions and acknowledgements one connection may have waiting for the writer; no
/// further frame is read from it until one is answered. Enough to fill a batch from a busy
/// device, few enough that one device cannot crowd the writer's queue.
pub const PIPELINE_MAX: usize = 64;
/// Longest wait before an account with an expiry is read again: an administrator on another
/// node sharing the database may have moved the expiry, and this one would not hear of it
/// otherwise.
pub const ACCOUNT_RECHECK_MAX: Duration = Duration::from_secs(3600);

/// What a request is, as the routing table and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Enroll,
    Authenticate,
    PublishKeyPackages,
    ClaimKeyPackages,
    CreateGroup,
    SubmitCommit,
    SubmitMessage,
    Acknowledge,
    KeyPackageStatus,
    ListDevices,
    RevokeDevice,
    IssueDeviceCode,
    /// An empty request, or one of a kind this server does not know.
    Unknown,
}

impl RequestKind {
    pub fn of(body: Option<&Req>) -> RequestKind {
        match body {
            None => RequestKind::Unknown,
            Some(Req::Enroll(_)) => RequestKind::Enroll,
            Some(Req::Authenticate(_)) => RequestKind::Authenticate,
            Some(Req::PublishKeyPackages(_)) => RequestKind::PublishKeyPackages,
            Some(Req::ClaimKeyPackages(_)) => RequestKind::ClaimKeyPackages,
            Some(Req::CreateGroup(_)) => RequestKind::CreateGroup,
            Some(Req::SubmitCommit(_)) => RequestKind::SubmitCommit,
            Some(Req::SubmitMessage(_)) => RequestKind::SubmitMessage,
            Some(Req::Acknowledge(_)) => RequestKind::Acknowledge,
            Some(Req::KeyPackageStatus(_)) => RequestKind::KeyPackageStatus,
            Some(Req::ListDevices(_)) => RequestKind::ListDevices,
            Some(Req::RevokeDevice(_)) => RequestKind::RevokeDevice,
            Some(Req::IssueDeviceCode(_)) => RequestKind::IssueDeviceCode,
        }
    }

    /// Whether the device's message rate counts it.
    fn submits(self) -> bool {
        matches!(self, RequestKind::SubmitMessage | RequestKind::SubmitCommit)
    }
}

/// How the connection serves a request. Every request is answered in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Handed to the storage writer at once, answered when its batch commits; the
    /// connection reads on meanwhile (up to `PIPELINE_MAX` waiting).
    Pipelined,
    /// Served alone, once every earlier answer is sent: it may change the session
    /// (authentication) or read what earlier requests wrote.
    Serial,
    /// Refused without being served.
    Refused(Refusal),
}

/// The routing table: what each kind of request gets before and after authentication.
pub fn route(authenticated: bool, kind: RequestKind) -> Route {
    use RequestKind::*;
    match (authenticated, kind) {
        (_, Unknown) => Route::Refused(Refusal::UnknownRequest),
        (false, Enroll | Authenticate) => Route::Serial,
        (false, _) => Route::Refused(Refusal::NotAuthenticated),
        (true, Enroll | Authenticate) => Route::Refused(Refusal::AlreadyAuthenticated),
        (true, SubmitMessage | Acknowledge) => Route::Pipelined,
        (
            true,
            PublishKeyPackages | ClaimKeyPackages | CreateGroup | SubmitCommit | KeyPackageStatus
            | ListDevices | RevokeDevice | IssueDeviceCode,
        ) => Route::Serial,
    }
}

/// The bounds one connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub frame_bytes_max: usize,
    /// From the TCP accept to a successful `Enroll` or `Authenticate`.
    pub authentication_time: Duration,
    pub messages_per_second: u32,
    pub messages_burst: u32,
}

/// What to do with a frame the client sent.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A request, and how to serve it.
    Request {
        id: u64,
        kind: RequestKind,
        /// Whether a successful answer is left unsent (a quiet acknowledgement).
        quiet: bool,
        body: Option<Req>,
        route: Route,
    },
    /// Not a request the server can answer by id: answer with this error under id 0.
    Error(Refusal),
    /// Close the connection with this reason.
    Close(Refusal),
}

/// Where the delivery stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Not authenticated yet: nothing to deliver.
    Closed,
    /// Reading the device's queue from storage after the cursor, page by page.
    CatchingUp,
    /// Storage is drained: pushes come live from the hub.
    Live,
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    limits: Limits,
    deadline: Instant,
    authenticated: bool,
    errors: u32,
    bucket: TokenBucket,
    cursor: i64,
    stream: Stream,
}

impl Session {
    /// A connection accepted at `accepted`.
    pub fn new(limits: Limits, accepted: Instant) -> Session {
        Session {
            limits,
            deadline: accepted + limits.authentication_time,
            authenticated: false,
            errors: 0,
            bucket: TokenBucket::new(limits.messages_per_second, limits.messages_burst, accepted),
            cursor: 0,
            stream: Stream::Closed,
        }
    }

    /// When an unauthenticated connection is closed; `None` once authenticated.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.authenticated).then_some(self.deadline)
    }

    /// The reason to close a connection still unauthenticated at `now`.
    pub fn expired(&self, now: Instant) -> Option<Refusal> {
        (!self.authenticated && now >= self.deadline).then_some(Refusal::AuthenticationDeadline)
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The device authenticated: its deliveries start with a catch-up from storage.
    pub fn authenticated(&mut self) {
        self.authenticated = true;
        self.stream = Stream::CatchingUp;
    }

    /// Decides what a binary frame the client sent at `now` calls for.
    pub fn on_frame(&mut self, bytes: &[u8], now: Instant) -> Incoming {
        let envelope = match frame::decode_envelope(bytes, self.limits.frame_bytes_max) {
            Ok(envelope) => envelope,
            Err(e @ FrameError::TooLarge { .. }) => return Incoming::Close(Refusal::from(&e)),
            Err(e) => {
                self.errors += 1;
                return Incoming::Error(Refusal::from(&e));
            }
        };
        let Some(pb::envelope::Kind::Request(request)) = envelope.kind else {
            self.errors += 1;
            return Incoming::Error(Refusal::NotARequest);
        };
        let kind = RequestKind::of(request.body.as_ref());
        let quiet = matches!(&request.body, Some(Req::Acknowledge(ack)) if ack.quiet);
        let mut route = route(self.authenticated, kind);
        if route != Route::Refused(Refusal::UnknownRequest)
            && kind.submits()
            && self.authenticated
            && !self.bucket.take(now)
        {
            route = Route::Refused(Refusal::RateLimited(
                "too many messages from this device; slow down and retry".into(),
            ));
        }
        Incoming::Request {
            id: request.id,
            kind,
            quiet,
            body: request.body,
            route,
        }
    }

    /// A text frame: clients send only binary ones.
    pub fn on_text(&mut self) -> Incoming {
        self.errors += 1;
        Incoming::Error(Refusal::MalformedFrame(
            "frames must be binary protobuf envelopes".into(),
        ))
    }

    /// Counts an error answer towards closing the connection; only protocol misuse counts
    /// (a request of no known kind, a request before authentication); refusals such as
    /// conflicts or rate limits are normal traffic.
    pub fn answered_error(&mut self, code: i32) -> bool {
        let misuse = code == ErrorCode::UnknownMessageType as i32
            || code == ErrorCode::NotAuthenticated as i32;
        if misuse {
            self.errors += 1;
        }
        misuse
    }

    /// The reason to close a connection that made too many protocol errors.
    pub fn too_many_errors(&self) -> Option<Refusal> {
        (self.errors > PROTOCOL_ERRORS_MAX).then_some(Refusal::TooManyProtocolErrors)
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The highest sequence number sent on this connection.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Storage has news for the device: a live stream reads it from storage after the cursor.
    pub fn woken(&mut self) {
        if self.stream == Stream::Live {
            self.stream = Stream::CatchingUp;
        }
    }

    /// A stored delivery was sent.
    pub fn sent_stored(&mut self, seq: i64) {
        self.cursor = self.cursor.max(seq);
    }

    /// A catch-up page was sent: the stream goes live when storage had no more (`short`)
    /// and no live push newer than the cursor arrived meanwhile (`newer`), since the
    /// writer pushes only after commit and a newer one is read by the next page.
    pub fn page_sent(&mut self, short: bool, newer: bool) {
        if short && !newer && self.stream == Stream::CatchingUp {
            self.stream = Stream::Live;
        }
    }

    /// Whether a live push of `seq` is sent; those at or below the cursor were sent from
    /// storage already.
    pub fn push(&mut self, seq: i64) -> bool {
        if seq > self.cursor {
            self.cursor = seq;
            true
        } else {
            false
        }
    }
}

/// When to read an account with an expiry at `expires_at_ms` again, from `now_ms`: at the
/// expiry, or after `ACCOUNT_RECHECK_MAX` if that comes first; never without an expiry.
pub fn account_recheck(expires_at_ms: Option<i64>, now_ms: i64) -> Option<Duration> {
    let at = expires_at_ms?;
    let left = Duration::from_millis(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0));
    Some(left.min(ACCOUNT_RECHECK_MAX))
}

/// Per-device submission rate: `rate` per second sustained, `burst` at once.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
