//! Holding the relay's connections: what an attacker who cannot authenticate may keep open,
//! how much it may send, how long a connection outlives its account, and the metrics
//! listener's own slots. Every test has the relay keep serving legitimate clients.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use relais_client::Client;
use relais_protocol::frame;
use relais_protocol::pb::{self, ErrorCode};
use relais_testkit::clients::{new_user, receive_n, server_code};
use relais_testkit::raw::{Session, Ws, code, next, tls_over};
use relais_testkit::{Daemon, relaisd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// The loopback address legitimate clients (the client library) connect from.
const HOME: &str = "127.0.0.1";
/// Another loopback address, for an attacker the per-address cap can tell apart.
const ATTACKER: &str = "127.0.0.2";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: IpAddr, to: &str) -> std::io::Result<TcpStream> {
    let to: SocketAddr = to.parse().expect("socket address");
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A TLS connection to the client listener from `from`, trusting the daemon's CA.
async fn tls_from(daemon: &Daemon, from: IpAddr) -> std::io::Result<TlsStream<TcpStream>> {
    tls_to(&daemon.addr, &daemon.ca, from).await
}

/// A TLS connection to `addr` from `from`, trusting the CA in `ca`.
async fn tls_to(
    addr: &str,
    ca: &std::path::Path,
    from: IpAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, addr).await?;
    tls_over(tcp, ca).await
}

/// A raw WebSocket session from `from`; the error says how the relay refused it (an HTTP
/// status, or the connection's end).
async fn ws_from(daemon: &Daemon, from: IpAddr) -> Result<Session, String> {
    let tls = tls_from(daemon, from).await.map_err(|e| e.to_string())?;
    Session::over(daemon, tls).await
}

/// Reads until the connection ends; returns the closing reason, if one came.
async fn closing(ws: &mut Ws) -> Result<Option<pb::Error>, String> {
    let mut reason = None;
    while let Some(envelope) = next(ws).await {
        match envelope.kind {
            Some(pb::envelope::Kind::Push(pb::Push {
                body: Some(pb::push::Body::Closing(e)),
            })) => reason = Some(e),
            other => return Err(format!("answered instead of closed: {other:?}")),
        }
    }
    Ok(reason)
}

/// Enrolls `user` with `code` over a raw session; returns the session, authenticated.
async fn raw_enroll(daemon: &Daemon, user: &str, code: String) -> Ws {
    let mut session = ws_from(daemon, ip(HOME)).await.expect("connects");
    session.send_enroll(1, user, &code, 9).await;
    let mut ws = session.ws;
    let answer = next(&mut ws).await.expect("an answer");
    assert!(
        matches!(
            answer.kind,
            Some(pb::envelope::Kind::Response(pb::Response {
                body: Some(pb::response::Body::Enrolled(_)),
                ..
            }))
        ),
        "{answer:?}"
    );
    ws
}

/// Enrolls a device until the relay lets it in (slots held by closed sessions are freed
/// as the relay notices), within ten seconds.
async fn enroll_when_admitted(daemon: &Daemon, dir: &std::path::Path, user: &str) -> Client {
    let code = daemon.add_user(user);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Client::enroll(&dir.join(user), &daemon.server, &daemon.ca, user, &code).await {
            Ok(mut client) => {
                client.connect().await.expect("connects once admitted");
                return client;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{user} not admitted yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{user} was never admitted: {e}"),
        }
    }
}

/// Finding 3: `limits.connections_max` bounds WebSocket sessions, not only the HTTP
/// requests that open them; the one too many is refused with HTTP 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_max_bounds_websocket_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[limits]\nconnections_max = 30\n");
    let mut sessions = Vec::new();
    for i in 0..30 {
        let Session { ws, .. } = ws_from(&daemon, ip(HOME))
            .await
            .unwrap_or_else(|e| panic!("session {i} is admitted: {e}"));
        sessions.push(ws);
    }
    let refused = ws_from(&daemon, ip(HOME)).await.err();
    assert_eq!(
        refused.as_deref(),
        Some("HTTP 503"),
        "the 31st session is refused with 503"
    );
    for mut ws in sessions {
        let _ = ws.close(None).await;
    }
    let mut alice = enroll_when_admitted(&daemon, dir.path(), "alice").await;
    alice.connect().await.expect("alice reconnects");
}

