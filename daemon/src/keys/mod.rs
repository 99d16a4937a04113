//! The server's secrets and where they come from: the key that hashes enrollment codes,
//! the Ed25519 key the delivery service signs MLS proposals with, and the TLS private key
//! with its certificate.
//!
//! One interface, three sources (`keys.source`): `systemd-credentials` reads what systemd
//! decrypted into `$CREDENTIALS_DIRECTORY` (the appliance, D8); `sealed` decrypts the same
//! `.cred` files itself with `systemd-creds` (tests, hosts without the unit); `file` reads
//! plain files and refuses any the group or others can read (development only).
//! Secrets live in locked pages and are zeroed on drop ([`secret`]).

pub(crate) mod credentials;
mod file;
pub mod secret;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

pub use credentials::{
    CODE_SECRET, SIGNING_KEY, TLS_CERTIFICATE, TLS_KEY, UnsealCause, certificate_path, seal,
    sealed_path, unseal_file,
};
pub use secret::{Locked, Secret};

use crate::config::{Config, KeySourceKind};

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
    #[error("{what} is larger than {max} bytes; it is damaged or not a relais key")]
    TooLarge { what: String, max: usize },
    #[error(
        "keys.source is \"systemd-credentials\" but $CREDENTIALS_DIRECTORY is not set: start relaisd through relaisd.service (LoadCredentialEncrypted=), or set keys.source = \"sealed\" to decrypt the credentials itself"
    )]
    NoCredentialsDirectory,
    #[error(
        "credential {name} is missing ({path}); provision the appliance's keys with `relaisd keys provision` (docs/cookbook/sealed-keys.md)"
    )]
    MissingCredential { name: String, path: PathBuf },
    #[error("cannot unseal credential {name} ({path}): {cause}")]
    Unseal {
        name: String,
        path: PathBuf,
        cause: UnsealCause,
    },
    #[error(
        "cannot run systemd-creds to {action} credential {name}: {source}; install systemd 252 or later"
    )]
    Tool {
        action: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("cannot seal credential {name}: systemd-creds says: {detail}")]
    Seal { name: String, detail: String },
    #[error("the certificate {path} is unusable: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("{0}")]
    Provision(String),
}

/// Where the secrets come from, resolved from the configuration and the environment.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Plain credentials that systemd decrypted (`LoadCredentialEncrypted=`) into a
    /// private, unswappable directory for this unit only.
    SystemdCredentials { directory: PathBuf },
    /// `.cred` files sealed by `relaisd keys provision`, decrypted here with `systemd-creds`.
    Sealed { directory: PathBuf },
    /// Plain files; missing server keys are generated (development only).
    File {
        directory: PathBuf,
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

/// The server's secrets, locked in memory and zeroed when dropped.
pub struct ServerKeys {
    /// HMAC key for enrollment codes.
    pub code_secret: Locked<Zeroizing<[u8; 32]>>,
    /// The delivery service's MLS signature key (ed25519-dalek zeroes it on drop).
    pub signing: Locked<SigningKey>,
}

/// The TLS certificate chain (leaf first) and its PEM private key.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub private_key: Secret,
    /// Where the chain was read from, for messages.
    pub certificate_path: PathBuf,
}

impl KeySource {
    /// The source the configuration names; `systemd-credentials` reads
    /// `$CREDENTIALS_DIRECTORY`, which systemd sets when the unit has credentials.
    pub fn from_config(config: &Config) -> Result<KeySource, KeyError> {
        Ok(match config.keys.source {
            KeySourceKind::SystemdCredentials => KeySource::SystemdCredentials {
                directory: std::env::var_os("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .ok_or(KeyError::NoCredentialsDirectory)?,
            },
            KeySourceKind::Sealed => KeySource::Sealed {
                directory: config.keys_dir(),
            },
            KeySourceKind::File => KeySource::File {
                directory: config.keys_dir(),
                // Validation guarantees both paths with the file source; the fallbacks
                // only keep this function total.
                certificate: config.tls.certificate.clone().unwrap_or_default(),
                private_key: config.tls.private_key.clone().unwrap_or_default(),
            },
        })
    }

    /// One line for `relaisd admin status` and the logs.
    pub fn describe(&self) -> String {
        match self {
            KeySource::SystemdCredentials { directory } => {
                format!("systemd credentials in {}", directory.display())
            }
            KeySource::Sealed { directory } => {
                format!("sealed credentials in {}", directory.display())
            }
            KeySource::File { directory, .. } => format!("files in {}", directory.display()),
        }
    }

    /// Loads the enrollment-code key and the signing key.
    pub fn server_keys(&self) -> Result<ServerKeys, KeyError> {
        let (code, signing) = match self {
            KeySource::SystemdCredentials { directory } => (
                credentials::read_plain(directory, CODE_SECRET, 32)?,
                credentials::read_plain(directory, SIGNING_KEY, 32)?,
            ),
            KeySource::Sealed { directory } => (
                credentials::unseal(directory, CODE_SECRET, 32)?,
                credentials::unseal(directory, SIGNING_KEY, 32)?,
            ),
            KeySource::File { directory, .. } => file::server_secrets(directory)?,
        };
        let seed = Zeroizing::new(exactly_32(&signing, SIGNING_KEY)?);
        Ok(ServerKeys {
            code_secret: Locked::new(Zeroizing::new(exactly_32(&code, CODE_SECRET)?)),
            signing: Locked::new(SigningKey::from_bytes(&seed)),
        })
    }

    /// Loads the TLS certificate chain and private key (again on each reload).
    pub fn tls_identity(&self) -> Result<TlsIdentity, KeyError> {
        let (certificate_path, private_key) = match self {
            KeySource::SystemdCredentials { directory } => (
                directory.join(TLS_CERTIFICATE),
                credentials::read_plain(directory, TLS_KEY, secret::SECRET_BYTES_MAX)?,
            ),
            KeySource::Sealed { directory } => (
                credentials::certificate_path(directory),
                credentials::unseal(directory, TLS_KEY, secret::SECRET_BYTES_MAX)?,
            ),
            KeySource::File {
                certificate,
                private_key,
                ..
            } => (certificate.clone(), file::read_private(private_key)?),
        };
        Ok(TlsIdentity {
            chain: read_chain(&certificate_path)?,
            private_key,
            certificate_path,
        })
    }
}

/// The 32 bytes of a seed; the sources already bound the length, this proves it.
fn exactly_32(secret: &Secret, name: &str) -> Result<[u8; 32], KeyError> {
    secret
        .as_bytes()
        .try_into()
        .map_err(|_| KeyError::BadLength {
            path: PathBuf::from(name),
        })
}

/// Reads a PEM certificate chain, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    use rustls::pki_types::pem::PemObject;
    let unusable = |message: String| KeyError::Certificate {
        path: path.to_owned(),
        message,
    };
    if !path.exists() {
        return Err(unusable(
            "it does not exist; install the signed certificate with `relaisd keys install-certificate` (docs/cookbook/sealed-keys.md)".into(),
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| unusable(e.to_string()))?;
    if chain.is_empty() {
        return Err(unusable("no certificate found in the file".into()));
    }
    Ok(chain)
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

/// Creates `dir` (and its parents) private to this user, if it is not there yet.
pub(super) fn private_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyError::Io {
            action: "create",
            path: dir.to_owned(),
            source,
        })
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
