//! What the bench knows about the machine and the processes it measures: cores, memory,
//! kernel and commit for the report, and CPU time and memory of a process from `/proc`.

use std::path::Path;

use serde::Serialize;

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| kilobytes_field(&text, "MemTotal:"))
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// The commit the bench was run from: `git rev-parse HEAD`, and whether tracked files
/// differ from it. `None` outside a git checkout.
pub fn commit() -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        return (None, None);
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    (Some(head), dirty)
}

/// User plus system CPU seconds a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields are counted from
    // after its closing parenthesis, where field 3 (state) begins.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: f64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// CPU seconds of every process named `postgres` (the server and its backends) so far,
/// with those of its children that ended (the postmaster's `cutime` and `cstime`). It
/// counts the whole server: other users' queries on it count too.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0.0;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(open) = text.find('(') else { continue };
        let Some(close) = text.rfind(')') else {
            continue;
        };
        if text.get(open + 1..close) != Some("postgres") {
            continue;
        }
        // Fields 14 to 17: utime, stime, cutime, cstime.
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        ticks += (14..=17)
            .filter_map(|n| fields.get(n - 3)?.parse::<f64>().ok())
            .sum::<f64>();
    }
    ticks / clock_ticks_per_second()
}

/// The load average over 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The bench's own CPU seconds, to show how much of the machine the load itself took.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    Some((
        kilobytes_field(&text, "VmRSS:")?,
        kilobytes_field(&text, "VmHWM:")?,
    ))
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // Linux has reported 100 to user space on every architecture for decades.
        _ => 100.0,
    }
}

/// A `Key:   123 kB` line of a `/proc` file, in bytes.
fn kilobytes_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kilobytes: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kilobytes * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds(std::process::id()).is_some());
        let (rss, peak) = memory(std::process::id()).expect("own status");
        assert!(rss > 0 && peak >= rss);
        let machine = Machine::describe();
        assert!(machine.cores > 0 && machine.memory_bytes > 0);
    }

    #[test]
    fn parses_kilobyte_fields() {
        let text = "Name:\trelaisd\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(kilobytes_field(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kilobytes_field(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(kilobytes_field(text, "VmSwap:"), None);
    }
}
