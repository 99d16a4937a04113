//! Follow: what an official sees. One user's [`Session`] (the library's long-running
//! session, as the desktop app runs it) sends texts at a fixed rate (open loop) to another
//! user, whose `relais follow --json` runs as a program of its own; a message's latency runs
//! from the moment the bench hands it to the sender's session to the moment the bench reads
//! the line `follow` printed for it. Both moments are read from the bench's clock, on one
//! host, so no two clocks are compared.
//!
//! Unlike the other scenarios, this one measures the clients as much as the relay: the
//! sender's encryption and outbox write, the relay's commit and push, the receiver's
//! decryption, its stored history row, and the line through a pipe.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hdrhistogram::Histogram;
use relais_client::{Client, ConnectionState, DeliveryState, Event, Session};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::Context;
use crate::cli::Scenario;
use crate::load::histogram;
use crate::machine;
use crate::report::{Percentiles, Report};
use crate::setup;

/// Each user's queue holds the run's messages at most, and follow reads them as they come.
const QUEUE_MESSAGES_MAX: u64 = 100_000;
/// Two devices, and room for reconnections.
const CONNECTIONS_MAX: usize = 64;
/// Time `follow` has to connect and print the conversation's first text.
const READY_WAIT: Duration = Duration::from_secs(60);
/// Time given, after the last message was due, for every message to be printed.
const SETTLE: Duration = Duration::from_secs(30);
/// Time between the start signal and the first scheduled message.
const SCHEDULE_LEAD: Duration = Duration::from_millis(200);
/// What each measured text starts with; its number follows.
const PREFIX: &str = "follow-bench-";
/// The rate the target is stated for.
const TARGET_RATE_PER_S: f64 = 10.0;
/// The target's bound on the 99th percentile.
const TARGET_P99_MS: f64 = 50.0;

pub async fn run(ctx: &Context) -> anyhow::Result<Report> {
    let rate = ctx.params.rate_per_s.context("rate")?;
    let duration = Duration::from_secs_f64(ctx.params.duration_s.context("duration")?);
    let sends = (duration.as_secs_f64() * rate).ceil() as usize;
    let mut report = ctx.report(
        Scenario::Follow,
        "relais follow shows a message within 50 ms (p99) of its submission, at 10 msg/s",
    );
    let mut daemon = ctx.daemon(QUEUE_MESSAGES_MAX, CONNECTIONS_MAX).await?;
    let setup_started = Instant::now();
    let users = setup::users(&daemon, &ctx.homes(), "follow", 2).await?;
    let [(_, sender_home), (receiver, receiver_home)] =
        <[_; 2]>::try_from(users).map_err(|_| anyhow!("two users were asked for"))?;
    // The two have written to each other before: the conversation exists, and the
    // receiver's follow first shows its opening text.
    let mut client = Client::open(&sender_home).await?;
    client.connect().await?;
    client.send(&receiver, "warm-up").await?;
    let sender = Sender::start(client)?;
    let mut follow = Follow::start(&ctx.relais, &receiver_home, &ctx.dir.join("follow.log"))?;
    follow.until_text("warm-up").await?;
    report
        .figures
        .insert("setup_s".into(), setup_started.elapsed().as_secs_f64());

    let stamps: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; sends]));
    let received = Arc::new(AtomicU64::new(0));
    let Follow { mut child, lines } = follow;
    let follow_pid = child.id();
    let reader = tokio::spawn(lines.read(stamps.clone(), received.clone()));
    let cpu_before = (
        daemon.cpu_seconds(),
        follow_pid.and_then(machine::cpu_seconds),
    );
    let answers = sender
        .send_on_schedule(&receiver, rate, sends, &stamps)
        .await;
    let settle_until = Instant::now() + SETTLE;
    while received.load(Ordering::Relaxed) < sends as u64 && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.daemon.cpu_s = Some(daemon.cpu_seconds() - cpu_before.0);
    if let Some((after, before)) = follow_pid.and_then(machine::cpu_seconds).zip(cpu_before.1) {
        report.figures.insert("follow_cpu_s".into(), after - before);
    }
    report.daemon.rss_bytes_max = Some(daemon.peak_rss_bytes());

    let status = stop(&mut child).await?;
    let read = reader
        .await
        .context("the reader of follow's lines failed")??;
    let (answer_us, failures) = answers.collect().await;
    report.events = sender.stop().await;
    daemon.stop().await?;
    record(&mut report, sends, &read, &answer_us, failures);
    report.figures.insert(
        "follow_exit_code".into(),
        f64::from(status.code().unwrap_or(-1)),
    );
    let missing = report.figures.get("messages_not_shown").copied();
    report.target.met = match &report.latency_ms {
        Some(p) if rate == TARGET_RATE_PER_S => {
            Some(p.p99 < TARGET_P99_MS && missing == Some(0.0) && read.duplicated == 0)
        }
        _ => None,
    };
    Ok(report)
}

