//! The command line: a scenario and its knobs, each defaulted per scenario so that a run
//! without options finishes in under a minute.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Devices in 1:1 pairs send as fast as the relay accepts, several requests in flight.
    Throughput,
    /// Devices in 1:1 pairs send at a fixed offered rate on a schedule (open loop).
    Latency,
    /// One sender in a group whose members are all online: time until the last has it.
    Fanout,
    /// Many authenticated idle connections: the relay's memory per connection.
    Idle,
    /// Messages queued for offline devices, relay killed and restarted: time to ready and
    /// to deliver them all.
    Restart,
    /// Senders keep sending while the relay is killed and restarted: lost and duplicated.
    Crash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Every acknowledged message is synced to disk (the relay's default).
    Full,
    /// Survives a crash of the relay, not a power cut.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsMode {
    /// Metrics served and scraped every second during the measured phase.
    On,
    /// The metrics listener turned off.
    Off,
}

/// Measures a real relaisd under load over real TLS.
#[derive(Debug, Parser)]
#[command(name = "relais-bench", version)]
pub struct Args {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Seconds of load (throughput, latency, fanout, crash).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Offered messages per second, all senders together (latency, fanout).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Devices, in 1:1 pairs (throughput, latency, restart, crash).
    #[arg(long)]
    pub devices: Option<usize>,
    /// Devices in the group, sender included (fanout).
    #[arg(long)]
    pub group: Option<usize>,
    /// Idle authenticated connections (idle).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Messages queued for offline devices before the restart (restart).
    #[arg(long)]
    pub queued: Option<u64>,
    /// Kills and restarts of the relay (crash).
    #[arg(long)]
    pub cycles: Option<u32>,
    /// Size of each MLS message on the wire, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Submissions in flight per sending connection (throughput, restart, crash).
    #[arg(long)]
    pub window: Option<usize>,
    /// The relay's storage durability.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,
    /// The relay's `storage.batch_max` (its default when absent).
    #[arg(long)]
    pub batch_max: Option<usize>,
    /// The relay's metrics: `on` serves them and scrapes them every second while measuring
    /// (Prometheus scrapes every 15 s by default, so this is the heavier case); `off`
    /// turns the listener off (`metrics.enabled = false`), and the writer's figures with it.
    #[arg(long, value_enum, default_value_t = MetricsMode::On)]
    pub metrics: MetricsMode,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The relaisd binary; defaults to the one next to this executable.
    #[arg(long)]
    pub relaisd: Option<PathBuf>,
    /// Keep the relay's state and the devices in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The parameters a run used, defaults filled in; only those of its scenario are set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Params {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    pub size_bytes: usize,
    pub durability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<usize>,
    pub metrics: &'static str,
}

impl Args {
    /// Fills in the scenario's defaults; refuses values that cannot work.
    pub fn params(&self) -> Result<Params, String> {
        use Scenario::*;
        let s = self.scenario;
        let pick =
            |value: Option<f64>, default: f64, used: bool| used.then(|| value.unwrap_or(default));
        let count = |value: Option<usize>, default: usize, used: bool| {
            used.then(|| value.unwrap_or(default))
        };
        let params = Params {
            duration_s: pick(
                self.duration,
                if s == Crash { 4.0 } else { 10.0 },
                matches!(s, Throughput | Latency | Fanout | Crash),
            ),
            rate_per_s: pick(
                self.rate,
                if s == Fanout { 20.0 } else { 5_000.0 },
                matches!(s, Latency | Fanout),
            ),
            devices: count(
                self.devices,
                match s {
                    Throughput => 64,
                    Latency => 64,
                    _ => 8,
                },
                matches!(s, Throughput | Latency | Restart | Crash),
            ),
            group: count(self.group, 100, s == Fanout),
            connections: count(self.connections, 2_000, s == Idle),
            queued: (s == Restart).then(|| self.queued.unwrap_or(20_000)),
            cycles: (s == Crash).then(|| self.cycles.unwrap_or(5)),
            window: count(
                self.window,
                if s == Crash { 8 } else { 32 },
                matches!(s, Throughput | Restart | Crash),
            ),
            size_bytes: self.size,
            durability: match self.durability {
                Durability::Full => "full",
                Durability::Normal => "normal",
            },
            batch_max: self.batch_max,
            metrics: match self.metrics {
                MetricsMode::On => "on",
                MetricsMode::Off => "off",
            },
        };
        if let Some(devices) = params.devices
            && (devices < 2 || devices % 2 != 0)
        {
            return Err(format!(
                "--devices {devices}: give an even number, at least 2"
            ));
        }
        if params.group.is_some_and(|g| g < 2) {
            return Err("--group: at least 2 devices (a sender and a member)".into());
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(params.duration_s) || !positive(params.rate_per_s) {
            return Err("--duration and --rate must be positive".into());
        }
        if params.window == Some(0)
            || params.connections == Some(0)
            || params.cycles == Some(0)
            || params.queued == Some(0)
        {
            return Err("--window, --connections, --cycles and --queued must be at least 1".into());
        }
        Ok(params)
    }
}
