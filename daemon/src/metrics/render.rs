//! The Prometheus text exposition (format 0.0.4) of every metric.

use std::fmt::{Display, Write as _};

use super::{
    AuthOutcome, CloseReason, EnrollOutcome, ErrorKind, ErrorSource, HandshakeFailure, Histogram,
    MessageKind, Metrics, Outcome, RequestType,
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

/// Renders everything in the Prometheus text format (version 0.0.4), one group of related
/// metrics after another.
pub fn render(m: &Metrics, snapshot: &Snapshot, build: &Build) -> String {
    let mut out = String::with_capacity(16 * 1024);
    build_and_readiness(&mut out, snapshot, build);
    connections(&mut out, m);
    requests_and_deliveries(&mut out, m);
    queues_and_storage(&mut out, m, snapshot);
    groups_and_key_packages(&mut out, m, snapshot);
    limits_and_errors(&mut out, m);
    keys_and_host(&mut out, snapshot);
    super::process::render(&mut out);
    out
}

/// What a binary was built from.
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

/// What is running, and whether it accepts clients.
fn build_and_readiness(out: &mut String, snapshot: &Snapshot, build: &Build) {
    head(
        out,
        "relais_build_info",
        "gauge",
        "Version, commit and source date of the running relaisd.",
    );
    let Build {
        version,
        commit,
        source_date_epoch,
    } = build;
    let _ = writeln!(
        out,
        "relais_build_info{{version=\"{version}\",commit=\"{commit}\",source_date_epoch=\"{source_date_epoch}\"}} 1"
    );
    gauge(
        out,
        "relais_ready",
        "1 when the daemon accepts clients, 0 while starting or draining.",
        u8::from(snapshot.ready),
    );
}

/// Client connections from accept to close: TLS, authentication and enrollment.
fn connections(out: &mut String, m: &Metrics) {
    gauge(
        out,
        "relais_connections_open",
        "Client connections currently open.",
        m.connections_open.get(),
    );
    counter(
        out,
        "relais_connections_opened_total",
        "Client connections accepted.",
        m.connections_opened.get(),
    );
    family(
        out,
        "relais_connections_closed_total",
        "Client connections closed, by reason.",
        CloseReason::LABEL,
        CloseReason::ALL
            .iter()
            .map(|r| (r.as_str(), m.connections_closed.at(*r as usize).get())),
    );
    counter(
        out,
        "relais_tls_handshakes_total",
        "TLS handshakes completed.",
        m.tls_handshakes.get(),
    );
    family(
        out,
        "relais_tls_handshake_failures_total",
        "TLS handshakes that failed or were refused, by reason.",
        HandshakeFailure::LABEL,
        HandshakeFailure::ALL
            .iter()
            .map(|r| (r.as_str(), m.tls_handshake_failures.at(*r as usize).get())),
    );
    family(
        out,
        "relais_authentications_total",
        "Device authentication attempts, by outcome.",
        AuthOutcome::LABEL,
        AuthOutcome::ALL
            .iter()
            .map(|o| (o.as_str(), m.authentications.at(*o as usize).get())),
    );
    family(
        out,
        "relais_enrollments_total",
        "Device enrollment attempts, by outcome.",
        EnrollOutcome::LABEL,
        EnrollOutcome::ALL
            .iter()
            .map(|o| (o.as_str(), m.enrollments.at(*o as usize).get())),
    );
}

/// Requests, the messages they store, and their way out to the recipients.
fn requests_and_deliveries(out: &mut String, m: &Metrics) {
    let requests = RequestType::ALL.iter().flat_map(|kind| {
        Outcome::ALL.iter().map(move |outcome| {
            let value = m.requests.at(*kind as usize * 2 + *outcome as usize).get();
            (kind.as_str(), outcome.as_str(), value)
        })
    });
    family_by_two(
        out,
        "relais_requests_total",
        "Client requests, by type and outcome.",
        (RequestType::LABEL, Outcome::LABEL),
        requests,
    );
    family(
        out,
        "relais_messages_submitted_total",
        "Messages stored for delivery, by kind.",
        MessageKind::LABEL,
        MessageKind::ALL
            .iter()
            .map(|k| (k.as_str(), m.messages_submitted.at(*k as usize).get())),
    );
    counter(
        out,
        "relais_deliveries_pushed_total",
        "Deliveries written to device connections.",
        m.deliveries_pushed.get(),
    );
    counter(
        out,
        "relais_acknowledgements_total",
        "Deliveries acknowledged and removed from queues.",
        m.acknowledgements.get(),
    );
    histogram(
        out,
        "relais_relay_latency_seconds",
        "Time from a message's durable commit to its push onto a recipient's connection.",
        &m.relay_latency,
    );
}

/// What waits in the queues, and the writer that commits it.
fn queues_and_storage(out: &mut String, m: &Metrics, snapshot: &Snapshot) {
    gauge(
        out,
        "relais_queue_deliveries",
        "Deliveries waiting in device queues.",
        m.queue_deliveries.get(),
    );
    gauge(
        out,
        "relais_queue_oldest_message_age_seconds",
        "Age of the oldest undelivered message.",
        snapshot.oldest_queued_age_seconds,
    );
    histogram(
        out,
        "relais_storage_commit_seconds",
        "Duration of the writer's transactions, commit included.",
        &m.storage_commit,
    );
    histogram(
        out,
        "relais_storage_batch_size",
        "Operations group-committed per writer transaction.",
        &m.storage_batch_size,
    );
    counter(
        out,
        "relais_retention_expired_total",
        "Messages deleted undelivered after the retention period.",
        m.retention_expired.get(),
    );
    counter(
        out,
        "relais_queue_skipped_deliveries_total",
        "Deliveries not queued because the recipient's queue was full; it sees a gap.",
        m.queue_skipped.get(),
    );
}

/// MLS groups, their epochs, and the KeyPackages devices need to be added to one.
fn groups_and_key_packages(out: &mut String, m: &Metrics, snapshot: &Snapshot) {
    gauge(
        out,
        "relais_groups",
        "MLS groups known to the delivery service.",
        snapshot.groups,
    );
    counter(
        out,
        "relais_epochs_advanced_total",
        "Commits applied (each advances a group's epoch).",
        m.epochs_advanced.get(),
    );
    head(
        out,
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
}

/// Requests refused by a limit, devices cut off, and every error path.
fn limits_and_errors(out: &mut String, m: &Metrics) {
    counter(
        out,
        "relais_rate_limited_total",
        "Requests refused by a per-device limit (submission rate, KeyPackage claims).",
        m.rate_limited.get(),
    );
    counter(
        out,
        "relais_revocations_total",
        "Devices revoked (directly or by deleting their user).",
        m.revocations.get(),
    );
    let errors = ErrorKind::ALL.iter().flat_map(|kind| {
        ErrorSource::ALL.iter().map(move |source| {
            let value = m.errors.at(*kind as usize * 3 + *source as usize).get();
            (kind.as_str(), source.as_str(), value)
        })
    });
    family_by_two(
        out,
        "relais_errors_total",
        "Errors on every error path, by kind and source.",
        (ErrorKind::LABEL, ErrorSource::LABEL),
        errors,
    );
}

/// The server's keys and what the host has left: disk space and certificate lifetime.
/// The last two are left out when they cannot be read.
fn keys_and_host(out: &mut String, snapshot: &Snapshot) {
    gauge(
        out,
        "relais_key_provider_up",
        "1 when the server's keys were loaded from their provider.",
        u8::from(snapshot.key_provider_up),
    );
    if let Some(free) = snapshot.data_dir_free_bytes {
        gauge(
            out,
            "relais_data_dir_free_bytes",
            "Free bytes on the data directory's filesystem.",
            free,
        );
    }
    if let Some(seconds) = snapshot.certificate_expiry_seconds {
        gauge(
            out,
            "relais_tls_certificate_expiry_timestamp_seconds",
            "When the client listener's certificate expires (Unix time).",
            seconds,
        );
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    head(out, name, "histogram", help);
    histogram.render(out, name, "");
}

/// A counter family with one label.
fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    head(out, name, "counter", help);
    for (value_label, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value_label}\"}} {value}");
    }
}

/// A counter family with two labels, in the order `values` gives.
fn family_by_two<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    (first, second): (&str, &str),
    values: impl Iterator<Item = (&'a str, &'a str, u64)>,
) {
    head(out, name, "counter", help);
    for (first_value, second_value, value) in values {
        let _ = writeln!(
            out,
            "{name}{{{first}=\"{first_value}\",{second}=\"{second_value}\"}} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Histogram, LATENCY_BUCKETS};

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
        let build = Build {
            version: "1.0",
            commit: "abc",
            source_date_epoch: "1700000000",
        };
        let out = render(&m, &Snapshot::default(), &build);
        assert!(out.contains("relais_connections_closed_total{reason=\"too_slow\"} 1\n"));
        assert!(out.contains("relais_connections_closed_total{reason=\"client\"} 0\n"));
        assert!(
            out.contains("relais_requests_total{type=\"submit_message\",outcome=\"error\"} 1\n")
        );
        assert!(out.contains("relais_errors_total{kind=\"storage\",source=\"storage\"} 1\n"));
        assert!(out.contains(
            "relais_build_info{version=\"1.0\",commit=\"abc\",source_date_epoch=\"1700000000\"} 1\n"
        ));
    }
}
