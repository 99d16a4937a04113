//! Idle connections: many authenticated devices that send nothing; the relay's resident
//! memory per connection, measured on a freshly started process.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};

use super::Context;
use crate::cli::Scenario;
use crate::metrics;
use crate::report::Report;
use crate::setup;
use crate::wire::{Endpoint, Socket};

/// Connections per source address: the ephemeral ports 32768–60999 give 28,232 per
/// (source, destination) pair; stay well inside that.
const CONNECTIONS_PER_SOURCE: usize = 20_000;
/// Handshakes in progress at once.
const CONNECTS_IN_PARALLEL: usize = 64;
/// Time the relay gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Enrollment and the idle connections come from different loopback addresses, so the
/// enrollment connections' TIME_WAIT ports never collide with the idle ones.
fn enrollment_source(i: usize) -> Option<IpAddr> {
    Some(loopback(1, i / CONNECTIONS_PER_SOURCE + 1))
}

fn idle_source(i: usize) -> Option<IpAddr> {
    Some(loopback(0, i / CONNECTIONS_PER_SOURCE + 2))
}

fn loopback(third: usize, fourth: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, third as u8, fourth as u8))
}

pub async fn run(ctx: &Context) -> anyhow::Result<Report> {
    let count = ctx.params.connections.context("connections")?;
    if count / CONNECTIONS_PER_SOURCE > 250 {
        anyhow::bail!("--connections {count}: at most 5,000,000");
    }
    let mut report = ctx.report(
        Scenario::Idle,
        "50,000 idle authenticated connections: < 16 KiB of relay memory each",
    );
    let mut daemon = ctx.daemon(1_000, count + 1_000).await?;
    let endpoint = daemon.endpoint()?;
    let started = Instant::now();
    let keys = setup::raw_devices(&daemon, &endpoint, count, enrollment_source).await?;
    report
        .figures
        .insert("enroll_s".into(), started.elapsed().as_secs_f64());

    // A fresh process, so the baseline holds nothing left over from the enrollments.
    daemon.stop().await?;
    let spawned = daemon.launch().await?;
    daemon.wait_ready(spawned).await?;
    tokio::time::sleep(SETTLE).await;
    let before = daemon
        .rss_bytes()
        .context("cannot read the relay's memory")?;
    let cpu_before = daemon.cpu_seconds();
    let started = Instant::now();
    let sockets = connect_idle(&endpoint, &keys).await?;
    let connect_s = started.elapsed().as_secs_f64();
    let cpu_s = daemon.cpu_seconds() - cpu_before;
    tokio::time::sleep(SETTLE).await;
    let after = daemon
        .rss_bytes()
        .context("cannot read the relay's memory")?;
    let open = metrics::scrape(daemon.metrics_addr)
        .await
        .get("relais_connections_open");
    report.daemon.rss_bytes_max = Some(daemon.peak_rss_bytes());
    let per_connection = after.saturating_sub(before) as f64 / sockets.len() as f64;
    report.daemon.rss_bytes_per_connection = Some(per_connection);
    report.daemon.cpu_s = Some(cpu_s);
    for (key, value) in [
        ("connections_authenticated", sockets.len() as f64),
        ("relaisd_connections_open", open),
        ("connect_s", connect_s),
        ("connections_per_s", sockets.len() as f64 / connect_s),
        (
            "relaisd_cpu_ms_per_connection",
            1000.0 * cpu_s / sockets.len() as f64,
        ),
        ("relaisd_rss_before_mib", before as f64 / 1_048_576.0),
        ("relaisd_rss_after_mib", after as f64 / 1_048_576.0),
    ] {
        report.figures.insert(key.into(), value);
    }
    drop(sockets);
    daemon.stop().await?;
    report.target.met = (count >= 50_000).then_some(per_connection < 16.0 * 1024.0);
    Ok(report)
}

/// Opens and authenticates one connection per key, a few at a time, each from its idle
/// source address; returns them open.
async fn connect_idle(
    endpoint: &Endpoint,
    keys: &[SigningKey],
) -> anyhow::Result<Vec<(Socket, u64)>> {
    stream::iter(keys.iter().enumerate())
        .map(|(i, key)| async move {
            endpoint
                .open(idle_source(i))
                .await?
                .authenticate(key)
                .await
                .with_context(|| format!("connection {i}"))
        })
        .buffer_unordered(CONNECTS_IN_PARALLEL)
        .try_collect()
        .await
}
