//! The cryptography of the state at rest: a random data key seals every secret or
//! content-bearing value of the home, and is itself stored wrapped under a key derived from
//! a passphrase (Argon2id) or a key file (HKDF-SHA256). `docs/reference/at-rest.md` gives
//! the exact derivations and formats; `state` decides which values are sealed.

use std::fmt;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{ClientError, keyfile};

/// Argon2id's memory for a new passphrase, in KiB: 256 MiB. RFC 9106 says to spend the
/// time one can afford on memory first: with three passes this costs about half a second
/// once per unlock (`docs/reference/at-rest.md`), while every guess costs an attacker the
/// same memory, which is what limits guessing on graphics cards and ASICs.
pub const ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Argon2id's passes over that memory: three, as in RFC 9106's second recommended setting.
pub const ARGON2_ITERATIONS: u32 = 3;
/// Argon2id's lanes (RFC 9106, second recommended setting); this implementation computes
/// them one after the other, which a guesser with more cores does not.
pub const ARGON2_PARALLELISM: u32 = 4;
/// The most memory a stored header may ask for, in KiB (2 GiB, RFC 9106's first
/// recommended setting): a damaged or hostile header must not make the client allocate
/// whatever it says.
const ARGON2_MEMORY_KIB_MAX: u32 = 2 * 1024 * 1024;
/// The most passes a stored header may ask for: ten times today's, room to raise them.
const ARGON2_ITERATIONS_MAX: u32 = 30;
/// The most lanes a stored header may ask for.
const ARGON2_PARALLELISM_MAX: u32 = 16;

/// The shortest passphrase accepted for a new protection: with Argon2id's cost, twelve
/// characters of several words are out of reach of guessing; fewer are not.
pub const PASSPHRASE_CHARS_MIN: usize = 12;
/// The longest passphrase or key file read: far more than any real one, and a bound on
/// what a wrong path makes the client read.
const SECRET_BYTES_MAX: u64 = 4096;
/// A key file must hold at least a key's worth of bytes: it replaces a passphrase only
/// because it cannot be guessed.
const KEY_FILE_BYTES_MIN: usize = 32;

/// Salt length for the key derivation: 128 bits, as RFC 9106 recommends.
const SALT_BYTES: usize = 16;
/// The sealed-value format's version, its first byte.
const SEALED_VERSION: u8 = 1;
/// XChaCha20-Poly1305's nonce.
const NONCE_BYTES: usize = 24;
/// Poly1305's tag.
const TAG_BYTES: usize = 16;
/// Every associated data starts with this, so that a value sealed for another purpose
/// (or by a later format) never opens as one of these.
const DOMAIN: &[u8] = b"relais at-rest v1";

/// What protects an encrypted home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A passphrase the user types (or a script reads from a file), stretched by Argon2id.
    Passphrase,
    /// A file of random bytes, typically kept by the platform's secret store or
    /// `systemd-creds`.
    KeyFile,
}

impl SecretKind {
    /// The name stored in the header.
    pub(crate) fn stored_name(self) -> &'static str {
        match self {
            SecretKind::Passphrase => "passphrase",
            SecretKind::KeyFile => "key-file",
        }
    }

    pub(crate) fn from_stored_name(name: &str) -> Option<SecretKind> {
        match name {
            "passphrase" => Some(SecretKind::Passphrase),
            "key-file" => Some(SecretKind::KeyFile),
            _ => None,
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::Passphrase => "passphrase",
            SecretKind::KeyFile => "key file",
        })
    }
}

/// A passphrase or a key file's contents, zeroed when dropped and never shown.
#[derive(Clone)]
pub struct Secret {
    kind: SecretKind,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, redacted)", self.kind)
    }
}

impl Secret {
    /// A passphrase as typed.
    pub fn passphrase(text: &str) -> Secret {
        Secret {
            kind: SecretKind::Passphrase,
            bytes: Zeroizing::new(text.as_bytes().to_vec()),
        }
    }

