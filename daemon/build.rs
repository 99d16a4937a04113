//! Records what relaisd is built from, for `relais_build_info`: `RELAIS_COMMIT` and
//! `SOURCE_DATE_EPOCH` when the build sets them (the image build does: it compiles a `git
//! archive`, which has no repository), otherwise the repository's HEAD and its commit
//! time, otherwise `unknown`. Both come from the commit, never from the build's clock, so a
//! reproducible rebuild reports the same.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAIS_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(git_dir) = git(&repository, &["rev-parse", "--absolute-git-dir"]) {
        // A new commit or a checkout changes HEAD or the branch it points to.
        let git_dir = PathBuf::from(git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        if let Some(branch) = git(&repository, &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
        }
    }
    let commit = given("RELAIS_COMMIT")
        .or_else(|| git(&repository, &["rev-parse", "HEAD"]))
        .filter(|c| c.len() >= 7 && c.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|c| c[..12.min(c.len())].to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let epoch = given("SOURCE_DATE_EPOCH")
        .or_else(|| git(&repository, &["log", "-1", "--format=%ct", "HEAD"]))
        .filter(|e| e.parse::<u64>().is_ok())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RELAIS_COMMIT={commit}");
    println!("cargo:rustc-env=RELAIS_SOURCE_DATE_EPOCH={epoch}");
}

fn given(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn git(repository: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repository)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
