//! Debian root directories for container tests, built with `mmdebstrap` once and cached
//! outside the repository under a name that hashes their inputs, so a change of package
//! list builds a new one and an unchanged list reuses what any earlier run built; and the
//! process that boots in them.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIRROR: &str = "deb http://deb.debian.org/debian bookworm main";
pub const CACHE: &str = "/var/cache/relais-test";

/// The cached root directory for `inputs` (mmdebstrap's options and suite), built when
/// missing. The name hashes the inputs and the mirror exactly as `nspawn_boot.rs` does,
/// so either test reuses the other's root when their inputs are the same.
pub fn cached(inputs: &[&str]) -> PathBuf {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for input in inputs.iter().chain([&MIRROR]) {
        hash.update(input.as_bytes());
        hash.update([0]);
    }
    let name = format!("rootfs-{}", &hex::encode(hash.finalize())[..16]);
    let root = Path::new(CACHE).join(&name);
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    std::fs::create_dir_all(CACHE).expect("cache dir");
    // Built aside and renamed, so a run that stops half-way leaves no half root behind
    // and two runs at once both end with a whole one.
    let partial = Path::new(CACHE).join(format!("{name}.partial-{}", std::process::id()));
    let out = Command::new("mmdebstrap")
        .args(inputs)
        .arg(&partial)
        .arg(MIRROR)
        .output()
        .expect("mmdebstrap");
    assert!(
        out.status.success(),
        "mmdebstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&partial, &root).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    root
}

/// The PID 1 of the container `systemd-nspawn` (process `nspawn`) booted, as the host sees
/// it: nspawn's one child, once it has started; `nsenter --target` it to run commands in
/// the container.
pub fn leader_of(nspawn: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}
