//! The scenarios, and what they share: the run's context (parameters, scratch directory,
//! the relay's settings) and the load's lifecycle (spawn devices, wait, stop, collect).

mod crash;
mod fanout;
mod idle;
mod restart;
mod throughput;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{Args, Params, Scenario};
use crate::daemon::{Daemon, Settings};
use crate::load::{self, Counters, Pace, Plan, Record};
use crate::machine::{self, Machine};
use crate::metrics;
use crate::report::{DaemonFigures, Report, Target};
use crate::setup::Device;
use crate::wire::Endpoint;

/// Longest the devices of a run may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between letting the senders go and the first scheduled message, so that every
/// sender sees the signal before its schedule starts.
const SCHEDULE_LEAD: Duration = Duration::from_millis(200);
/// How often the relay's metrics are scraped during a measured phase when they are on.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// How often progress is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What every scenario gets.
pub struct Context {
    pub params: Params,
    /// Scratch directory: the relay's state and the devices' homes.
    pub dir: PathBuf,
    relaisd: PathBuf,
    /// The origin of message stamps.
    pub clock: Instant,
}

impl Context {
    /// Starts a relay for this run.
    pub async fn daemon(
        &self,
        queue_messages_max: u64,
        connections_max: usize,
    ) -> anyhow::Result<Daemon> {
        Daemon::start(
            &self.dir.join("relay"),
            Settings {
                relaisd: self.relaisd.clone(),
                durability: self.params.durability.to_owned(),
                batch_max: self.params.batch_max,
                metrics: self.params.metrics == "on",
                queue_messages_max,
                connections_max,
            },
        )
        .await
    }

    /// Where the client devices live.
    pub fn homes(&self) -> PathBuf {
        self.dir.join("devices")
    }

    /// A report with this run's parameters and nothing measured yet.
    pub fn report(&self, scenario: Scenario, goal: &str) -> Report {
        Report {
            scenario,
            params: self.params.clone(),
            started_at: relaisd::format_time_ms(relaisd::now_ms()),
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
    // files, databases and the listeners.
    let files_needed = params.connections.unwrap_or(0) + params.group.unwrap_or(0) + 4096;
    raise_open_files(files_needed as u64)?;
    let context = Context {
        params,
        dir: scratch.path().to_owned(),
        relaisd,
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
    };
    report.bench_cpu_s = machine::own_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    (report.commit, report.commit_dirty) = commit;
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
    pub fn new(context: &Context, endpoint: Endpoint, options: Options) -> Load {
        let (go, go_rx) = watch::channel(None);
        let (stop_sending, stop_sending_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        Load {
            plan: Arc::new(Plan {
                endpoint,
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

    pub fn spawn(&mut self, device: Device, pace: Pace) {
        self.tasks
            .push(tokio::spawn(load::drive(device, pace, self.plan.clone())));
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

/// Figures taken at the start and the end of a measured phase.
pub struct Measure {
    at: Instant,
    /// The relay process; its metrics start from zero again after a restart.
    pid: Option<u32>,
    accepted: u64,
    delivered: u64,
    cpu_s: f64,
    /// The bench's own CPU seconds, to show its share of the machine in this phase.
    bench_cpu_s: Option<f64>,
    samples: metrics::Samples,
    /// Scrapes the relay every second while the phase lasts, as a busy Prometheus would.
    scraper: Option<tokio::task::JoinHandle<()>>,
}

/// What happened during a measured phase.
pub struct Measured {
    pub seconds: f64,
    pub accepted_per_s: f64,
    pub delivered_per_s: f64,
    pub delivered: u64,
    pub cpu_s: f64,
}

impl Measure {
    pub async fn start(daemon: &Daemon, counters: &Counters) -> Measure {
        let samples = metrics::scrape(daemon.metrics_addr).await;
        let scraper = daemon.metrics_addr.map(|addr| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SCRAPE_EVERY);
                loop {
                    every.tick().await;
                    metrics::scrape(Some(addr)).await;
                }
            })
        });
        Measure {
            scraper,
            at: Instant::now(),
            pid: daemon.pid(),
            accepted: Counters::get(&counters.accepted),
            delivered: Counters::get(&counters.delivered),
            cpu_s: daemon.cpu_seconds(),
            bench_cpu_s: machine::own_cpu_seconds(),
            samples,
        }
    }

    /// Ends the phase and writes the relay's side of it into the report.
    pub async fn end(self, daemon: &Daemon, counters: &Counters, report: &mut Report) -> Measured {
        let seconds = self.at.elapsed().as_secs_f64();
        if let Some(scraper) = &self.scraper {
            scraper.abort();
        }
        let delivered = Counters::get(&counters.delivered) - self.delivered;
        let accepted = Counters::get(&counters.accepted) - self.accepted;
        let cpu_s = daemon.cpu_seconds() - self.cpu_s;
        let samples = metrics::scrape(daemon.metrics_addr).await;
        let same_process = daemon.pid() == self.pid;
        if let Some(writer) = metrics::writer(&self.samples, &samples).filter(|_| same_process) {
            report
                .figures
                .insert("writer_batches_per_s".into(), writer.batches / seconds);
            report
                .figures
                .insert("writer_batch_ops_mean".into(), writer.batch_ops_mean);
            report
                .figures
                .insert("writer_commit_ms_mean".into(), writer.commit_ms_mean);
        }
        if delivered > 0 {
            report.figures.insert(
                "relaisd_cpu_us_per_delivery".into(),
                cpu_s * 1e6 / delivered as f64,
            );
        }
        report.daemon.cpu_s = Some(cpu_s);
        if let Some((after, before)) = machine::own_cpu_seconds().zip(self.bench_cpu_s) {
            report
                .figures
                .insert("bench_cpu_s_measured_phase".into(), after - before);
        }
        Measured {
            seconds,
            accepted_per_s: accepted as f64 / seconds,
            delivered_per_s: delivered as f64 / seconds,
            delivered,
            cpu_s,
        }
    }
}
