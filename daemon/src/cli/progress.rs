//! Progress of long operator commands (backup, restore, storage copy), on standard error so
//! that standard output keeps only the result: on a terminal one line redrawn in place at
//! most ten times a second; otherwise (a log, a pipe, Ansible) a plain line at each quarter
//! and at the end; nothing with `--quiet`.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Least time between two redraws on a terminal.
const REDRAW: Duration = Duration::from_millis(100);
/// Without a total, a plain line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Rows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Terminal,
    Plain,
    Quiet,
}

/// One step's progress.
pub struct Progress {
    label: String,
    total: Option<u64>,
    unit: Unit,
    mode: Mode,
    started: Instant,
    drawn: Option<Instant>,
    /// Plain output: the next quarter (1 to 4) to report.
    next_quarter: u64,
}

impl Progress {
    /// Starts reporting `label`, out of `total` when it is known.
    pub fn start(label: &str, total: Option<u64>, unit: Unit, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Progress {
            label: label.to_owned(),
            total,
            unit,
            mode,
            started: Instant::now(),
            drawn: None,
            next_quarter: 1,
        }
    }

    /// `done` units so far.
    pub fn set(&mut self, done: u64) {
        let now = Instant::now();
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => {
                if self.drawn.is_none_or(|at| now.duration_since(at) >= REDRAW) {
                    self.drawn = Some(now);
                    eprint!("\r\x1b[2K{}", self.line(done));
                    let _ = std::io::stderr().flush();
                }
            }
            Mode::Plain => {
                let due = match self.total {
                    Some(total) if total > 0 => {
                        let due = done.saturating_mul(4) / total >= self.next_quarter
                            && self.next_quarter < 4;
                        if due {
                            self.next_quarter = done.saturating_mul(4) / total + 1;
                        }
                        due
                    }
                    _ => {
                        self.drawn.map_or(now.duration_since(self.started), |at| {
                            now.duration_since(at)
                        }) >= PLAIN_EVERY
                    }
                };
                if due {
                    self.drawn = Some(now);
                    eprintln!("{}", self.line(done));
                }
            }
        }
    }

    /// The step ended with `done` units.
    pub fn finish(&mut self, done: u64) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => eprintln!("\r\x1b[2K{}", self.line(done)),
            Mode::Plain => eprintln!("{}", self.line(done)),
        }
    }

    /// `restore: 412.0 MiB / 1.2 GiB (34%), 7 s`.
    fn line(&self, done: u64) -> String {
        let amount = match self.total {
            Some(total) => format!(
                "{} / {} ({}%)",
                self.amount(done),
                self.amount(total),
                (done.min(total) * 100).checked_div(total).unwrap_or(100)
            ),
            None => self.amount(done),
        };
        format!(
            "{}: {amount}, {} s",
            self.label,
            self.started.elapsed().as_secs()
        )
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Rows => format!("{n} rows"),
            Unit::Bytes => bytes(n),
        }
    }
}

/// `n` bytes in binary units, one decimal above a KiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn lines_say_how_far_and_how_long() {
        let progress = Progress::start("copy users", Some(200), Unit::Rows, true);
        assert_eq!(
            progress.line(50),
            "copy users: 50 rows / 200 rows (25%), 0 s"
        );
        let empty = Progress::start("copy codes", Some(0), Unit::Rows, true);
        assert_eq!(empty.line(0), "copy codes: 0 rows / 0 rows (100%), 0 s");
        let open = Progress::start("backup", None, Unit::Bytes, true);
        assert_eq!(open.line(2048), "backup: 2.0 KiB, 0 s");
    }
}
