//! The app's window under Xvfb: a virtual X server of the bench's own, the app started on
//! it with `RELAIS_DESKTOP_TIMINGS`, its timing lines read as it writes them, its memory
//! read from `/proc` once its scroll is over, and both stopped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};

use crate::load::histogram;
use crate::machine;

/// The variable the app reads (`desktop/src/timings.rs`).
const TIMINGS_VAR: &str = "RELAIS_DESKTOP_TIMINGS";
/// The virtual screen: a common laptop's, in 24-bit colour.
const SCREEN: &str = "1920x1080x24";
/// The first X display number tried; the next free one is taken.
const FIRST_DISPLAY: u32 = 70;
/// Time Xvfb has to open its socket.
const XVFB_WAIT: Duration = Duration::from_secs(10);
/// Time the app has to draw its first usable frame.
const USABLE_WAIT: Duration = Duration::from_secs(120);
/// Time the app's scroll may take once usable, opening the conversation included.
const SCROLL_WAIT: Duration = Duration::from_secs(180);
/// How often the timings file is read.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// A running Xvfb.
pub struct Display {
    child: Child,
    pub number: u32,
}

/// What runs of the app measured.
pub struct Measured {
    /// Each run's, in order.
    pub start_to_usable_ms: Vec<f64>,
    pub frame_cpu_us: Histogram<u64>,
    pub frame_interval_us: Histogram<u64>,
    /// Most timeline rows the app held during the scroll.
    pub rows_max: u64,
    /// Resident memory once the scroll was over, and at its peak (`VmHWM`): the most of
    /// any run.
    pub rss_bytes: u64,
    pub rss_peak_bytes: u64,
    /// CPU seconds the app used from its start to the end of the scroll: the most of any run.
    pub cpu_s: Option<f64>,
}

