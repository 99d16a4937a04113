//! One connection to a relay: TLS 1.3, the WebSocket at `/v1/connect`, and protobuf
//! envelopes. Requests are answered in order by id; deliveries pushed meanwhile are kept
//! in a bounded buffer until the caller takes them. Reading is cancel-safe: a read given
//! up (a `select!` that took another branch) loses nothing, the frame stays to be read.
//!
//! The relay is trusted by its certificate ([`Trust`]): a chain up to a CA of the home's CA
//! file (which may also hold the relay's own certificate, as a pinned home's does), or, when
//! enrolling from a link, a certificate of the presented chain whose SHA-256 is the link's
//! pin. Both are decided during the handshake, so nothing is sent to a relay that fails.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use relais_protocol::auth;
use relais_protocol::frame::{self, FrameError};
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::ClientError;

type Stream = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Largest frame accepted from the server: Welcomes of large groups are several MB.
const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Deliveries buffered while waiting for a response; the server sends at most a page
/// between two of our requests, so this is never reached by a well-behaved server.
const BUFFERED_DELIVERIES_MAX: usize = 100_000;
/// Time a request may take before the connection is considered dead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the relay may take to accept the TCP connection: one that is up does it in a
/// round trip, so past this the address is wrong or the network drops the packets (a
/// firewall), and waiting longer only keeps the user waiting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TLS 1.3 handshake may take once connected: two round trips and a
/// signature; a relay that accepts and then says nothing (overloaded, or not a relay)
/// fails here.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the WebSocket upgrade may take once TLS is up, the relay's challenge that
/// follows it included: one round trip each.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection.
pub struct Connection {
    stream: Stream,
    next_id: u64,
    deliveries: VecDeque<pb::Delivery>,
    /// Why the server closed the connection, if it said.
    closing: Option<pb::Error>,
    /// When the server last sent anything, a pong included.
    last_heard: Instant,
    /// The certificate chain the relay presented, leaf first, as this device verified it.
    relay_chain: Vec<CertificateDer<'static>>,
}

