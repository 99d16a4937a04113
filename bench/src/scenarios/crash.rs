//! Crash: devices in 1:1 pairs (one sending, one receiving) send continuously while the relay is killed (SIGKILL) at
//! random moments and restarted on the same port. Devices reconnect and send again what
//! was not answered, with the same message id. At the end: how many messages the relay
//! acknowledged, how many of those never arrived, and how many arrived twice.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rand::Rng as _;

use super::throughput::sender_or_receiver;
use super::{Context, Load, Measure, Options};
use crate::cli::Scenario;
use crate::daemon::Daemon;
use crate::load::{Counters, Pace, Record};
use crate::report::{Percentiles, Report};
use crate::setup;

/// Load after the last restart, so devices reconnect and resume before sending stops.
const AFTER_LAST_RESTART: Duration = Duration::from_secs(1);
/// Time given, after sending stops, for the last answers and deliveries.
const SETTLE: Duration = Duration::from_secs(60);
/// The earliest a kill comes after the relay is ready again.
const KILL_AFTER_MIN_S: f64 = 0.2;

pub async fn run(ctx: &Context) -> anyhow::Result<Report> {
    let devices = ctx.params.devices.context("devices")?;
    let window = ctx.params.window.context("window")?;
    let cycles = ctx.params.cycles.context("cycles")?;
    let kill_after_max_s = ctx
        .params
        .duration_s
        .context("duration")?
        .max(KILL_AFTER_MIN_S * 2.0);
    let mut report = ctx.report(
        Scenario::Crash,
        "kills under load: zero acknowledged messages lost, zero duplicated",
    );
    let mut daemon = ctx.daemon(1_000_000, 20_000).await?;
    let pairs = setup::pairs(&daemon, &ctx.homes(), devices / 2).await?;
    let options = Options {
        reconnect: true,
        track_ids: true,
        ..Options::default()
    };
    let mut load = Load::new(ctx, vec![daemon.endpoint()?], options);
    for device in pairs {
        let pace = sender_or_receiver(&device, Pace::Closed { window });
        load.spawn(device, pace);
    }
    load.connected(devices).await?;
    load.go();
    let measure = Measure::start(std::slice::from_ref(&daemon), load.counters()).await;
    let ready = kill_and_restart(&mut daemon, &load, cycles, kill_after_max_s).await?;
    tokio::time::sleep(AFTER_LAST_RESTART).await;
    load.stop_sending();
    load.settle(SETTLE).await;
    let measured = measure
        .end(std::slice::from_ref(&daemon), load.counters(), &mut report)
        .await;
    report.daemon.rss_bytes_max = Some(daemon.peak_rss_bytes());
    let outstanding = load.counters().outstanding.load(Ordering::Relaxed);
    let record = load.finish().await?;
    daemon.stop().await?;

    measured.report_rates(&mut report);
    if let Some(p) = Percentiles::of(&ready) {
        report.ready_ms = Some(p.max);
        report.figures.insert("ready_ms_p50".into(), p.p50);
    }
    report_messages(&mut report, record, outstanding);
    Ok(report)
}

/// Kills the relay `cycles` times, each a random moment after it was ready again, and
/// starts it again; returns how long each restart took to be ready, in microseconds.
async fn kill_and_restart(
    daemon: &mut Daemon,
    load: &Load,
    cycles: u32,
    kill_after_max_s: f64,
) -> anyhow::Result<Histogram<u64>> {
    let mut ready = crate::load::histogram();
    for cycle in 1..=cycles {
        let wait = rand::thread_rng().gen_range(KILL_AFTER_MIN_S..kill_after_max_s);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        let accepted = Counters::get(&load.counters().accepted);
        daemon.kill().await?;
        let spawned = daemon.launch().await?;
        let took = daemon.wait_ready(spawned).await?;
        ready.saturating_record(took.as_micros() as u64);
        eprintln!(
            "  cycle {cycle}: killed after {wait:.2} s with {accepted} accepted so far; ready again in {:.0} ms",
            took.as_secs_f64() * 1000.0
        );
    }
    Ok(ready)
}

/// What became of the messages: acknowledged, lost, duplicated, and how the devices got
/// there; `outstanding` is how many were still unanswered at the end.
fn report_messages(report: &mut Report, record: Record, outstanding: i64) {
    let acked: HashSet<[u8; 16]> = record.acked.iter().copied().collect();
    let lost = acked
        .iter()
        .filter(|id| !record.received.contains_key(*id))
        .count() as u64;
    let received_not_acked = record
        .received
        .keys()
        .filter(|id| !acked.contains(*id))
        .count();
    report.acked = Some(acked.len() as u64);
    report.lost = Some(lost);
    report.duplicated = Some(record.duplicated);
    for (key, value) in [
        (
            "acknowledgements_repeated",
            (record.acked.len() - acked.len()) as f64,
        ),
        ("received_not_acked", received_not_acked as f64),
        ("redelivered_same_sequence", record.redelivered as f64),
        (
            "resubmissions_recognised",
            record.resubmissions_recognised as f64,
        ),
        ("reconnects", record.reconnects as f64),
        ("unanswered_at_end", outstanding.max(0) as f64),
    ] {
        report.figures.insert(key.into(), value);
    }
    report.latency_ms = Percentiles::of(&record.latency_us);
    report.events = record.events;
    report.target.met = Some(lost == 0 && record.duplicated == 0 && outstanding <= 0);
}
