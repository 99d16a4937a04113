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
    /// One user's session sends at a fixed rate to another, whose `relais follow --json`
    /// runs as a program: time from submission until follow has printed the message.
    Follow,
    /// The `relais-desktop` binary under Xvfb on a home filled through the relay: time to a
    /// usable window, frame time while scrolling a long conversation, resident memory.
    Desktop,
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
    /// The relais binary (follow); defaults to the one next to this executable.
    #[arg(long)]
    pub relais: Option<PathBuf>,
    /// The relais-desktop binary (desktop); defaults to the one next to this executable.
    #[arg(long)]
    pub desktop: Option<PathBuf>,
    /// Conversations in the app's home: one long direct conversation, the rest groups
    /// (desktop).
    #[arg(long)]
    pub conversations: Option<usize>,
    /// Texts in the app's home, all conversations together (desktop).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Keep the relay's state and the devices in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where the relay stores everything: `sqlite` (its default, a file in its data
    /// directory) or `postgres://USER@HOST:PORT`, a PostgreSQL server on which the bench
    /// creates a fresh database for the run and drops it afterwards.
    #[arg(long, default_value = "sqlite")]
    pub storage: String,
    /// A file (not readable by others) holding the PostgreSQL password; relaisd reads it
    /// too (`storage.password_file`).
    #[arg(long)]
    pub storage_password_file: Option<PathBuf>,
    /// relaisd processes sharing the database (PostgreSQL only; throughput, latency,
    /// fanout): the load's connections are spread over them.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    pub size_bytes: usize,
    pub durability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<usize>,
    pub metrics: &'static str,
    /// `sqlite`, or the PostgreSQL server's `postgres://USER@HOST:PORT`.
    pub storage: String,
    pub nodes: usize,
}

impl Args {
    /// Fills in the scenario's defaults; refuses values that cannot work.
    pub fn params(&self) -> Result<Params, String> {
        let params = self.defaulted();
        params.check()?;
        self.check_storage(self.scenario)?;
        Ok(params)
    }

    /// The parameters as given, each knob the scenario uses defaulted, the others absent.
    fn defaulted(&self) -> Params {
        use Scenario::*;
        let s = self.scenario;
        let pick =
            |value: Option<f64>, default: f64, used: bool| used.then(|| value.unwrap_or(default));
        let count = |value: Option<usize>, default: usize, used: bool| {
            used.then(|| value.unwrap_or(default))
        };
        Params {
            duration_s: pick(
                self.duration,
                if s == Crash { 4.0 } else { 10.0 },
                matches!(s, Throughput | Latency | Fanout | Crash | Follow),
            ),
            rate_per_s: pick(
                self.rate,
                match s {
                    Fanout => 20.0,
                    Follow => 10.0,
                    _ => 5_000.0,
                },
                matches!(s, Latency | Fanout | Follow),
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
            conversations: count(self.conversations, 1_000, s == Desktop),
            messages: (s == Desktop).then(|| self.messages.unwrap_or(100_000)),
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
            storage: self.storage.clone(),
            nodes: self.nodes,
        }
    }

    /// Refuses storage and node combinations the bench cannot run.
    fn check_storage(&self, scenario: Scenario) -> Result<(), String> {
        let postgres = self.storage != "sqlite";
        if postgres {
            postgres_server(&self.storage)?;
        } else if self.storage_password_file.is_some() {
            return Err("--storage-password-file is for --storage postgres://...".into());
        }
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(format!("--nodes: from 1 to {NODES_MAX}"));
        }
        if self.nodes > 1 && !postgres {
            return Err(format!(
                "--nodes {}: several relaisd nodes need a shared database; \
                 give --storage postgres://USER@HOST:PORT (SQLite is one node's file)",
                self.nodes
            ));
        }
        if self.nodes > 1
            && !matches!(
                scenario,
                Scenario::Throughput | Scenario::Latency | Scenario::Fanout
            )
        {
            return Err("--nodes above 1 applies to throughput, latency and fanout".into());
        }
        Ok(())
    }
}

