//! The daemon's life cycle as a supervisor sees it: systemd notifications, health and
//! readiness over real TLS, a clean exit on SIGTERM, and the open-file limit it needs.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relais_testkit::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET over TLS 1.3, trusting the daemon's development CA; returns the status line and body.
async fn https_get(addr: &str, ca: &std::path::Path, path: &str) -> (String, String) {
    use rustls::pki_types::ServerName;
    let config = relais_testkit::tls_client_config(ca);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("tls");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_answers_health_and_stops_cleanly() {
    let dir = relais_testkit::service_tempdir();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    // The daemon may run as the service user: let it send to the socket, as systemd does.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod notify socket");
    }
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let data = dir.path().join("data");
    let mut child = relais_testkit::relaisd_command()
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start relaisd");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().expect("a line").expect("utf-8");
    std::thread::spawn(move || for _ in lines {});
    let addr = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("clients="))
        .expect("address")
        .to_owned();

    let expect = |wanted: &str| {
        let mut buffer = [0u8; 256];
        loop {
            let n = notify
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("no {wanted} notification: {e}"));
            if String::from_utf8_lossy(&buffer[..n]).contains(wanted) {
                return;
            }
        }
    };
    expect("READY=1");
    expect("WATCHDOG=1");

    let ca = data.join("ca.pem");
    assert_eq!(
        https_get(&addr, &ca, "/healthz").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(
        https_get(&addr, &ca, "/readyz").await,
        ("HTTP/1.1 200 OK".into(), "ready\n".into())
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    expect("STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "relaisd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "relaisd exits 0 after draining: {status:?}"
    );
    assert!(
        !data.join("admin.sock").exists(),
        "the admin socket is removed on exit"
    );
}

/// With socket activation (here through `systemd-socket-activate`, as `relaisd.socket`
/// does), relaisd serves on the socket it was given, not on the address it would bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_passed_by_systemd() {
    let dir = relais_testkit::service_tempdir();
    let data = dir.path().join("data");
    // A free port for the activation socket; the daemon itself is told to bind port 0.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let address = format!("127.0.0.1:{port}");
    // As root, through setpriv to the service user: the program systemd-socket-activate
    // starts keeps its process id across the exec, so the passed socket stays its own.
    let command = relais_testkit::relaisd_command();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &address, "--fdname=client"])
        .arg(command.get_program())
        .args(command.get_args())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (from Debian's systemd package)");
    // systemd-socket-activate starts the program on the first connection, like a socket unit.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            Instant::now() < deadline,
            "the activation socket never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let banner = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("relaisd: listening")))
        .expect("the banner");
    std::thread::spawn(move || for _ in lines {});
    assert!(banner.contains(&format!("clients={address}")), "{banner}");
    let ca = data.join("ca.pem");
    assert_eq!(
        https_get(&address, &ca, "/readyz").await.0,
        "HTTP/1.1 200 OK"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// relaisd lifts its soft open-file limit to what `limits.connections_max` needs (plus
/// 1,024 for its own files), and warns when the hard limit does not allow it.
#[test]
fn lifts_its_open_file_limit_to_its_connection_limit() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(
        hard >= 2_024,
        "this test needs a hard open-file limit of 2,024, not {hard}"
    );
    let soft_limit = |daemon: &Daemon| -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid()))
            .expect("read the daemon's limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("an open-file limit");
        line.split_whitespace()
            .nth(3)
            .expect("soft")
            .parse()
            .expect("a number")
    };
    const WARNING: &str = "limits.connections_max is";

    let dir = relais_testkit::service_tempdir();
    let mut daemon = Daemon::unstarted(dir.path(), "[limits]\nconnections_max = 1000\n");
    daemon.open_files = Some((64, hard));
    daemon.launch();
    assert_eq!(
        soft_limit(&daemon),
        2_024,
        "raised to 1,000 connections plus 1,024"
    );
    daemon.stop();
    assert!(
        !daemon.log_text().contains(WARNING),
        "{}",
        daemon.log_text()
    );

    let dir = relais_testkit::service_tempdir();
    let mut daemon = Daemon::unstarted(dir.path(), "[limits]\nconnections_max = 20000\n");
    daemon.open_files = Some((64, 1_500));
    daemon.launch();
    assert_eq!(
        soft_limit(&daemon),
        1_500,
        "raised as far as the hard limit allows"
    );
    daemon.stop();
    let log = daemon.log_text();
    assert!(
        log.contains("WARN")
            && log.contains("limits.connections_max is 20000 but relaisd may open only 1500 files")
            && log.contains("connections past about 476 will fail"),
        "{log}"
    );
}
