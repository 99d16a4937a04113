//! Prometheus metrics: lock-free counters and histograms, and their text exposition.
//!
//! Every metric is a field of one static [`Metrics`], updated with relaxed atomics on the
//! hot path; labels come from fixed enums, so every label set is bounded and no user or
//! device id can appear. `docs/reference/metrics.md` documents each one; a test checks
//! that the two agree.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The daemon's metrics.
pub static METRICS: Metrics = Metrics::new();

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds in seconds for latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
/// Bucket bounds for batch sizes.
pub const BATCH_BUCKETS: [f64; 14] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A histogram with 14 fixed buckets; the sum is kept in microunits.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64; 14],
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_micro: AtomicU64,
}

impl Histogram {
    pub const fn new(bounds: &'static [f64; 14]) -> Histogram {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; 14],
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Declares a closed set of label values, each with its own counter.
macro_rules! labelled {
    ($name:ident, $label:literal, [$($variant:ident = $text:literal),+ $(,)?]) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const LABEL: &'static str = $label;
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

labelled!(
    CloseReason,
    "reason",
    [
        Client = "client",
        Shutdown = "shutdown",
        Revoked = "revoked",
        Suspended = "suspended",
        Replaced = "replaced",
        TooSlow = "too_slow",
        AuthTimeout = "auth_timeout",
        ProtocolErrors = "protocol_errors",
        FrameTooLarge = "frame_too_large",
        WriteFailed = "write_failed",
        StorageError = "storage_error",
    ]
);
labelled!(
    HandshakeFailure,
    "reason",
    [
        Timeout = "timeout",
        Error = "error",
        LimitReached = "connection_limit"
    ]
);
labelled!(
    AuthOutcome,
    "outcome",
    [
        Ok = "ok",
        Failed = "failed",
        Revoked = "revoked",
        Suspended = "suspended",
        Expired = "expired",
        RateLimited = "rate_limited",
    ]
);
labelled!(
    EnrollOutcome,
    "outcome",
    [
        Ok = "ok",
        InvalidCode = "invalid_code",
        Refused = "refused",
        RateLimited = "rate_limited"
    ]
);
labelled!(
    RequestType,
    "type",
    [
        Enroll = "enroll",
        Authenticate = "authenticate",
        PublishKeyPackages = "publish_key_packages",
        ClaimKeyPackages = "claim_key_packages",
        CreateGroup = "create_group",
        SubmitCommit = "submit_commit",
        SubmitMessage = "submit_message",
        Acknowledge = "acknowledge",
        KeyPackageStatus = "key_package_status",
        Unknown = "unknown",
    ]
);
labelled!(Outcome, "outcome", [Ok = "ok", Error = "error"]);
labelled!(
    MessageKind,
    "kind",
    [
        Application = "application",
        Commit = "commit",
        Welcome = "welcome",
        Proposal = "proposal"
    ]
);
labelled!(
    ErrorKind,
    "kind",
    [
        Storage = "storage",
        Internal = "internal",
        Protocol = "protocol",
        Tls = "tls",
        Io = "io",
        Mls = "mls",
    ]
);
labelled!(
    ErrorSource,
    "source",
    [Peer = "peer", Storage = "storage", Internal = "internal"]
);

/// A counter per label value.
#[derive(Debug)]
pub struct Family<const N: usize> {
    counters: [Counter; N],
}

impl<const N: usize> Family<N> {
    pub const fn new() -> Self {
        Family {
            counters: [const { Counter::new() }; N],
        }
    }
    pub fn at(&self, index: usize) -> &Counter {
        &self.counters[index.min(N - 1)]
    }
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    pub connections_open: Gauge,
    pub connections_opened: Counter,
    pub connections_closed: Family<11>,
    pub tls_handshakes: Counter,
    pub tls_handshake_failures: Family<3>,
    pub authentications: Family<6>,
    pub enrollments: Family<4>,
    /// Indexed by request type × outcome.
    pub requests: Family<20>,
    pub messages_submitted: Family<4>,
    pub deliveries_pushed: Counter,
    pub acknowledgements: Counter,
    pub relay_latency: Histogram,
    pub queue_deliveries: Gauge,
    pub storage_commit: Histogram,
    pub storage_batch_size: Histogram,
    pub retention_expired: Counter,
    pub epochs_advanced: Counter,
    pub rate_limited: Counter,
    pub revocations: Counter,
    /// Indexed by kind × source.
    pub errors: Family<18>,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            connections_open: Gauge::new(),
            connections_opened: Counter::new(),
            connections_closed: Family::new(),
            tls_handshakes: Counter::new(),
            tls_handshake_failures: Family::new(),
            authentications: Family::new(),
            enrollments: Family::new(),
            requests: Family::new(),
            messages_submitted: Family::new(),
            deliveries_pushed: Counter::new(),
            acknowledgements: Counter::new(),
            relay_latency: Histogram::new(&LATENCY_BUCKETS),
            queue_deliveries: Gauge::new(),
            storage_commit: Histogram::new(&LATENCY_BUCKETS),
            storage_batch_size: Histogram::new(&BATCH_BUCKETS),
            retention_expired: Counter::new(),
            epochs_advanced: Counter::new(),
            rate_limited: Counter::new(),
            revocations: Counter::new(),
            errors: Family::new(),
        }
    }

    pub fn closed(&self, reason: CloseReason) {
        self.connections_closed.at(reason as usize).inc();
    }
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_handshake_failures.at(reason as usize).inc();
    }
    pub fn authenticated(&self, outcome: AuthOutcome) {
        self.authentications.at(outcome as usize).inc();
    }
    pub fn enrolled(&self, outcome: EnrollOutcome) {
        self.enrollments.at(outcome as usize).inc();
    }
    pub fn request(&self, kind: RequestType, outcome: Outcome) {
        self.requests.at(kind as usize * 2 + outcome as usize).inc();
    }
    pub fn submitted(&self, kind: MessageKind) {
        self.messages_submitted.at(kind as usize).inc();
    }
    pub fn error(&self, kind: ErrorKind, source: ErrorSource) {
        self.errors.at(kind as usize * 3 + source as usize).inc();
    }
}

