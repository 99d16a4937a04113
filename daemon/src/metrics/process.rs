//! The standard process metrics, under the names every Prometheus client library gives them
//! (`process_cpu_seconds_total`, `process_start_time_seconds`, ...), read from
//! `/proc/self` at each scrape by a `prometheus-client` collector.
//!
//! Only this process's own directory is read: the filesystem sandbox allows `/proc/self`
//! and nothing else under `/proc`, so the boot time comes from `CLOCK_BOOTTIME`, not from
//! `/proc/stat`.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::resource::{Resource, getrlimit};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::names::collect;

/// Encodes the process metrics at each scrape; a value that cannot be read is left out.
#[derive(Debug)]
pub struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let encoder = &mut encoder;
        if let Some(stat) = Stat::read() {
            collect(
                encoder,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                &ConstCounter::new(stat.cpu_seconds),
            )?;
            collect(
                encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                &ConstGauge::new(stat.virtual_bytes),
            )?;
            collect(
                encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &ConstGauge::new(stat.resident_bytes),
            )?;
            if let Some(seconds) = start_time_seconds(&stat) {
                collect(
                    encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    &ConstGauge::new(seconds),
                )?;
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            collect(
                encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                &ConstGauge::new(entries.count() as u64),
            )?;
        }
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            collect(
                encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                &ConstGauge::new(soft),
            )?;
        }
        Ok(())
    }
}

/// What `/proc/self/stat` says, in base units.
#[derive(Debug)]
struct Stat {
    cpu_seconds: f64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    ticks_per_second: u64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        let ticks_per_second = u64::try_from(sysconf(SysconfVar::CLK_TCK).ok()??).ok()?;
        let page_bytes = u64::try_from(sysconf(SysconfVar::PAGE_SIZE).ok()??).ok()?;
        Stat::parse(&text, ticks_per_second, page_bytes)
    }

    /// Fields are numbered as in proc(5): after the command name, which is in parentheses
    /// and may contain spaces and parentheses, the state is field 3.
    fn parse(text: &str, ticks_per_second: u64, page_bytes: u64) -> Option<Stat> {
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        if ticks_per_second == 0 {
            return None;
        }
        let cpu_ticks = field(14)?.checked_add(field(15)?)?;
        Some(Stat {
            cpu_seconds: cpu_ticks as f64 / ticks_per_second as f64,
            start_ticks: field(22)?,
            ticks_per_second,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.checked_mul(page_bytes)?,
        })
    }
}

/// The process's start in Unix seconds, to the clock tick: the time now, less the time
/// since boot, plus the start's ticks after boot. Worked out once, at the first scrape
/// that can, so that it never moves: a change of it means a restart.
fn start_time_seconds(stat: &Stat) -> Option<f64> {
    static START: OnceLock<f64> = OnceLock::new();
    if let Some(start) = START.get() {
        return Some(*start);
    }
    let since_boot = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let since_boot = since_boot.tv_sec() as f64 + since_boot.tv_nsec() as f64 / 1e9;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let ticks = stat.ticks_per_second as f64;
    let start = ((now - since_boot) * ticks).round() / ticks + stat.start_ticks as f64 / ticks;
    Some(*START.get_or_init(|| start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn reads_its_own_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Process));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).expect("encodes");
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing from {out}"))
                .parse()
                .expect("a number")
        };
        assert!(
            value("process_resident_memory_bytes") > 1024.0 * 1024.0,
            "{out}"
        );
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0, "{out}");
        assert!(
            value("process_max_fds") >= value("process_open_fds"),
            "{out}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0, "{out}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now && start > now - 3600.0,
            "start {start}, now {now}"
        );
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
    }

    #[test]
    fn parses_proc_stat_whatever_the_command_name() {
        // proc(5): pid (comm) state ppid ... utime(14) stime(15) ... starttime(22) vsize(23)
        // rss(24); the name may hold spaces and parentheses.
        let line = "4242 (relais d) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 1000 18446744073709551615";
        let stat = Stat::parse(line, 100, 4096).expect("parses");
        assert_eq!(stat.cpu_seconds, 3.0);
        assert_eq!(stat.start_ticks, 123456);
        assert_eq!(stat.virtual_bytes, 987654321);
        assert_eq!(stat.resident_bytes, 4096 * 1000);
        assert!(Stat::parse("4242 (relaisd) S 1 2", 100, 4096).is_none());
        assert!(Stat::parse(line, 0, 4096).is_none());
    }
}