/// Finding 4: HTTP keep-alive cannot hold a slot (one request per connection), and one
/// address cannot hold more than its share while others connect and talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_health_checks_cannot_hold_the_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[limits]\nconnections_max = 30\nunauthenticated_per_address_max = 8\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let reused = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for _ in 0..30 {
        let (stop, refused, reused, served) = (
            stop.clone(),
            refused.clone(),
            reused.clone(),
            served.clone(),
        );
        let (addr, ca) = (daemon.addr.clone(), daemon.ca.clone());
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tls) = tls_to(&addr, &ca, ip(ATTACKER)).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Health checks on one keep-alive connection for as long as it is served.
                let mut requests = 0;
                while !stop.load(Ordering::Relaxed) {
                    match health_check(&mut tls).await {
                        Some(503) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(_) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            requests += 1;
                            if requests == 2 {
                                reused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => break,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut alice = enroll_when_admitted(&daemon, dir.path(), "alice").await;
    let mut bob = enroll_when_admitted(&daemon, dir.path(), "bob").await;
    let text = relais_testkit::secret("past-the-health-checks");
    alice.send("bob", &text).await.expect("alice sends");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.expect("attacker task");
    }
    assert!(
        served.load(Ordering::Relaxed) > 0,
        "the health checks were served"
    );
    assert_eq!(
        reused.load(Ordering::Relaxed),
        0,
        "no connection is served a second request"
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the attacker's connections beyond its address's cap are refused with 503"
    );
}

/// `GET /healthz` on an open connection: the status, or `None` once it is closed.
async fn health_check<S>(stream: &mut S) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    http_get(stream, "/healthz").await.map(|(status, _)| status)
}

/// One HTTP/1.1 GET, keep-alive (the default): the status and body, or `None` when the
/// connection ended first.
async fn http_get<S>(stream: &mut S, path: &str) -> Option<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    let status = head.split_whitespace().nth(1)?.parse().ok()?;
                    let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                    return Some((status, body.into_owned()));
                }
            }
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                return None;
            }
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}

/// Finding 7a: an account's expiry closes its live connection when it comes, and an
/// administrator's `user expire` to a past date closes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_expiry_closes_live_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let mut carol = new_user(&daemon, dir.path(), "carol").await;

    let expiry_s = relais_testkit::now_ms() / 1000 + 3;
    let at = relaisd::format_time_ms(expiry_s * 1000);
    daemon.admin(&["user", "expire", "alice", "--at", &at]);
    let before = relais_testkit::secret("before-expiry");
    alice
        .send("bob", &before)
        .await
        .expect("alice sends before");
    assert_eq!(
        receive_n(&mut bob, 1)
            .await
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        [before.as_str()]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match alice.receive(Duration::from_millis(500)).await {
            Err(e) => break e,
            Ok(_) if tokio::time::Instant::now() < deadline => continue,
            Ok(_) => panic!("alice's connection outlived her account's expiry"),
        }
    };
    assert!(
        relais_testkit::now_ms() >= expiry_s * 1000 - 1000,
        "closed before the expiry"
    );
    assert_eq!(
        server_code(&closed),
        Some(ErrorCode::AccountExpired),
        "{closed}"
    );
    let after = relais_testkit::secret("after-expiry");
    let sent = alice.send("bob", &after).await;
    assert!(sent.is_err(), "a message after expiry is not accepted");
    let late = bob
        .receive(Duration::from_secs(2))
        .await
        .expect("bob receives");
    assert!(late.is_empty(), "nothing from alice after expiry: {late:?}");

    // An administrator expiring an account now closes its connection at once.
    daemon.admin(&["user", "expire", "carol", "--at", "2000-01-01"]);
    let closed = carol
        .receive(Duration::from_secs(5))
        .await
        .expect_err("carol's connection is closed");
    assert_eq!(
        server_code(&closed),
        Some(ErrorCode::AccountExpired),
        "{closed}"
    );
}

/// Finding 7b: before authentication a connection may send only small frames; once
/// authenticated, the full frame limit applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_connections_send_large_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let large = 1024 * 1024;

    let Session { mut ws, .. } = ws_from(&daemon, ip(HOME)).await.expect("connects");
    // The relay may close before the whole frame is written.
    let _ = ws.send(Message::Binary(vec![0u8; large].into())).await;
    let reason = closing(&mut ws).await.expect("closed, not answered");
    eprintln!("an unauthenticated 1 MiB frame: closed with {reason:?}");
    if let Some(reason) = reason {
        assert_eq!(code(&reason), ErrorCode::FrameTooLarge, "{reason:?}");
    }

    let code_for_dave = daemon.add_user("dave");
    let mut ws = raw_enroll(&daemon, "dave", code_for_dave).await;
    let commit = pb::request::Body::SubmitCommit(pb::SubmitCommit {
        message_id: vec![1; 16],
        commit: vec![0u8; large],
        ..Default::default()
    });
    ws.send(Message::Binary(frame::request(2, commit).into()))
        .await
        .expect("send a large commit");
    let answer = next(&mut ws).await.expect("answered, not closed");
    let Some(pb::envelope::Kind::Response(pb::Response { id: 2, body })) = answer.kind else {
        panic!("expected the answer to request 2, got {answer:?}");
    };
    if let Some(pb::response::Body::Error(e)) = body {
        assert_ne!(code(&e), ErrorCode::FrameTooLarge, "{e:?}");
    }
}

