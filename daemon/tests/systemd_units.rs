//! The systemd units as systemd itself judges them: the sandbox rates 1.0 or less in
//! `systemd-analyze security`, and `systemd-analyze verify` has nothing to say.

use std::path::Path;
use std::process::Command;

fn units() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd"))
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
        let text = text.replace("/usr/bin/relaisd", env!("CARGO_BIN_EXE_relaisd"));
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