    /// The passphrase in the first line of `path` (a script's or a test's way to give
    /// it), refused when other users can read the file.
    pub fn read_passphrase_file(path: &Path) -> Result<Secret, ClientError> {
        let bytes = keyfile::read_secret(path, SECRET_BYTES_MAX)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            ClientError::Usage(format!(
                "{} is not text; a passphrase file holds the passphrase on its first line",
                path.display()
            ))
        })?;
        let line = text.split(['\n', '\r']).next().unwrap_or_default();
        Ok(Secret::passphrase(line))
    }

    /// A key file's bytes (at least 32), refused when other users can read the file.
    pub fn read_key_file(path: &Path) -> Result<Secret, ClientError> {
        let bytes = keyfile::read_secret(path, SECRET_BYTES_MAX)?;
        if bytes.len() < KEY_FILE_BYTES_MIN {
            return Err(ClientError::Usage(format!(
                "{} holds {} bytes; a key file needs at least {KEY_FILE_BYTES_MIN} random \
                 bytes (for example `head -c 32 /dev/urandom`)",
                path.display(),
                bytes.len()
            )));
        }
        Ok(Secret {
            kind: SecretKind::KeyFile,
            bytes,
        })
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// Whether two secrets are the same (a new passphrase typed twice).
    pub fn same_as(&self, other: &Secret) -> bool {
        self.kind == other.kind && self.bytes[..] == other.bytes[..]
    }

    /// Refuses a passphrase too short to protect a home from now on; an existing home is
    /// opened with whatever passphrase it was given.
    pub(crate) fn check_new(&self) -> Result<(), ClientError> {
        let chars = String::from_utf8_lossy(&self.bytes).chars().count();
        if self.kind == SecretKind::Passphrase && chars < PASSPHRASE_CHARS_MIN {
            return Err(ClientError::Usage(format!(
                "choose a passphrase of at least {PASSPHRASE_CHARS_MIN} characters \
                 (a few words are easiest to remember)"
            )));
        }
        Ok(())
    }
}

/// How the data key is stored: what derives the key that wraps it, and the wrapped key.
/// It is kept beside the sealed values, in the clear: nothing in it helps a guesser but the
/// salt and the cost, which are public by design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: SecretKind,
    /// Argon2id's parameters for a passphrase; all zero for a key file.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: Vec<u8>,
    /// The data key sealed under the derived key, the header's other fields as associated
    /// data.
    pub wrapped_key: Vec<u8>,
}

/// Why a header did not give its data key.
#[derive(Debug)]
pub(crate) enum Unwrap {
    /// A secret of the other kind (a passphrase for a home protected by a key file).
    OtherKind,
    /// The secret is not the one the key was wrapped under.
    Wrong,
    /// The header itself is malformed or asks for more than this client allows.
    Damaged(String),
}

impl Header {
    /// Wraps `data_key` under `secret` with a fresh salt and today's parameters.
    pub(crate) fn wrap(secret: &Secret, data_key: &DataKey) -> Result<Header, ClientError> {
        let (memory_kib, iterations, parallelism) = match secret.kind {
            SecretKind::Passphrase => (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM),
            SecretKind::KeyFile => (0, 0, 0),
        };
        let mut header = Header {
            kind: secret.kind,
            memory_kib,
            iterations,
            parallelism,
            salt: random_bytes(SALT_BYTES),
            wrapped_key: Vec::new(),
        };
        let wrapping = header.derive(secret).map_err(|e| match e {
            Unwrap::Damaged(why) => ClientError::State(why),
            Unwrap::OtherKind | Unwrap::Wrong => ClientError::State("cannot derive a key".into()),
        })?;
        header.wrapped_key = wrapping.seal(&[&header.associated_data()], &data_key.0[..]);
        Ok(header)
    }

