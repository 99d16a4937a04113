//! One connection to a relay: TLS 1.3, the WebSocket at `/v1/connect`, and protobuf
//! envelopes. Requests are answered in order by id; deliveries pushed meanwhile are kept
//! in a bounded buffer until the caller takes them. Reading is cancel-safe: a read given
//! up (a `select!` that took another branch) loses nothing, the frame stays to be read.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use relais_protocol::auth;
use relais_protocol::frame::{self, FrameError};
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
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

/// An open connection.
pub struct Connection {
    stream: Stream,
    next_id: u64,
    deliveries: VecDeque<pb::Delivery>,
    /// Why the server closed the connection, if it said.
    closing: Option<pb::Error>,
    /// When the server last sent anything, a pong included.
    last_heard: Instant,
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
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_pem).map_err(|e| {
            ClientError::Usage(format!("cannot read the CA file {}: {e}", ca_pem.display()))
        })?;
        for cert in certs {
            let cert =
                cert.map_err(|e| ClientError::Usage(format!("{}: {e}", ca_pem.display())))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", ca_pem.display())))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| ClientError::Usage(format!("{host:?} is not a valid server name: {e}")))?;
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| ClientError::Network(format!("cannot connect to {authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(format!("TLS with {authority} failed: {e}")))?;
        let mut exporter = vec![0u8; auth::EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(FRAME_BYTES_MAX);
        ws_config.max_frame_size = Some(FRAME_BYTES_MAX);
        let url = format!("wss://{authority}/v1/connect");
        let (stream, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config))
            .await
            .map_err(|e| ClientError::Network(format!("WebSocket handshake failed: {e}")))?;
        let mut connection = Connection {
            stream,
            next_id: 1,
            deliveries: VecDeque::new(),
            closing: None,
            last_heard: Instant::now(),
        };
        let first = connection.next_envelope(REQUEST_TIMEOUT).await?;
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
