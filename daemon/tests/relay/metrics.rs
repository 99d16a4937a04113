//! Metrics against a live daemon: counters move as a real workload says they should,
//! every documented metric is exported in both formats (the Prometheus text format, which
//! promtool checks, and OpenMetrics, parsed strictly here), no plaintext leaks into them,
//! and a real Prometheus negotiates OpenMetrics, scrapes them and answers the documented
//! PromQL about them.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relais_client::{Client, connection::Connection};
use relais_protocol::pb;
use relais_testkit::{Daemon, secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod openmetrics;

/// What Debian's Prometheus (2.42) sends, and so asks for, by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A plain HTTP/1.1 GET; returns the status line and headers, and the body, whatever
/// the status.
async fn http_get_any(addr: &str, path: &str) -> (String, String) {
    http_get_accepting(addr, path, None).await
}

/// A plain HTTP/1.1 GET with an `Accept` header when given one.
async fn http_get_accepting(addr: &str, path: &str, accept: Option<&str>) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
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

/// The response header `name` (lowercase), from a response's head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn metrics_reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference/metrics.md");
    std::fs::read_to_string(path).expect("docs/reference/metrics.md")
}

/// The metrics `docs/reference/metrics.md` documents: relaisd's own and the standard
/// process metrics, one `### name` heading each.
fn documented_metrics() -> BTreeSet<String> {
    metrics_reference()
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|l| l.trim().trim_matches('`').to_owned())
        .filter(|name| name.starts_with("relais_") || name.starts_with("process_"))
        .collect()
}

