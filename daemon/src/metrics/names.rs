//! How a metric's documented name, the one the Prometheus text format writes, becomes the
//! name and unit `prometheus-client` is given, for the registry and for collectors alike.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// The name the crate is given for a metric exposed as `name`, and its unit.
///
/// The crate writes a counter's `_total`, an info's `_info` and the unit's suffix itself (in
/// OpenMetrics the family's name has no `_total`), so they are taken off here. The unit is
/// the name's last word when it is a base unit, as the naming convention puts it.
pub(super) fn descriptor(name: &'static str, kind: MetricType) -> (&'static str, Option<Unit>) {
    let suffix = match kind {
        MetricType::Counter => "_total",
        MetricType::Info => "_info",
        _ => "",
    };
    debug_assert!(name.ends_with(suffix), "{name} must end in {suffix}");
    let stem = name.strip_suffix(suffix).unwrap_or(name);
    match stem.rsplit_once('_') {
        Some((base, "seconds")) => (base, Some(Unit::Seconds)),
        Some((base, "bytes")) => (base, Some(Unit::Bytes)),
        _ => (stem, None),
    }
}

/// Encodes `metric` from a collector, as the registry encodes what `render.rs` registers.
pub(super) fn collect(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    let (base, unit) = descriptor(name, metric.metric_type());
    metric.encode(encoder.encode_descriptor(base, help, unit.as_ref(), metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_the_crate_its_base_name_and_unit() {
        let cases = [
            (
                "relais_connections_opened_total",
                MetricType::Counter,
                "relais_connections_opened",
                None,
            ),
            (
                "process_cpu_seconds_total",
                MetricType::Counter,
                "process_cpu",
                Some("seconds"),
            ),
            (
                "relais_relay_latency_seconds",
                MetricType::Histogram,
                "relais_relay_latency",
                Some("seconds"),
            ),
            (
                "relais_data_dir_free_bytes",
                MetricType::Gauge,
                "relais_data_dir_free",
                Some("bytes"),
            ),
            (
                "relais_storage_batch_size",
                MetricType::Histogram,
                "relais_storage_batch_size",
                None,
            ),
            ("relais_build_info", MetricType::Info, "relais_build", None),
        ];
        for (name, kind, base, unit) in cases {
            let (got_base, got_unit) = descriptor(name, kind);
            assert_eq!(
                (got_base, got_unit.as_ref().map(Unit::as_str)),
                (base, unit),
                "{name}"
            );
        }
    }
}