/// Writes what was measured into the report.
fn record(
    report: &mut Report,
    sends: usize,
    read: &Read,
    answer_us: &Histogram<u64>,
    failures: u64,
) {
    report.latency_ms = Percentiles::of(&read.latency_us);
    report.answer_latency_ms = Percentiles::of(answer_us);
    let figures = &mut report.figures;
    figures.insert("messages_sent".into(), sends as f64);
    figures.insert(
        "messages_not_shown".into(),
        sends.saturating_sub(read.latency_us.len() as usize) as f64,
    );
    figures.insert("messages_shown_twice".into(), read.duplicated as f64);
    figures.insert("sends_refused".into(), failures as f64);
    figures.insert("follow_other_lines".into(), read.other_lines as f64);
}

/// The sending user: a session on its client, and what its events said.
struct Sender {
    session: relais_client::SessionHandle,
    /// Ends the drain of the session's events and shuts the session down.
    stop: tokio::sync::oneshot::Sender<()>,
    drained: JoinHandle<BTreeMap<String, u64>>,
}

/// The sends in flight: each one's time from its schedule to the session's answer.
struct Answers(Vec<JoinHandle<Result<Duration, relais_client::ClientError>>>);

impl Sender {
    fn start(client: Client) -> anyhow::Result<Sender> {
        let mut session = Session::start(client)?;
        let handle = session.handle();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        // The session's events are read, so that none is dropped, and counted by kind.
        let drained = tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            loop {
                let event = tokio::select! {
                    _ = &mut stopped => break,
                    event = session.next_event() => event,
                };
                let Some(event) = event else { break };
                if let Some(label) = notable(&event) {
                    *seen.entry(label).or_default() += 1;
                }
            }
            if let Err(e) = session.shutdown().await {
                *seen
                    .entry(format!("sender session ended: {e}"))
                    .or_default() += 1;
            }
            seen
        });
        Ok(Sender {
            session: handle,
            stop,
            drained,
        })
    }

    /// Hands `sends` texts to the session on a fixed schedule, each stamped just before; a
    /// text whose turn comes while an earlier one is still being sent waits in the session,
    /// and that wait counts.
    async fn send_on_schedule(
        &self,
        receiver: &str,
        rate: f64,
        sends: usize,
        stamps: &Mutex<Vec<Option<Instant>>>,
    ) -> Answers {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let origin = Instant::now() + SCHEDULE_LEAD;
        let mut answers = Vec::with_capacity(sends);
        for i in 0..sends {
            tokio::time::sleep_until((origin + interval * i as u32).into()).await;
            let handle = self.session.clone();
            let receiver = receiver.to_owned();
            let stamp = Instant::now();
            if let Ok(mut stamps) = stamps.lock() {
                stamps[i] = Some(stamp);
            }
            answers.push(tokio::spawn(async move {
                handle
                    .send(&receiver, &format!("{PREFIX}{i}"))
                    .await
                    .map(|()| stamp.elapsed())
            }));
        }
        Answers(answers)
    }

    /// Stops the session; returns its notable events by label.
    async fn stop(self) -> BTreeMap<String, u64> {
        let _ = self.stop.send(());
        self.drained.await.unwrap_or_default()
    }
}

