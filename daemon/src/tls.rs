//! TLS for the client listener: rustls with TLS 1.3 only (TLS 1.2 with forward-secret
//! AEAD suites only behind `danger_allow_tls12`), what the relay reports of the chain it
//! serves (its expiry, and the pin enrollment links carry), and the development CA of
//! `--dev`.

use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};

use crate::keys::{self, KeyError, Secret, TlsIdentity};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the private key {path}: {message}")]
    PrivateKey { path: String, message: String },
    #[error(
        "the certificate {path} does not belong to the TLS private key; install the certificate issued for this key"
    )]
    Mismatch { path: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate the development certificates: {0}")]
    Generate(String),
}

/// The certificate and key served to clients, replaced on reload (SIGHUP) while the
/// listener and the connections already established stay as they are.
#[derive(Debug)]
pub struct CertificateResolver(RwLock<Arc<CertifiedKey>>);

impl CertificateResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<CertificateResolver> {
        Arc::new(CertificateResolver(RwLock::new(key)))
    }

    /// Serves `key` to every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        // A poisoned lock only means a panic elsewhere while holding it; the value inside
        // is a whole `Arc`, never half-written.
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What the relay reports of the certificate chain it serves, taken from the chain it loaded
/// for TLS when it loaded it (at start, before the sandbox, and at each reload): reporting
/// it never reads the chain's file again, which the sandbox may hide (sealed keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedChain {
    /// When the relay's own certificate expires, in Unix seconds, if it can be read.
    pub expiry: Option<i64>,
    /// What enrollment links pin; `None` only for a chain without a certificate.
    pub pin: Option<ChainPin>,
}

impl ServedChain {
    pub fn of(certified: &CertifiedKey) -> ServedChain {
        ServedChain {
            expiry: certified
                .cert
                .first()
                .and_then(|leaf| certificate_der_not_after(leaf.as_ref())),
            pin: ChainPin::of(&certified.cert),
        }
    }
}

/// The pin an enrollment link carries (`docs/reference/enroll-link.md`): the SHA-256 of the
/// last certificate of the chain the relay serves, its CA, or its own certificate when it
/// serves that alone. A device accepts the relay only if a certificate of the chain it is
/// presented has this digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChainPin {
    digest: [u8; 32],
    /// The pinned certificate is the relay's own: renewing it changes the pin.
    pub is_leaf: bool,
}

impl ChainPin {
    /// The pin of a chain, leaf first; `None` for an empty one.
    pub fn of(chain: &[CertificateDer<'_>]) -> Option<ChainPin> {
        let last = chain.last()?;
        Some(ChainPin {
            digest: Sha256::digest(last.as_ref()).into(),
            is_leaf: chain.len() == 1,
        })
    }
}

/// `sha256:` and the digest in unpadded base64url, as a link writes it.
impl std::fmt::Display for ChainPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.digest);
        write!(f, "sha256:{encoded}")
    }
}

impl std::fmt::Debug for ChainPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainPin({self}, is_leaf: {})", self.is_leaf)
    }
}

/// The one crypto provider, explicit so that no other gets linked in by default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server's rustls configuration around a swappable certificate.
pub fn server_config(
    resolver: Arc<CertificateResolver>,
    allow_tls12: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Pairs a certificate chain with its PEM private key, refusing a pair that does not match.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    private_key: &Secret,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(private_key.as_bytes()).map_err(|e| {
        TlsError::PrivateKey {
            path: keys::TLS_KEY.into(),
            message: e.to_string(),
        }
    })?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                path: "chain".into(),
            },
            other => TlsError::Rustls(other),
        })
}

/// The certified key of an identity loaded from a key source.
pub fn identity_key(identity: TlsIdentity) -> Result<Arc<CertifiedKey>, TlsError> {
    let path = identity.certificate_path.display().to_string();
    certified_key(identity.chain, &identity.private_key).map_err(|e| match e {
        TlsError::Mismatch { .. } => TlsError::Mismatch { path },
        other => other,
    })
}

/// A configuration from PEM files (the metrics listener's own certificate).
pub fn file_config(
    certificate: &Path,
    private_key: &Path,
    allow_tls12: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let identity = keys::KeySource::File {
        directory: Default::default(),
        certificate: certificate.to_owned(),
        private_key: private_key.to_owned(),
    }
    .tls_identity()?;
    server_config(
        CertificateResolver::new(identity_key(identity)?),
        allow_tls12,
    )
}

/// What [`ensure_dev_certificates`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevCertificates {
    /// All three files were there, and are kept.
    Kept,
    /// They were generated now, replacing any incomplete set.
    Written,
}

