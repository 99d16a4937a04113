//! The bench's own client connections: TCP (optionally from a chosen source address),
//! TLS 1.3, the WebSocket at `/v1/connect`, the challenge, and Enroll or Authenticate
//! signed exactly as the client library signs them.
//!
//! The library's `Connection` answers one request at a time and cannot bind a source
//! address; load needs many requests in flight per connection and more connections than
//! one source address has ports, so the same steps are done here with the stream split
//! into a writing and a reading half.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::{Signer as _, SigningKey};
use futures_util::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
use relais_protocol::{auth, frame};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A WebSocket to the relay.
pub type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// Largest frame accepted from the relay: Welcomes of 1,000-member groups are several MB.
const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The bench's WebSocket read buffer: tungstenite's default (128 KiB) is zero-filled and
/// so resident per connection, which would make the bench, not the relay, the limit of
/// the idle scenario; the relay's frames here are around 1 KiB.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Time the connection steps and the authentication answer may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the relay is and how to trust it.
pub struct Endpoint {
    pub addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    /// Trusts the CA certificates in `ca_pem` for the relay at `addr`.
    pub fn new(addr: SocketAddr, ca_pem: &Path) -> anyhow::Result<Endpoint> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem)
            .with_context(|| format!("cannot read the CA file {}", ca_pem.display()))?
        {
            roots.add(cert.with_context(|| ca_pem.display().to_string())?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Endpoint {
            addr,
            config: Arc::new(config),
        })
    }

    /// TCP with Nagle off, then TLS; `source` binds the local address first.
    async fn tls(&self, source: Option<IpAddr>) -> anyhow::Result<TlsStream<TcpStream>> {
        let socket = TcpSocket::new_v4().context("cannot create a socket")?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("cannot bind the source address {ip}"))?;
        }
        let tcp = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {} failed", self.addr))
    }

    /// Opens the WebSocket and reads the challenge.
    pub async fn open(&self, source: Option<IpAddr>) -> anyhow::Result<Opened> {
        tokio::time::timeout(STEP_TIMEOUT, self.open_inner(source))
            .await
            .map_err(|_| anyhow!("the relay did not open a session in time"))?
    }

    async fn open_inner(&self, source: Option<IpAddr>) -> anyhow::Result<Opened> {
        let tls = self.tls(source).await?;
        let mut exporter = vec![0u8; auth::EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, auth::EXPORTER_LABEL, None)?;
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(FRAME_BYTES_MAX);
        ws_config.max_frame_size = Some(FRAME_BYTES_MAX);
        ws_config.read_buffer_size = READ_BUFFER_BYTES;
        let url = format!("wss://{}/v1/connect", self.addr);
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config))
                .await
                .context("WebSocket handshake failed")?;
        let Some(pb::envelope::Kind::Push(pb::Push {
            body: Some(pb::push::Body::Challenge(challenge)),
        })) = next_envelope(&mut socket).await?.and_then(|e| e.kind)
        else {
            bail!("the relay did not start with a challenge");
        };
        Ok(Opened {
            socket,
            nonce: challenge.nonce,
            exporter,
        })
    }

    /// Asks `/readyz`; true once the relay answers 200.
    pub async fn ready(&self) -> bool {
        let attempt = async {
            let mut tls = self.tls(None).await?;
            tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n\r\n")
                .await?;
            let mut head = [0u8; 12];
            tls.read_exact(&mut head).await?;
            anyhow::Ok(head.starts_with(b"HTTP/1.1 200"))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Ok(true))
        )
    }
}

/// A WebSocket that has received its challenge.
pub struct Opened {
    pub socket: Socket,
    nonce: Vec<u8>,
    exporter: Vec<u8>,
}

impl Opened {
    /// Authenticates an enrolled device; returns the socket and how many deliveries wait.
    pub async fn authenticate(self, key: &SigningKey) -> anyhow::Result<(Socket, u64)> {
        let signature = key.sign(&auth::transcript(&self.exporter, &self.nonce));
        let request = Req::Authenticate(pb::Authenticate {
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        });
        let (socket, response) = self.first_call(request).await?;
        match response {
            Resp::Authenticated(result) => Ok((socket, result.queued)),
            other => bail!("unexpected answer to Authenticate: {other:?}"),
        }
    }

    /// Enrolls a new device key for `user` with a one-time code.
    pub async fn enroll(self, user: &str, code: &str, key: &SigningKey) -> anyhow::Result<Socket> {
        let signature = key.sign(&auth::transcript(&self.exporter, &self.nonce));
        let request = Req::Enroll(pb::Enroll {
            user: user.to_owned(),
            code: code.to_owned(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        });
        let (socket, response) = self.first_call(request).await?;
        match response {
            Resp::Enrolled(_) => Ok(socket),
            other => bail!("unexpected answer to Enroll: {other:?}"),
        }
    }

    async fn first_call(mut self, request: Req) -> anyhow::Result<(Socket, Resp)> {
        self.socket
            .send(Message::Binary(frame::request(1, request).into()))
            .await?;
        let answer = async {
            loop {
                let Some(envelope) = next_envelope(&mut self.socket).await? else {
                    bail!("the relay closed the connection during authentication");
                };
                if let Some(pb::envelope::Kind::Response(pb::Response { id: 0 | 1, body })) =
                    envelope.kind
                {
                    return match body {
                        Some(Resp::Error(e)) => Err(server_error(&e)),
                        Some(body) => Ok(body),
                        None => bail!("empty response from the relay"),
                    };
                }
            }
        };
        let body = tokio::time::timeout(STEP_TIMEOUT, answer)
            .await
            .map_err(|_| anyhow!("the relay did not answer in time"))??;
        Ok((self.socket, body))
    }
}

/// Reads the next envelope; `None` when the connection ended.
pub async fn next_envelope(socket: &mut Socket) -> anyhow::Result<Option<pb::Envelope>> {
    loop {
        let message = match socket.next().await {
            None | Some(Err(_)) => return Ok(None),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => {
                return pb::Envelope::decode(&bytes[..])
                    .map(Some)
                    .context("undecodable frame from the relay");
            }
            Message::Close(_) => return Ok(None),
            _ => continue,
        }
    }
}

/// An error the relay answered, as the bench reports it.
pub fn server_error(e: &pb::Error) -> anyhow::Error {
    let code = pb::ErrorCode::try_from(e.code).map_or_else(
        |_| format!("code {}", e.code),
        |c| c.as_str_name().to_owned(),
    );
    anyhow!("the relay refused: {code}: {}", e.message)
}

/// A bounded label for an error code, for counting refusals.
pub fn error_label(code: i32) -> String {
    pb::ErrorCode::try_from(code)
        .map_or_else(|_| format!("CODE_{code}"), |c| c.as_str_name().to_owned())
}
