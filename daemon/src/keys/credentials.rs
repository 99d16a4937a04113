//! systemd credentials: reading the ones systemd decrypted for the unit, and sealing and
//! unsealing `.cred` files with `systemd-creds`, the plaintext always through a pipe.
//!
//! A credential that does not unseal is explained by its cause (PCRs changed, another
//! machine's TPM, no TPM), so an operator knows at once whether to run the recovery.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::KeyError;
use super::secret::Secret;

/// The key that hashes enrollment codes (32 bytes).
pub const CODE_SECRET: &str = "relais-code-secret";
/// The seed of the delivery service's Ed25519 signing key (32 bytes).
pub const SIGNING_KEY: &str = "relais-signing-key";
/// The TLS private key (PEM, PKCS#8).
pub const TLS_KEY: &str = "relais-tls-key";
/// The TLS certificate chain (PEM); public, so a plain credential (`LoadCredential=`).
pub const TLS_CERTIFICATE: &str = "relais-tls-cert";

/// Where the recovery procedure is written down; every unseal failure points at it.
const RECOVERY_DOC: &str = "docs/cookbook/sealed-keys.md";
/// Most of systemd-creds's diagnostics kept for a message.
const DIAGNOSTICS_BYTES_MAX: u64 = 16 * 1024;

/// Why a sealed credential did not decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealCause {
    /// The TPM's PCRs differ from those the credential was sealed to.
    PcrChanged { pcrs: Option<String> },
    /// Sealed by another TPM: the disk was copied or the mainboard replaced.
    OtherTpm,
    /// Sealed with a host key (`--with-key host`) this machine does not have.
    OtherHostKey,
    /// No TPM answered.
    NoTpm { detail: String },
    /// The file holds a credential of another name.
    WrongName { detail: String },
    /// The TPM refuses authorisations after too many failures.
    Lockout,
    /// The TPM has no room left for another session or object.
    TpmFull { detail: String },
    /// Anything else systemd-creds reported.
    Other { detail: String },
}

impl std::fmt::Display for UnsealCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnsealCause::PcrChanged { pcrs } => {
                let pcrs = pcrs.as_deref().map_or_else(
                    || "PCRs no longer match".to_owned(),
                    |p| match p.contains('+') {
                        true => format!("PCRs {p} no longer match"),
                        false => format!("PCR {p} no longer matches"),
                    },
                );
                write!(
                    f,
                    "the TPM's {pcrs} the policy it was sealed to (firmware update or Secure Boot change?); re-seal with the recovery procedure in {RECOVERY_DOC}"
                )
            }
            UnsealCause::OtherTpm => write!(
                f,
                "it was sealed by another machine's TPM (a copied disk or a replaced mainboard?); re-seal with the recovery procedure in {RECOVERY_DOC}"
            ),
            UnsealCause::OtherHostKey => write!(
                f,
                "it was sealed with another host key than this machine's /var/lib/systemd/credential.secret (another machine, or the key was replaced?); re-seal with the recovery procedure in {RECOVERY_DOC}"
            ),
            UnsealCause::NoTpm { detail } => write!(
                f,
                "no TPM answers ({detail}); check that /dev/tpmrm0 exists and that relaisd's user may open it"
            ),
            UnsealCause::WrongName { detail } => write!(
                f,
                "{detail}; the file was renamed or swapped, put back the right one or provision again"
            ),
            UnsealCause::Lockout => write!(
                f,
                "the TPM is in dictionary-attack lockout after repeated failures; wait for it to recover or clear it (tpm2_dictionarylockout), then restart"
            ),
            UnsealCause::TpmFull { detail } => write!(
                f,
                "the TPM has no room for another session or object ({detail}); use the kernel's resource manager (/dev/tpmrm0), then restart"
            ),
            UnsealCause::Other { detail } => write!(
                f,
                "systemd-creds says: {detail}; the file may be damaged: restore it, or re-seal with the recovery procedure in {RECOVERY_DOC}"
            ),
        }
    }
}

/// Reads a credential systemd decrypted into `$CREDENTIALS_DIRECTORY` (a private ramfs
/// that systemd owns, so its permissions are systemd's business, not checked here).
pub(super) fn read_plain(directory: &Path, name: &str, max: usize) -> Result<Secret, KeyError> {
    let path = directory.join(name);
    let mut file = std::fs::File::open(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::MissingCredential {
            name: name.to_owned(),
            path: path.clone(),
        },
        _ => KeyError::Io {
            action: "read",
            path: path.clone(),
            source,
        },
    })?;
    bounded(Secret::read_from(&mut file, max), name, &path, max)
}

/// The sealed file of credential `name` in `directory`.
pub fn sealed_path(directory: &Path, name: &str) -> PathBuf {
    directory.join(format!("{name}.cred"))
}

/// The certificate beside sealed credentials.
pub fn certificate_path(directory: &Path) -> PathBuf {
    directory.join(format!("{TLS_CERTIFICATE}.pem"))
}