/// Creates `ca.pem`, `server.pem` and `server.key` in `dir` unless they exist.
/// The CA's key is used once and never written, so nothing else can be signed with it.
pub fn ensure_dev_certificates(dir: &Path, names: &[String]) -> Result<DevCertificates, TlsError> {
    let server_pem = dir.join("server.pem");
    if server_pem.exists() && dir.join("server.key").exists() && dir.join("ca.pem").exists() {
        return Ok(DevCertificates::Kept);
    }
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Relais development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "relaisd (development)");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).map_err(generate)?;

    let io =
        |path: &Path, e: std::io::Error| TlsError::Generate(format!("{}: {e}", path.display()));
    for path in ["ca.pem", "server.pem", "server.key"].map(|f| dir.join(f)) {
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        }
    }
    let key_path = dir.join("server.key");
    keys::write_private(&key_path, server_key.serialize_pem().as_bytes())
        .map_err(|e| io(&key_path, e))?;
    std::fs::write(&server_pem, server_cert.pem()).map_err(|e| io(&server_pem, e))?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).map_err(|e| io(&ca_path, e))?;
    Ok(DevCertificates::Written)
}

/// Reads `tbsCertificate.validity.notAfter` from a DER certificate (RFC 5280 §4.1), in
/// seconds since the Unix epoch.
pub fn certificate_der_not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    // Optional [0] version, then serialNumber, signature, issuer.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    let (validity, _) = der_element(tbs, 0x30)?;
    let rest = der_skip(validity)?;
    let tag = *rest.first()?;
    let (time, _) = der_element(rest, tag)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Splits a DER element with the expected tag into (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

/// Skips one DER element of any tag.
fn der_skip(input: &[u8]) -> Option<&[u8]> {
    der_element(input, *input.first()?).map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dir: &Path) -> (Vec<CertificateDer<'static>>, Secret) {
        ensure_dev_certificates(dir, &["localhost".into()]).expect("certificates");
        let chain = keys::read_chain(&dir.join("server.pem")).expect("chain");
        let key =
            Secret::copy_of(&std::fs::read(dir.join("server.key")).expect("key")).expect("fits");
        (chain, key)
    }

    #[test]
    fn a_certificate_is_paired_only_with_its_own_key_and_swapped_whole() {
        let (first, second) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (chain_a, key_a) = identity(first.path());
        let (chain_b, key_b) = identity(second.path());
        assert!(matches!(
            certified_key(chain_a.clone(), &key_b),
            Err(TlsError::Mismatch { .. })
        ));
        let not_pem = Secret::copy_of(b"not a key").expect("fits");
        assert!(matches!(
            certified_key(chain_a.clone(), &not_pem),
            Err(TlsError::PrivateKey { .. })
        ));
        let resolver = CertificateResolver::new(certified_key(chain_a.clone(), &key_a).expect("a"));
        assert_eq!(resolver.current().cert, chain_a);
        resolver.replace(certified_key(chain_b.clone(), &key_b).expect("b"));
        assert_eq!(resolver.current().cert, chain_b);
        server_config(resolver, false).expect("a configuration around the resolver");
    }

    #[test]
    fn development_certificates_are_kept_once_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ["localhost".to_owned()];
        let ensure = || ensure_dev_certificates(dir.path(), &names).expect("certificates");
        assert_eq!(ensure(), DevCertificates::Written);
        let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca.pem");
        assert_eq!(ensure(), DevCertificates::Kept);
        assert_eq!(
            std::fs::read(dir.path().join("ca.pem")).expect("ca.pem"),
            ca
        );
        // An incomplete set is replaced whole: a new CA, which the new key's certificate
        // is signed by.
        std::fs::remove_file(dir.path().join("server.key")).expect("remove");
        assert_eq!(ensure(), DevCertificates::Written);
        assert_ne!(
            std::fs::read(dir.path().join("ca.pem")).expect("ca.pem"),
            ca
        );
    }

    #[test]
    fn the_pin_is_the_last_certificate_of_the_chain_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, key) = identity(dir.path());
        let ca = keys::read_chain(&dir.path().join("ca.pem")).expect("ca");
        let served = ServedChain::of(&certified_key(chain.clone(), &key).expect("alone"));
        let alone = served.pin.expect("a pin");
        assert!(alone.is_leaf);
        let leaf_digest = Sha256::digest(chain[0].as_ref());
        assert_eq!(
            alone.to_string(),
            format!(
                "sha256:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(leaf_digest)
            )
        );
        assert_eq!(alone.to_string().len(), "sha256:".len() + 43);
        assert_eq!(
            served.expiry,
            certificate_der_not_after(chain[0].as_ref()),
            "the leaf's expiry"
        );
        let full = [chain.clone(), ca.clone()].concat();
        let with_ca = ServedChain::of(&certified_key(full, &key).expect("with its CA"));
        let pin = with_ca.pin.expect("a pin");
        assert!(!pin.is_leaf);
        assert_eq!(pin.digest[..], Sha256::digest(ca[0].as_ref())[..], "the CA");
        assert_ne!(pin.digest, alone.digest);
        assert_eq!(ChainPin::of(&[]), None);
    }

    #[test]
    fn reads_the_expiry_of_a_generated_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        super::ensure_dev_certificates(dir.path(), &["localhost".into()]).expect("certificates");
        let chain = crate::keys::read_chain(&dir.path().join("server.pem")).expect("chain");
        let expiry = super::certificate_der_not_after(chain[0].as_ref()).expect("expiry");
        // rcgen's default validity ends in 4096.
        assert_eq!(crate::format_time_ms(expiry * 1000), "4096-01-01T00:00:00Z");
        assert!(super::certificate_der_not_after(&[0x30, 0x05, 0x30]).is_none());
    }
}
