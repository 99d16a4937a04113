//! Throughput and latency: devices in 1:1 pairs; in each pair one device sends into the
//! pair's group and the other receives. Throughput sends as fast as the relay answers
//! (closed loop, a window of requests in flight); latency offers a fixed rate on a
//! schedule (open loop), so a stall of the relay shows in the messages behind it.
//!
//! Each pair sends one way only, so that every device is either a pure sender or a pure
//! receiver and the figures read directly as the relay's forwarding rate.

use std::time::Duration;

use anyhow::Context as _;

use super::{Context, Load, Measure, Options, wind_down};
use crate::cli::Scenario;
use crate::load::{Counters, Pace, Record};
use crate::nodes::{Nodes, pair_node};
use crate::report::{Percentiles, Report};
use crate::setup::{self, Device};

/// Per-device queue bound: receivers acknowledge every 256 deliveries or 20 ms after the last,
/// so queues stay short; the bound only has to stay out of the way.
const QUEUE_MESSAGES_MAX: u64 = 1_000_000;
/// Connections allowed: far above what these runs open.
const CONNECTIONS_MAX: usize = 20_000;
/// Load before the measured phase, so connections and caches are warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// Time given, after sending stops, for the last answers and deliveries.
const SETTLE: Duration = Duration::from_secs(15);

pub async fn throughput(ctx: &Context) -> anyhow::Result<Report> {
    let devices = ctx.params.devices.context("devices")?;
    let window = ctx.params.window.context("window")?;
    let duration = Duration::from_secs_f64(ctx.params.duration_s.context("duration")?);
    let mut report = ctx.report(
        Scenario::Throughput,
        "at least 50,000 msg/s delivered (SQLite, durability full, 1 KiB)",
    );
    let (mut nodes, load) = pairs_connected(ctx, devices, Options::default(), &mut report, |_| {
        Pace::Closed { window }
    })
    .await?;
    load.go();
    tokio::time::sleep(WARM_UP).await;
    let measured = Measure::over(duration, &nodes.nodes, load.counters(), &mut report).await;
    load.stop_sending();
    load.settle(SETTLE).await;
    let record = wind_down(load, &mut nodes, &mut report).await?;
    measured.report_rates(&mut report);
    report_latencies(&mut report, record);
    report.target.met =
        (ctx.standard_message() && ctx.on_sqlite()).then_some(measured.delivered_per_s >= 50_000.0);
    Ok(report)
}

pub async fn latency(ctx: &Context) -> anyhow::Result<Report> {
    let devices = ctx.params.devices.context("devices")?;
    let rate = ctx.params.rate_per_s.context("rate")?;
    let duration = Duration::from_secs_f64(ctx.params.duration_s.context("duration")?);
    let mut report = ctx.report(
        Scenario::Latency,
        "at 5,000 msg/s offered: p99 < 10 ms, p99.9 < 25 ms",
    );
    // Each sender sends every `interval`; their schedules are staggered so that the
    // offered load is smooth rather than `senders` messages at once.
    let senders = devices / 2;
    let interval = Duration::from_secs_f64(senders as f64 / rate);
    let sends = (duration.as_secs_f64() * rate / senders as f64).ceil() as u64;
    let options = Options {
        quota: Some(sends),
        ..Options::default()
    };
    let (mut nodes, load) = pairs_connected(ctx, devices, options, &mut report, |device| {
        let offset = interval.mul_f64(f64::from(device.index / 2) / senders as f64);
        Pace::Open { offset, interval }
    })
    .await?;
    let start = load.go();
    tokio::time::sleep_until(start.into()).await;
    let measured = Measure::over(duration, &nodes.nodes, load.counters(), &mut report).await;
    // Every scheduled message, the last ones included, must have been sent and received
    // (or the wait have run out) before the load stops.
    let offered = sends * senders as u64;
    load.wait_for(SETTLE, |c| Counters::get(&c.delivered) >= offered)
        .await;
    let accepted = Counters::get(&load.counters().accepted);
    let delivered = Counters::get(&load.counters().delivered);
    let record = wind_down(load, &mut nodes, &mut report).await?;
    measured.report_rates(&mut report);
    report.figures.insert("offered_msgs_per_s".into(), rate);
    report.figures.insert(
        "accepted_not_delivered".into(),
        accepted.saturating_sub(delivered) as f64,
    );
    report
        .figures
        .insert("messages_offered".into(), offered as f64);
    report.figures.insert(
        "offered_not_delivered_by_end".into(),
        offered.saturating_sub(delivered) as f64,
    );
    report_latencies(&mut report, record);
    report.target.met = match &report.latency_ms {
        Some(p) if ctx.standard_message() && (rate - 5_000.0).abs() < 1.0 => {
            Some(p.p99 < 10.0 && p.p999 < 25.0 && delivered == offered)
        }
        _ => None,
    };
    Ok(report)
}

/// Starts the nodes, sets up `devices / 2` pairs through the first, spreads them over
/// the nodes (`spread`) and waits until every device is connected.
async fn pairs_connected(
    ctx: &Context,
    devices: usize,
    options: Options,
    report: &mut Report,
    pace: impl Fn(&Device) -> Pace,
) -> anyhow::Result<(Nodes, Load)> {
    let nodes = ctx.nodes(QUEUE_MESSAGES_MAX, CONNECTIONS_MAX).await?;
    let pairs = setup::pairs(nodes.first(), &ctx.homes(), devices / 2).await?;
    let mut load = Load::new(ctx, nodes.endpoints()?, options);
    spread(&mut load, &nodes, pairs, report, pace);
    load.connected(devices).await?;
    Ok((nodes, load))
}

/// The load's latencies, end to end and until the relay's answer, and its events.
fn report_latencies(report: &mut Report, record: Record) {
    report.latency_ms = Percentiles::of(&record.latency_us);
    report.answer_latency_ms = Percentiles::of(&record.answer_us);
    report.events = record.events;
}

/// The first device of each pair sends at `pace`, the second only receives.
pub fn sender_or_receiver(device: &Device, pace: Pace) -> Pace {
    if device.index.is_multiple_of(2) {
        pace
    } else {
        Pace::Silent
    }
}

/// Spawns the pairs' devices on their nodes (`pair_node`), senders at `pace`; with
/// several nodes, records how many pairs have both ends on one node.
fn spread(
    load: &mut Load,
    nodes: &Nodes,
    pairs: Vec<Device>,
    report: &mut Report,
    pace: impl Fn(&Device) -> Pace,
) {
    let count = nodes.nodes.len();
    let mut on_one_node = 0;
    for device in pairs {
        let node = pair_node(device.index, count);
        if device.index % 2 == 1 && pair_node(device.index - 1, count) == node {
            on_one_node += 1;
        }
        let pace = sender_or_receiver(&device, pace(&device));
        load.spawn_on(device, pace, node);
    }
    if count > 1 {
        report
            .figures
            .insert("pairs_on_one_node".into(), f64::from(on_one_node));
    }
}
