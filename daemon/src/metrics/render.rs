//! The exposition: at each scrape, every metric is registered with a `prometheus-client`
//! registry under its documented name, from the counters' current values and what the
//! scrape read, and the crate encodes the registry in the format the scraper asked for.

use std::fmt;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

use super::names::descriptor;
use super::{
    AuthOutcome, CloseReason, EnrollOutcome, ErrorKind, ErrorSource, Format, HandshakeFailure,
    Histogram, MessageKind, Metrics, Outcome, RequestType,
};

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

/// What a binary was built from.
#[derive(Debug)]
pub struct Build {
    pub version: &'static str,
    /// The commit (12 hexadecimal digits), or `unknown`.
    pub commit: &'static str,
    /// The commit's time in Unix seconds (the build's `SOURCE_DATE_EPOCH`), or `unknown`.
    pub source_date_epoch: &'static str,
}

/// This binary's build, as `build.rs` recorded it.
pub const BUILD: Build = Build {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("RELAIS_COMMIT"),
    source_date_epoch: env!("RELAIS_SOURCE_DATE_EPOCH"),
};

/// Encodes every metric in `format`, one group of related metrics after another, the
/// process's last. Encoding into a `String` fails only on a bug in an encoder.
pub fn render(
    m: &Metrics,
    snapshot: &Snapshot,
    build: &Build,
    format: Format,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    build_and_readiness(&mut registry, snapshot, build);
    connections(&mut registry, m);
    requests_and_deliveries(&mut registry, m);
    queues_and_storage(&mut registry, m, snapshot);
    groups_and_key_packages(&mut registry, m, snapshot);
    limits_and_errors(&mut registry, m);
    keys_and_host(&mut registry, snapshot);
    registry.register_collector(Box::new(super::process::Process));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::Text => prometheus_text::encode(&mut out, &registry)?,
        Format::OpenMetrics => text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// What is running, and whether it accepts clients.
fn build_and_readiness(registry: &mut Registry, snapshot: &Snapshot, build: &Build) {
    let Build {
        version,
        commit,
        source_date_epoch,
    } = *build;
    // An info metric: a gauge always 1 in the Prometheus text format, OpenMetrics' own
    // `info` type there.
    add(
        registry,
        "relais_build_info",
        "Version, commit and source date of the running relaisd.",
        Info::new([
            ("version", version),
            ("commit", commit),
            ("source_date_epoch", source_date_epoch),
        ]),
    );
    gauge(
        registry,
        "relais_ready",
        "1 when the daemon accepts clients, 0 while starting or draining.",
        i64::from(snapshot.ready),
    );
}

/// Client connections from accept to close: TLS, authentication and enrollment.
fn connections(registry: &mut Registry, m: &Metrics) {
    gauge(
        registry,
        "relais_connections_open",
        "Client connections currently open.",
        m.connections_open.get(),
    );
    counter(
        registry,
        "relais_connections_opened_total",
        "Client connections accepted.",
        m.connections_opened.get(),
    );
    add(
        registry,
        "relais_connections_closed_total",
        "Client connections closed, by reason.",
        by_one_label(CloseReason::ALL.iter().map(|r| {
            let value = m.connections_closed.at(*r as usize).get();
            ([(CloseReason::LABEL, r.as_str())], ConstCounter::new(value))
        })),
    );
    counter(
        registry,
        "relais_tls_handshakes_total",
        "TLS handshakes completed.",
        m.tls_handshakes.get(),
    );
    add(
        registry,
        "relais_tls_handshake_failures_total",
        "TLS handshakes that failed or were refused, by reason.",
        by_one_label(HandshakeFailure::ALL.iter().map(|r| {
            let value = m.tls_handshake_failures.at(*r as usize).get();
            (
                [(HandshakeFailure::LABEL, r.as_str())],
                ConstCounter::new(value),
            )
        })),
    );
    add(
        registry,
        "relais_authentications_total",
        "Device authentication attempts, by outcome.",
        by_one_label(AuthOutcome::ALL.iter().map(|o| {
            let value = m.authentications.at(*o as usize).get();
            ([(AuthOutcome::LABEL, o.as_str())], ConstCounter::new(value))
        })),
    );
    add(
        registry,
        "relais_enrollments_total",
        "Device enrollment attempts, by outcome.",
        by_one_label(EnrollOutcome::ALL.iter().map(|o| {
            let value = m.enrollments.at(*o as usize).get();
            (
                [(EnrollOutcome::LABEL, o.as_str())],
                ConstCounter::new(value),
            )
        })),
    );
}

/// Requests, the messages they store, and their way out to the recipients.
fn requests_and_deliveries(registry: &mut Registry, m: &Metrics) {
    let requests = RequestType::ALL.iter().flat_map(|kind| {
        Outcome::ALL.iter().map(move |outcome| {
            let value = m.requests.at(*kind as usize * 2 + *outcome as usize).get();
            let labels = [
                (RequestType::LABEL, kind.as_str()),
                (Outcome::LABEL, outcome.as_str()),
            ];
            (labels, ConstCounter::new(value))
        })
    });
    add(
        registry,
        "relais_requests_total",
        "Client requests, by type and outcome.",
        Labelled(requests.collect()),
    );
    add(
        registry,
        "relais_messages_submitted_total",
        "Messages stored for delivery, by kind.",
        by_one_label(MessageKind::ALL.iter().map(|k| {
            let value = m.messages_submitted.at(*k as usize).get();
            ([(MessageKind::LABEL, k.as_str())], ConstCounter::new(value))
        })),
    );
    counter(
        registry,
        "relais_deliveries_pushed_total",
        "Deliveries written to device connections.",
        m.deliveries_pushed.get(),
    );
    counter(
        registry,
        "relais_acknowledgements_total",
        "Deliveries acknowledged and removed from queues.",
        m.acknowledgements.get(),
    );
    add(
        registry,
        "relais_relay_latency_seconds",
        "Time from a message's durable commit to its push onto a recipient's connection.",
        HistogramValues::of(&m.relay_latency),
    );
}

/// What waits in the queues, and the writer that commits it.
fn queues_and_storage(registry: &mut Registry, m: &Metrics, snapshot: &Snapshot) {
    gauge(
        registry,
        "relais_queue_deliveries",
        "Deliveries waiting in device queues.",
        m.queue_deliveries.get(),
    );
    gauge(
        registry,
        "relais_queue_oldest_message_age_seconds",
        "Age of the oldest undelivered message.",
        snapshot.oldest_queued_age_seconds,
    );
    add(
        registry,
        "relais_storage_commit_seconds",
        "Duration of the writer's transactions, commit included.",
        HistogramValues::of(&m.storage_commit),
    );
    add(
        registry,
        "relais_storage_batch_size",
        "Operations group-committed per writer transaction.",
        HistogramValues::of(&m.storage_batch_size),
    );
    counter(
        registry,
        "relais_retention_expired_total",
        "Messages deleted undelivered after the retention period.",
        m.retention_expired.get(),
    );
    counter(
        registry,
        "relais_queue_skipped_deliveries_total",
        "Deliveries not queued because the recipient's queue was full; it sees a gap.",
        m.queue_skipped.get(),
    );
}

/// MLS groups, their epochs, and the KeyPackages devices need to be added to one.
fn groups_and_key_packages(registry: &mut Registry, m: &Metrics, snapshot: &Snapshot) {
    gauge(
        registry,
        "relais_groups",
        "MLS groups known to the delivery service.",
        snapshot.groups,
    );
    counter(
        registry,
        "relais_epochs_advanced_total",
        "Commits applied (each advances a group's epoch).",
        m.epochs_advanced.get(),
    );
    let buckets = ["0", "1-9", "10-49", "50+"].into_iter();
    add(
        registry,
        "relais_devices_by_key_packages",
        "Active devices by one-time KeyPackages left on the server.",
        by_one_label(
            buckets
                .zip(snapshot.key_package_buckets)
                .map(|(bucket, value)| ([("available", bucket)], ConstGauge::new(value))),
        ),
    );
}

/// Requests refused by a limit, devices cut off, and every error path.
fn limits_and_errors(registry: &mut Registry, m: &Metrics) {
    counter(
        registry,
        "relais_rate_limited_total",
        "Requests refused by a per-device limit (submission rate, KeyPackage claims).",
        m.rate_limited.get(),
    );
    counter(
        registry,
        "relais_revocations_total",
        "Devices revoked (directly or by deleting their user).",
        m.revocations.get(),
    );
    let errors = ErrorKind::ALL.iter().flat_map(|kind| {
        ErrorSource::ALL.iter().map(move |source| {
            let value = m.errors.at(*kind as usize * 3 + *source as usize).get();
            let labels = [
                (ErrorKind::LABEL, kind.as_str()),
                (ErrorSource::LABEL, source.as_str()),
            ];
            (labels, ConstCounter::new(value))
        })
    });
    add(
        registry,
        "relais_errors_total",
        "Errors on every error path, by kind and source.",
        Labelled(errors.collect()),
    );
}

/// The server's keys and what the host has left: disk space and certificate lifetime.
/// The last two are left out when they cannot be read.
fn keys_and_host(registry: &mut Registry, snapshot: &Snapshot) {
    gauge(
        registry,
        "relais_key_provider_up",
        "1 when the server's keys were loaded from their provider.",
        i64::from(snapshot.key_provider_up),
    );
    if let Some(free) = snapshot.data_dir_free_bytes {
        gauge(
            registry,
            "relais_data_dir_free_bytes",
            "Free bytes on the data directory's filesystem.",
            free,
        );
    }
    if let Some(seconds) = snapshot.certificate_expiry_seconds {
        gauge(
            registry,
            "relais_tls_certificate_expiry_timestamp_seconds",
            "When the client listener's certificate expires (Unix time).",
            seconds,
        );
    }
}

/// Registers `metric` to be exposed as `name` (see [`descriptor`]).
fn add(registry: &mut Registry, name: &'static str, help: &str, metric: impl Metric) {
    let (base, unit) = descriptor(name, metric.metric_type());
    // The crate ends every help text with a full stop of its own.
    let help = help.strip_suffix('.').unwrap_or(help);
    match unit {
        Some(unit) => registry.register_with_unit(base, help, unit, metric),
        None => registry.register(base, help, metric),
    }
}

fn counter(registry: &mut Registry, name: &'static str, help: &str, value: u64) {
    add(registry, name, help, ConstCounter::new(value));
}

fn gauge<N>(registry: &mut Registry, name: &'static str, help: &str, value: N)
where
    ConstGauge<N>: Metric,
{
    add(registry, name, help, ConstGauge::new(value));
}

type Labels<const L: usize> = [(&'static str, &'static str); L];

/// One metric per label set, in a fixed order: every value of the label, from the start.
/// (The crate's `Family` creates a metric on first use and keeps them in a hash map.)
#[derive(Debug)]
struct Labelled<const L: usize, M>(Vec<(Labels<L>, M)>);

fn by_one_label<M>(rows: impl Iterator<Item = (Labels<1>, M)>) -> Labelled<1, M> {
    Labelled(rows.collect())
}

impl<const L: usize, M: EncodeMetric + TypedMetric> EncodeMetric for Labelled<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A histogram's values as one scrape read them.
#[derive(Debug)]
struct HistogramValues {
    sum: f64,
    buckets: [(f64, u64); 15],
}

impl HistogramValues {
    fn of(histogram: &Histogram) -> HistogramValues {
        let (sum, buckets) = histogram.values();
        HistogramValues { sum, buckets }
    }
}

impl EncodeMetric for HistogramValues {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum, count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: Build = Build {
        version: "1.0",
        commit: "abc",
        source_date_epoch: "1700000000",
    };

    #[test]
    fn histogram_buckets_are_cumulative_in_both_formats() {
        static M: Metrics = Metrics::new();
        M.relay_latency.observe(0.0002);
        M.relay_latency.observe(0.003);
        M.relay_latency.observe(20.0);
        M.relay_latency.observe(f64::NAN);
        let text = render(&M, &Snapshot::default(), &BUILD, Format::Text).expect("encodes");
        let open = render(&M, &Snapshot::default(), &BUILD, Format::OpenMetrics).expect("encodes");
        for (out, ten) in [(&text, "10"), (&open, "10.0")] {
            let bucket = |le: &str, n: u64| {
                format!("relais_relay_latency_seconds_bucket{{le=\"{le}\"}} {n}\n")
            };
            assert!(out.contains(&bucket("0.00025", 1)), "{out}");
            assert!(out.contains(&bucket("0.005", 2)), "{out}");
            assert!(out.contains(&bucket(ten, 2)), "{out}");
            assert!(out.contains(&bucket("+Inf", 4)), "{out}");
            assert!(
                out.contains("relais_relay_latency_seconds_count 4\n"),
                "{out}"
            );
        }
        assert!(
            open.contains("# UNIT relais_relay_latency_seconds seconds\n"),
            "{open}"
        );
    }

    #[test]
    fn labelled_families_render_every_value() {
        static M: Metrics = Metrics::new();
        M.closed(CloseReason::TooSlow);
        M.request(RequestType::SubmitMessage, Outcome::Error);
        M.error(ErrorKind::Storage, ErrorSource::Storage);
        let out = render(&M, &Snapshot::default(), &BUILD, Format::Text).expect("encodes");
        assert!(out.contains("relais_connections_closed_total{reason=\"too_slow\"} 1\n"));
        assert!(out.contains("relais_connections_closed_total{reason=\"client\"} 0\n"));
        assert!(
            out.contains("relais_requests_total{type=\"submit_message\",outcome=\"error\"} 1\n")
        );
        assert!(out.contains("relais_errors_total{kind=\"storage\",source=\"storage\"} 1\n"));
        assert!(out.contains(
            "relais_build_info{version=\"1.0\",commit=\"abc\",source_date_epoch=\"1700000000\"} 1\n"
        ));
        assert!(out.contains("# TYPE relais_build_info gauge\n"), "{out}");
        // One full stop: the crate adds its own to the help text.
        let help = "# HELP relais_ready 1 when the daemon accepts clients, 0 while starting \
                    or draining.\n";
        assert!(out.contains(help), "{out}");
    }

    #[test]
    fn openmetrics_names_counters_families_without_total_and_ends_with_eof() {
        static M: Metrics = Metrics::new();
        M.connections_opened.inc();
        let out = render(&M, &Snapshot::default(), &BUILD, Format::OpenMetrics).expect("encodes");
        assert!(
            out.contains("# TYPE relais_connections_opened counter\n"),
            "{out}"
        );
        assert!(
            out.contains("\nrelais_connections_opened_total 1\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE relais_build info\n"), "{out}");
        assert!(
            out.contains("# TYPE process_cpu_seconds counter\n"),
            "{out}"
        );
        assert!(out.ends_with("\n# EOF\n"), "{out}");
        assert_eq!(out.matches("# EOF").count(), 1);
        let text = render(&M, &Snapshot::default(), &BUILD, Format::Text).expect("encodes");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(text.contains("# TYPE relais_connections_opened_total counter\n"));
    }
}
