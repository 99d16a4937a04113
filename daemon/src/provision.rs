//! Making the appliance's keys: `relaisd keys provision`, `rotate`, `install-certificate`
//! and `recover`. Every secret is sealed with `systemd-creds encrypt` through a pipe, so
//! its plaintext never touches a disk.
//!
//! Besides the sealed credentials, provisioning writes a recovery copy of the two
//! long-lived secrets (the enrollment-code key and the MLS signing key, which every group
//! names as its external sender) under a random recovery key that is printed once and
//! kept offline (D8). After a firmware update or a new mainboard, `recover` re-seals them
//! to the TPM as it now is; the TLS key is simply replaced.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::keys::credentials::{self, CODE_SECRET, SIGNING_KEY, TLS_KEY, seal, sealed_path};
use crate::keys::{KeyError, private_dir, secret};

/// The recovery copy of the long-lived secrets, beside the credentials.
pub const RECOVERY_FILE: &str = "relais-recovery.bin";
/// A new TLS key waiting for its certificate.
pub const PENDING_TLS_KEY: &str = "relais-tls-key.next.cred";
/// The signing request for the pending TLS key, for the ministry's CA.
pub const CERTIFICATE_REQUEST: &str = "relais-tls.csr";

/// Names the format of the recovery file and authenticates it (AEAD associated data).
const RECOVERY_MAGIC: &[u8] = b"relais-recovery-1";
/// Code secret and signing seed, 32 bytes each.
const RECOVERY_PLAINTEXT_BYTES: usize = 64;
const RECOVERY_TAG_BYTES: usize = 16;

/// How secrets are sealed: `systemd-creds encrypt --with-key=… --tpm2-pcrs=…`.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// `tpm2` on an appliance; `host` or `host+tpm2` where systemd-creds allows.
    pub with_key: String,
    /// PCRs joined by `+`, such as `7` or `7+11`.
    pub tpm2_pcrs: String,
}

/// The TLS certificate to make for a new key.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// DNS names or IP addresses clients use; the first is also the common name.
    pub names: Vec<String>,
    /// Make a self-signed certificate instead of a signing request.
    pub self_signed: bool,
    /// Validity of a self-signed certificate.
    pub valid_days: u32,
}

/// What a new TLS key produced.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsOutcome {
    /// A self-signed certificate is installed with its key.
    Installed { certificate: PathBuf },
    /// The key waits for the CA to sign this request; then `install-certificate`.
    Pending { request: PathBuf },
}

/// Generates and seals the long-lived secrets into `dir` with their recovery copy;
/// returns the recovery key (shown once, never stored). The TLS key comes next, from
/// [`rotate`], once the caller has shown the recovery key.
pub fn provision(dir: &Path, options: &SealOptions) -> Result<Zeroizing<String>, KeyError> {
    private_dir(dir)?;
    for name in [CODE_SECRET, SIGNING_KEY] {
        let path = sealed_path(dir, name);
        if path.exists() {
            return Err(KeyError::Provision(format!(
                "{} already holds provisioned keys ({}); use `relaisd keys rotate` for a new TLS key or `relaisd keys recover` to re-seal",
                dir.display(),
                path.display()
            )));
        }
    }
    let mut seeds = Zeroizing::new([0u8; RECOVERY_PLAINTEXT_BYTES]);
    rand::rngs::OsRng.fill_bytes(seeds.as_mut());
    let mut recovery = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(recovery.as_mut());
    let recovery_path = dir.join(RECOVERY_FILE);
    // Left over by an interrupted run that sealed nothing (checked above).
    let _ = std::fs::remove_file(&recovery_path);
    write_recovery_copy(&recovery_path, &recovery, seeds.as_ref())?;
    seal_seeds(dir, &seeds, options)?;
    Ok(Zeroizing::new(format_recovery_key(&recovery)))
}

/// Makes a new TLS key, sealed as the pending key, with a signing request; a self-signed
/// certificate is installed at once.
pub fn rotate(
    dir: &Path,
    options: &SealOptions,
    request: &CertificateRequest,
) -> Result<TlsOutcome, KeyError> {
    private_dir(dir)?;
    let generate = |e: rcgen::Error| KeyError::Provision(format!("cannot make the TLS key: {e}"));
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    let params = certificate_params(request).map_err(generate)?;
    let pending = dir.join(PENDING_TLS_KEY);
    seal(
        TLS_KEY,
        key_pem.as_bytes(),
        &pending,
        &options.with_key,
        &options.tpm2_pcrs,
    )?;
    if request.self_signed {
        let certificate = params.self_signed(&key).map_err(generate)?;
        let staged = dir.join("relais-tls-cert.self-signed.pem");
        write_public(&staged, certificate.pem().as_bytes())?;
        let installed = install_certificate(dir, &staged);
        let _ = std::fs::remove_file(&staged);
        installed?;
        return Ok(TlsOutcome::Installed {
            certificate: credentials::certificate_path(dir),
        });
    }
    let csr = params.serialize_request(&key).map_err(generate)?;
    let path = dir.join(CERTIFICATE_REQUEST);
    write_public(&path, csr.pem().map_err(generate)?.as_bytes())?;
    Ok(TlsOutcome::Pending { request: path })
}

