//! The authentication service's rules: user names, enrollment codes, device fingerprints
//! and challenge signatures; `limiter.rs` holds the limits on failed attempts per source
//! and on KeyPackage claims per device.

use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

use relais_core::{Refusal, RevokedBy};
use relais_store::Device;

use crate::config::Users;

pub use relais_core::limiter::{AuditFailure, ClaimLimiter, FailureLimiter, Reservation, Source};

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud is not mistyped.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in an enrollment code: 16 of 32 symbols is 80 bits, far beyond guessing
/// within the expiry and the failed-attempt limits.
const CODE_CHARS: usize = 16;

/// A new random enrollment code, grouped by four: `ABCD-EFGH-JKMN-PQRS`.
pub fn generate_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..CODE_CHARS)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The keyed hash under which a code is stored; the code itself is never stored.
pub fn hash_code(secret: &[u8], code: &str) -> Vec<u8> {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(b"relais-enrollment-code-v1");
    mac.update(normalized.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The device id operators see: 16 hex characters of the key's SHA-256.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Whether `signature` is the device key's signature over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// Turns `alice` or `alice@domain` into `alice@domain`, refusing odd names and domains
/// that `users.allowed_domains` does not allow.
pub fn canonical_user(input: &str, server_domain: &str, users: &Users) -> Result<String, String> {
    let (name, user_domain) = match input.split_once('@') {
        Some((name, d)) => (name, d),
        None => (input, server_domain),
    };
    let name = name.to_ascii_lowercase();
    let user_domain = user_domain.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if !valid {
        return Err(format!(
            "{input:?} is not a valid user name: use 1 to 64 of a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if !crate::config::valid_domain(&user_domain) || !users.allows(&user_domain, server_domain) {
        return Err(format!(
            "{input:?} is not in a domain this server allows (see users.allowed_domains)"
        ));
    }
    Ok(format!("{name}@{user_domain}"))
}

/// Whether a device may use the relay at `now_ms`: what authentication refuses, and what a
/// connection is closed with when its account changes while it is open.
pub fn standing(device: &Device, now_ms: i64) -> Result<(), Refusal> {
    if device.revoked_at_ms.is_some() || device.account.deleted_at_ms.is_some() {
        Err(Refusal::DeviceRevoked(RevokedBy::Unknown))
    } else if device.account.suspended_at_ms.is_some() {
        Err(Refusal::AccountSuspended)
    } else if !device.account.active(now_ms) {
        Err(Refusal::AccountExpired)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_normalised() {
        let code = generate_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let secret = [9u8; 32];
        let hash = hash_code(&secret, &code);
        assert_eq!(
            hash,
            hash_code(&secret, &code.to_lowercase().replace('-', ""))
        );
        assert_ne!(hash, hash_code(&[8u8; 32], &code));
        assert_eq!(hash_code(&secret, "0O1IL"), hash_code(&secret, "00111"));
    }

    #[test]
    fn user_names() {
        let cases = [
            ("alice", Ok("alice@localhost")),
            ("Alice@LOCALHOST", Ok("alice@localhost")),
            ("bob.smith-2", Ok("bob.smith-2@localhost")),
            ("alice@other.fr", Err("not in a domain")),
            ("", Err("valid user name")),
            ("al ice", Err("valid user name")),
            (".alice", Err("valid user name")),
        ];
        for (input, expected) in cases {
            match (
                canonical_user(input, "localhost", &Users::default()),
                expected,
            ) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn allowed_domains_extend_the_server_domain() {
        let users = Users {
            allowed_domains: vec!["*.gouv.fr".into()],
            expiry_warning_days: 14,
        };
        assert_eq!(
            canonical_user("Alice@Interieur.Gouv.Fr", "x.gouv.fr", &users),
            Ok("alice@interieur.gouv.fr".into())
        );
        assert_eq!(
            canonical_user("bob", "x.gouv.fr", &users),
            Ok("bob@x.gouv.fr".into())
        );
        assert!(canonical_user("eve@gouv.fr.evil.com", "x.gouv.fr", &users).is_err());
    }
}
