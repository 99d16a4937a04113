//! The `file` key source, for development: plain files in a private directory, created on
//! first start, refused when the group or others can read them.

use std::fs;
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

use super::secret::{SECRET_BYTES_MAX, Secret};
use super::{KeyError, check_private, private_dir, write_private};

/// Loads (or creates) `server-secret.key` and `server-signing.key` in `dir`.
pub(super) fn server_secrets(dir: &Path) -> Result<(Secret, Secret), KeyError> {
    private_dir(dir)?;
    Ok((
        load_or_create_secret(&dir.join("server-secret.key"))?,
        load_or_create_secret(&dir.join("server-signing.key"))?,
    ))
}

/// Reads a 32-byte secret, or creates one with mode 0600.
pub(super) fn load_or_create_secret(path: &Path) -> Result<Secret, KeyError> {
    if !path.exists() {
        let mut fresh = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(fresh.as_mut());
        write_private(path, fresh.as_ref()).map_err(|source| KeyError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        })?;
    }
    let secret = read_bounded(path, 32)?;
    if secret.as_bytes().len() != 32 {
        return Err(KeyError::BadLength {
            path: path.to_owned(),
        });
    }
    Ok(secret)
}

/// Reads a private file (a PEM key) after checking its permissions.
pub(super) fn read_private(path: &Path) -> Result<Secret, KeyError> {
    read_bounded(path, SECRET_BYTES_MAX)
}

fn read_bounded(path: &Path, max: usize) -> Result<Secret, KeyError> {
    check_private(path)?;
    let io = |source| KeyError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    Secret::read_from(&mut file, max)
        .map_err(io)?
        .ok_or_else(|| match max {
            32 => KeyError::BadLength {
                path: path.to_owned(),
            },
            _ => KeyError::TooLarge {
                what: path.display().to_string(),
                max,
            },
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys_dir = dir.path().join("keys");
        let (code, signing) = server_secrets(&keys_dir).expect("create");
        let (code_again, signing_again) = server_secrets(&keys_dir).expect("reload");
        assert_eq!(code.as_bytes(), code_again.as_bytes());
        assert_eq!(signing.as_bytes(), signing_again.as_bytes());
        assert_ne!(code.as_bytes(), signing.as_bytes());
        for name in ["server-secret.key", "server-signing.key"] {
            let mode = fs::metadata(keys_dir.join(name))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn open_or_damaged_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.key");
        fs::write(&path, [7u8; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_create_secret(&path)
            .err()
            .expect("must refuse")
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
        for bytes in [&[7u8; 31][..], &[7u8; 33][..]] {
            fs::write(&path, bytes).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            let error = load_or_create_secret(&path)
                .err()
                .expect("must refuse")
                .to_string();
            assert!(error.contains("exactly 32 bytes"), "{error}");
        }
    }
}
