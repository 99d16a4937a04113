//! A run's results: the JSON document written with `--json`, and the table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Params, Scenario};
use crate::machine::Machine;

/// Everything a run measured. Fields a scenario does not measure are `null`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    /// The command line, as given.
    pub command: String,
    pub params: Params,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    pub accepted_msgs_per_s: Option<f64>,
    pub delivered_msgs_per_s: Option<f64>,
    /// End to end: from a message's scheduled send time to its receipt (fan-out: to its
    /// receipt by the last member).
    pub latency_ms: Option<Percentiles>,
    /// From a message's scheduled send time to the relay's `Submitted` answer.
    pub answer_latency_ms: Option<Percentiles>,
    pub daemon: DaemonFigures,
    /// Restart: from spawning the killed relay's successor to `/readyz` answering 200
    /// (crash: the slowest of the restarts).
    pub ready_ms: Option<f64>,
    /// Restart: from ready to the last queued message received.
    pub drained_ms: Option<f64>,
    /// Crash: messages the relay answered `Submitted`.
    pub acked: Option<u64>,
    /// Crash: acknowledged but never received.
    pub lost: Option<u64>,
    /// Crash: received twice under different sequences (stored twice).
    pub duplicated: Option<u64>,
    /// Other figures of the scenario.
    pub figures: BTreeMap<String, f64>,
    /// Refusals, lost connections and closing reasons seen by the load, by label.
    pub events: BTreeMap<String, u64>,
    /// CPU seconds the bench itself used (it shares the machine with the relay).
    pub bench_cpu_s: Option<f64>,
    /// The machine's load average (1, 5, 15 min) when the run started and when it ended:
    /// others' work on the same cores shows here.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub target: Target,
    pub machine: Machine,
    pub commit: Option<String>,
    /// Whether tracked files differed from `commit`.
    pub commit_dirty: Option<bool>,
}

/// The relay process's figures.
#[derive(Debug, Default, Serialize)]
pub struct DaemonFigures {
    /// CPU seconds (user + system) during the measured phase.
    pub cpu_s: Option<f64>,
    /// Peak resident memory of the relay process (`VmHWM`), setup included.
    pub rss_bytes_max: Option<u64>,
    /// Idle: growth of resident memory divided by the connections.
    pub rss_bytes_per_connection: Option<f64>,
}

/// The figure the issue asks for, and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub goal: String,
    pub met: Option<bool>,
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
}

impl Percentiles {
    /// From a histogram in microseconds; `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            count: histogram.len(),
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {})",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut rows = Vec::new();
        self.measured_rows(&mut rows);
        self.context_rows(&mut rows);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("relais-bench {:?}\n", self.scenario).to_lowercase();
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        out
    }

    /// The run's parameters and everything it measured.
    fn measured_rows(&self, rows: &mut Vec<(String, String)>) {
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let params = serde_json::to_value(&self.params).unwrap_or_default();
        if let Some(map) = params.as_object() {
            let text: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row("parameters", text.join(" ").replace('"', ""));
        }
        if let Some(v) = self.accepted_msgs_per_s {
            row("accepted msg/s", thousands(v));
        }
        if let Some(v) = self.delivered_msgs_per_s {
            row("delivered msg/s", thousands(v));
        }
        if let Some(p) = &self.latency_ms {
            row("latency ms", p.line());
        }
        if let Some(p) = &self.answer_latency_ms {
            row("answer latency ms", p.line());
        }
        if let Some(v) = self.ready_ms {
            row("ready ms", format!("{v:.1}"));
        }
        if let Some(v) = self.drained_ms {
            row("drained ms", format!("{v:.1}"));
        }
        for (key, value) in [
            ("acked", self.acked),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
        ] {
            if let Some(v) = value {
                row(key, v.to_string());
            }
        }
        for (key, value) in &self.figures {
            row(key, format!("{value:.2}"));
        }
        if let Some(v) = self.daemon.cpu_s {
            row("relaisd cpu s", format!("{v:.2}"));
        }
        if let Some(v) = self.daemon.rss_bytes_max {
            row(
                "relaisd peak rss MiB",
                format!("{:.1}", v as f64 / 1048576.0),
            );
        }
        if let Some(v) = self.daemon.rss_bytes_per_connection {
            row(
                "relaisd rss per connection KiB",
                format!("{:.2}", v / 1024.0),
            );
        }
    }

    /// What the figures are read against: the bench's own CPU and the machine's other
    /// load, the events of the run, the target, and the machine and commit measured.
    fn context_rows(&self, rows: &mut Vec<(String, String)>) {
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        if let Some(v) = self.bench_cpu_s {
            row("bench cpu s", format!("{v:.2}"));
        }
        for (key, value) in [
            ("load average start", self.load_average_start),
            ("load average end", self.load_average_end),
        ] {
            if let Some([one, five, fifteen]) = value {
                row(key, format!("{one:.2} {five:.2} {fifteen:.2}"));
            }
        }
        for (label, n) in &self.events {
            row("event", format!("{n} × {label}"));
        }
        let verdict = match self.target.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not comparable",
        };
        row("target", format!("{} — {verdict}", self.target.goal));
        row(
            "machine",
            format!(
                "{} cores, {:.1} GiB, Linux {}",
                self.machine.cores,
                self.machine.memory_bytes as f64 / 1073741824.0,
                self.machine.kernel
            ),
        );
        if let Some(commit) = &self.commit {
            let dirty = if self.commit_dirty == Some(true) {
                " (modified)"
            } else {
                ""
            };
            row("commit", format!("{commit}{dirty}"));
        }
    }
}

/// 12345.6 → "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        for (value, text) in [
            (0.0, "0"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1234567.8, "1,234,568"),
        ] {
            assert_eq!(super::thousands(value), text);
        }
    }
}
