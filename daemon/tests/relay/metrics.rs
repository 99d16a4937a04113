//! Metrics against a live daemon: counters move as a real workload says they should,
//! every documented metric is exported, no plaintext leaks into them, and a real
//! Prometheus scrapes them and answers PromQL about them.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relais_client::{Client, connection::Connection};
use relais_protocol::pb;
use relais_testkit::{Daemon, secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET; returns the body.
async fn http_get(addr: &str, path: &str) -> String {
    let (head, body) = http_get_any(addr, path).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// A plain HTTP/1.1 GET; returns the status line and headers, and the body, whatever
/// the status.
async fn http_get_any(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The value of one sample line, `name{labels} value`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("{series} not exported"))
        .parse()
        .expect("a number")
}

fn documented_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/reference/metrics.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|l| l.trim().trim_matches('`').to_owned())
        .filter(|name| name.starts_with("relais_"))
        .collect()
}

async fn workload(daemon: &Daemon, dir: &std::path::Path) -> Vec<String> {
    let mut alice = Client::enroll(
        &dir.join("alice"),
        &daemon.server,
        &daemon.ca,
        "alice",
        &daemon.add_user("alice"),
    )
    .await
    .expect("alice enrolls");
    let mut bob = Client::enroll(
        &dir.join("bob"),
        &daemon.server,
        &daemon.ca,
        "bob",
        &daemon.add_user("bob"),
    )
    .await
    .expect("bob enrolls");
    alice.connect().await.expect("alice connects");
    bob.connect().await.expect("bob connects");
    let sent: Vec<String> = (0..3).map(|i| secret(&format!("metrics-{i}"))).collect();
    for text in &sent {
        alice.send("bob", text).await.expect("send");
    }
    let mut got = 0;
    for _ in 0..10 {
        got += bob
            .receive(Duration::from_secs(1))
            .await
            .expect("receive")
            .len();
        if got >= sent.len() {
            break;
        }
    }
    assert_eq!(got, sent.len());

    // One failed authentication: a key nobody enrolled.
    let opened = Connection::open(&daemon.server, &daemon.ca)
        .await
        .expect("connect");
    let mut raw = opened.connection;
    let refused = raw
        .call(pb::request::Body::Authenticate(pb::Authenticate {
            public_key: vec![9; 32],
            signature: vec![9; 64],
        }))
        .await;
    assert!(refused.is_err());
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_a_real_workload_and_every_documented_metric_is_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let sent = workload(&daemon, dir.path()).await;
    let metrics = http_get(&daemon.metrics_addr, "/metrics").await;

    assert_eq!(
        sample(&metrics, "relais_enrollments_total{outcome=\"ok\"}"),
        2.0
    );
    assert!(sample(&metrics, "relais_authentications_total{outcome=\"ok\"}") >= 2.0);
    assert_eq!(
        sample(&metrics, "relais_authentications_total{outcome=\"failed\"}"),
        1.0
    );
    // Three texts plus the conversation's info message.
    assert_eq!(
        sample(
            &metrics,
            "relais_messages_submitted_total{kind=\"application\"}"
        ),
        4.0
    );
    // The one commit added Bob while Alice was alone: nobody to deliver it to, so only
    // Bob's Welcome was stored.
    assert_eq!(
        sample(&metrics, "relais_messages_submitted_total{kind=\"commit\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &metrics,
            "relais_messages_submitted_total{kind=\"welcome\"}"
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "relais_epochs_advanced_total"), 1.0);
    assert_eq!(sample(&metrics, "relais_groups"), 1.0);
    assert!(
        sample(&metrics, "relais_deliveries_pushed_total") >= 5.0,
        "a Welcome, the info message and three texts"
    );
    assert!(sample(&metrics, "relais_acknowledgements_total") >= 5.0);
    assert_eq!(
        sample(&metrics, "relais_queue_deliveries"),
        0.0,
        "everything was acknowledged"
    );
    assert!(
        sample(
            &metrics,
            "relais_requests_total{type=\"submit_message\",outcome=\"ok\"}"
        ) >= 4.0
    );
    assert!(sample(&metrics, "relais_storage_commit_seconds_count") >= 1.0);
    assert!(sample(&metrics, "relais_connections_opened_total") >= 5.0);
    assert!(sample(&metrics, "relais_tls_handshakes_total") >= 5.0);
    assert_eq!(sample(&metrics, "relais_ready"), 1.0);
    assert!(sample(&metrics, "relais_process_resident_memory_bytes") > 0.0);
    assert_eq!(sample(&metrics, &built_from()), 1.0, "{metrics}");

    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let documented = documented_metrics();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/reference/metrics.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "documented but not exported by a live daemon: {missing:?}"
    );

    for text in &sent {
        assert!(!metrics.contains(text.as_str()), "plaintext in the metrics");
    }
    daemon.assert_never_stored(&sent);
}

/// Starts Debian's Prometheus scraping `target` every second.
fn start_prometheus(dir: &std::path::Path, target: &str) -> (Child, String) {
    let binary = which("prometheus").expect(
        "prometheus is not installed: install Debian's prometheus package (scripts/test does it)",
    );
    let port = relais_testkit::free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: relais\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .expect("write prometheus.yml");
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    (child, format!("127.0.0.1:{port}"))
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_and_answers_promql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    workload(&daemon, dir.path()).await;
    let (mut prometheus, api) = start_prometheus(dir.path(), &daemon.metrics_addr);

    let query = "sum(relais_enrollments_total{outcome=\"ok\"})";
    let url = format!(
        "/api/v1/query?query={}",
        query
            .replace(' ', "%20")
            .replace('"', "%22")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('=', "%3D")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let value = loop {
        assert!(
            Instant::now() < deadline,
            "prometheus never answered with the value; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(stream) = tokio::net::TcpStream::connect(&api).await else {
            continue;
        };
        drop(stream);
        let (head, body) = http_get_any(&api, &url).await;
        last = body;
        // Prometheus answers 503 until its storage is open.
        if head.starts_with("HTTP/1.1 503") {
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{last}");
        let answer: serde_json::Value = serde_json::from_str(&last).expect("json");
        if let Some(value) = answer["data"]["result"][0]["value"][1].as_str() {
            break value.to_owned();
        }
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(value, "2", "two enrollments happened");
}

/// The `relais_build_info` series of a relaisd built from the checkout's HEAD.
fn built_from() -> String {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(relais_testkit::repository())
            .args(args)
            .output()
            .expect("git runs: the suite runs in a clone");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout)
            .expect("git prints text")
            .trim()
            .to_owned()
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let epoch = git(&["log", "-1", "--format=%ct", "HEAD"]);
    format!(
        "relais_build_info{{version=\"{}\",commit=\"{}\",source_date_epoch=\"{epoch}\"}}",
        env!("CARGO_PKG_VERSION"),
        &commit[..12]
    )
}
