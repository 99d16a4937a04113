//! The scenarios, and what they share: the run's context (parameters, scratch directory,
//! the relay's settings) and the load's lifecycle (spawn devices, wait, stop, collect).

mod crash;
mod desktop;
mod fanout;
mod follow;
mod idle;
mod measure;
mod restart;
mod throughput;

pub use measure::{Measure, Measured};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use relais_protocol::time::{format_time_ms, now_ms};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{self, Args, Params, Scenario};
use crate::daemon::{Daemon, Settings};
use crate::database::Database;
use crate::load::{self, Counters, Pace, Plan, Record};
use crate::machine::{self, Machine};
use crate::nodes::Nodes;
use crate::report::{DaemonFigures, Report, Target};
use crate::setup::Device;
use crate::wire::Endpoint;

/// Longest the devices of a run may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between letting the senders go and the first scheduled message, so that every
/// sender sees the signal before its schedule starts.
const SCHEDULE_LEAD: Duration = Duration::from_millis(200);
/// How often progress is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What every scenario gets.
pub struct Context {
    pub params: Params,
    /// Scratch directory: the relay's state and the devices' homes.
    pub dir: PathBuf,
    relaisd: PathBuf,
    /// The `relais` command (the follow scenario runs it).
    pub relais: PathBuf,
    /// The `relais-desktop` app (the desktop scenario runs it).
    pub desktop: PathBuf,
    /// The run's PostgreSQL database, dropped with the context; `None` on SQLite.
    database: Option<Database>,
    /// The origin of message stamps.
    pub clock: Instant,
}

impl Context {
    /// Starts a relay for this run (one node, whatever `--nodes` says).
    pub async fn daemon(
        &self,
        queue_messages_max: u64,
        connections_max: usize,
    ) -> anyhow::Result<Daemon> {
        let settings = self.settings(queue_messages_max, connections_max);
        Daemon::start(&self.dir.join("relay"), settings).await
    }

    /// Starts the run's `--nodes` relay nodes.
    pub async fn nodes(
        &self,
        queue_messages_max: u64,
        connections_max: usize,
    ) -> anyhow::Result<Nodes> {
        let settings = self.settings(queue_messages_max, connections_max);
        Nodes::start(&self.dir, settings, self.params.nodes).await
    }

    fn settings(&self, queue_messages_max: u64, connections_max: usize) -> Settings {
        Settings {
            relaisd: self.relaisd.clone(),
            durability: self.params.durability.to_owned(),
            batch_max: self.params.batch_max,
            metrics: self.params.metrics == "on",
            queue_messages_max,
            connections_max,
            storage: self
                .database
                .as_ref()
                .map_or_else(String::new, Database::config_lines),
        }
    }

    /// Where the client devices live.
    pub fn homes(&self) -> PathBuf {
        self.dir.join("devices")
    }

    /// A report with this run's parameters and nothing measured yet.
    pub fn report(&self, scenario: Scenario, goal: &str) -> Report {
        Report {
            scenario,
            command: String::new(),
            params: self.params.clone(),
            started_at: format_time_ms(now_ms()),
            accepted_msgs_per_s: None,
            delivered_msgs_per_s: None,
            latency_ms: None,
            answer_latency_ms: None,
            daemon: DaemonFigures::default(),
            ready_ms: None,
            drained_ms: None,
            acked: None,
            lost: None,
            duplicated: None,
            figures: Default::default(),
            events: Default::default(),
            bench_cpu_s: None,
            load_average_start: None,
            load_average_end: None,
            target: Target {
                goal: goal.to_owned(),
                met: None,
            },
            machine: Machine::describe(),
            commit: None,
            commit_dirty: None,
        }
    }

    /// Whether this run is the configuration a target is stated for.
    pub fn standard_message(&self) -> bool {
        self.params.size_bytes == 1024 && self.params.durability == "full"
    }

    /// Whether the relay stores in SQLite (the throughput target is stated for it).
    pub fn on_sqlite(&self) -> bool {
        self.database.is_none()
    }
}

/// Runs the scenario the command line asks for.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let params = args.params().map_err(anyhow::Error::msg)?;
    let relaisd = match &args.relaisd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("relaisd"),
    };
    if !relaisd.is_file() {
        bail!(
            "{} does not exist; build it or give --relaisd",
            relaisd.display()
        );
    }
    let relais = match &args.relais {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("relais"),
    };
    if args.scenario == Scenario::Follow && !relais.is_file() {
        bail!(
            "{} does not exist; build it (cargo build --release -p relais-client) or give \
             --relais",
            relais.display()
        );
    }
    let desktop = match &args.desktop {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("relais-desktop"),
    };
    let scratch = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Scratch::Kept(dir.clone())
        }
        None => Scratch::Temporary(tempfile::Builder::new().prefix("relais-bench-").tempdir()?),
    };
    // Started as root, the relay switches to an unprivileged user (see `daemon.rs`), which
    // must be able to reach its directory inside the scratch directory.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711))?;
    }
    // The bench and the relay each hold one socket per connection, plus a margin for
    // files, databases and the listeners (relaisd keeps the same 1,024 for its own).
    let files_needed = params.connections.unwrap_or(0) + params.group.unwrap_or(0) + 1024;
    raise_open_files(files_needed as u64)?;
    let load_average_start = machine::load_average();
    let database = if params.storage == "sqlite" {
        None
    } else {
        let server = cli::postgres_server(&params.storage).map_err(anyhow::Error::msg)?;
        Some(Database::create(server, args.storage_password_file.as_deref()).await?)
    };
    let context = Context {
        params,
        dir: scratch.path().to_owned(),
        relaisd,
        relais,
        desktop,
        database,
        clock: Instant::now(),
    };
    // Read before the run: others may commit while a long run goes on.
    let commit = machine::commit();
    let cpu_before = machine::own_cpu_seconds();
    let mut report = match args.scenario {
        Scenario::Throughput => throughput::throughput(&context).await?,
        Scenario::Latency => throughput::latency(&context).await?,
        Scenario::Fanout => fanout::run(&context).await?,
        Scenario::Idle => idle::run(&context).await?,
        Scenario::Restart => restart::run(&context).await?,
        Scenario::Crash => crash::run(&context).await?,
        Scenario::Follow => follow::run(&context).await?,
        Scenario::Desktop => desktop::run(&context).await?,
    };
    report.bench_cpu_s = machine::own_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    (report.commit, report.commit_dirty) = commit;
    report.command = std::env::args().collect::<Vec<_>>().join(" ");
    report.load_average_start = load_average_start;
    report.load_average_end = machine::load_average();
    Ok(report)
}

