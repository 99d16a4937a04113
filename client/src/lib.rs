//! The Relais client library: a device that enrolls with a relay, authenticates with its
//! Ed25519 key over a channel-bound TLS session, and converses end to end with MLS.
//!
//! [`Client`] is the API (`client`: identity and connection; `conversations`: creating,
//! adding, sending; `incoming`: processing deliveries; `submit`: the durable outbox).
//! Below it, `connection` is the wire, `mls` the cryptography, `state` the local database
//! (sealed under `at_rest`'s keys in an encrypted home) and `keyfile` the key and
//! passphrase files; `acks` is when deliveries are acknowledged. The `relais`
//! binary is a thin command line over [`Client`], whose definition is [`cli`].
//!
//! Every change of MLS state is stored before anything that depends on it leaves the
//! device: a ciphertext or commit is in the outbox before it is sent, and a delivery's
//! effects are committed locally before it is acknowledged.

mod acks;
mod at_rest;
pub mod cli;
mod client;
pub mod connection;
mod contacts;
mod conversations;
mod enroll_link;
mod governance;
mod incoming;
mod keyfile;
mod mls;
mod session;
mod state;
mod submit;
mod transfer;
mod trust;

use std::path::PathBuf;

pub use acks::{ACK_AGE, ACK_BATCH, ACK_IDLE, Ack, AckBatch, DRAIN_IDLE};
pub use at_rest::{PASSPHRASE_CHARS_MIN, Secret, SecretKind};
pub use client::{Client, PreparedCommit, new_message_id};
pub use connection::{Connection, Opened, Trust};
pub use contacts::{
    OwnDevice, QR_PREFIX, SafetyNumber, grouped as grouped_safety_number, safety_number,
};
pub use conversations::{ConversationSummary, HistoryEntry, HistoryPage};
pub use enroll_link::read_link_file;
pub use governance::GroupMember;
pub use relais_link::{EnrollLink, LINK_BYTES_MAX, LinkError, LinkField};
use relais_protocol::pb;
pub use relais_protocol::pb::ErrorCode;
pub use session::{
    ClientFuture, ConnectionState, ConversationChange, DeliveryState, Event, HomeLock, Member,
    Session, SessionHandle,
};

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
    /// A change the conversation's MLS group went through (a member or device added or
    /// removed), written by this client from the verified commit, not sent by anyone.
    pub event: bool,
}

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay refused a request; `code` is stable, `message` is for humans.
    #[error("{}: {message}", describe(*code))]
    Server {
        code: ErrorCode,
        message: String,
        retryable: bool,
        /// For EPOCH_CONFLICT and epoch-window refusals: the group's current epoch.
        current_epoch: u64,
        /// The relay closed the connection with this error instead of answering the
        /// request in flight, so whether it got that request is unknown.
        closed: bool,
    },
    #[error("no device is enrolled in {0}; run `relais enroll` first")]
    NotEnrolled(PathBuf),
    /// Another process holds the home's lock (see [`HomeLock`]).
    #[error(
        "{} is in use by another relais process{}; stop it (a `relais follow`, the app) \
         or let it finish, then try again",
        home.display(),
        pid.map_or_else(String::new, |p| format!(" (process {p})"))
    )]
    HomeInUse { home: PathBuf, pid: Option<u32> },
    /// The [`Session`] this handle belonged to has ended.
    #[error("the session has ended; start a new one")]
    SessionEnded,
    /// The home is encrypted and was not given its passphrase or key file (or was given
    /// one of the other kind).
    #[error("{} is encrypted with a {kind}; {}", home.display(), unlock_hint(*kind))]
    Locked { home: PathBuf, kind: SecretKind },
    /// The passphrase or key file given is not the home's.
    #[error("wrong {kind} for {}; try again", home.display())]
    WrongSecret { home: PathBuf, kind: SecretKind },
    #[error("not connected to the relay; connect first")]
    NotConnected,
    /// The caller asked for something impossible (bad address, unknown conversation).
    #[error("{0}")]
    Usage(String),
    /// A user has no device that could receive a message.
    #[error("{0} has no enrolled device yet; ask them to enroll one, then try again")]
    Unreachable(String),
    /// Sending waits for verified contacts (`require_verified`) and these are not.
    #[error(
        "not sent: {0} changed devices since you verified them; compare safety numbers \
         again (`relais verify USER --confirm NUMBER`), or `relais set require-verified off`"
    )]
    Unverified(String),
    /// An enrollment link that cannot be used as given.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The relay's certificate chain does not hold the certificate an enrollment link pins:
    /// another relay, or someone in between. Found during the TLS handshake, so nothing
    /// was sent to it.
    #[error(
        "the relay at {server} is not the one this enrollment link is for (its certificate \
         does not match the link's pin); nothing was sent to it and nothing was stored; ask \
         your administrator for a new link, and tell them of this"
    )]
    PinMismatch { server: String },
    #[error("network: {0}")]
    Network(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the relay did not answer in time; check the network and try again")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("MLS: {0}")]
    Mls(String),
    #[error("local state: {0}")]
    State(String),
    #[error("local database: {0}; check the disk and the permissions of the home directory")]
    Database(#[from] sqlx::Error),
}

impl ClientError {
    /// The relay's answer to a request.
    pub(crate) fn from_server(e: pb::Error) -> ClientError {
        Self::server(e, false)
    }

    /// The relay's reason for closing the connection.
    pub(crate) fn from_closing(e: pb::Error) -> ClientError {
        Self::server(e, true)
    }

    fn server(e: pb::Error, closed: bool) -> ClientError {
        ClientError::Server {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message,
            retryable: e.retryable,
            current_epoch: e.current_epoch,
            closed,
        }
    }

    /// Whether the relay answered the request (accepting or refusing it); false when the
    /// connection ended first, so the request may or may not have been applied.
    pub fn is_answer(&self) -> bool {
        matches!(self, ClientError::Server { closed: false, .. })
    }

    /// Whether the problem is the local setup rather than the relay or the network.
    pub fn is_local_setup(&self) -> bool {
        matches!(
            self,
            ClientError::NotEnrolled(_)
                | ClientError::HomeInUse { .. }
                | ClientError::Locked { .. }
                | ClientError::WrongSecret { .. }
                | ClientError::State(_)
                | ClientError::Database(_)
        )
    }

    /// Whether the caller asked for something impossible (a bad address, an unknown
    /// conversation): retrying the same request cannot help.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ClientError::Usage(_) | ClientError::Unverified(_) | ClientError::Link(_)
        )
    }

    /// Whether this is the relay's refusal with `code`.
    pub fn is_server(&self, code: ErrorCode) -> bool {
        matches!(self, ClientError::Server { code: c, .. } if *c == code)
    }
}