impl Measured {
    /// The median run's start to a usable window.
    pub fn start_to_usable_ms(&self) -> f64 {
        let mut sorted = self.start_to_usable_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// Several runs as one: every start, every frame, the most memory and CPU.
    pub fn merge(runs: Vec<Measured>) -> Measured {
        let mut all = Measured {
            start_to_usable_ms: Vec::new(),
            frame_cpu_us: histogram(),
            frame_interval_us: histogram(),
            rows_max: 0,
            rss_bytes: 0,
            rss_peak_bytes: 0,
            cpu_s: None,
        };
        for run in runs {
            all.start_to_usable_ms.extend(run.start_to_usable_ms);
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = all.frame_cpu_us.add(&run.frame_cpu_us);
            let _ = all.frame_interval_us.add(&run.frame_interval_us);
            all.rows_max = all.rows_max.max(run.rows_max);
            all.rss_bytes = all.rss_bytes.max(run.rss_bytes);
            all.rss_peak_bytes = all.rss_peak_bytes.max(run.rss_peak_bytes);
            all.cpu_s = match (all.cpu_s, run.cpu_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        all
    }
}

/// Fails early, with what to do, when the app or Xvfb is missing.
pub fn check_tools(desktop: &Path) -> anyhow::Result<()> {
    if !desktop.is_file() {
        bail!(
            "{} does not exist; build it (cargo build --release -p relais-desktop) or give \
             --desktop",
            desktop.display()
        );
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("Xvfb").is_file()));
    if !found {
        bail!("Xvfb is not installed: apt-get install xvfb (scripts/test installs it)");
    }
    Ok(())
}

impl Display {
    /// Starts Xvfb on the first free display from [`FIRST_DISPLAY`], logging to `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Display> {
        let number = (FIRST_DISPLAY..FIRST_DISPLAY + 100)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .context("no free X display between :70 and :169")?;
        let log = std::fs::File::create(dir.join("xvfb.log")).context("xvfb.log")?;
        let child = Command::new("Xvfb")
            .arg(format!(":{number}"))
            .args(["-screen", "0", SCREEN, "-nolisten", "tcp", "-noreset"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start Xvfb")?;
        let display = Display { child, number };
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let deadline = Instant::now() + XVFB_WAIT;
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("Xvfb :{number} opened no socket within {XVFB_WAIT:?}; see xvfb.log");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(display)
    }

    /// Stops Xvfb with SIGTERM, so that it removes its socket and lock file; kills it if it
    /// has not exited within a few seconds.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(XVFB_WAIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Runs the app on `home` on `display` until its scripted scroll is over (the `run`th time,
/// which names its files); returns what it measured. The app is stopped (killed: the home's
/// database is crash-safe, and the kernel releases its lock) before this returns.
pub async fn measure(
    desktop: &Path,
    home: &Path,
    display: &Display,
    dir: &Path,
    run: usize,
) -> anyhow::Result<Measured> {
    let timings = dir.join(format!("desktop-timings-{run}.txt"));
    let log_name = format!("desktop-{run}.log");
    let log = std::fs::File::create(dir.join(&log_name)).context(log_name)?;
    let spawned_us = unix_us();
    let mut app = Command::new(desktop)
        .arg("--home")
        .arg(home)
        .env("DISPLAY", format!(":{}", display.number))
        .env(TIMINGS_VAR, &timings)
        // The X server above, whatever session the bench was started from.
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("RELAIS_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", desktop.display()))?;
    let pid = app
        .id()
        .context("the app exited at once; see desktop-N.log")?;
    let result = follow(&timings, &mut app, spawned_us, pid).await;
    let _ = app.kill().await;
    result
}

/// Reads the timings file until the app says its scroll is done, then reads its memory.
async fn follow(
    timings: &Path,
    app: &mut Child,
    spawned_us: u64,
    pid: u32,
) -> anyhow::Result<Measured> {
    let usable_us = wait_for_line(timings, app, "usable", USABLE_WAIT).await?;
    let start_to_usable_ms = usable_us.saturating_sub(spawned_us) as f64 / 1000.0;
    wait_for_line(timings, app, "done", SCROLL_WAIT).await?;
    let (rss_bytes, rss_peak_bytes) =
        machine::memory(pid).context("cannot read the app's memory from /proc")?;
    let cpu_s = machine::cpu_seconds(pid);
    let text = std::fs::read_to_string(timings)?;
    let mut measured = Measured {
        start_to_usable_ms: vec![start_to_usable_ms],
        frame_cpu_us: histogram(),
        frame_interval_us: histogram(),
        rows_max: 0,
        rss_bytes,
        rss_peak_bytes,
        cpu_s,
    };
    for line in text.lines().filter(|l| l.starts_with("frame ")) {
        let field = |key: &str| -> anyhow::Result<u64> {
            value(line, key).with_context(|| format!("no {key} in the timing line {line:?}"))
        };
        measured.frame_cpu_us.saturating_record(field("cpu_us")?);
        measured
            .frame_interval_us
            .saturating_record(field("interval_us")?);
        measured.rows_max = measured.rows_max.max(field("rows")?);
    }
    if measured.frame_cpu_us.is_empty() {
        bail!("the app wrote no frame timings; see {}", timings.display());
    }
    Ok(measured)
}

/// Waits for the first line `EVENT …` of the timings file; returns its `unix_us`.
async fn wait_for_line(
    timings: &Path,
    app: &mut Child,
    event: &str,
    wait: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(timings).unwrap_or_default();
        let line = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(event));
        if let Some(line) = line {
            return value(line, "unix_us")
                .ok_or_else(|| anyhow!("no unix_us in the timing line {line:?}"));
        }
        if let Some(status) = app.try_wait()? {
            bail!("the app exited ({status}) before its {event} line; see desktop-N.log");
        }
        if Instant::now() > deadline {
            bail!("the app wrote no {event} line within {wait:?}; see desktop-N.log");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The number after `key=` in a timing line.
fn value(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// Microseconds since the Unix epoch by the system clock, as the app writes them.
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_timing_lines() {
        let line = "frame cpu_us=1234 interval_us=16000 rows=200";
        assert_eq!(super::value(line, "cpu_us"), Some(1234));
        assert_eq!(super::value(line, "rows"), Some(200));
        assert_eq!(super::value(line, "unix_us"), None);
        assert_eq!(super::value("usable unix_us=x", "unix_us"), None);
    }
}
