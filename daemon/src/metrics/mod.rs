//! Prometheus metrics: lock-free counters and histograms, and their text exposition.
//!
//! Every metric is a field of one static [`Metrics`], updated with relaxed atomics on the
//! hot path; labels come from fixed enums, so every label set is bounded and no user or
//! device id can appear. `docs/reference/metrics.md` documents each one; a test checks
//! that the two agree.

mod process;
mod render;

pub use render::{BUILD, Build, Snapshot, render};

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

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
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
        ListDevices = "list_devices",
        RevokeDevice = "revoke_device",
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

impl<const N: usize> Default for Family<N> {
    fn default() -> Self {
        Self::new()
    }
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
    pub requests: Family<24>,
    pub messages_submitted: Family<4>,
    pub deliveries_pushed: Counter,
    pub acknowledgements: Counter,
    pub relay_latency: Histogram,
    pub queue_deliveries: Gauge,
    pub storage_commit: Histogram,
    pub storage_batch_size: Histogram,
    pub retention_expired: Counter,
    /// Deliveries not queued because the recipient's queue was full.
    pub queue_skipped: Counter,
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
            queue_skipped: Counter::new(),
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

// Each family holds exactly one counter per label value (or per pair of them).
const _: () = assert!(CloseReason::ALL.len() == 11);
const _: () = assert!(HandshakeFailure::ALL.len() == 3);
const _: () = assert!(AuthOutcome::ALL.len() == 6);
const _: () = assert!(EnrollOutcome::ALL.len() == 4);
const _: () = assert!(RequestType::ALL.len() * Outcome::ALL.len() == 24);
const _: () = assert!(MessageKind::ALL.len() == 4);
const _: () = assert!(ErrorKind::ALL.len() * ErrorSource::ALL.len() == 18);