/// What a connection trusts the relay by.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The certificates of a PEM file (`relais enroll --ca FILE`, or `ca.pem` in a home
    /// enrolled from a link): the relay's chain must lead to one of them, or its own
    /// certificate be one of them.
    CaFile(&'a Path),
    /// The SHA-256 of one certificate of the chain the relay presents (an enrollment link's
    /// pin): the chain must hold it and lead up to it.
    Pin(&'a [u8; 32]),
}

/// What the TLS handshake and the server's first frame gave.
pub struct Opened {
    pub connection: Connection,
    pub nonce: Vec<u8>,
    pub exporter: Vec<u8>,
}

impl Connection {
    /// Connects to `https://HOST:PORT`, trusting the CA certificates in `ca_pem`, and
    /// reads the server's challenge.
    pub async fn open(server: &str, ca_pem: &Path) -> Result<Opened, ClientError> {
        Self::open_trusting(server, Trust::CaFile(ca_pem)).await
    }

    /// Connects to `https://HOST:PORT`, trusting the relay by `trust`, and reads the
    /// server's challenge. A relay that fails a pin fails with [`ClientError::PinMismatch`]
    /// before anything but the TLS handshake went to it.
    pub async fn open_trusting(server: &str, trust: Trust<'_>) -> Result<Opened, ClientError> {
        let authority = server
            .strip_prefix("https://")
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "{server:?}: the server must be given as https://HOST:PORT"
                ))
            })?
            .trim_end_matches('/');
        let (host, _) = authority.rsplit_once(':').ok_or_else(|| {
            ClientError::Usage(format!("{server:?}: the server address needs a port"))
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = tls_handshake(authority, host, trust).await?;
        let relay_chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(<[CertificateDer<'static>]>::to_vec)
            .unwrap_or_default();
        let mut exporter = vec![0u8; auth::EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(FRAME_BYTES_MAX);
        ws_config.max_frame_size = Some(FRAME_BYTES_MAX);
        let url = format!("wss://{authority}/v1/connect");
        let upgrade = async {
            let (stream, _) =
                tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config))
                    .await
                    .map_err(|e| {
                        ClientError::Network(format!("WebSocket handshake failed: {e}"))
                    })?;
            let mut connection = Connection {
                stream,
                next_id: 1,
                deliveries: VecDeque::new(),
                closing: None,
                last_heard: Instant::now(),
                relay_chain,
            };
            let first = connection.next_envelope(REQUEST_TIMEOUT).await?;
            Ok((connection, first))
        };
        let (connection, first) =
            bounded(authority, "the WebSocket upgrade", UPGRADE_TIMEOUT, upgrade).await?;
        let Some(pb::envelope::Kind::Push(pb::Push {
            body: Some(pb::push::Body::Challenge(challenge)),
        })) = first.and_then(|e| e.kind)
        else {
            return Err(ClientError::Protocol(
                "the server did not start with a challenge".into(),
            ));
        };
        Ok(Opened {
            connection,
            nonce: challenge.nonce,
            exporter,
        })
    }

    /// Sends raw bytes as one frame (for tests of hostile input).
    pub async fn send_frame(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.stream
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Network(e.to_string()))
    }

    /// The next binary frame as it came, bypassing decoding and buffering (for tests of
    /// hostile input); `None` once the connection has ended.
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.stream.next().await? {
                Ok(Message::Binary(bytes)) => return Some(bytes.to_vec()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The certificate chain the relay presented, leaf first, as verified.
    pub fn relay_chain(&self) -> &[CertificateDer<'static>] {
        &self.relay_chain
    }

    /// When the server last sent anything: a long silence is worth a [`Connection::ping`].
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Asks the server for a sign of life: its pong, like any frame it sends, moves
    /// [`Connection::last_heard`] once read.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.stream
            .send(Message::Ping(Vec::new().into()))
            .await
            .map_err(|e| ClientError::Network(e.to_string()))
    }

    /// Sends a request without waiting for its response (a quiet acknowledgement, which
    /// is answered only by the end of the connection when it fails).
    pub async fn post(&mut self, body: Req) -> Result<(), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_frame(frame::request(id, body)).await
    }

    /// Sends a request and waits for its response, keeping deliveries that arrive meanwhile.
    pub async fn call(&mut self, body: Req) -> Result<Resp, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_frame(frame::request(id, body)).await?;
        loop {
            let Some(envelope) = self.next_envelope(REQUEST_TIMEOUT).await? else {
                return Err(self.closed_error());
            };
            match envelope.kind {
                Some(pb::envelope::Kind::Response(pb::Response { id: got, body }))
                    if got == id || got == 0 =>
                {
                    match body {
                        Some(Resp::Error(e)) => return Err(ClientError::from_server(e)),
                        Some(body) => return Ok(body),
                        None => return Err(ClientError::Protocol("empty response".into())),
                    }
                }
                _ => continue,
            }
        }
    }

    /// The next delivery, waiting at most `wait`; `None` when none came in time.
    pub async fn next_delivery(
        &mut self,
        wait: Duration,
    ) -> Result<Option<pb::Delivery>, ClientError> {
        if let Some(delivery) = self.deliveries.pop_front() {
            return Ok(Some(delivery));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next_envelope(left)).await {
                Err(_) | Ok(Err(ClientError::Timeout)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => return Err(self.closed_error()),
                Ok(Ok(Some(_))) => {
                    if let Some(delivery) = self.deliveries.pop_front() {
                        return Ok(Some(delivery));
                    }
                }
            }
        }
    }

    /// Closes the WebSocket politely.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.close(None)).await;
    }

    fn closed_error(&self) -> ClientError {
        match &self.closing {
            Some(e) => ClientError::from_closing(e.clone()),
            None => ClientError::Network("the server closed the connection".into()),
        }
    }

    /// Reads the next envelope; pushes are recorded (deliveries buffered, closing kept)
    /// and also returned. `None` when the connection ended.
    async fn next_envelope(&mut self, wait: Duration) -> Result<Option<pb::Envelope>, ClientError> {
        loop {
            let message = match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(message) => message,
            };
            let bytes = match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(bytes))) => {
                    self.last_heard = Instant::now();
                    bytes
                }
                Some(Ok(_)) => {
                    self.last_heard = Instant::now();
                    continue;
                }
            };
            let envelope = match frame::decode_envelope(&bytes, FRAME_BYTES_MAX) {
                Ok(envelope) => envelope,
                // A newer server may push kinds this client does not know yet.
                Err(FrameError::UnknownKind) => continue,
                Err(e) => {
                    return Err(ClientError::Protocol(format!(
                        "the server sent an invalid frame ({e}); upgrade this client or report it"
                    )));
                }
            };
            if let Some(pb::envelope::Kind::Push(push)) = &envelope.kind {
                match &push.body {
                    Some(pb::push::Body::Delivery(delivery)) => {
                        if self.deliveries.len() >= BUFFERED_DELIVERIES_MAX {
                            return Err(ClientError::Protocol(
                                "the server sent too many deliveries at once; reconnect".into(),
                            ));
                        }
                        self.deliveries.push_back(delivery.clone());
                    }
                    Some(pb::push::Body::Closing(error)) => self.closing = Some(error.clone()),
                    _ => {}
                }
            }
            return Ok(Some(envelope));
        }
    }
}