    /// The data key, if `secret` is the one it was wrapped under.
    pub(crate) fn unwrap(&self, secret: &Secret) -> Result<DataKey, Unwrap> {
        if secret.kind != self.kind {
            return Err(Unwrap::OtherKind);
        }
        let wrapping = self.derive(secret)?;
        let key = wrapping
            .open(&[&self.associated_data()], &self.wrapped_key)
            .map_err(|_| Unwrap::Wrong)?;
        let key: [u8; 32] = key[..]
            .try_into()
            .map_err(|_| Unwrap::Damaged("the wrapped data key has the wrong length".into()))?;
        Ok(DataKey(Zeroizing::new(key)))
    }

    /// The key that wraps the data key.
    fn derive(&self, secret: &Secret) -> Result<Keys, Unwrap> {
        if self.salt.len() != SALT_BYTES {
            return Err(Unwrap::Damaged("the salt has the wrong length".into()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        match self.kind {
            SecretKind::Passphrase => {
                if self.memory_kib > ARGON2_MEMORY_KIB_MAX
                    || self.iterations > ARGON2_ITERATIONS_MAX
                    || self.parallelism > ARGON2_PARALLELISM_MAX
                {
                    return Err(Unwrap::Damaged(format!(
                        "Argon2id parameters m={} KiB, t={}, p={} are beyond this client's \
                         bounds (m <= {ARGON2_MEMORY_KIB_MAX}, t <= {ARGON2_ITERATIONS_MAX}, \
                         p <= {ARGON2_PARALLELISM_MAX})",
                        self.memory_kib, self.iterations, self.parallelism
                    )));
                }
                let params = Params::new(
                    self.memory_kib,
                    self.iterations,
                    self.parallelism,
                    Some(key.len()),
                )
                .map_err(|e| Unwrap::Damaged(format!("Argon2id parameters: {e}")))?;
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(&secret.bytes, &self.salt, &mut key[..])
                    .map_err(|e| Unwrap::Damaged(format!("Argon2id: {e}")))?;
            }
            SecretKind::KeyFile => {
                let prk = hmac_sha256(&self.salt, &[&secret.bytes]);
                *key = hmac_sha256(&prk[..], &[b"relais at-rest v1 key file", &[1]]);
            }
        }
        Ok(Keys::from_key(&key))
    }

    /// The header's fields but the wrapped key, as the wrapping's associated data: a header
    /// whose parameters were changed does not open.
    fn associated_data(&self) -> Vec<u8> {
        encode_parts(&[
            self.kind.stored_name().as_bytes(),
            &self.memory_kib.to_be_bytes(),
            &self.iterations.to_be_bytes(),
            &self.parallelism.to_be_bytes(),
            &self.salt,
        ])
    }
}

/// The random key that seals a home's values; it changes only if the home is encrypted
/// anew, never when the passphrase changes.
#[derive(Clone)]
pub(crate) struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub(crate) fn generate() -> DataKey {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut key[..]);
        DataKey(key)
    }

    /// The keys used on values, each derived from the data key for one purpose.
    pub(crate) fn keys(&self) -> Keys {
        let seal = hkdf_expand(&self.0, b"relais at-rest v1 seal");
        let lookup = hkdf_expand(&self.0, b"relais at-rest v1 lookup");
        let mut keys = Keys::from_key(&seal);
        keys.lookup = lookup;
        keys
    }
}

/// Sealing and lookup keys of an unlocked home.
pub(crate) struct Keys {
    cipher: XChaCha20Poly1305,
    lookup: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(redacted)")
    }
}

impl Keys {
    fn from_key(key: &[u8; 32]) -> Keys {
        Keys {
            cipher: XChaCha20Poly1305::new(key.into()),
            lookup: Zeroizing::new([0; 32]),
        }
    }

