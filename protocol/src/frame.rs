//! Frame codec: one WebSocket binary message is one `Envelope`.
//!
//! Decoding checks the size limit before parsing and the version after, so a hostile
//! peer can make the server allocate at most `frame_bytes_max` bytes per frame.

use prost::Message;

use crate::pb::{self, Envelope, ErrorCode};

/// The protocol version this crate speaks; `Envelope.version` must equal it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("frame is not a valid envelope: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported; this peer speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(u32),
    #[error("envelope carries no request, response or push of a known kind")]
    UnknownKind,
}

impl FrameError {
    /// The stable code a peer receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Malformed(_) => ErrorCode::MalformedFrame,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::UnknownKind => ErrorCode::UnknownMessageType,
        }
    }
}

/// Decodes one frame, refusing it before parsing when it is larger than `limit` bytes.
pub fn decode_envelope(bytes: &[u8], limit: usize) -> Result<Envelope, FrameError> {
    if bytes.len() > limit {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let envelope = Envelope::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(envelope.version));
    }
    if envelope.kind.is_none() {
        return Err(FrameError::UnknownKind);
    }
    Ok(envelope)
}

/// Encodes one frame with the current protocol version.
pub fn encode_envelope(kind: pb::envelope::Kind) -> Vec<u8> {
    Envelope {
        version: PROTOCOL_VERSION,
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// Wraps a request body into a frame.
pub fn request(id: u64, body: pb::request::Body) -> Vec<u8> {
    encode_envelope(pb::envelope::Kind::Request(pb::Request {
        id,
        body: Some(body),
    }))
}

/// Wraps a response body into a frame.
pub fn response(id: u64, body: pb::response::Body) -> Vec<u8> {
    encode_envelope(pb::envelope::Kind::Response(pb::Response {
        id,
        body: Some(body),
    }))
}

/// Wraps a push body into a frame.
pub fn push(body: pb::push::Body) -> Vec<u8> {
    encode_envelope(pb::envelope::Kind::Push(pb::Push { body: Some(body) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let frame = request(
            7,
            pb::request::Body::KeyPackageStatus(pb::KeyPackageStatus {}),
        );
        let envelope = decode_envelope(&frame, 1024).expect("valid frame");
        let Some(pb::envelope::Kind::Request(request)) = envelope.kind else {
            panic!("expected a request, got {envelope:?}");
        };
        assert_eq!(request.id, 7);
        assert!(matches!(
            request.body,
            Some(pb::request::Body::KeyPackageStatus(_))
        ));
    }

    #[test]
    fn refusals() {
        let good = request(
            1,
            pb::request::Body::KeyPackageStatus(pb::KeyPackageStatus {}),
        );
        let wrong_version = Envelope {
            version: 2,
            kind: Some(pb::envelope::Kind::Push(pb::Push { body: None })),
        }
        .encode_to_vec();
        let empty = Envelope {
            version: PROTOCOL_VERSION,
            kind: None,
        }
        .encode_to_vec();
        let cases: [(&[u8], usize, ErrorCode); 5] = [
            (&good, 2, ErrorCode::FrameTooLarge),
            (&[0xff, 0xff, 0xff], 1024, ErrorCode::MalformedFrame),
            (&[0x12, 0x05, 0x01], 1024, ErrorCode::MalformedFrame),
            (&wrong_version, 1024, ErrorCode::UnsupportedVersion),
            (&empty, 1024, ErrorCode::UnknownMessageType),
        ];
        for (bytes, limit, expected) in cases {
            let error = decode_envelope(bytes, limit).expect_err("must be refused");
            assert_eq!(error.code(), expected, "{bytes:?}: {error}");
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics_and_respects_limit(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..512) {
            match decode_envelope(&bytes, limit) {
                Ok(envelope) => {
                    prop_assert!(bytes.len() <= limit);
                    prop_assert_eq!(envelope.version, PROTOCOL_VERSION);
                }
                Err(FrameError::TooLarge { size, .. }) => prop_assert!(size > limit),
                Err(_) => prop_assert!(bytes.len() <= limit),
            }
        }

        #[test]
        fn encoded_requests_decode(id in any::<u64>(), nonce in proptest::collection::vec(any::<u8>(), 0..64)) {
            let frame = push(pb::push::Body::Challenge(pb::Challenge { nonce: nonce.clone() }));
            let decoded = decode_envelope(&frame, 4096).expect("own frames decode");
            prop_assert_eq!(decoded.kind, Some(pb::envelope::Kind::Push(pb::Push { body: Some(pb::push::Body::Challenge(pb::Challenge { nonce })) })));
            let frame = request(id, pb::request::Body::Acknowledge(pb::Acknowledge { sequences: vec![id], quiet: false }));
            prop_assert!(decode_envelope(&frame, 4096).is_ok());
        }
    }
}