/// Installs a certificate (chain, leaf first) for the pending TLS key: checks that it
/// belongs to that key, then puts both in place of the current ones.
pub fn install_certificate(dir: &Path, certificate: &Path) -> Result<(), KeyError> {
    let pending = dir.join(PENDING_TLS_KEY);
    if !pending.exists() {
        return Err(KeyError::Provision(format!(
            "{} has no pending TLS key; make one with `relaisd keys rotate`",
            dir.display()
        )));
    }
    let chain = crate::keys::read_chain(certificate)?;
    let key = credentials::unseal_file(&pending, TLS_KEY, secret::SECRET_BYTES_MAX)?;
    crate::tls::certified_key(chain, &key).map_err(|e| KeyError::Certificate {
        path: certificate.to_owned(),
        message: match e {
            crate::tls::TlsError::Mismatch { .. } => format!(
                "it does not belong to the pending TLS key; install the certificate the CA issued for {CERTIFICATE_REQUEST}"
            ),
            other => other.to_string(),
        },
    })?;
    let bytes = std::fs::read(certificate).map_err(|source| KeyError::Io {
        action: "read",
        path: certificate.to_owned(),
        source,
    })?;
    let installed = credentials::certificate_path(dir);
    let staged = installed.with_extension("pem.new");
    let _ = std::fs::remove_file(&staged);
    write_public(&staged, &bytes)?;
    // Key first, then certificate: each rename is atomic, and the window between them is
    // the only moment the two disagree.
    rename(&pending, &sealed_path(dir, TLS_KEY))?;
    rename(&staged, &installed)?;
    let _ = std::fs::remove_file(dir.join(CERTIFICATE_REQUEST));
    Ok(())
}

/// Re-seals the long-lived secrets from the recovery copy with the recovery key, to the
/// TPM and PCRs as they are now, then makes a new TLS key (the old one cannot be
/// unsealed any more and is not part of the recovery copy).
pub fn recover(
    dir: &Path,
    recovery_key: &str,
    options: &SealOptions,
    request: &CertificateRequest,
) -> Result<TlsOutcome, KeyError> {
    let recovery = parse_recovery_key(recovery_key)?;
    let path = dir.join(RECOVERY_FILE);
    let blob = std::fs::read(&path).map_err(|source| KeyError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let seeds = open_recovery_copy(&blob, &recovery).ok_or_else(|| {
        KeyError::Provision(format!(
            "the recovery key does not open {}: check the key (64 hexadecimal digits as printed at provisioning) and that the file belongs to this appliance",
            path.display()
        ))
    })?;
    seal_seeds(dir, &seeds, options)?;
    rotate(dir, options, request)
}

/// Seals the code secret and signing seed, each to a new file renamed into place, so an
/// interrupted run leaves the previous credential intact.
fn seal_seeds(
    dir: &Path,
    seeds: &[u8; RECOVERY_PLAINTEXT_BYTES],
    options: &SealOptions,
) -> Result<(), KeyError> {
    for (name, seed) in [(CODE_SECRET, &seeds[..32]), (SIGNING_KEY, &seeds[32..])] {
        let target = sealed_path(dir, name);
        let staged = target.with_extension("cred.new");
        let _ = std::fs::remove_file(&staged);
        seal(name, seed, &staged, &options.with_key, &options.tpm2_pcrs)?;
        rename(&staged, &target)?;
    }
    Ok(())
}

fn certificate_params(
    request: &CertificateRequest,
) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(request.names.clone())?;
    if let Some(first) = request.names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let now_ms = crate::now_ms();
    let end_ms = now_ms.saturating_add(i64::from(request.valid_days) * 86_400_000);
    let ((y0, m0, d0), (y1, m1, d1)) = (date(now_ms), date(end_ms));
    params.not_before = rcgen::date_time_ymd(y0, m0, d0);
    params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    Ok(params)
}