impl Answers {
    /// Each accepted send's time to its answer, and how many sends failed.
    async fn collect(self) -> (Histogram<u64>, u64) {
        let mut answer_us = histogram();
        let mut failures = 0;
        for send in self.0 {
            match send.await {
                Ok(Ok(took)) => answer_us.saturating_record(took.as_micros() as u64),
                _ => failures += 1,
            }
        }
        (answer_us, failures)
    }
}

/// The sender's events worth a line in the report: anything but the expected.
fn notable(event: &Event) -> Option<String> {
    match event {
        Event::Delivery { state, .. } if *state != DeliveryState::Sent => {
            Some(format!("sender delivery {state:?}").to_lowercase())
        }
        Event::Connection { state, .. } if *state != ConnectionState::Connected => {
            Some(format!("sender connection {state:?}").to_lowercase())
        }
        Event::Warning { .. } | Event::Lagged { .. } => Some("sender warning".into()),
        _ => None,
    }
}

/// `relais follow --json` for the receiving user, as a program.
struct Follow {
    child: Child,
    lines: FollowLines,
}

struct FollowLines(Lines<BufReader<ChildStdout>>);

/// What the bench read from follow.
struct Read {
    latency_us: Histogram<u64>,
    duplicated: u64,
    other_lines: u64,
}

impl Follow {
    fn start(relais: &Path, home: &Path, log: &Path) -> anyhow::Result<Follow> {
        let stderr = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(relais)
            .arg("--home")
            .arg(home)
            .args(["follow", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", relais.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("relais follow's stdout is not a pipe"))?;
        Ok(Follow {
            child,
            lines: FollowLines(BufReader::new(stdout).lines()),
        })
    }

    /// Reads lines until follow shows a message with `text`.
    async fn until_text(&mut self, text: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.0.next_line())
                .await
                .map_err(|_| anyhow!("relais follow showed no {text:?} in {READY_WAIT:?}"))??;
            let Some(line) = line else {
                bail!("relais follow ended before showing {text:?}; see follow.log");
            };
            let event: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("relais follow printed {line:?}"))?;
            if event["type"] == "message" && event["text"] == text {
                return Ok(());
            }
        }
    }
}

/// Stops follow with SIGTERM, as a service manager would: it acknowledges, closes and exits.
async fn stop(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| anyhow!("relais follow did not exit within 30 s of SIGTERM"))??;
    Ok(status)
}

impl FollowLines {
    /// Reads follow's lines until it exits: for each measured text, the time since its
    /// stamp.
    async fn read(
        mut self,
        stamps: Arc<Mutex<Vec<Option<Instant>>>>,
        received: Arc<AtomicU64>,
    ) -> anyhow::Result<Read> {
        let mut read = Read {
            latency_us: histogram(),
            duplicated: 0,
            other_lines: 0,
        };
        let mut seen = vec![false; stamps.lock().map_or(0, |s| s.len())];
        while let Some(line) = self.0.next_line().await? {
            let now = Instant::now();
            let event: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("relais follow printed {line:?}"))?;
            let number = (event["type"] == "message")
                .then(|| {
                    event["text"]
                        .as_str()?
                        .strip_prefix(PREFIX)?
                        .parse::<usize>()
                        .ok()
                })
                .flatten();
            let Some(number) = number.filter(|n| *n < seen.len()) else {
                read.other_lines += 1;
                continue;
            };
            if std::mem::replace(&mut seen[number], true) {
                read.duplicated += 1;
                continue;
            }
            let stamp = stamps.lock().ok().and_then(|s| s[number]);
            if let Some(stamp) = stamp {
                read.latency_us
                    .saturating_record(now.duration_since(stamp).as_micros() as u64);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(read)
    }
}
