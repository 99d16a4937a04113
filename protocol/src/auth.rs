//! The channel-binding authentication transcript shared by clients and the server.
//!
//! A device proves possession of its Ed25519 key by signing the connection's nonce
//! together with TLS exporter keying material, so a signature captured on one TLS session
//! is useless on any other.

/// The TLS exporter label both ends use (RFC 8446 section 7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-relais-channel-binding";

/// How many bytes of exporter keying material are signed.
pub const EXPORTER_BYTES: usize = 32;

/// How many random bytes the server's challenge nonce has.
pub const NONCE_BYTES: usize = 32;

/// Domain separation for the signed transcript.
const TRANSCRIPT_PREFIX: &[u8] = b"relais-auth-v1";

/// The bytes a device signs to authenticate or enroll on one connection.
pub fn transcript(exporter: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRANSCRIPT_PREFIX.len() + exporter.len() + nonce.len());
    out.extend_from_slice(TRANSCRIPT_PREFIX);
    out.extend_from_slice(exporter);
    out.extend_from_slice(nonce);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_binds_both_inputs() {
        let a = transcript(&[1; 32], &[2; 32]);
        assert_ne!(a, transcript(&[3; 32], &[2; 32]));
        assert_ne!(a, transcript(&[1; 32], &[4; 32]));
        assert!(a.starts_with(b"relais-auth-v1"));
        assert_eq!(a.len(), 14 + 64);
    }
}
