//! The Relais client library: a device that enrolls with a relay, authenticates with its
//! Ed25519 key over a channel-bound TLS session, and converses end to end with MLS.
//!
//! [`Client`] is the API; `connection` is the wire, `mls` the cryptography, `state` the
//! local database. The `relais` binary is a thin command line over [`Client`].

mod client;
pub mod connection;
mod conversations;
mod incoming;
mod keyfile;
mod mls;
mod state;

use std::path::PathBuf;

pub use client::{Client, PreparedCommit};
use relais_protocol::pb;
pub use relais_protocol::pb::ErrorCode;

/// A received text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The conversation: the other user for a direct one, the group's name otherwise.
    pub conversation: String,
    /// The sending user as MLS authenticated it.
    pub sender: String,
    /// When the sender wrote it (the sender's clock), in milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    pub text: String,
}

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {message}", describe(*code))]
    Server {
        code: ErrorCode,
        message: String,
        retryable: bool,
        current_epoch: u64,
    },
    #[error("no device is enrolled in {0}; run `relais enroll` first")]
    NotEnrolled(PathBuf),
    #[error("not connected to the relay")]
    NotConnected,
    #[error("{0}")]
    Usage(String),
    #[error("network: {0}")]
    Network(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the relay did not answer in time")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("MLS: {0}")]
    Mls(String),
    #[error("local state: {0}")]
    State(String),
    #[error("local database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ClientError {
    pub(crate) fn from_server(e: pb::Error) -> ClientError {
        ClientError::Server {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message,
            retryable: e.retryable,
            current_epoch: e.current_epoch,
        }
    }

    /// Whether the problem is the local setup rather than the relay or the network.
    pub fn is_local_setup(&self) -> bool {
        matches!(
            self,
            ClientError::NotEnrolled(_) | ClientError::State(_) | ClientError::Database(_)
        )
    }
}

fn describe(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidEnrollmentCode => "invalid enrollment code",
        ErrorCode::AuthenticationFailed => "authentication failed",
        ErrorCode::DeviceRevoked => "device revoked",
        ErrorCode::AccountSuspended => "account suspended",
        ErrorCode::AccountExpired => "account expired",
        ErrorCode::RateLimited => "rate limited",
        ErrorCode::UnknownUser => "unknown user",
        ErrorCode::NoKeyPackage => "a recipient device cannot be reached yet",
        ErrorCode::EpochConflict => "conversation changed meanwhile",
        ErrorCode::QueueFull => "a recipient's queue is full",
        ErrorCode::ShuttingDown => "the relay is shutting down",
        ErrorCode::Replaced => "this device connected elsewhere",
        _ => "the relay refused the request",
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
