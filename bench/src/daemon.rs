//! The relaisd under test: started from its binary in a scratch directory with a generated
//! configuration and the development certificates `relaisd keys dev-certificates` writes,
//! administered through `relaisd admin`, killed and restarted on the same port, and watched
//! through `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::machine;
use crate::wire::Endpoint;

/// Time the daemon has to print its listening line and to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// The uid and gid the relay runs as when the bench runs as root: an id of its own, with
/// no entry in the user database, owning nothing but the run's relay directory.
const SERVICE_ID: u32 = 64_991;
/// Time a SIGTERM gets before the daemon is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How the daemon is configured for a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub relaisd: PathBuf,
    /// `full` or `normal`.
    pub durability: String,
    pub batch_max: Option<usize>,
    /// Serve metrics (`metrics.enabled`).
    pub metrics: bool,
    pub queue_messages_max: u64,
    pub connections_max: usize,
    /// Extra `[storage]` lines: the PostgreSQL backend, its URL and password file; empty
    /// for the relay's default (SQLite in its data directory).
    pub storage: String,
}

/// A running (or killed) relaisd and its state directory.
pub struct Daemon {
    settings: Settings,
    child: Option<Child>,
    pub data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub ca: PathBuf,
    admin_socket: PathBuf,
    /// The client listener; kept across restarts.
    pub addr: Option<SocketAddr>,
    /// The metrics listener of the running process (a new port at each start).
    pub metrics_addr: Option<SocketAddr>,
    /// CPU seconds of processes that already ended.
    cpu_seconds_ended: f64,
    /// Highest resident memory of any process so far.
    peak_rss_bytes: u64,
}

impl Daemon {
    /// Writes the configuration in `dir` and starts the daemon.
    pub async fn start(dir: &Path, settings: Settings) -> anyhow::Result<Daemon> {
        Daemon::start_as(dir, settings, None).await
    }

    /// Starts another node of `first`'s deployment in `dir`: it serves with the first
    /// node's certificate and keys, as every node sharing a database must.
    pub async fn start_beside(
        first: &Daemon,
        dir: &Path,
        settings: Settings,
    ) -> anyhow::Result<Daemon> {
        Daemon::start_as(dir, settings, Some(&first.data)).await
    }