/// Values read at scrape time from storage and the system.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ready: bool,
    pub oldest_queued_age_seconds: f64,
    pub groups: i64,
    /// Devices by one-time KeyPackages left: 0, 1-9, 10-49, 50 or more.
    pub key_package_buckets: [i64; 4],
    pub data_dir_free_bytes: Option<u64>,
    pub certificate_expiry_seconds: Option<i64>,
    pub key_provider_up: bool,
}

/// Renders everything in the Prometheus text format (version 0.0.4).
pub fn render(m: &Metrics, snapshot: &Snapshot, version: &str, commit: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "relais_build_info",
        "gauge",
        "Version and commit of the running relaisd.",
    );
    let _ = writeln!(
        out,
        "relais_build_info{{version=\"{version}\",commit=\"{commit}\"}} 1"
    );
    head(
        &mut out,
        "relais_ready",
        "gauge",
        "1 when the daemon accepts clients, 0 while starting or draining.",
    );
    let _ = writeln!(out, "relais_ready {}", u8::from(snapshot.ready));
    gauge(
        &mut out,
        "relais_connections_open",
        "Client connections currently open.",
        m.connections_open.get(),
    );
    counter(
        &mut out,
        "relais_connections_opened_total",
        "Client connections accepted.",
        m.connections_opened.get(),
    );
    family(
        &mut out,
        "relais_connections_closed_total",
        "Client connections closed, by reason.",
        CloseReason::LABEL,
        CloseReason::ALL
            .iter()
            .map(|r| (r.as_str(), m.connections_closed.at(*r as usize).get())),
    );
    counter(
        &mut out,
        "relais_tls_handshakes_total",
        "TLS handshakes completed.",
        m.tls_handshakes.get(),
    );
    family(
        &mut out,
        "relais_tls_handshake_failures_total",
        "TLS handshakes that failed or were refused, by reason.",
        HandshakeFailure::LABEL,
        HandshakeFailure::ALL
            .iter()
            .map(|r| (r.as_str(), m.tls_handshake_failures.at(*r as usize).get())),
    );
    family(
        &mut out,
        "relais_authentications_total",
        "Device authentication attempts, by outcome.",
        AuthOutcome::LABEL,
        AuthOutcome::ALL
            .iter()
            .map(|o| (o.as_str(), m.authentications.at(*o as usize).get())),
    );
    family(
        &mut out,
        "relais_enrollments_total",
        "Device enrollment attempts, by outcome.",
        EnrollOutcome::LABEL,
        EnrollOutcome::ALL
            .iter()
            .map(|o| (o.as_str(), m.enrollments.at(*o as usize).get())),
    );
    head(
        &mut out,
        "relais_requests_total",
        "counter",
        "Client requests, by type and outcome.",
    );
    for kind in RequestType::ALL {
        for outcome in Outcome::ALL {
            let value = m.requests.at(*kind as usize * 2 + *outcome as usize).get();
            let _ = writeln!(
                out,
                "relais_requests_total{{type=\"{}\",outcome=\"{}\"}} {value}",
                kind.as_str(),
                outcome.as_str()
            );
        }
    }
    family(
        &mut out,
        "relais_messages_submitted_total",
        "Messages stored for delivery, by kind.",
        MessageKind::LABEL,
        MessageKind::ALL
            .iter()
            .map(|k| (k.as_str(), m.messages_submitted.at(*k as usize).get())),
    );
    counter(
        &mut out,
        "relais_deliveries_pushed_total",
        "Deliveries written to device connections.",
        m.deliveries_pushed.get(),
    );
    counter(
        &mut out,
        "relais_acknowledgements_total",
        "Deliveries acknowledged and removed from queues.",
        m.acknowledgements.get(),
    );
    head(
        &mut out,
        "relais_relay_latency_seconds",
        "histogram",
        "Time from a message's durable commit to its push onto a recipient's connection.",
    );
    m.relay_latency
        .render(&mut out, "relais_relay_latency_seconds", "");
    gauge(
        &mut out,
        "relais_queue_deliveries",
        "Deliveries waiting in device queues.",
        m.queue_deliveries.get(),
    );
    head(
        &mut out,
        "relais_queue_oldest_message_age_seconds",
        "gauge",
        "Age of the oldest undelivered message.",
    );
    let _ = writeln!(
        out,
        "relais_queue_oldest_message_age_seconds {}",
        snapshot.oldest_queued_age_seconds
    );
    head(
        &mut out,
        "relais_storage_commit_seconds",
        "histogram",
        "Duration of the writer's transactions, commit included.",
    );
    m.storage_commit
        .render(&mut out, "relais_storage_commit_seconds", "");
    head(
        &mut out,
        "relais_storage_batch_size",
        "histogram",
        "Operations group-committed per writer transaction.",
    );
    m.storage_batch_size
        .render(&mut out, "relais_storage_batch_size", "");
    counter(
        &mut out,
        "relais_retention_expired_total",
        "Messages deleted undelivered after the retention period.",
        m.retention_expired.get(),
    );
    gauge(
        &mut out,
        "relais_groups",
        "MLS groups known to the delivery service.",
        snapshot.groups,
    );
    counter(
        &mut out,
        "relais_epochs_advanced_total",
        "Commits applied (each advances a group's epoch).",
        m.epochs_advanced.get(),
    );
    head(
        &mut out,
        "relais_devices_by_key_packages",
        "gauge",
        "Active devices by one-time KeyPackages left on the server.",
    );
    for (bucket, value) in ["0", "1-9", "10-49", "50+"]
        .iter()
        .zip(snapshot.key_package_buckets)
    {
        let _ = writeln!(
            out,
            "relais_devices_by_key_packages{{available=\"{bucket}\"}} {value}"
        );
    }
    counter(
        &mut out,
        "relais_rate_limited_total",
        "Submissions refused by the per-device rate limit.",
        m.rate_limited.get(),
    );
    counter(
        &mut out,
        "relais_revocations_total",
        "Devices revoked (directly or by deleting their user).",
        m.revocations.get(),
    );
    head(
        &mut out,
        "relais_errors_total",
        "counter",
        "Errors on every error path, by kind and source.",
    );
    for kind in ErrorKind::ALL {
        for source in ErrorSource::ALL {
            let value = m.errors.at(*kind as usize * 3 + *source as usize).get();
            let _ = writeln!(
                out,
                "relais_errors_total{{kind=\"{}\",source=\"{}\"}} {value}",
                kind.as_str(),
                source.as_str()
            );
        }
    }
    head(
        &mut out,
        "relais_key_provider_up",
        "gauge",
        "1 when the server's keys were loaded from their provider.",
    );
    let _ = writeln!(
        out,
        "relais_key_provider_up {}",
        u8::from(snapshot.key_provider_up)
    );
    if let Some(free) = snapshot.data_dir_free_bytes {
        head(
            &mut out,
            "relais_data_dir_free_bytes",
            "gauge",
            "Free bytes on the data directory's filesystem.",
        );
        let _ = writeln!(out, "relais_data_dir_free_bytes {free}");
    }
    if let Some(seconds) = snapshot.certificate_expiry_seconds {
        head(
            &mut out,
            "relais_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the client listener's certificate expires (Unix time).",
        );
        let _ = writeln!(
            out,
            "relais_tls_certificate_expiry_timestamp_seconds {seconds}"
        );
    }
    crate::metrics_process::render(&mut out);
    out
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value_label, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value_label}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&LATENCY_BUCKETS);
        h.observe(0.0002);
        h.observe(0.003);
        h.observe(20.0);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.00025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn labelled_families_render_every_value() {
        let m = Metrics::new();
        m.closed(CloseReason::TooSlow);
        m.request(RequestType::SubmitMessage, Outcome::Error);
        m.error(ErrorKind::Storage, ErrorSource::Storage);
        let out = render(&m, &Snapshot::default(), "1.0", "abc");
        assert!(out.contains("relais_connections_closed_total{reason=\"too_slow\"} 1\n"));
        assert!(out.contains("relais_connections_closed_total{reason=\"client\"} 0\n"));
        assert!(
            out.contains("relais_requests_total{type=\"submit_message\",outcome=\"error\"} 1\n")
        );
        assert!(out.contains("relais_errors_total{kind=\"storage\",source=\"storage\"} 1\n"));
        assert!(out.contains("relais_build_info{version=\"1.0\",commit=\"abc\"} 1\n"));
    }
}

// Each family holds exactly one counter per label value (or per pair of them).
const _: () = assert!(CloseReason::ALL.len() == 11);
const _: () = assert!(HandshakeFailure::ALL.len() == 3);
const _: () = assert!(AuthOutcome::ALL.len() == 6);
const _: () = assert!(EnrollOutcome::ALL.len() == 4);
const _: () = assert!(RequestType::ALL.len() * Outcome::ALL.len() == 20);
const _: () = assert!(MessageKind::ALL.len() == 4);
const _: () = assert!(ErrorKind::ALL.len() * ErrorSource::ALL.len() == 18);