/// Finding 7c: idle keep-alive and silent connections to the metrics listener, from other
/// addresses, do not stop a scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_blind_the_metrics_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut held = Vec::new();
    for _ in 0..20 {
        let Ok(mut tcp) = tcp_from(ip(ATTACKER), &daemon.metrics_addr).await else {
            continue;
        };
        // One scrape, then the connection stays open and idle (HTTP/1.1 keep-alive).
        let _ = http_get(&mut tcp, "/metrics").await;
        held.push(tcp);
    }
    for _ in 0..20 {
        if let Ok(tcp) = tcp_from(ip("127.0.0.3"), &daemon.metrics_addr).await {
            held.push(tcp);
        }
    }
    let mut tcp = tcp_from(ip(HOME), &daemon.metrics_addr)
        .await
        .expect("connect to the metrics listener");
    let (status, body) = http_get(&mut tcp, "/metrics")
        .await
        .expect("the scrape is served");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("relais_build_info"), "{body}");
    drop(held);
}

/// Finding 7c: a metrics listener reachable beyond the host needs an allow-list.
#[test]
fn check_config_refuses_open_metrics_without_an_allow_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, metrics: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("domain = \"ministere.gouv.fr\"\n\n[metrics]\n{metrics}"),
        )
        .expect("write");
        std::process::Command::new(relaisd())
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run relaisd check-config")
    };
    let out = check("open.toml", "listen = \"0.0.0.0:9464\"\n");
    assert_eq!(out.status.code(), Some(78), "refused with EX_CONFIG");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("open.toml:4: listen: ") && error.contains("metrics.allow"),
        "{error}"
    );
    for (name, metrics) in [
        (
            "listed.toml",
            "listen = \"0.0.0.0:9464\"\nallow = [\"10.0.0.0/8\"]\n",
        ),
        ("loopback.toml", "listen = \"[::1]:9464\"\n"),
        ("off.toml", "enabled = false\nlisten = \"0.0.0.0:9464\"\n"),
    ] {
        let out = check(name, metrics);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A WebSocket session through the balancer at `balancer`, for a client it says is at
/// `client` in its PROXY protocol v2 header.
async fn ws_via(daemon: &Daemon, balancer: IpAddr, client: &str) -> Result<Session, String> {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tcp_from(balancer, &daemon.addr)
        .await
        .map_err(|e| e.to_string())?;
    let header = relaisd::proxy_protocol::header(
        client.parse().expect("client address"),
        daemon.addr.parse().expect("relay address"),
    );
    tcp.write_all(&header).await.map_err(|e| e.to_string())?;
    let tls = tls_over(tcp, &daemon.ca).await.map_err(|e| e.to_string())?;
    Session::over(daemon, tls).await
}

/// Finding 5 behind a load balancer: every client arrives from the balancer's address, so
/// per-address limits would put them all in one bucket. A balancer listed in
/// `listen.proxy_protocol_from` names each client in a PROXY protocol v2 header, and the
/// limits apply to that address; a listed balancer's connection without one is dropped,
/// and nobody else's header is believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_listed_balancer_are_limited_by_their_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[listen]\nclient = \"127.0.0.1:0\"\nproxy_protocol_from = [\"127.0.0.3\"]\n\
         [limits]\nunauthenticated_per_address_max = 2\n",
    );
    let balancer = ip("127.0.0.3");
    // Three clients behind the balancer, held unauthenticated: each is its own address.
    let mut held = Vec::new();
    for client in [
        "198.51.100.1:40001",
        "198.51.100.2:40002",
        "198.51.100.3:40003",
    ] {
        held.push(ws_via(&daemon, balancer, client).await.expect("admitted"));
    }
    // One client's own cap still holds behind the balancer.
    for port in [40011, 40012] {
        let client = format!("198.51.100.9:{port}");
        held.push(ws_via(&daemon, balancer, &client).await.expect("admitted"));
    }
    let Err(refused) = ws_via(&daemon, balancer, "198.51.100.9:40013").await else {
        panic!("a third unauthenticated connection from 198.51.100.9 was admitted");
    };
    assert_eq!(refused, "HTTP 503");
    // The balancer's connection without a header is dropped before TLS.
    assert!(ws_from(&daemon, balancer).await.is_err());
    // A header from an address not listed is not one: the TLS handshake fails on it.
    let stranger = ip("127.0.0.4");
    let mut tcp = tcp_from(stranger, &daemon.addr).await.expect("tcp");
    let header = relaisd::proxy_protocol::header(
        "198.51.100.1:40001".parse().expect("address"),
        daemon.addr.parse().expect("address"),
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &header)
        .await
        .expect("write");
    assert!(tls_over(tcp, &daemon.ca).await.is_err());
    // Clients not behind the balancer are unaffected.
    assert!(ws_from(&daemon, ip("127.0.0.1")).await.is_ok());
    drop(held);
}