    /// `plaintext` sealed with a fresh random nonce, bound to `aad` (the value's place:
    /// table, column, row): version byte, nonce, ciphertext and tag.
    pub(crate) fn seal(&self, aad: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_bytes(NONCE_BYTES);
        let aad = encode_parts(aad);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // XChaCha20-Poly1305 fails only for messages beyond 256 GiB, which no row is.
            .expect("a row is far below XChaCha20-Poly1305's message limit");
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of a value sealed at the place `aad` names; an error for a value that
    /// was altered, moved from another place, or sealed under another key.
    pub(crate) fn open(
        &self,
        aad: &[&[u8]],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let damaged = || {
            let place = aad
                .first()
                .map_or_else(String::new, |p| String::from_utf8_lossy(p).into_owned());
            ClientError::State(format!(
                "a stored {place} value does not decrypt: the database was damaged or \
                 altered; restore the home from a backup or enroll this device again"
            ))
        };
        if sealed.len() < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] != SEALED_VERSION {
            return Err(damaged());
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_BYTES);
        let aad = encode_parts(aad);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| damaged())
    }

    /// A keyed hash of `parts`, for the values a table is searched by (MLS storage keys,
    /// meta keys, senders): equal inputs give equal hashes, which reveal nothing else.
    pub(crate) fn lookup(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac_sha256(&self.lookup[..], &[&encode_parts(parts)])
    }
}

