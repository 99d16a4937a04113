//! TLS for the client listener: rustls with TLS 1.3 only (TLS 1.2 with forward-secret
//! AEAD suites only behind `danger_allow_tls12`), and the development CA of `--dev`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::keys::{self, KeyError};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("cannot read the private key {path}: {message}")]
    PrivateKey { path: String, message: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate the development certificates: {0}")]
    Generate(String),
}

/// Builds the server's rustls configuration from PEM files.
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
    allow_tls12: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    keys::check_private(private_key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            path: certificate.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: certificate.display().to_string(),
            message: "no certificate found in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsError::PrivateKey {
        path: private_key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Creates `ca.pem`, `server.pem` and `server.key` in `dir` unless they exist.
/// The CA's key is used once and never written, so nothing else can be signed with it.
pub fn ensure_dev_certificates(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    let server_pem = dir.join("server.pem");
    if server_pem.exists() && dir.join("server.key").exists() && dir.join("ca.pem").exists() {
        return Ok(());
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
    Ok(())
}
