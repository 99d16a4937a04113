//! Prometheus metrics: the counters and histograms the hot path updates, and their
//! exposition through the `prometheus-client` crate (`render.rs`), in the Prometheus text
//! format or in OpenMetrics as the scrape asks (`format.rs`), with the standard `process_*`
//! metrics (`process.rs`).
//!
//! Every metric is a field of one static [`Metrics`]; labels come from fixed enums, so every
//! label set is bounded and no user or device id can appear. `docs/reference/metrics.md`
//! documents each one; tests check that the two agree.
//!
//! Why `prometheus-client` (0.26) and not the `prometheus` crate (0.14), the two maintained
//! Rust clients, from both crates' sources: only `prometheus-client` encodes OpenMetrics
//! (the `prometheus` crate's one text encoder writes format 0.0.4), and it encodes 0.0.4
//! too; it adds three small crates, where the `prometheus` crate's process metrics bring
//! `procfs` and a second `rustix` (five crates, ten times the compile time) and count CPU
//! in whole seconds. Neither crate's own metric types serve the hot path as well as these:
//! `prometheus-client`'s `Histogram::observe` takes a mutex, and its `Family::get_or_create`
//! a lock and a hash of the labels. So the crate is handed the values at scrape time and
//! does the exposition: names, types, units, `_total`, escaping, `# EOF`.
//!
//! The hot path: an increment or an observation is a relaxed `fetch_add` on an atomic at a
//! fixed address in a `static` built at compile time (a labelled counter is an array index
//! computed from the enum), with no lock, no hash, no allocation and no reference count.

mod format;
mod names;
mod process;
mod render;

pub use format::Format;
pub use render::{BUILD, Build, Snapshot, render};

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

/// Bucket bounds of one histogram; observations above the last go to an overflow bucket.
pub type Bounds = [f64; 14];

/// Bucket bounds in seconds for latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: Bounds = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
/// Bucket bounds for batch sizes.
pub const BATCH_BUCKETS: Bounds = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// A histogram with 14 fixed buckets and an overflow bucket; the sum is kept in microunits.
/// Its count is the sum of its buckets, so that a scrape always reads a `_count` equal to
/// the `+Inf` bucket, whatever observations it races with.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static Bounds,
    buckets: [AtomicU64; 15],
    sum_micro: AtomicU64,
}

impl Histogram {
    pub const fn new(bounds: &'static Bounds) -> Histogram {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; 15],
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Two relaxed additions: the value's bucket (NaN goes to the overflow) and the sum.
    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// The sum, and each bucket's own count (not cumulative) with its upper bound, the
    /// overflow last with `+Inf`.
    pub fn values(&self) -> (f64, [(f64, u64); 15]) {
        let mut values = [(f64::INFINITY, 0); 15];
        for ((value, bound), bucket) in values.iter_mut().zip(self.bounds).zip(&self.buckets) {
            *value = (*bound, bucket.load(Ordering::Relaxed));
        }
        values[14].1 = self.buckets[14].load(Ordering::Relaxed);
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, values)
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
        IssueDeviceCode = "issue_device_code",
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
    pub requests: Family<26>,
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
const _: () = assert!(RequestType::ALL.len() * Outcome::ALL.len() == 26);
const _: () = assert!(MessageKind::ALL.len() == 4);
const _: () = assert!(ErrorKind::ALL.len() * ErrorSource::ALL.len() == 18);