    async fn start_as(
        dir: &Path,
        settings: Settings,
        identity: Option<&Path>,
    ) -> anyhow::Result<Daemon> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        if let Some(from) = identity {
            share_identity(from, &data)?;
        }
        // Kept when the first node's identity was just copied in.
        let mut certificates = Command::new(&settings.relaisd);
        certificates
            .args(["keys", "dev-certificates", "--data"])
            .arg(&data);
        finish(certificates, "keys dev-certificates").await?;
        let config = dir.join("relaisd.toml");
        let mut daemon = Daemon {
            child: None,
            log: dir.join("relaisd.log"),
            ca: data.join("ca.pem"),
            admin_socket: data.join("admin.sock"),
            data,
            config,
            addr: None,
            metrics_addr: None,
            cpu_seconds_ended: 0.0,
            peak_rss_bytes: 0,
            settings,
        };
        daemon.launch().await?;
        daemon.wait_ready(Instant::now()).await?;
        Ok(daemon)
    }

    /// The configuration: the client port is 0 the first time, then the same port again.
    fn config_text(&self) -> String {
        let s = &self.settings;
        let listen = self
            .addr
            .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let batch = s
            .batch_max
            .map_or_else(String::new, |n| format!("batch_max = {n}\n"));
        format!(
            "domain = \"localhost\"\ndata_dir = \"{data}\"\n\n\
             [listen]\nclient = \"{listen}\"\n\n\
             [tls]\ncertificate = \"{data}/server.pem\"\nprivate_key = \"{data}/server.key\"\n\n\
             [keys]\nsource = \"file\"\n\n\
             # Ignored unless started as root: then the relay runs as this user, as\n\
             # it would under its unit, rather than refuse to run as root.\n\
             [process]\nuser = \"{service_id}\"\ngroup = \"{service_id}\"\n\n\
             [metrics]\nenabled = {metrics}\nlisten = \"127.0.0.1:0\"\n\n\
             [storage]\n{storage}durability = \"{durability}\"\n{batch}\n\
             [limits]\n\
             # The load is many messages from few devices: the per-device rate limit would\n\
             # measure itself, not the relay.\n\
             messages_per_second = 1000000000\nmessages_burst = 1000000000\n\
             queue_messages_max = {queue}\nconnections_max = {connections}\n\
             # Every bench connection comes from one loopback address, many at once.\n\
             unauthenticated_max = {connections}\n\
             unauthenticated_per_address_max = {connections}\n\
             # One sender may fill a receiver's queue, and set-up makes many groups and\n\
             # KeyPackages at once: the bench measures the relay, not its abuse limits.\n\
             queue_share_per_sender_percent = 100\n\
             groups_created_per_hour = 1000000\n\
             key_package_publications_per_hour = 1000000\n\
             claims_per_user_hour = 1000000\n",
            data = self.data.display(),
            durability = s.durability,
            storage = s.storage,
            metrics = s.metrics,
            service_id = SERVICE_ID,
            queue = s.queue_messages_max,
            connections = s.connections_max,
        )
    }

    /// Starts the process and waits for its `relaisd: listening clients=ADDR …` line.
    /// Returns when the process was spawned, the origin of readiness times.
    pub async fn launch(&mut self) -> anyhow::Result<Instant> {
        if self.child.is_some() {
            bail!("relaisd is already running");
        }
        std::fs::write(&self.config, self.config_text())
            .with_context(|| format!("cannot write {}", self.config.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let spawned = Instant::now();
        let mut child = Command::new(&self.settings.relaisd)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.settings.relaisd.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("relaisd's stdout is not a pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| anyhow!("relaisd printed nothing in {START_TIMEOUT:?}"))??;
        let Some(first) = first else {
            bail!("relaisd exited at start; see {}", self.log.display());
        };
        let addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("clients="))
            .ok_or_else(|| anyhow!("unexpected first line from relaisd: {first:?}"))?;
        self.addr = Some(
            addr.parse()
                .with_context(|| format!("client address {addr:?}"))?,
        );
        self.metrics_addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("metrics="))
            .and_then(|a| a.parse().ok());
        // Keep reading so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(spawned)
    }

    /// Waits until `/readyz` answers 200; returns the time since `since`.
    pub async fn wait_ready(&self, since: Instant) -> anyhow::Result<Duration> {
        let endpoint = self.endpoint()?;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if endpoint.ready().await {
                return Ok(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bail!(
            "relaisd did not become ready in {START_TIMEOUT:?}; see {}",
            self.log.display()
        )
    }

    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let addr = self
            .addr
            .ok_or_else(|| anyhow!("relaisd has not started"))?;
        Endpoint::new(addr, &self.ca)
    }

    /// `https://ADDR`, as the client library wants it.
    pub fn server_url(&self) -> anyhow::Result<String> {
        let addr = self
            .addr
            .ok_or_else(|| anyhow!("relaisd has not started"))?;
        Ok(format!("https://{addr}"))
    }

    /// Whether this relay stores in PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        !self.settings.storage.is_empty()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// CPU seconds of every process of this daemon so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_seconds_ended + self.pid().and_then(machine::cpu_seconds).unwrap_or(0.0)
    }

    /// Resident memory of the running process now, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.pid().and_then(machine::memory).map(|(rss, _)| rss)
    }

    /// Highest resident memory of any process of this daemon so far (`VmHWM`).
    pub fn peak_rss_bytes(&mut self) -> u64 {
        self.account();
        self.peak_rss_bytes
    }

    /// Folds the running process's figures in before it ends.
    fn account(&mut self) {
        if let Some((_, peak)) = self.pid().and_then(machine::memory) {
            self.peak_rss_bytes = self.peak_rss_bytes.max(peak);
        }
    }

    /// SIGKILL: no drain, no flush, as in a power cut of the process.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.account();
        let cpu = self.pid().and_then(machine::cpu_seconds).unwrap_or(0.0);
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("cannot kill relaisd")?;
            self.cpu_seconds_ended += cpu;
        }
        Ok(())
    }

    /// SIGTERM and a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.account();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let cpu = child.id().and_then(machine::cpu_seconds);
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        let status = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        self.cpu_seconds_ended += cpu.unwrap_or(0.0);
        match status {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("relaisd exited with {status}; see {}", self.log.display()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                child.kill().await?;
                bail!("relaisd did not stop within {STOP_TIMEOUT:?}")
            }
        }
    }

    /// Creates a user with `relaisd admin user add`; returns the enrollment code.
    pub async fn add_user(&self, user: &str) -> anyhow::Result<String> {
        let mut add = Command::new(&self.settings.relaisd);
        add.arg("admin")
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(["user", "add", user]);
        let code = finish(add, &format!("admin user add {user}")).await?;
        let code = code.trim();
        if code.is_empty() {
            bail!("relaisd admin user add {user} printed no code");
        }
        Ok(code.to_owned())
    }
}

/// Runs a relaisd command other than `serve` (`what`, as errors name it) to its end;
/// returns what it printed.
async fn finish(mut command: Command, what: &str) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run relaisd {what}"))?;
    if !out.status.success() {
        bail!(
            "relaisd {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Copies the server's identity from one node's data directory to another's: the TLS
/// certificate and key and the development CA (`*.pem`, `*.key`), and the server's
/// secrets in `keys/`. relaisd gives the copies to its own user when it starts.
fn share_identity(from: &Path, to: &Path) -> anyhow::Result<()> {
    for sub in ["", "keys"] {
        let (from, to) = (from.join(sub), to.join(sub));
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("cannot read {}", from.display()))?
        {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_file() && (name.ends_with(".pem") || name.ends_with(".key")) {
                std::fs::copy(&path, to.join(name))
                    .with_context(|| format!("cannot copy {}", path.display()))?;
            }
        }
    }
    Ok(())
}
