//! Process hardening the daemon applies to itself at start: no core dumps and not
//! dumpable, so its secrets cannot be read from a crash dump or by ptrace from another
//! process of the same user.

/// Why hardening failed; start-up stops rather than run with secrets exposed.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot disable core dumps: {0}")]
    CoreLimit(nix::Error),
    #[error("cannot mark the process non-dumpable: {0}")]
    Dumpable(nix::Error),
}

/// Applies the hardening; call before any secret is loaded.
pub fn apply() -> Result<(), HardeningError> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardeningError::CoreLimit)?;
    nix::sys::prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Hardening the test runner itself would make it undebuggable, so the test re-runs
    /// itself in a child process that applies it and checks the result.
    #[test]
    fn a_hardened_process_is_not_dumpable_and_dumps_no_core() {
        if std::env::var_os("RELAIS_HARDENING_CHILD").is_some() {
            super::apply().expect("hardening");
            assert!(!nix::sys::prctl::get_dumpable().expect("get dumpable"));
            let limits = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE)
                .expect("rlimit");
            assert_eq!(limits, (0, 0));
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "hardening::tests::a_hardened_process_is_not_dumpable_and_dumps_no_core",
            ])
            .env("RELAIS_HARDENING_CHILD", "1")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
