//! Enrollment links on the client's side (the format itself is `relais-link`'s, re-exported
//! here): a new device enrolls from a link ([`Client::enroll_from_link`]), the pin replacing
//! the CA file: it accepts the relay only if the chain it presents holds the certificate
//! with that SHA-256 and leads up to it, checked in the TLS handshake before anything is
//! sent ([`crate::Trust::Pin`]). An enrolled device issues a link for another of its user's
//! ([`Client::link_device`]). A link read from a file ([`read_link_file`]) is refused when
//! others can read the file, as the code in it is a secret.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use relais_link::{EnrollLink, LINK_BYTES_MAX, LinkError, pin_of, pin_text};
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use zeroize::Zeroizing;

use crate::connection::{Connection, Trust};
use crate::{Client, ClientError, Secret, keyfile};

/// Reads a link from a file that holds it alone (white space around it aside), as `relais
/// enroll --link FILE` does. The link holds a one-time code, so a file that its group or
/// other users can read is refused, as passphrase files are, with the `chmod` that makes it
/// private.
pub fn read_link_file(path: &Path) -> Result<EnrollLink, ClientError> {
    let why = "it holds an enrollment link, whose code enrolls a device as you";
    let bytes = keyfile::read_private(path, LINK_BYTES_MAX as u64, why)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| LinkError::NotALink)?;
    Ok(EnrollLink::parse(text)?)
}

impl Client {
    /// Enrolls a new device in `home` from an enrollment link, and leaves it connected, as
    /// [`Client::enroll_with`] does with a CA file. The relay is accepted only if the chain
    /// it presents holds the link's pinned certificate and leads up to it, with the link's
    /// host name: checked in the TLS handshake, so a relay that fails gets nothing but the
    /// handshake ([`ClientError::PinMismatch`]), and nothing is written to the home. Once
    /// the relay accepted the device, the pinned certificate is kept as `HOME/ca.pem`, the
    /// home's CA file from then on.
    pub async fn enroll_from_link(
        home: &Path,
        link: &EnrollLink,
        secret: Option<&Secret>,
    ) -> Result<Client, ClientError> {
        let server = format!("https://{}", link.server());
        let trust = Trust::Pin(link.pin());
        Self::enroll_trusting(home, &server, trust, link.user(), link.code(), secret).await
    }

    /// Asks the relay for a one-time code for a new device of this user, and returns it as
    /// an enrollment link with this device's address for the relay and the pin of the
    /// certificate that anchors the relay's chain for this device ([`anchored_pin`]), which
    /// it verified. The new device gets its history from this user's other devices once
    /// enrolled. The link holds the code: whoever has it can enroll a device as this user
    /// until it expires. The pin is found before the code is issued, so that no code is
    /// issued for a link that cannot be made.
    pub async fn link_device(&mut self) -> Result<EnrollLink, ClientError> {
        let ca = self.state.meta("ca").await?.ok_or_else(|| {
            ClientError::State("this home names no CA file; enroll this device again".into())
        })?;
        let anchors = home_anchors(Path::new(&*String::from_utf8_lossy(&ca)))?;
        let chain = self.connection()?.relay_chain();
        let pin = anchored_pin(chain, &anchors, UnixTime::now()).ok_or_else(|| {
            ClientError::Protocol(
                "the relay's certificate chain does not lead to a certificate of this home's \
                 CA file; reconnect, and if it persists tell your administrator"
                    .into(),
            )
        })?;
        let server = self
            .server()
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let Resp::DeviceCodeIssued(issued) = self
            .call(Req::IssueDeviceCode(pb::IssueDeviceCode {}))
            .await?
        else {
            return Err(ClientError::Protocol(
                "the relay answered IssueDeviceCode with something else".into(),
            ));
        };
        let code = Zeroizing::new(issued.code);
        let link = EnrollLink::new(&server, self.user(), &code, &pin_text(&pin)).map_err(|e| {
            ClientError::Protocol(format!("the relay's code does not make a link: {e}"))
        })?;
        Ok(link.expiring_at(issued.expires_at_ms))
    }
}