/// Decrypts `DIR/NAME.cred` with `systemd-creds decrypt`; the plaintext comes through a
/// pipe straight into a locked page.
pub(super) fn unseal(directory: &Path, name: &str, max: usize) -> Result<Secret, KeyError> {
    unseal_file(&sealed_path(directory, name), name, max)
}

/// Decrypts one `.cred` file whose embedded name must be `name`.
pub fn unseal_file(path: &Path, name: &str, max: usize) -> Result<Secret, KeyError> {
    if !path.exists() {
        return Err(KeyError::MissingCredential {
            name: name.to_owned(),
            path: path.to_owned(),
        });
    }
    let tool = |source| KeyError::Tool {
        action: "decrypt",
        name: name.to_owned(),
        source,
    };
    let mut child = Command::new("systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={name}"))
        .arg(path)
        .arg("-")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(tool)?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(tool(std::io::Error::other("no pipes to systemd-creds")));
    };
    // Diagnostics are read beside the secret so that neither pipe can fill and block.
    let (secret, diagnostics) = std::thread::scope(|scope| {
        let diagnostics = scope.spawn(move || {
            let mut text = String::new();
            let _ = stderr.take(DIAGNOSTICS_BYTES_MAX).read_to_string(&mut text);
            text
        });
        let secret = Secret::read_from(&mut stdout, max);
        // Drain the rest so systemd-creds never blocks on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        (secret, diagnostics.join().unwrap_or_default())
    });
    let status = child.wait().map_err(tool)?;
    if !status.success() {
        return Err(KeyError::Unseal {
            name: name.to_owned(),
            path: path.to_owned(),
            cause: classify(&diagnostics, || sealed_pcrs(path)),
        });
    }
    bounded(secret, name, path, max)
}