/// Connects to `authority` and completes TLS 1.3 with `host` as the server name, trusting
/// the relay by `trust`.
async fn tls_handshake(
    authority: &str,
    host: &str,
    trust: Trust<'_>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let anchors = match trust {
        Trust::CaFile(ca_pem) => Anchors::Certificates(read_certificates(ca_pem)?),
        Trust::Pin(pin) => Anchors::Pin(*pin),
    };
    let verifier = Arc::new(RelayVerifier::new(anchors));
    let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Usage(format!("{host:?} is not a valid server name: {e}")))?;
    let connect = async {
        TcpStream::connect(authority).await.map_err(|e| {
            ClientError::Network(format!(
                "cannot connect to the relay at {authority} ({e}); check your network, and \
                 that the address is the one your administrator gave you"
            ))
        })
    };
    let tcp = bounded(authority, "connecting", CONNECT_TIMEOUT, connect).await?;
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                if verifier.pin_missing.load(Ordering::SeqCst) {
                    ClientError::PinMismatch {
                        server: authority.to_owned(),
                    }
                } else {
                    ClientError::Tls(format!(
                        "TLS with {authority} failed: {e}; if it lasts, tell your administrator"
                    ))
                }
            })
    };
    bounded(authority, "the TLS handshake", TLS_TIMEOUT, handshake).await
}

/// Runs `step` of opening a connection to `authority`, giving up after `limit` with an
/// error that names the step and the address, and says what to do.
async fn bounded<T>(
    authority: &str,
    step: &str,
    limit: Duration,
    run: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
        Err(ClientError::Network(format!(
            "the relay at {authority} did not answer within {} s ({step}); check the \
             address and your network, or try again later",
            limit.as_secs()
        )))
    })
}

