//! Raw WebSocket sessions with the relay, below the client library: for tests that send
//! frames a client would never send, hold connections open, or pipeline requests.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::Signer as _;
use futures_util::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use relais_protocol::frame;
use relais_protocol::pb::{self, ErrorCode};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{self, Message};

use super::Daemon;

/// A WebSocket over TLS to the relay's client listener.
pub type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// How long a test waits for the TLS handshake or for the relay's next frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A session that received its challenge, and what an Enroll or Authenticate on it signs.
pub struct Session {
    pub ws: Ws,
    pub nonce: Vec<u8>,
    /// The TLS exporter of the connection, which the signed transcript binds.
    pub exporter: Vec<u8>,
}

impl Session {
    /// Connects to `daemon` from the default address; the test fails if it cannot.
    pub async fn connect(daemon: &Daemon) -> Session {
        let tcp = TcpStream::connect(&daemon.addr).await.expect("tcp");
        let tls = tls_over(tcp, &daemon.ca).await.expect("tls");
        Session::over(daemon, tls).await.expect("websocket")
    }

    /// Opens a session over `tls`; the error says how the relay refused it (an HTTP
    /// status, or the connection's end).
    pub async fn over(daemon: &Daemon, tls: TlsStream<TcpStream>) -> Result<Session, String> {
        let mut exporter = vec![0u8; relais_protocol::auth::EXPORTER_BYTES];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, relais_protocol::auth::EXPORTER_LABEL, None)
            .expect("exporter");
        let port = daemon.addr.rsplit(':').next().expect("port");
        let url = format!("wss://localhost:{port}/v1/connect");
        let (mut ws, _) = match tokio_tungstenite::client_async(url, tls).await {
            Ok(pair) => pair,
            Err(tungstenite::Error::Http(response)) => {
                return Err(format!("HTTP {}", response.status().as_u16()));
            }
            Err(e) => return Err(e.to_string()),
        };
        let challenge = next(&mut ws).await.ok_or("closed before the challenge")?;
        let Some(pb::envelope::Kind::Push(pb::Push {
            body: Some(pb::push::Body::Challenge(c)),
        })) = challenge.kind
        else {
            return Err(format!("expected a challenge, got {challenge:?}"));
        };
        Ok(Session {
            ws,
            nonce: c.nonce,
            exporter,
        })
    }

    /// Sends request `id`, an Enroll for `user` with `code`, signed by a device key made
    /// from `seed`; the answer is left to the caller.
    pub async fn send_enroll(&mut self, id: u64, user: &str, code: &str, seed: u8) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let transcript = relais_protocol::auth::transcript(&self.exporter, &self.nonce);
        let enroll = pb::request::Body::Enroll(pb::Enroll {
            user: user.into(),
            code: code.into(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: key.sign(&transcript).to_bytes().to_vec(),
        });
        self.ws
            .send(Message::Binary(frame::request(id, enroll).into()))
            .await
            .expect("send enroll");
    }
}

/// TLS 1.3 over an open TCP connection to the relay, trusting the CA in `ca`, as the
/// client library connects; a handshake that takes over ten seconds is an error.
pub async fn tls_over(tcp: TcpStream, ca: &Path) -> std::io::Result<TlsStream<TcpStream>> {
    let config = super::tls_client_config(ca);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(
        FRAME_WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The next frame from the relay; `None` once the connection ended. The test fails if
/// neither comes within ten seconds.
pub async fn next(ws: &mut Ws) -> Option<pb::Envelope> {
    loop {
        match tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame or the end in time")?
        {
            Ok(Message::Binary(bytes)) => {
                return Some(pb::Envelope::decode(&bytes[..]).expect("server frames decode"));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The stable code of an error the relay sent.
pub fn code(e: &pb::Error) -> ErrorCode {
    ErrorCode::try_from(e.code).expect("known code")
}
