//! The server's own secrets: the key that hashes enrollment codes and the Ed25519 key the
//! delivery service signs MLS proposals with.
//!
//! They are files in a private directory (created on first start); secrets are zeroed on
//! drop and files readable by group or others are refused.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use zeroize::Zeroizing;

/// Why the server's secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others; run `chmod 600 {path}` (secrets must be private)"
    )]
    TooOpen { path: PathBuf },
    #[error("{path} must hold exactly 32 bytes; it is damaged or not a relais key")]
    BadLength { path: PathBuf },
}

/// The server's secrets, zeroed when dropped.
pub struct ServerKeys {
    /// HMAC key for enrollment codes.
    pub code_secret: Zeroizing<[u8; 32]>,
    /// The delivery service's MLS signature key (ed25519-dalek zeroes it on drop).
    pub signing: SigningKey,
}

impl ServerKeys {
    /// Loads the keys from `dir`, generating any that are missing.
    pub fn load_or_create(dir: &Path) -> Result<ServerKeys, KeyError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| KeyError::Io {
                    action: "create",
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let code_secret = load_or_create_secret(&dir.join("server-secret.key"))?;
        let signing_secret = load_or_create_secret(&dir.join("server-signing.key"))?;
        Ok(ServerKeys {
            code_secret,
            signing: SigningKey::from_bytes(&signing_secret),
        })
    }
}

/// Reads a 32-byte secret, or creates one with mode 0600.
pub fn load_or_create_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let io = |action, source| KeyError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        check_private(path)?;
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| io("read", e))?);
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadLength {
                path: path.to_owned(),
            })?;
        return Ok(Zeroizing::new(secret));
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    write_private(path, secret.as_ref()).map_err(|e| io("write", e))?;
    Ok(secret)
}

/// Refuses a secret file that group or others can read.
pub fn check_private(path: &Path) -> Result<(), KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Io {
        action: "inspect",
        path: path.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Writes a new file readable only by its owner (it never exists with wider permissions).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys_dir = dir.path().join("keys");
        let first = ServerKeys::load_or_create(&keys_dir).expect("create");
        let again = ServerKeys::load_or_create(&keys_dir).expect("reload");
        assert_eq!(*first.code_secret, *again.code_secret);
        assert_eq!(first.signing.verifying_key(), again.signing.verifying_key());
        let mode = fs::metadata(keys_dir.join("server-secret.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn world_readable_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.key");
        fs::write(&path, [7u8; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_create_secret(&path)
            .expect_err("must refuse")
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
