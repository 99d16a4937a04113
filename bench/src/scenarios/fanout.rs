//! Fan-out: one group, all members online, one sender at a fixed rate; for each message,
//! the time until the last member has it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

use super::{Context, Load, Measure, Options, wind_down};
use crate::cli::Scenario;
use crate::load::{self, Counters, Pace};
use crate::nodes::{Nodes, member_node};
use crate::report::{Percentiles, Report};
use crate::setup::{self, Device};

/// Each member's queue holds at most the run's messages plus its Welcome.
const QUEUE_MESSAGES_MAX: u64 = 1_000_000;
/// Time given, after the last message was due, for every member to receive everything.
const SETTLE: Duration = Duration::from_secs(30);

pub async fn run(ctx: &Context) -> anyhow::Result<Report> {
    let size = ctx.params.group.context("group")?;
    let rate = ctx.params.rate_per_s.context("rate")?;
    let duration = Duration::from_secs_f64(ctx.params.duration_s.context("duration")?);
    let mut report = ctx.report(
        Scenario::Fanout,
        "group of 1,000 members all online: p99 < 50 ms until the last member has a message",
    );
    let mut nodes = ctx.nodes(QUEUE_MESSAGES_MAX, size + 1_000).await?;
    let members = size - 1;
    let sends = (duration.as_secs_f64() * rate).ceil() as u64;
    let (mut load, sender) = members_online(ctx, &nodes, size, sends, &mut report).await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let offset = Duration::from_millis(300);
    let node = member_node(sender.index, nodes.nodes.len());
    load.spawn_on(sender, Pace::Open { offset, interval }, node);
    load.connected(size).await?;
    let start = load.go() + offset;
    tokio::time::sleep_until(start.into()).await;
    let measured = Measure::over(duration, &nodes.nodes, load.counters(), &mut report).await;
    let expected = sends * members as u64;
    load.wait_for(SETTLE, |c| Counters::get(&c.delivered) >= expected)
        .await;
    let outstanding = load.counters().outstanding.load(Ordering::Relaxed);
    let record = wind_down(load, &mut nodes, &mut report).await?;

    let (last, incomplete) = last_receipts(&record.receipts, sends, members);
    report.latency_ms = Percentiles::of(&last);
    report.answer_latency_ms = Percentiles::of(&record.answer_us);
    measured.report_rates(&mut report);
    report.figures.insert("messages_sent".into(), sends as f64);
    report
        .figures
        .insert("messages_not_received_by_all".into(), incomplete as f64);
    report
        .figures
        .insert("messages_unanswered".into(), outstanding.max(0) as f64);
    if let Some(all) = Percentiles::of(&record.latency_us) {
        report
            .figures
            .insert("any_member_latency_ms_p50".into(), all.p50);
        report
            .figures
            .insert("any_member_latency_ms_p99".into(), all.p99);
    }
    report.events = record.events;
    report.target.met = match &report.latency_ms {
        Some(p) if size == 1_000 && ctx.standard_message() => Some(p.p99 < 50.0 && incomplete == 0),
        _ => None,
    };
    Ok(report)
}

/// Sets up the group of `size` through the first node, connects every member but the
/// creator to its node and waits until each has read its Welcome. Returns the load, each
/// member limited to `sends` messages, and the creator, who is to send them.
async fn members_online(
    ctx: &Context,
    nodes: &Nodes,
    size: usize,
    sends: u64,
    report: &mut Report,
) -> anyhow::Result<(Load, Device)> {
    let count = nodes.nodes.len();
    let setup_started = Instant::now();
    let mut devices = setup::group(nodes.first(), &ctx.homes(), size)
        .await?
        .into_iter();
    report
        .figures
        .insert("setup_s".into(), setup_started.elapsed().as_secs_f64());
    let Some(sender) = devices.next() else {
        bail!("the group has no creator");
    };
    let members = size - 1;
    let options = Options {
        quota: Some(sends),
        keep_receipts: true,
        ..Options::default()
    };
    let mut load = Load::new(ctx, nodes.endpoints()?, options);
    for member in devices {
        let node = member_node(member.index, count);
        load.spawn_on(member, Pace::Silent, node);
    }
    load.connected(members).await?;
    // Each member first reads its Welcome and the creator's conversation info.
    let caught_up = load
        .wait_for(Duration::from_secs(120), |c| {
            Counters::get(&c.foreign) >= 2 * members as u64
        })
        .await;
    if !caught_up {
        report
            .events
            .insert("members not caught up before the load".into(), 1);
    }
    Ok((load, sender))
}

/// The latency of each message until its last member had it, and how many of the `sends`
/// messages did not reach all `members`.
fn last_receipts(
    receipts: &[(u32, u64, u64)],
    sends: u64,
    members: usize,
) -> (Histogram<u64>, u64) {
    let mut messages: HashMap<u64, (usize, u64)> = HashMap::new();
    for (_, seq, latency_us) in receipts {
        let entry = messages.entry(*seq).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(*latency_us);
    }
    let mut last = load::histogram();
    let mut incomplete = sends.saturating_sub(messages.len() as u64);
    for (receipts, latency_us) in messages.values() {
        if *receipts == members {
            last.saturating_record(*latency_us);
        } else {
            incomplete += 1;
        }
    }
    (last, incomplete)
}
