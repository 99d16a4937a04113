//! The systemd units as systemd itself judges them: the sandbox rates 1.0 or less in
//! `systemd-analyze security`, `systemd-analyze verify` has nothing to say, the unit's
//! system-call filter lets through every call relaisd needs to confine itself and serve,
//! and its memory and task ceilings are set.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn units() -> PathBuf {
    relais_testkit::repository().join("systemd")
}

#[test]
fn service_sandbox_rates_safe() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=10", "--no-pager"])
        .arg(units().join("relaisd.service"))
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "exposure above 1.0: {summary}\n{text}"
    );
    let exposure: f64 = summary
        .split("relaisd.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in {summary:?}"));
    assert!(exposure <= 1.0, "{summary}");
}

#[test]
fn units_verify_cleanly() {
    // `verify` needs ExecStart's binary to exist: point a copy at the one just built.
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in [
        "relaisd.service",
        "relaisd.socket",
        "relaisd-metrics.socket",
    ] {
        let text = std::fs::read_to_string(units().join(unit)).expect("unit");
        let relaisd = relais_testkit::relaisd().to_str().expect("a UTF-8 path");
        let text = text.replace("/usr/bin/relaisd", relaisd);
        std::fs::write(dir.path().join(unit), text).expect("write");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .current_dir(dir.path())
        .args([
            "./relaisd.service",
            "./relaisd.socket",
            "./relaisd-metrics.socket",
        ])
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even on bad keys: its stderr is the verdict.
    assert!(
        stderr.trim().is_empty() && out.status.success(),
        "systemd-analyze verify:\n{stderr}"
    );
}

/// The system calls one `SystemCallFilter=` entry stands for, groups expanded by
/// `systemd-analyze syscall-filter` (the systemd the appliance runs).
fn expand(entry: &str, out: &mut BTreeSet<String>) {
    if !entry.starts_with('@') {
        out.insert(entry.to_owned());
        return;
    }
    let listing = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", entry])
        .output()
        .expect("systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&listing.stdout);
    for line in text.lines().skip(1) {
        let name = line.trim();
        if !name.is_empty() && !name.starts_with('#') {
            expand(name, out);
        }
    }
}

/// Under the unit, relaisd confines itself inside systemd's filter: every call its own
/// allow-list lets through, and the calls that install the sandbox, must pass systemd's
/// filter too, or the daemon would fail under systemd alone.
#[test]
fn the_unit_allows_every_call_relaisd_needs() {
    let unit = std::fs::read_to_string(units().join("relaisd.service")).expect("unit");
    let mut allowed = BTreeSet::new();
    for entries in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, entries) = match entries.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, entries),
        };
        let mut set = BTreeSet::new();
        for entry in entries.split_whitespace() {
            expand(entry, &mut set);
        }
        if deny {
            allowed.retain(|call| !set.contains(call));
        } else {
            allowed.extend(set);
        }
    }
    assert!(allowed.contains("read"), "the unit's filter did not expand");
    let start_up = [
        "seccomp",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "prctl",
        "capget",
        "prlimit64",
    ];
    let missing: Vec<&str> = relaisd::hardening::syscalls::allowed_names()
        .into_iter()
        .chain(start_up)
        .filter(|call| !allowed.contains(*call))
        .collect();
    assert!(
        missing.is_empty(),
        "relaisd.service forbids calls relaisd needs: {missing:?}"
    );
}

/// A leak or an attack that gets past relaisd's own limits stops at the unit's ceilings
/// (why these values: docs/cookbook/systemd.md), and the cookbook explains both.
#[test]
fn the_unit_caps_memory_and_tasks() {
    let unit = std::fs::read_to_string(units().join("relaisd.service")).expect("unit");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("relaisd.service sets no {key}="))
            .trim()
            .to_owned()
    };
    let memory = value("MemoryMax");
    let gib: u64 = memory
        .strip_suffix('G')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("MemoryMax={memory} is not in whole GiB"));
    assert!((1..=8).contains(&gib), "MemoryMax={memory}");
    let tasks: u64 = value("TasksMax").parse().expect("TasksMax is a number");
    // tokio's blocking pool alone may take 512 threads.
    assert!((600..=4096).contains(&tasks), "TasksMax={tasks}");
    let cookbook =
        std::fs::read_to_string(relais_testkit::repository().join("docs/cookbook/systemd.md"))
            .expect("cookbook");
    for key in ["MemoryMax=", "TasksMax="] {
        assert!(
            cookbook.contains(&format!("`{key}")),
            "docs/cookbook/systemd.md explains {key}"
        );
    }
}