impl Params {
    /// Refuses counts and rates that cannot work.
    fn check(&self) -> Result<(), String> {
        if let Some(devices) = self.devices
            && (devices < 2 || devices % 2 != 0)
        {
            return Err(format!(
                "--devices {devices}: give an even number, at least 2"
            ));
        }
        if self.group.is_some_and(|g| g < 2) {
            return Err("--group: at least 2 devices (a sender and a member)".into());
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(self.duration_s) || !positive(self.rate_per_s) {
            return Err("--duration and --rate must be positive".into());
        }
        if self.window == Some(0)
            || self.connections == Some(0)
            || self.cycles == Some(0)
            || self.queued == Some(0)
        {
            return Err("--window, --connections, --cycles and --queued must be at least 1".into());
        }
        if let (Some(conversations), Some(messages)) = (self.conversations, self.messages)
            && (conversations == 0 || messages < conversations as u64 + 2)
        {
            return Err(format!(
                "--conversations {conversations} --messages {messages}: at least one \
                 conversation, and two texts more than conversations (one per group, the \
                 rest in the long conversation)"
            ));
        }
        Ok(())
    }
}

/// Most relaisd nodes a run starts: they share the machine's two cores with the bench
/// and the database, so more only measures the scheduler.
pub const NODES_MAX: usize = 8;

/// Checks `postgres://USER@HOST:PORT` (no database, no password); returns it without a
/// trailing slash, ready for `/DATABASE` to be appended.
pub fn postgres_server(text: &str) -> Result<&str, String> {
    let expected = "expected sqlite or postgres://USER@HOST:PORT";
    let server = text.trim_end_matches('/');
    let Some(authority) = server
        .strip_prefix("postgres://")
        .or_else(|| server.strip_prefix("postgresql://"))
    else {
        return Err(format!("--storage {text}: {expected}"));
    };
    if authority.contains(['/', '?']) {
        return Err(format!(
            "--storage {text}: name no database: each run creates a fresh one and drops it \
             afterwards"
        ));
    }
    let Some((user, host)) = authority.rsplit_once('@') else {
        return Err(format!("--storage {text}: no user; {expected}"));
    };
    if user.contains(':') {
        return Err(format!(
            "--storage {text}: no password in the URL; give it in --storage-password-file"
        ));
    }
    if user.is_empty() || host.is_empty() {
        return Err(format!("--storage {text}: {expected}"));
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Args;

    fn check(line: &str) -> Result<super::Params, String> {
        let args = Args::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        args.params()
    }

    #[test]
    fn storage_and_nodes() {
        let pg = "--storage postgres://relais@127.0.0.1:5432";
        for (line, ok) in [
            ("b throughput", true),
            ("b throughput --nodes 2", false),
            ("b throughput --storage sqlite --nodes 2", false),
            (&format!("b throughput {pg} --nodes 2"), true),
            (&format!("b fanout {pg}/ --nodes 2"), true),
            (&format!("b crash {pg} --nodes 2"), false),
            (&format!("b restart {pg}"), true),
            (&format!("b throughput {pg} --nodes 0"), false),
            (
                "b throughput --storage postgres://relais@127.0.0.1:5432/db",
                false,
            ),
            (
                "b throughput --storage postgres://relais:secret@127.0.0.1:5432",
                false,
            ),
            ("b throughput --storage postgres://127.0.0.1:5432", false),
            ("b throughput --storage mysql://relais@127.0.0.1", false),
            ("b throughput --storage-password-file /p", false),
        ] {
            assert_eq!(check(line).is_ok(), ok, "{line}: {:?}", check(line));
        }
        assert_eq!(
            super::postgres_server("postgres://relais@db:5432/"),
            Ok("postgres://relais@db:5432")
        );
    }
}
