//! Process metrics read from `/proc/self`: CPU time, resident memory, open descriptors.

use std::fmt::Write as _;

/// Appends the process metrics; a value that cannot be read is left out.
pub fn render(out: &mut String) {
    if let Some(seconds) = cpu_seconds() {
        let _ = writeln!(
            out,
            "# HELP relais_process_cpu_seconds_total CPU time used by relaisd (user and system).\n\
             # TYPE relais_process_cpu_seconds_total counter\nrelais_process_cpu_seconds_total {seconds}"
        );
    }
    if let Some(bytes) = resident_bytes() {
        let _ = writeln!(
            out,
            "# HELP relais_process_resident_memory_bytes Resident memory of relaisd.\n\
             # TYPE relais_process_resident_memory_bytes gauge\nrelais_process_resident_memory_bytes {bytes}"
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP relais_process_open_fds File descriptors open in relaisd.\n\
             # TYPE relais_process_open_fds gauge\nrelais_process_open_fds {}",
            entries.count()
        );
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ = writeln!(
            out,
            "# HELP relais_process_max_fds The file descriptor limit of relaisd.\n\
             # TYPE relais_process_max_fds gauge\nrelais_process_max_fds {soft}"
        );
    }
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks / per_second as f64)
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let mut out = String::new();
        super::render(&mut out);
        for name in [
            "relais_process_cpu_seconds_total ",
            "relais_process_resident_memory_bytes ",
            "relais_process_open_fds ",
        ] {
            assert!(out.contains(name), "{name} missing from {out}");
        }
        assert!(super::resident_bytes().is_some_and(|b| b > 1024 * 1024));
    }
}
