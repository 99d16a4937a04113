//! Restart: messages queued for offline devices, the relay killed (SIGKILL) and started
//! again on the same port; the time until it is ready and until every queued message
//! has reached its device.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{Context, Load, Measure, Options};
use crate::cli::Scenario;
use crate::daemon::Daemon;
use crate::load::{Counters, Pace};
use crate::report::Report;
use crate::setup::{self, Device};

/// Longest a fill or a drain may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(3_600);
/// How often progress is printed during long phases.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub async fn run(ctx: &Context) -> anyhow::Result<Report> {
    let queued = ctx.params.queued.context("queued")?;
    let devices = ctx.params.devices.context("devices")?;
    let window = ctx.params.window.context("window")?;
    let mut report = ctx.report(
        Scenario::Restart,
        "1,000,000 messages queued: ready < 1 s after a kill",
    );
    let senders = (devices / 2) as u64;
    let quota = queued.div_ceil(senders);
    let total = quota * senders;
    let mut daemon = ctx.daemon(quota + 16, 20_000).await?;
    let pairs = setup::pairs(&daemon, &ctx.homes(), devices / 2).await?;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|d| d.index.is_multiple_of(2));
    fill(ctx, &daemon, senders, quota, window, &mut report).await?;

    daemon.kill().await?;
    let spawned = daemon.launch().await?;
    report.figures.insert(
        "listening_ms".into(),
        spawned.elapsed().as_secs_f64() * 1000.0,
    );
    let ready = daemon.wait_ready(spawned).await?;
    let ready_at = Instant::now();
    report.ready_ms = Some(ready.as_secs_f64() * 1000.0);

    drain(ctx, &mut daemon, receivers, total, ready_at, &mut report).await?;
    report.target.met = (total >= 1_000_000).then_some(ready < Duration::from_secs(1));
    Ok(report)
}

/// Has each of the `senders` send `quota` messages its receiver does not read, so that
/// they wait in the queues, and notes how long that took and how large the database grew.
async fn fill(
    ctx: &Context,
    daemon: &Daemon,
    senders: Vec<Device>,
    quota: u64,
    window: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = senders.len();
    let total = quota * count as u64;
    let options = Options {
        quota: Some(quota),
        ..Options::default()
    };
    let mut fill = Load::new(ctx, vec![daemon.endpoint()?], options);
    for device in senders {
        fill.spawn(device, Pace::Closed { window });
    }
    fill.connected(count).await?;
    fill.go();
    let started = Instant::now();
    let filled = wait_progress(&fill, "queued", total, |c| Counters::get(&c.accepted)).await;
    let fill_s = started.elapsed().as_secs_f64();
    let record = fill.finish().await?;
    if !filled {
        report.events = record.events;
        bail!(
            "the queue did not fill in {PHASE_TIMEOUT:?}: {:?}",
            report.events
        );
    }
    report
        .figures
        .insert("queued_messages".into(), total as f64);
    report.figures.insert("fill_s".into(), fill_s);
    report
        .figures
        .insert("fill_msgs_per_s".into(), total as f64 / fill_s);
    let database_bytes: u64 = ["relais.db", "relais.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(daemon.data.join(f)).ok())
        .map(|m| m.len())
        .sum();
    report.figures.insert(
        "database_mib_at_kill".into(),
        database_bytes as f64 / 1_048_576.0,
    );
    Ok(())
}

/// Connects the `receivers` to the restarted relay and measures until the `total` queued
/// messages have reached them, from `ready_at`; then stops the relay.
async fn drain(
    ctx: &Context,
    daemon: &mut Daemon,
    receivers: Vec<Device>,
    total: u64,
    ready_at: Instant,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut drain = Load::new(ctx, vec![daemon.endpoint()?], Options::default());
    let measure = Measure::start(std::slice::from_ref(daemon), drain.counters()).await;
    for device in receivers {
        drain.spawn(device, Pace::Silent);
    }
    let drained = wait_progress(&drain, "delivered", total, |c| Counters::get(&c.delivered)).await;
    report.drained_ms = Some(ready_at.elapsed().as_secs_f64() * 1000.0);
    let measured = measure
        .end(std::slice::from_ref(daemon), drain.counters(), report)
        .await;
    report.daemon.rss_bytes_max = Some(daemon.peak_rss_bytes());
    let record = drain.finish().await?;
    daemon.stop().await?;
    report.events = record.events;
    if !drained {
        bail!(
            "only {} of {total} queued messages were delivered",
            measured.delivered
        );
    }
    report.delivered_msgs_per_s = Some(measured.delivered_per_s);
    Ok(())
}

/// Waits until `count` reaches `total`, printing progress; false on timeout.
async fn wait_progress(
    load: &Load,
    what: &str,
    total: u64,
    count: impl Fn(&Counters) -> u64,
) -> bool {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while Instant::now() < deadline {
        if load.wait_for(PROGRESS_EVERY, |c| count(c) >= total).await {
            return true;
        }
        eprintln!("  {what} {} of {total}", count(load.counters()));
    }
    false
}