enum Scratch {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Kept(dir) => dir,
            Scratch::Temporary(dir) => dir.path(),
        }
    }
}

/// Raises the open-file limit (inherited by the relay) to at least `needed`.
fn raise_open_files(needed: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= needed {
        return Ok(());
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, go as far as allowed.
    if setrlimit(Resource::RLIMIT_NOFILE, needed, needed.max(hard)).is_ok() {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    if hard < needed {
        bail!(
            "this run needs about {needed} open files per process but the hard limit is {hard} \
             and raising it needs CAP_SYS_RESOURCE; ask for fewer connections or raise \
             `ulimit -Hn` as root"
        );
    }
    Ok(())
}

/// A running load: devices driven by tasks, and the switches that stop them.
pub struct Load {
    pub plan: Arc<Plan>,
    go: watch::Sender<Option<Instant>>,
    stop_sending: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Record>>,
}

/// How a load treats its messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub quota: Option<u64>,
    pub reconnect: bool,
    pub track_ids: bool,
    pub keep_receipts: bool,
}

impl Load {
    /// A load on the relay nodes at `endpoints` (at least one).
    pub fn new(context: &Context, endpoints: Vec<Endpoint>, options: Options) -> Load {
        let (go, go_rx) = watch::channel(None);
        let (stop_sending, stop_sending_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        Load {
            plan: Arc::new(Plan {
                endpoints,
                clock: context.clock,
                size: context.params.size_bytes,
                quota: options.quota,
                reconnect: options.reconnect,
                track_ids: options.track_ids,
                keep_receipts: options.keep_receipts,
                counters: Counters::default(),
                go: go_rx,
                stop_sending: stop_sending_rx,
                stop: stop_rx,
            }),
            go,
            stop_sending,
            stop,
            tasks: Vec::new(),
        }
    }

    /// Drives `device` on the first node.
    pub fn spawn(&mut self, device: Device, pace: Pace) {
        self.spawn_on(device, pace, 0);
    }

    /// Drives `device` on node `node` (counted from 0).
    pub fn spawn_on(&mut self, device: Device, pace: Pace, node: usize) {
        let plan = self.plan.clone();
        self.tasks
            .push(tokio::spawn(load::drive(device, pace, node, plan)));
    }

    pub fn counters(&self) -> &Counters {
        &self.plan.counters
    }

    /// Waits until `done` holds; false after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&Counters) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(self.counters()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done(self.counters())
    }

    /// Waits until `devices` connections are authenticated.
    pub async fn connected(&self, devices: usize) -> anyhow::Result<()> {
        let connected = || self.counters().connected.load(Ordering::Relaxed);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .wait_for(PROGRESS_EVERY, |c| {
                    c.connected.load(Ordering::Relaxed) >= devices as i64
                })
                .await
            {
                return Ok(());
            }
            eprintln!("  {} of {devices} devices connected", connected());
        }
        bail!("only {} of {devices} devices connected", connected())
    }

    /// Lets the senders go; returns the origin of their schedules, a moment from now.
    pub fn go(&self) -> Instant {
        let origin = Instant::now() + SCHEDULE_LEAD;
        let _ = self.go.send(Some(origin));
        origin
    }

    pub fn stop_sending(&self) {
        let _ = self.stop_sending.send(true);
    }

    /// Waits until every message is answered and every accepted one delivered; false
    /// after `timeout`.
    pub async fn settle(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |c| {
            c.outstanding.load(Ordering::Relaxed) <= 0
                && Counters::get(&c.delivered) >= Counters::get(&c.accepted)
        })
        .await
    }

    /// Stops every device and merges what they recorded.
    pub async fn finish(self) -> anyhow::Result<Record> {
        let _ = self.stop_sending.send(true);
        let _ = self.stop.send(true);
        let mut total = Record::new();
        for task in self.tasks {
            total.merge(task.await.context("a load task failed")?);
        }
        Ok(total)
    }
}

/// Ends a run on `nodes`: notes their peak memory, then stops the load and the nodes.
/// Returns what the devices recorded.
pub async fn wind_down(
    load: Load,
    nodes: &mut Nodes,
    report: &mut Report,
) -> anyhow::Result<Record> {
    report.daemon.rss_bytes_max = Some(nodes.peak_rss_bytes());
    let record = load.finish().await?;
    nodes.stop().await?;
    Ok(record)
}