/// The certificates of the home's CA file, the anchors this device trusts the relay by.
fn home_anchors(ca: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ClientError::State(format!(
            "cannot read this home's CA file {}: {e}; enroll this device again",
            ca.display()
        ))
    };
    CertificateDer::pem_file_iter(ca)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(&e))
}

/// What a link issued by this device pins: the certificate of the home's CA file that
/// anchors the relay's `chain` (leaf first), when the relay presents it; when it does not
/// (a relay that serves its certificate without its CA), the certificate of the chain
/// closest to the leaf that the home's anchors sign, which the new device finds in the
/// chain. Either way the relay's chain verifies up to the pinned certificate, as the new
/// device will check it; a certificate the relay sends that no verification uses (one
/// appended after its chain) is never pinned. `None` when the chain leads to no anchor.
fn anchored_pin(
    chain: &[CertificateDer<'_>],
    anchors: &[CertificateDer<'static>],
    now: UnixTime,
) -> Option<[u8; 32]> {
    let leaf = chain.first()?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf).ok()?;
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    // As the connection verifies it: an anchor that is the leaf itself is trusted as such.
    let verifies = |roots: &[CertificateDer<'static>], intermediates: &[CertificateDer<'_>]| {
        if roots.iter().any(|r| r.as_ref() == leaf.as_ref()) {
            return true;
        }
        let mut store = rustls::RootCertStore::empty();
        roots.iter().all(|r| store.add(r.clone()).is_ok())
            && rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &store,
                intermediates,
                now,
                algorithms,
            )
            .is_ok()
    };
    let presented_anchor = chain.iter().enumerate().find_map(|(i, presented)| {
        let anchor = anchors.iter().find(|a| a.as_ref() == presented.as_ref())?;
        verifies(
            std::slice::from_ref(anchor),
            chain.get(1..i).unwrap_or_default(),
        )
        .then(|| pin_of(presented))
    });
    presented_anchor.or_else(|| {
        (0..chain.len())
            .find(|&k| verifies(anchors, chain.get(1..=k).unwrap_or_default()))
            .map(|k| pin_of(&chain[k]))
    })
}

/// The CA file a device enrolled trusting the relay by `trust` keeps in its state: the CA
/// file it was given, or the pinned certificate, kept now (once the relay accepted the
/// device) as `HOME/ca.pem`.
pub(crate) fn home_ca(
    home: &Path,
    trust: Trust<'_>,
    connection: &Connection,
) -> Result<PathBuf, ClientError> {
    match trust {
        Trust::CaFile(ca) => Ok(ca.to_owned()),
        Trust::Pin(pin) => keep_pinned(home, connection, pin),
    }
}

/// Keeps the certificate `connection`'s relay chain holds with the SHA-256 `pin` as
/// `HOME/ca.pem` (0600), and returns its absolute path for the home's state. It is written
/// before the state records the device, so a file a crash cut short is in a home that
/// holds no enrolled device, and the next enrollment replaces it.
fn keep_pinned(
    home: &Path,
    connection: &Connection,
    pin: &[u8; 32],
) -> Result<PathBuf, ClientError> {
    let pinned = connection
        .relay_chain()
        .iter()
        .find(|c| pin_of(c.as_ref()) == *pin)
        .ok_or_else(|| ClientError::PinMismatch {
            server: "this relay".into(),
        })?;
    let path = std::path::absolute(home.join("ca.pem"))
        .map_err(|e| ClientError::State(format!("{}: {e}", home.display())))?;
    let failed = |e: std::io::Error| {
        ClientError::State(format!(
            "cannot write {}: {e}; check the disk and the permissions of the home directory",
            path.display()
        ))
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    file.write_all(pem(pinned.as_ref()).as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::File::open(home)?.sync_all())
        .map_err(failed)?;
    Ok(path)
}

/// A DER certificate as PEM (RFC 7468): base64 in lines of 64 characters.
fn pem(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        // Base64 is ASCII, so every chunk is text.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_written_as_pem() {
        use rustls::pki_types::pem::PemObject as _;
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let text = pem(&der);
        let read: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .expect("PEM");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].as_ref(), &der[..]);
        assert!(text.lines().all(|l| l.len() <= 64), "{text}");
    }
}