/// Seals `plaintext` as credential `name` into `out` with `systemd-creds encrypt`,
/// writing the plaintext to its standard input so it never touches a disk.
pub fn seal(
    name: &str,
    plaintext: &[u8],
    out: &Path,
    with_key: &str,
    tpm2_pcrs: &str,
) -> Result<(), KeyError> {
    let mut command = Command::new("systemd-creds");
    command
        .arg("encrypt")
        .arg(format!("--name={name}"))
        .arg(format!("--with-key={with_key}"));
    if with_key.contains("tpm2") {
        command.arg(format!("--tpm2-pcrs={tpm2_pcrs}"));
    }
    let mut child = command
        .arg("-")
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KeyError::Tool {
            action: "encrypt",
            name: name.to_owned(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as systemd-creds's failure below.
        let _ = stdin.write_all(plaintext);
    }
    let output = child.wait_with_output().map_err(|source| KeyError::Tool {
        action: "encrypt",
        name: name.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(KeyError::Seal {
            name: name.to_owned(),
            detail: last_line(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(())
}

fn bounded(
    read: std::io::Result<Option<Secret>>,
    name: &str,
    path: &Path,
    max: usize,
) -> Result<Secret, KeyError> {
    read.map_err(|source| KeyError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?
    .ok_or_else(|| KeyError::TooLarge {
        what: format!("credential {name}"),
        max,
    })
}

/// Maps systemd-creds's diagnostics to a cause an operator can act on.
fn classify(diagnostics: &str, pcrs: impl FnOnce() -> Option<String>) -> UnsealCause {
    let has = |needle: &str| diagnostics.contains(needle);
    if has("out of memory for") {
        UnsealCause::TpmFull {
            detail: last_line(diagnostics),
        }
    } else if has("policy digest does not match") {
        UnsealCause::PcrChanged { pcrs: pcrs() }
    } else if has("integrity check failed") {
        // The sealed HMAC key is wrapped by the storage key of the TPM that sealed it;
        // another TPM cannot even load it.
        UnsealCause::OtherTpm
    } else if has("incorrect key?") {
        UnsealCause::OtherHostKey
    } else if has("lockout") {
        UnsealCause::Lockout
    } else if has("does not match filename") {
        UnsealCause::WrongName {
            detail: last_line(diagnostics),
        }
    } else if has("TCTI") || has("No TPM2") || has("TPM2 support not") {
        UnsealCause::NoTpm {
            detail: last_line(diagnostics),
        }
    } else {
        UnsealCause::Other {
            detail: last_line(diagnostics),
        }
    }
}

/// The last non-empty line of a diagnostic, which says what failed.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no diagnostic")
        .to_owned()
}

/// Credential formats with a TPM2 section (`CRED_AES256_GCM_BY_*` in systemd's
/// `creds-util.h`).
const TPM2_FORMATS: [[u8; 16]; 4] = [
    // TPM2_HMAC
    [
        0x0c, 0x7c, 0xc0, 0x7b, 0x11, 0x76, 0x45, 0x91, 0x9c, 0x4b, 0x0b, 0xea, 0x08, 0xbc, 0x20,
        0xfe,
    ],
    // TPM2_HMAC_WITH_PK
    [
        0xfa, 0xf7, 0xeb, 0x93, 0x41, 0xe3, 0x41, 0x2c, 0xa1, 0xa4, 0x36, 0xf9, 0x5a, 0x29, 0x36,
        0x2f,
    ],
    // HOST_AND_TPM2_HMAC
    [
        0x93, 0xa8, 0x94, 0x09, 0x48, 0x74, 0x44, 0x90, 0x90, 0xca, 0xf2, 0xfc, 0x93, 0xca, 0xb5,
        0x53,
    ],
    // HOST_AND_TPM2_HMAC_WITH_PK
    [
        0xaf, 0x49, 0x50, 0xa8, 0x49, 0x13, 0x4e, 0xb1, 0xa7, 0x38, 0x46, 0x30, 0x4f, 0xf3, 0x0c,
        0x05,
    ],
];

/// The PCRs a credential is sealed to, as `7` or `7+11`, read from its header:
/// `{id[16], key_size, block_size, iv_size, tag_size: le32, iv}`, padded to 8 bytes, then
/// the TPM2 section starting with `pcr_mask: le64`. `None` when the file is not one.
fn sealed_pcrs(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text: Vec<u8> = text
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let id: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    if !TPM2_FORMATS.contains(&id) {
        return None;
    }
    let iv_size = u32::from_le_bytes(bytes.get(24..28)?.try_into().ok()?) as usize;
    let offset = (32usize.checked_add(iv_size)?).checked_next_multiple_of(8)?;
    let mask = u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?);
    let pcrs: Vec<String> = (0..24)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| i.to_string())
        .collect();
    (!pcrs.is_empty()).then(|| pcrs.join("+"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_map_to_causes() {
        let pcrs = || Some("7".to_owned());
        let cases = [
            (
                "Current policy digest does not match stored policy digest, cancelling TPM2 authentication attempt.",
                UnsealCause::PcrChanged {
                    pcrs: Some("7".into()),
                },
            ),
            (
                "ERROR:esys:...\nFailed to load HMAC key in TPM: tpm:parameter(1):integrity check failed",
                UnsealCause::OtherTpm,
            ),
            (
                "Failed to initialize TCTI context: tcti:IO failure",
                UnsealCause::NoTpm {
                    detail: "Failed to initialize TCTI context: tcti:IO failure".into(),
                },
            ),
            (
                "Embedded credential name 'a' does not match filename 'b', refusing.",
                UnsealCause::WrongName {
                    detail: "Embedded credential name 'a' does not match filename 'b', refusing."
                        .into(),
                },
            ),
            (
                "Failed to unseal secret using TPM2: TPM is in DA lockout mode",
                UnsealCause::Lockout,
            ),
            (
                "Failed to load HMAC key in TPM: tpm:warn(2.0): out of memory for object contexts",
                UnsealCause::TpmFull {
                    detail: "Failed to load HMAC key in TPM: tpm:warn(2.0): out of memory for object contexts".into(),
                },
            ),
            (
                "Decryption failed (incorrect key?): error:00000000:lib(0)::reason(0)",
                UnsealCause::OtherHostKey,
            ),
            (
                "Failed to read encrypted credential data: Broken pipe\n",
                UnsealCause::Other {
                    detail: "Failed to read encrypted credential data: Broken pipe".into(),
                },
            ),
        ];
        for (diagnostics, expected) in cases {
            assert_eq!(classify(diagnostics, pcrs), expected, "{diagnostics}");
        }
        let message = UnsealCause::PcrChanged {
            pcrs: Some("7".into()),
        }
        .to_string();
        assert!(
            message.starts_with("the TPM's PCR 7 no longer matches the policy"),
            "{message}"
        );
        assert!(message.contains(RECOVERY_DOC), "{message}");
    }

    #[test]
    fn the_sealed_pcrs_are_read_from_the_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut header = TPM2_FORMATS[0].to_vec();
        for field in [32u32, 1, 12, 16] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        header.extend_from_slice(&[0; 12 + 4]); // iv, then padding to 8 bytes
        header.extend_from_slice(&((1u64 << 7) | (1 << 11)).to_le_bytes());
        header.extend_from_slice(&[0; 40]);
        let path = dir.path().join("x.cred");
        let text = base64::engine::general_purpose::STANDARD.encode(&header);
        std::fs::write(&path, format!("{}\n{}\n", &text[..40], &text[40..])).expect("write");
        assert_eq!(sealed_pcrs(&path).as_deref(), Some("7+11"));
        header[0] ^= 1;
        std::fs::write(
            &path,
            base64::engine::general_purpose::STANDARD.encode(&header),
        )
        .expect("write");
        assert_eq!(sealed_pcrs(&path), None, "not a TPM2 credential");
        std::fs::write(&path, "not base64!").expect("write");
        assert_eq!(sealed_pcrs(&path), None);
    }
}