/// Midnight UTC of the day `ms` falls in, as rcgen wants it.
fn date(ms: i64) -> (i32, u8, u8) {
    // `format_time_ms` always writes `YYYY-MM-DDTHH:MM:SSZ`; the fallbacks keep this total.
    let text = crate::format_time_ms(ms);
    let year = text.get(0..4).and_then(|t| t.parse().ok()).unwrap_or(1970);
    let month = text.get(5..7).and_then(|t| t.parse().ok()).unwrap_or(1);
    let day = text.get(8..10).and_then(|t| t.parse().ok()).unwrap_or(1);
    (year, month, day)
}

fn write_recovery_copy(path: &Path, recovery: &[u8; 32], seeds: &[u8]) -> Result<(), KeyError> {
    let failed = || KeyError::Provision("cannot encrypt the recovery copy".into());
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, recovery).map_err(|_| failed())?);
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut sealed = Zeroizing::new(seeds.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(RECOVERY_MAGIC),
        &mut *sealed,
    )
    .map_err(|_| failed())?;
    let mut blob = RECOVERY_MAGIC.to_vec();
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    crate::keys::write_private(path, &blob).map_err(|source| KeyError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn open_recovery_copy(
    blob: &[u8],
    recovery: &[u8; 32],
) -> Option<Zeroizing<[u8; RECOVERY_PLAINTEXT_BYTES]>> {
    let rest = blob.strip_prefix(RECOVERY_MAGIC)?;
    if rest.len() != NONCE_LEN + RECOVERY_PLAINTEXT_BYTES + RECOVERY_TAG_BYTES {
        return None;
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, recovery).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buffer = Zeroizing::new(sealed.to_vec());
    let plain = key
        .open_in_place(nonce, Aad::from(RECOVERY_MAGIC), &mut buffer)
        .ok()?;
    let mut seeds = Zeroizing::new([0u8; RECOVERY_PLAINTEXT_BYTES]);
    seeds.copy_from_slice(plain.get(..RECOVERY_PLAINTEXT_BYTES)?);
    Some(seeds)
}

/// 64 hexadecimal digits in eight groups, easy to read aloud and to type back.
fn format_recovery_key(key: &[u8; 32]) -> String {
    let digits = Zeroizing::new(hex::encode(key));
    let groups: Vec<&str> = (0..8)
        .filter_map(|i| digits.get(i * 8..i * 8 + 8))
        .collect();
    groups.join("-")
}

fn parse_recovery_key(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let digits: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !matches!(c, '-' | ' ' | '\n' | '\r' | '\t'))
            .collect(),
    );
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(digits.as_bytes(), key.as_mut()).map_err(|_| {
        KeyError::Provision(
            "the recovery key must be 64 hexadecimal digits (dashes and spaces are ignored)".into(),
        )
    })?;
    Ok(key)
}

/// Writes a public file (certificate, request) whole, replacing any previous one.
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    std::fs::write(path, bytes).map_err(|source| KeyError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), KeyError> {
    std::fs::rename(from, to).map_err(|source| KeyError::Io {
        action: "rename",
        path: from.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_copy_opens_only_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RECOVERY_FILE);
        let recovery = [3u8; 32];
        let seeds = [9u8; RECOVERY_PLAINTEXT_BYTES];
        write_recovery_copy(&path, &recovery, &seeds).expect("write");
        let blob = std::fs::read(&path).expect("read");
        assert!(
            !blob.windows(32).any(|w| w == &seeds[..32]),
            "the seeds are not stored in the clear"
        );
        let text = format_recovery_key(&recovery);
        assert_eq!(text.len(), 64 + 7);
        let parsed = parse_recovery_key(&format!(" {}\n", text.replace('-', " "))).expect("parse");
        let opened = open_recovery_copy(&blob, &parsed).expect("opens");
        assert_eq!(*opened, seeds);
        assert!(open_recovery_copy(&blob, &[4u8; 32]).is_none(), "wrong key");
        let mut tampered = blob.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(
            open_recovery_copy(&tampered, &recovery).is_none(),
            "tampered"
        );
        assert!(parse_recovery_key("abcd").is_err());
    }

    #[test]
    fn certificates_cover_the_given_names_for_the_given_days() {
        let request = CertificateRequest {
            names: vec!["relais.interieur.gouv.fr".into(), "10.0.0.7".into()],
            self_signed: true,
            valid_days: 365,
        };
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = certificate_params(&request)
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let expiry = crate::tls::certificate_der_not_after(certificate.der()).expect("expiry");
        let days = (expiry * 1000 - crate::now_ms()) / 86_400_000;
        assert!((363..=365).contains(&days), "{days} days");
    }
}