/// Each part's length (four bytes, big-endian) and then the part, after the domain: no
/// two different lists of parts encode the same.
fn encode_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    for part in parts {
        let len = u32::try_from(part.len()).expect("an associated-data part is far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// HKDF-Expand (RFC 5869) with SHA-256 for one 32-byte block: HMAC(key, info || 0x01).
fn hkdf_expand(key: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hmac_sha256(&key[..], &[info, &[1]]))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        DataKey::generate().keys()
    }

    #[test]
    fn sealed_values_open_only_in_their_place_under_their_key() {
        let keys = keys();
        let sealed = keys.seal(&[b"history", b"row 1"], b"secret text");
        assert_eq!(
            &keys.open(&[b"history", b"row 1"], &sealed).expect("open")[..],
            b"secret text"
        );
        assert!(
            !sealed.windows(11).any(|w| w == b"secret text"),
            "the plaintext is not in the sealed value"
        );
        let again = keys.seal(&[b"history", b"row 1"], b"secret text");
        assert_ne!(sealed, again, "a fresh nonce for every seal");

        // Moved to another row, or to another table: refused.
        let swapped = keys.open(&[b"history", b"row 2"], &sealed);
        assert!(swapped.is_err());
        assert!(keys.open(&[b"meta", b"row 1"], &sealed).is_err());
        // Parts are length-prefixed: "ab"+"c" is not "a"+"bc".
        let parts = keys.seal(&[b"ab", b"c"], b"x");
        assert!(keys.open(&[b"a", b"bc"], &parts).is_err());

        // Any altered byte: refused.
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(
                keys.open(&[b"history", b"row 1"], &tampered).is_err(),
                "byte {i}"
            );
        }
        assert!(keys.open(&[b"history", b"row 1"], &sealed[..20]).is_err());

        // Another home's key: refused, with an error that names the table, not the value.
        let error = self::keys()
            .open(&[b"history", b"row 1"], &sealed)
            .expect_err("wrong key");
        let text = error.to_string();
        assert!(
            text.contains("stored history value does not decrypt"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn lookups_are_keyed_and_length_prefixed() {
        let (a, b) = (keys(), keys());
        assert_eq!(a.lookup(&[b"meta", b"user"]), a.lookup(&[b"meta", b"user"]));
        assert_ne!(a.lookup(&[b"meta", b"user"]), b.lookup(&[b"meta", b"user"]));
        assert_ne!(a.lookup(&[b"meta", b"user"]), a.lookup(&[b"metau", b"ser"]));
    }

    /// Cheap Argon2id parameters, so that the header's logic is tested quickly; the real
    /// parameters are exercised by the integration tests.
    fn cheap(mut header: Header, secret: &Secret, key: &DataKey) -> Header {
        header.memory_kib = 64;
        header.iterations = 1;
        header.parallelism = 1;
        header.wrapped_key = Vec::new();
        let wrapping = header.derive(secret).expect("derive");
        header.wrapped_key = wrapping.seal(&[&header.associated_data()], &key.0[..]);
        header
    }

    #[test]
    fn the_data_key_unwraps_with_its_secret_only() {
        let key = DataKey::generate();
        let secret = Secret::passphrase("correct horse battery staple");
        let header = Header {
            kind: SecretKind::Passphrase,
            memory_kib: 0,
            iterations: 0,
            parallelism: 0,
            salt: random_bytes(SALT_BYTES),
            wrapped_key: Vec::new(),
        };
        let header = cheap(header, &secret, &key);
        let unwrapped = header.unwrap(&secret).expect("unwrap");
        assert_eq!(*unwrapped.0, *key.0);

        let wrong = Secret::passphrase("correct horse battery stapler");
        assert!(matches!(header.unwrap(&wrong), Err(Unwrap::Wrong)));
        let file = Secret {
            kind: SecretKind::KeyFile,
            bytes: Zeroizing::new(b"correct horse battery staple".to_vec()),
        };
        assert!(matches!(header.unwrap(&file), Err(Unwrap::OtherKind)));

        // Parameters lowered by someone who can write the file: the key no longer opens.
        let mut weakened = header.clone();
        weakened.memory_kib = 32;
        assert!(matches!(weakened.unwrap(&secret), Err(Unwrap::Wrong)));
        // Parameters raised past the bounds: refused before any allocation.
        let mut hostile = header.clone();
        hostile.memory_kib = u32::MAX;
        assert!(matches!(hostile.unwrap(&secret), Err(Unwrap::Damaged(_))));
        let mut short_salt = header;
        short_salt.salt.truncate(4);
        assert!(matches!(
            short_salt.unwrap(&secret),
            Err(Unwrap::Damaged(_))
        ));
    }

    #[test]
    fn a_key_file_wraps_without_argon2() {
        let key = DataKey::generate();
        let secret = Secret {
            kind: SecretKind::KeyFile,
            bytes: Zeroizing::new(vec![7; 32]),
        };
        let header = Header::wrap(&secret, &key).expect("wrap");
        assert_eq!(
            (header.memory_kib, header.iterations, header.parallelism),
            (0, 0, 0)
        );
        assert_eq!(*header.unwrap(&secret).expect("unwrap").0, *key.0);
        let other = Secret {
            kind: SecretKind::KeyFile,
            bytes: Zeroizing::new(vec![8; 32]),
        };
        assert!(matches!(header.unwrap(&other), Err(Unwrap::Wrong)));
    }

    #[test]
    fn new_passphrases_must_be_long_enough() {
        assert!(Secret::passphrase("short").check_new().is_err());
        assert!(Secret::passphrase("ünïcödé-long").check_new().is_ok());
        let debug = format!("{:?}", Secret::passphrase("do not print me"));
        assert!(!debug.contains("print"), "{debug}");
    }

    #[test]
    fn secret_files_are_read_privately_and_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let file = write("pass", b"a long passphrase here\nignored\n", 0o600);
        let secret = Secret::read_passphrase_file(&file).expect("read");
        assert_eq!(&secret.bytes[..], b"a long passphrase here");
        let open = write("open", b"a long passphrase here\n", 0o644);
        let error = Secret::read_passphrase_file(&open).expect_err("refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        let short = write("short.key", &[1; 16], 0o600);
        assert!(Secret::read_key_file(&short).is_err());
        let huge = write("huge", &vec![b'a'; 5000], 0o600);
        assert!(Secret::read_passphrase_file(&huge).is_err());
        let key = write("good.key", &[1; 32], 0o400);
        assert_eq!(
            Secret::read_key_file(&key).expect("key").kind(),
            SecretKind::KeyFile
        );
    }
}