/// The certificates of a PEM file, for [`Trust::CaFile`].
fn read_certificates(ca_pem: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let unusable = |e: &dyn std::fmt::Display| {
        ClientError::Usage(format!("cannot read the CA file {}: {e}", ca_pem.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_pem)
        .map_err(|e| unusable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unusable(&e))?;
    if certs.is_empty() {
        return Err(unusable(&"it holds no certificate"));
    }
    Ok(certs)
}

/// What the relay's chain must lead to.
#[derive(Debug)]
enum Anchors {
    Certificates(Vec<CertificateDer<'static>>),
    Pin([u8; 32]),
}

/// Verifies the relay's certificate against [`Anchors`], keeping rustls's own checks: the
/// chain up to an anchor with the signature algorithms of the crypto provider, the server
/// name, the validity dates, and the TLS 1.3 handshake signature with the leaf's key.
#[derive(Debug)]
struct RelayVerifier {
    anchors: Anchors,
    provider: Arc<CryptoProvider>,
    /// Set when a pinned chain did not hold the pinned certificate, for a clear error.
    pin_missing: AtomicBool,
}

impl RelayVerifier {
    fn new(anchors: Anchors) -> RelayVerifier {
        RelayVerifier {
            anchors,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            pin_missing: AtomicBool::new(false),
        }
    }
}

impl ServerCertVerifier for RelayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchors: Vec<CertificateDer<'static>> = match &self.anchors {
            Anchors::Certificates(certificates) => certificates.clone(),
            Anchors::Pin(pin) => {
                let pinned = std::iter::once(end_entity)
                    .chain(intermediates)
                    .find(|c| Sha256::digest(c.as_ref()).as_slice() == pin);
                let Some(pinned) = pinned else {
                    self.pin_missing.store(true, Ordering::SeqCst);
                    return Err(CertificateError::ApplicationVerificationFailure.into());
                };
                vec![pinned.clone().into_owned()]
            }
        };
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        if anchors.iter().any(|a| a.as_ref() == end_entity.as_ref()) {
            // The relay's own certificate is trusted as it is: no chain leads to it, and its
            // dates are checked here since no path building does it.
            check_dates(end_entity, now)?;
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for anchor in anchors {
                roots.add(anchor)?;
            }
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refuses a certificate outside its validity period (RFC 5280 4.1.2.5), or one whose
/// dates cannot be read.
fn check_dates(der: &[u8], now: UnixTime) -> Result<(), rustls::Error> {
    let (not_before, not_after) = validity(der).ok_or(CertificateError::BadEncoding)?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if now > not_after {
        return Err(CertificateError::Expired.into());
    }
    Ok(())
}

/// `tbsCertificate.validity` of a DER certificate, in seconds since the Unix epoch.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    // An optional [0] version, then serialNumber, signature and issuer.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    let (validity, _) = der_element(tbs, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// A UTCTime or GeneralizedTime (`...Z`), in seconds since the Unix epoch, and what follows.
fn der_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let tag = *input.first()?;
    let (time, rest) = der_element(input, tag)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, text) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> Option<i64> { text.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let seconds = field(4)? * 3600 + field(6)? * 60 + field(8)?;
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some((
        (era * 146_097 + day_of_era - 719_468) * 86_400 + seconds,
        rest,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens a connection to `addr` trusting `pin`, and returns its error and how long it
    /// took.
    async fn open_failing(addr: std::net::SocketAddr, pin: &[u8; 32]) -> (String, Duration) {
        let started = Instant::now();
        let opened = Connection::open_trusting(&format!("https://{addr}"), Trust::Pin(pin)).await;
        let Err(e @ ClientError::Network(_)) = opened else {
            panic!("a network error: {:?}", opened.map(|_| ()).err());
        };
        (e.to_string(), started.elapsed())
    }

    /// Whether `message` says that the relay at `addr` did not answer within `limit` in
    /// `step`, and what to do.
    fn is_silence(message: &str, addr: std::net::SocketAddr, step: &str, limit: Duration) -> bool {
        message.contains(&format!(
            "the relay at {addr} did not answer within {} s ({step}); check the address",
            limit.as_secs()
        )) && message.contains("or try again later")
    }

    /// Fails a test that waited much beyond `limit`, or gave up before it.
    fn assert_bounded(took: Duration, limit: Duration) {
        assert!(
            took >= limit && took < limit + Duration::from_secs(3),
            "gave up after {took:?}, for a bound of {limit:?}"
        );
    }

    /// A listener that accepts connections and keeps them open without ever writing: the
    /// TLS handshake gets no answer.
    #[tokio::test]
    async fn a_relay_that_accepts_and_never_answers_fails_the_tls_step_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let (message, took) = open_failing(addr, &[7; 32]).await;
        assert!(
            is_silence(&message, addr, "the TLS handshake", TLS_TIMEOUT),
            "{message}"
        );
        assert_bounded(took, TLS_TIMEOUT);
        silent.abort();
    }

    /// A listener whose queue of connections is full: the kernel drops the next one's SYN,
    /// so connecting gets no answer.
    #[tokio::test]
    async fn a_relay_that_never_accepts_fails_the_connect_step_in_time() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let _listener = socket.listen(0).expect("listen");
        // Fills the queue of a listener with a backlog of 0 (never accepted).
        let _queued = TcpStream::connect(addr).await.expect("first connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (message, took) = open_failing(addr, &[7; 32]).await;
        assert!(
            is_silence(&message, addr, "connecting", CONNECT_TIMEOUT),
            "{message}"
        );
        assert_bounded(took, CONNECT_TIMEOUT);
    }

    /// A relay that completes TLS (its certificate is the pinned one) and then never
    /// answers the WebSocket upgrade.
    #[tokio::test]
    async fn a_relay_that_never_upgrades_fails_the_upgrade_step_in_time() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
        let certificate = params.self_signed(&key).expect("certificate");
        let der = CertificateDer::from(certificate.der().to_vec());
        let pin: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mute = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    held.push(tls);
                }
            }
        });
        let (message, took) = open_failing(addr, &pin).await;
        assert!(
            is_silence(&message, addr, "the WebSocket upgrade", UPGRADE_TIMEOUT),
            "{message}"
        );
        assert_bounded(took, UPGRADE_TIMEOUT);
        mute.abort();
    }

    /// A certificate with the given validity, signed by itself.
    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["relay.test".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn a_certificates_dates_are_read_and_checked() {
        // 2000-01-01 and 2049-12-31 (UTCTime), 2050-01-01 (GeneralizedTime).
        let der = certificate((2000, 1, 1), (2049, 12, 31));
        assert_eq!(validity(&der), Some((946_684_800, 2_524_521_600)));
        let later = certificate((2000, 1, 1), (2050, 1, 1));
        assert_eq!(
            validity(&later).map(|(_, after)| after),
            Some(2_524_608_000)
        );
        let at = |secs: u64| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        assert!(check_dates(&der, at(1_700_000_000)).is_ok());
        assert_eq!(
            check_dates(&der, at(900_000_000)),
            Err(CertificateError::NotValidYet.into())
        );
        assert_eq!(
            check_dates(&der, at(2_600_000_000)),
            Err(CertificateError::Expired.into())
        );
        assert_eq!(
            check_dates(&der[..40], at(1_700_000_000)),
            Err(CertificateError::BadEncoding.into())
        );
    }
}