/// The metric names of a Prometheus text format page, from its `# TYPE` lines.
fn exposed_in_text(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
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
    let (head, metrics) = http_get_any(&daemon.metrics_addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some(TEXT_CONTENT_TYPE),
        "no Accept header: the Prometheus text format\n{head}"
    );

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
    assert_process_metrics_are_those_of(&metrics, daemon.pid());
    assert_eq!(sample(&metrics, &built_from()), 1.0, "{metrics}");

    let exported = exposed_in_text(&metrics);
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

/// The standard process metrics, with the start time of `pid` as the kernel tells it:
/// the boot time (`btime` in `/proc/stat`, whole seconds) plus the process's start after
/// boot, the way Prometheus's own Go client reads it.
fn assert_process_metrics_are_those_of(metrics: &str, pid: u32) {
    assert!(sample(metrics, "process_resident_memory_bytes") > 0.0);
    assert!(sample(metrics, "process_virtual_memory_bytes") > 0.0);
    assert!(sample(metrics, "process_cpu_seconds_total") > 0.0);
    assert!(sample(metrics, "process_open_fds") < sample(metrics, "process_max_fds"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon's stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("(comm)")
        .1
        .split_whitespace()
        .collect();
    let start_ticks: f64 = fields[22 - 3].parse().expect("starttime");
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .expect("sysconf")
        .expect("CLK_TCK") as f64;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .expect("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .expect("btime")
        .trim()
        .parse()
        .expect("a number");
    let started = sample(metrics, "process_start_time_seconds");
    let expected = boot + start_ticks / ticks;
    assert!(
        (started - expected).abs() <= 1.0,
        "process_start_time_seconds {started}, but the kernel says {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_is_served_on_request_and_parses_strictly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    workload(&daemon, dir.path()).await;
    let documented = documented_metrics();

    // Prometheus's own Accept header gets OpenMetrics.
    let (head, open) =
        http_get_accepting(&daemon.metrics_addr, "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some(OPENMETRICS_CONTENT_TYPE),
        "{head}"
    );
    assert_eq!(header(&head, "vary"), Some("accept"), "{head}");
    let families = openmetrics::parse(&open);
    let exposed: BTreeSet<String> = families.iter().map(|f| f.exposed_name()).collect();
    assert_eq!(
        exposed, documented,
        "OpenMetrics families against docs/reference/metrics.md"
    );
    let family = |name: &str| {
        let found = families.iter().find(|f| f.name == name);
        found.unwrap_or_else(|| panic!("no family {name} in\n{open}"))
    };
    // Counters are named without `_total`, their samples with it; units are declared.
    assert_eq!(family("relais_enrollments").kind, "counter");
    assert_eq!(
        family("process_cpu_seconds").unit.as_deref(),
        Some("seconds")
    );
    assert_eq!(
        family("relais_relay_latency_seconds").unit.as_deref(),
        Some("seconds")
    );
    assert_eq!(family("relais_build").kind, "info");
    assert_eq!(
        sample(&open, "relais_enrollments_total{outcome=\"ok\"}"),
        2.0,
        "{open}"
    );

    // The text format, asked for by name, is what promtool reads.
    let (head, text) = http_get_accepting(
        &daemon.metrics_addr,
        "/metrics",
        Some("text/plain;version=0.0.4"),
    )
    .await;
    assert_eq!(
        header(&head, "content-type"),
        Some(TEXT_CONTENT_TYPE),
        "{head}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert_eq!(exposed_in_text(&text), documented);
    promtool_accepts(&text);
    assert_eq!(
        sample(&text, "relais_enrollments_total{outcome=\"ok\"}"),
        2.0
    );
}

/// `promtool check metrics`, Prometheus's own parser and linter of the text format.
fn promtool_accepts(page: &str) {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs: install Debian's prometheus package (scripts/test does it)");
    let mut stdin = promtool.stdin.take().expect("promtool's stdin");
    stdin.write_all(page.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's Prometheus scraping one target every second, stopped when dropped.
struct Prometheus {
    child: Child,
    api: String,
}

impl Prometheus {
    fn start(dir: &std::path::Path, target: &str) -> Prometheus {
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
        Prometheus {
            child,
            api: format!("127.0.0.1:{port}"),
        }
    }

    /// An API answer's `data`, or `None` while Prometheus is not answering yet (it refuses
    /// connections, then answers 503 until its storage is open). HTTP/1.0, so that long
    /// answers come whole rather than chunked.
    async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut stream = tokio::net::TcpStream::connect(&self.api).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.api);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        match head.split_whitespace().nth(1) {
            Some("503") => return None,
            Some("200") => {}
            _ => panic!("GET {path}: {head}\n{body}"),
        }
        let answer: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(answer["status"], "success", "GET {path}: {body}");
        Some(answer["data"].clone())
    }

    /// The series `promql` returns, once it returns any; fails after a minute.
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", percent_encoded(promql));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let data = self.get(&path).await;
            if let Some(result) = data.as_ref().and_then(|d| d["result"].as_array())
                && !result.is_empty()
            {
                return result.clone();
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never answered {promql}; last answer: {data:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The PromQL written in `docs/reference/metrics.md`: each inline code span that names a
/// documented metric and selects or computes something (`{` or `(`); recording rules'
/// names (with `:`) are left out, since the test's Prometheus does not load the rules.
fn documented_queries(documented: &BTreeSet<String>) -> Vec<String> {
    // Fenced blocks are expositions, not queries.
    let mut fenced = false;
    let reference = metrics_reference();
    let prose: Vec<&str> = reference
        .lines()
        .filter(|line| {
            fenced ^= line.starts_with("```");
            !fenced && !line.starts_with("```")
        })
        .collect();
    let prose = prose.join("\n");
    let spans = prose.split('`').skip(1).step_by(2);
    spans
        .filter(|span| span.contains('(') || span.contains('{'))
        .filter(|span| !span.contains(':'))
        .filter(|span| documented.iter().any(|name| span.contains(name.as_str())))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_negotiates_openmetrics_and_answers_the_documented_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    workload(&daemon, dir.path()).await;
    let prometheus = Prometheus::start(dir.path(), &daemon.metrics_addr);

    let enrolled = prometheus
        .query("sum(relais_enrollments_total{outcome=\"ok\"})")
        .await;
    assert_eq!(enrolled[0]["value"][1], "2", "two enrollments happened");
    let targets = prometheus.get("/api/v1/targets").await.expect("answers");
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");

    // Prometheus learns units and the info type only from OpenMetrics: it negotiated it.
    let latency = prometheus
        .get("/api/v1/metadata?metric=relais_relay_latency_seconds")
        .await
        .expect("answers");
    assert_eq!(
        latency["relais_relay_latency_seconds"][0]["unit"], "seconds",
        "{latency}"
    );
    let build = prometheus.get("/api/v1/metadata?metric=relais_build").await;
    assert_eq!(build.expect("answers")["relais_build"][0]["type"], "info");
    // And stored integer bounds as OpenMetrics writes them.
    let bucket = "relais_storage_batch_size_bucket{le=\"16.0\"}";
    assert_eq!(prometheus.query(bucket).await.len(), 1);

    let documented = documented_metrics();
    for name in &documented {
        // A histogram's series are its `_bucket`, `_sum` and `_count`.
        let series = format!("{{__name__=~\"{name}(_count)?\"}}");
        prometheus.query(&series).await;
    }
    let queries = documented_queries(&documented);
    assert!(queries.len() >= 4, "too few queries found: {queries:?}");
    for query in &queries {
        prometheus.query(query).await;
    }
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
