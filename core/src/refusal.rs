//! Why the relay refuses a request or closes a connection: one type from the check that
//! decides it to the frame the client reads, mapped here, once, to the protocol's
//! `ErrorCode`, whether retrying can help, and the group's current epoch.
//!
//! A variant is a reason, finer than a code where the client needs different advice (an
//! unknown device and a bad signature are both `AUTHENTICATION_FAILED`). Its text is for
//! people: lowercase, and says what to do. Failures of the relay itself (storage, bugs)
//! are refused as `StorageUnavailable` and `Internal` with a text that says nothing of the
//! cause, which goes to the log instead.

use std::fmt;

use relais_protocol::frame::FrameError;
use relais_protocol::pb::{self, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    // The frame itself.
    /// Not a frame this server can read (the decoder's or the connection's reason).
    MalformedFrame(String),
    FrameTooLarge(String),
    UnsupportedVersion(String),
    /// A connection that kept sending frames the server could not read.
    TooManyProtocolErrors,
    /// A frame that is not a request (clients send only requests).
    NotARequest,
    /// A request that is empty or of a kind this server does not know.
    UnknownRequest,

    // Authentication.
    /// A request before `Enroll` or `Authenticate`.
    NotAuthenticated,
    /// The connection did not authenticate within its deadline.
    AuthenticationDeadline,
    AlreadyAuthenticated,
    InvalidEnrollmentCode,
    /// The enrollment's challenge signature does not verify with the key it enrolls.
    BadEnrollmentSignature,
    /// The key being enrolled already is.
    AlreadyEnrolled,
    /// No such device, or the signature does not verify: the client cannot tell which.
    AuthenticationFailed,
    DeviceRevoked(RevokedBy),
    AccountSuspended,
    AccountExpired,

    // The connection.
    /// The same device connected again; `elsewhere` when to another node.
    Replaced {
        elsewhere: bool,
    },
    TooSlow,
    ShuttingDown,

    // Requests.
    /// A rate is used up; the text says which and when to retry.
    RateLimited(String),
    /// A bound would be exceeded; the text names it.
    LimitExceeded(String),
    UnknownUser(String),
    UnknownDevice(String),
    /// A device asked for a code to link a new device, and the relay turned that off.
    DeviceLinkingDisabled,
    NoKeyPackage(String),
    InvalidKeyPackage(String),
    /// An MLS message that does not parse or is not what the request needs.
    InvalidMessage(String),
    /// A request whose fields break a rule of the protocol (the text names it).
    BadRequest(String),
    InvalidCommit(String),
    /// A commit that would make a member speak under another user's name, or take this
    /// server out of the group's external senders.
    CredentialMismatch(String),
    /// A commit that needs an admin of the group from a committer who is not one; the text
    /// says what needed it and names the admins.
    NotGroupAdmin(String),
    UnknownGroup,
    GroupExists,
    NotAMember,
    /// An application message for an epoch the group is no longer (or not yet) at.
    WrongEpoch {
        message: u64,
        current: u64,
    },
    /// Another commit already advanced the group.
    EpochConflict {
        current: u64,
    },
    /// Every recipient's queue is full.
    QueueFull,
    /// The sender already holds its share of a recipient's queue.
    SenderQuota,
    /// The server's disk is nearly full.
    StorageFull,

    // The relay's own failures, whose cause goes to the log.
    /// Storage failed; the text says what the client should do.
    StorageUnavailable(&'static str),
    Internal(&'static str),
}

/// Who revoked a device, for its owner to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    /// Found revoked (or its account deleted) when it authenticated or was checked again.
    Unknown,
    Administrator,
    AccountDeleted,
    /// Another device of the same user.
    Sibling,
}

impl Refusal {
    /// The protocol's code for this refusal.
    pub fn code(&self) -> ErrorCode {
        use Refusal::*;
        match self {
            MalformedFrame(_) | TooManyProtocolErrors => ErrorCode::MalformedFrame,
            FrameTooLarge(_) => ErrorCode::FrameTooLarge,
            UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            NotARequest | UnknownRequest => ErrorCode::UnknownMessageType,
            NotAuthenticated | AuthenticationDeadline => ErrorCode::NotAuthenticated,
            AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
            InvalidEnrollmentCode => ErrorCode::InvalidEnrollmentCode,
            BadEnrollmentSignature | AlreadyEnrolled | AuthenticationFailed => {
                ErrorCode::AuthenticationFailed
            }
            DeviceRevoked(_) => ErrorCode::DeviceRevoked,
            AccountSuspended => ErrorCode::AccountSuspended,
            AccountExpired => ErrorCode::AccountExpired,
            Replaced { .. } => ErrorCode::Replaced,
            TooSlow => ErrorCode::TooSlow,
            ShuttingDown => ErrorCode::ShuttingDown,
            RateLimited(_) => ErrorCode::RateLimited,
            LimitExceeded(_) => ErrorCode::LimitExceeded,
            UnknownUser(_) => ErrorCode::UnknownUser,
            UnknownDevice(_) => ErrorCode::UnknownDevice,
            DeviceLinkingDisabled => ErrorCode::DeviceLinkingDisabled,
            NoKeyPackage(_) => ErrorCode::NoKeyPackage,
            InvalidKeyPackage(_) => ErrorCode::InvalidKeyPackage,
            InvalidMessage(_) | BadRequest(_) | WrongEpoch { .. } => ErrorCode::InvalidMessage,
            InvalidCommit(_) => ErrorCode::InvalidCommit,
            CredentialMismatch(_) => ErrorCode::CredentialMismatch,
            NotGroupAdmin(_) => ErrorCode::NotGroupAdmin,
            UnknownGroup => ErrorCode::UnknownGroup,
            GroupExists => ErrorCode::GroupExists,
            NotAMember => ErrorCode::NotAMember,
            EpochConflict { .. } => ErrorCode::EpochConflict,
            QueueFull => ErrorCode::QueueFull,
            SenderQuota => ErrorCode::SenderQuotaExceeded,
            StorageFull => ErrorCode::StorageFull,
            StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether the same request (or a new connection) can succeed later without the client
    /// changing anything. A revoked, replaced or refused device must not retry in a loop.
    pub fn retryable(&self) -> bool {
        use Refusal::*;
        matches!(
            self,
            RateLimited(_)
                | NoKeyPackage(_)
                | QueueFull
                | SenderQuota
                | StorageFull
                | ShuttingDown
                | TooSlow
                | StorageUnavailable(_)
                | Internal(_)
        )
    }

    /// The group's epoch, for the refusals a client answers by catching up.
    pub fn current_epoch(&self) -> Option<u64> {
        match self {
            Refusal::WrongEpoch { current, .. } | Refusal::EpochConflict { current } => {
                Some(*current)
            }
            _ => None,
        }
    }

    /// The error frame the client reads.
    pub fn to_wire(&self) -> pb::Error {
        pb::Error {
            code: self.code() as i32,
            message: self.to_string(),
            retryable: self.retryable(),
            current_epoch: self.current_epoch().unwrap_or(0),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Refusal::*;
        let text = match self {
            MalformedFrame(text)
            | FrameTooLarge(text)
            | UnsupportedVersion(text)
            | RateLimited(text)
            | LimitExceeded(text)
            | UnknownUser(text)
            | UnknownDevice(text)
            | NoKeyPackage(text)
            | BadRequest(text)
            | CredentialMismatch(text) => return f.write_str(text),
            NotGroupAdmin(text) => return write!(f, "not a group admin: {text}"),
            InvalidKeyPackage(text) => return write!(f, "invalid KeyPackage: {text}"),
            InvalidMessage(text) => return write!(f, "invalid MLS message: {text}"),
            InvalidCommit(text) => return write!(f, "invalid commit: {text}"),
            WrongEpoch { message, current } => {
                return write!(
                    f,
                    "the message is for epoch {message} but the group is at epoch {current}"
                );
            }
            EpochConflict { current } => {
                return write!(
                    f,
                    "the group is already at epoch {current}; process pending deliveries and rebuild the commit"
                );
            }
            StorageUnavailable(text) | Internal(text) => text,
            TooManyProtocolErrors => "too many protocol errors on this connection",
            NotARequest => "clients may only send requests",
            UnknownRequest => "the request is empty or of a kind this server does not know",
            NotAuthenticated => "send Enroll or Authenticate first",
            AuthenticationDeadline => "authenticate within the time limit",
            AlreadyAuthenticated => "this connection is already authenticated",
            InvalidEnrollmentCode => {
                "the enrollment code is wrong, used, expired or for another user; ask an administrator for a new one"
            }
            BadEnrollmentSignature => {
                "the challenge signature does not verify with this public key"
            }
            AlreadyEnrolled => "this device key is already enrolled; authenticate instead",
            AuthenticationFailed => "unknown device or bad signature; enroll this device first",
            DeviceRevoked(RevokedBy::Unknown) => {
                "this device was revoked; enroll again with a new code"
            }
            DeviceRevoked(RevokedBy::Administrator) => {
                "this device was revoked by an administrator"
            }
            DeviceRevoked(RevokedBy::AccountDeleted) => {
                "the account was deleted by an administrator"
            }
            DeviceRevoked(RevokedBy::Sibling) => {
                "this device was revoked by another device of its user"
            }
            AccountSuspended => "this account is suspended; contact an administrator",
            AccountExpired => "this account has expired; contact an administrator",
            Replaced { elsewhere: false } => {
                "this device connected again; closing the older connection"
            }
            Replaced { elsewhere: true } => {
                "this device connected again, to another node; closing the older connection"
            }
            TooSlow => "this device is not reading fast enough; reconnect to fetch queued messages",
            ShuttingDown => "the server is shutting down; reconnect",
            DeviceLinkingDisabled => {
                "this relay does not let a device link a new one; ask an administrator for an enrollment code or link for the new device"
            }
            UnknownGroup => "unknown group",
            GroupExists => "a group with this id already exists",
            NotAMember => "this device is not a member of the group",
            QueueFull => "every recipient's queue is full; retry later",
            SenderQuota => {
                "this device already has its share of a recipient's queue waiting; retry once the recipient has read its messages"
            }
            StorageFull => {
                "the server's disk is nearly full; application messages are refused until an operator frees space, retry later"
            }
        };
        f.write_str(text)
    }
}

impl std::error::Error for Refusal {}

impl From<&FrameError> for Refusal {
    fn from(e: &FrameError) -> Refusal {
        let text = e.to_string();
        match e {
            FrameError::TooLarge { .. } => Refusal::FrameTooLarge(text),
            FrameError::Malformed(_) => Refusal::MalformedFrame(text),
            FrameError::UnsupportedVersion(_) => Refusal::UnsupportedVersion(text),
            FrameError::UnknownKind => Refusal::UnknownRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One refusal of every kind, with what the client must read.
    fn table() -> Vec<(Refusal, ErrorCode, bool)> {
        use Refusal::*;
        let s = || "why".to_string();
        let mut table = vec![
            (MalformedFrame(s()), ErrorCode::MalformedFrame, false),
            (FrameTooLarge(s()), ErrorCode::FrameTooLarge, false),
            (
                UnsupportedVersion(s()),
                ErrorCode::UnsupportedVersion,
                false,
            ),
            (TooManyProtocolErrors, ErrorCode::MalformedFrame, false),
            (NotARequest, ErrorCode::UnknownMessageType, false),
            (UnknownRequest, ErrorCode::UnknownMessageType, false),
            (NotAuthenticated, ErrorCode::NotAuthenticated, false),
            (AuthenticationDeadline, ErrorCode::NotAuthenticated, false),
            (AlreadyAuthenticated, ErrorCode::AlreadyAuthenticated, false),
            (
                InvalidEnrollmentCode,
                ErrorCode::InvalidEnrollmentCode,
                false,
            ),
            (
                BadEnrollmentSignature,
                ErrorCode::AuthenticationFailed,
                false,
            ),
            (AlreadyEnrolled, ErrorCode::AuthenticationFailed, false),
            (AuthenticationFailed, ErrorCode::AuthenticationFailed, false),
            (
                DeviceRevoked(RevokedBy::Unknown),
                ErrorCode::DeviceRevoked,
                false,
            ),
            (
                DeviceRevoked(RevokedBy::Administrator),
                ErrorCode::DeviceRevoked,
                false,
            ),
            (
                DeviceRevoked(RevokedBy::AccountDeleted),
                ErrorCode::DeviceRevoked,
                false,
            ),
            (
                DeviceRevoked(RevokedBy::Sibling),
                ErrorCode::DeviceRevoked,
                false,
            ),
            (AccountSuspended, ErrorCode::AccountSuspended, false),
            (AccountExpired, ErrorCode::AccountExpired, false),
            (Replaced { elsewhere: false }, ErrorCode::Replaced, false),
            (Replaced { elsewhere: true }, ErrorCode::Replaced, false),
            (TooSlow, ErrorCode::TooSlow, true),
            (ShuttingDown, ErrorCode::ShuttingDown, true),
        ];
        table.extend(request_table());
        table
    }

    /// The refusals of requests, with what the client must read.
    fn request_table() -> Vec<(Refusal, ErrorCode, bool)> {
        use Refusal::*;
        let s = || "why".to_string();
        vec![
            (RateLimited(s()), ErrorCode::RateLimited, true),
            (LimitExceeded(s()), ErrorCode::LimitExceeded, false),
            (UnknownUser(s()), ErrorCode::UnknownUser, false),
            (UnknownDevice(s()), ErrorCode::UnknownDevice, false),
            (
                DeviceLinkingDisabled,
                ErrorCode::DeviceLinkingDisabled,
                false,
            ),
            (NoKeyPackage(s()), ErrorCode::NoKeyPackage, true),
            (InvalidKeyPackage(s()), ErrorCode::InvalidKeyPackage, false),
            (InvalidMessage(s()), ErrorCode::InvalidMessage, false),
            (BadRequest(s()), ErrorCode::InvalidMessage, false),
            (InvalidCommit(s()), ErrorCode::InvalidCommit, false),
            (
                CredentialMismatch(s()),
                ErrorCode::CredentialMismatch,
                false,
            ),
            (NotGroupAdmin(s()), ErrorCode::NotGroupAdmin, false),
            (UnknownGroup, ErrorCode::UnknownGroup, false),
            (GroupExists, ErrorCode::GroupExists, false),
            (NotAMember, ErrorCode::NotAMember, false),
            (
                WrongEpoch {
                    message: 3,
                    current: 5,
                },
                ErrorCode::InvalidMessage,
                false,
            ),
            (
                EpochConflict { current: 5 },
                ErrorCode::EpochConflict,
                false,
            ),
            (QueueFull, ErrorCode::QueueFull, true),
            (SenderQuota, ErrorCode::SenderQuotaExceeded, true),
            (StorageFull, ErrorCode::StorageFull, true),
            (
                StorageUnavailable("retry later"),
                ErrorCode::StorageUnavailable,
                true,
            ),
            (Internal("retry later"), ErrorCode::Internal, true),
        ]
    }

    #[test]
    fn every_refusal_has_its_code_retryability_and_a_text() {
        for (refusal, code, retryable) in table() {
            let wire = refusal.to_wire();
            assert_eq!(wire.code, code as i32, "{refusal:?}");
            assert_eq!(wire.retryable, retryable, "{refusal:?}");
            assert!(!wire.message.is_empty(), "{refusal:?}");
            let first = wire.message.chars().next().unwrap_or(' ');
            assert!(!first.is_uppercase(), "texts are lowercase: {refusal:?}");
        }
    }

    #[test]
    fn every_code_but_unspecified_has_a_refusal() {
        let codes: std::collections::HashSet<i32> =
            table().iter().map(|(_, code, _)| *code as i32).collect();
        for n in 1..=64 {
            if let Ok(code) = ErrorCode::try_from(n) {
                assert!(codes.contains(&n), "no refusal for {code:?}");
            }
        }
    }

    #[test]
    fn frame_errors_keep_their_code() {
        let errors = [
            FrameError::TooLarge { size: 9, limit: 8 },
            FrameError::Malformed("bad".into()),
            FrameError::UnsupportedVersion(9),
            FrameError::UnknownKind,
        ];
        for e in &errors {
            assert_eq!(Refusal::from(e).code(), e.code(), "{e}");
        }
    }

    #[test]
    fn epoch_refusals_carry_the_current_epoch() {
        let conflict = Refusal::EpochConflict { current: 7 }.to_wire();
        assert_eq!(conflict.current_epoch, 7);
        let wrong = Refusal::WrongEpoch {
            message: 2,
            current: 9,
        }
        .to_wire();
        assert_eq!(wrong.current_epoch, 9);
        assert_eq!(Refusal::QueueFull.to_wire().current_epoch, 0);
    }
}