/// How to give an encrypted home what unlocks it.
fn unlock_hint(kind: SecretKind) -> &'static str {
    match kind {
        SecretKind::Passphrase => {
            "type its passphrase when asked, or give it with --passphrase-file FILE \
             (or RELAIS_PASSPHRASE_FILE)"
        }
        SecretKind::KeyFile => "give its key file with --key-file FILE (or RELAIS_KEY_FILE)",
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
        ErrorCode::LimitExceeded => "limit exceeded",
        ErrorCode::CredentialMismatch => "the relay refused a change of identity",
        ErrorCode::StorageFull => "the relay's disk is nearly full; try again later",
        ErrorCode::UnknownDevice => "no such device of yours",
        ErrorCode::NotGroupAdmin => "only an admin of the group may do that",
        ErrorCode::DeviceLinkingDisabled => "linking devices is turned off on this relay",
        ErrorCode::SenderQuotaExceeded => {
            "you have too many messages waiting for a recipient; try again later"
        }
        ErrorCode::StorageUnavailable | ErrorCode::Internal => "the relay failed; try again later",
        _ => "the relay refused the request",
    }
}

pub use relais_protocol::time::format_time_ms;
pub(crate) use relais_protocol::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_as_what_happened() {
        let error = ClientError::from_server(pb::Error {
            code: ErrorCode::InvalidEnrollmentCode as i32,
            message: "the code is wrong or expired".into(),
            retryable: false,
            current_epoch: 0,
        });
        assert_eq!(
            error.to_string(),
            "invalid enrollment code: the code is wrong or expired"
        );
        assert!(error.is_server(ErrorCode::InvalidEnrollmentCode));
        let unknown = ClientError::from_server(pb::Error {
            code: 9_999,
            ..Default::default()
        });
        assert!(unknown.is_server(ErrorCode::Unspecified));
    }
}
