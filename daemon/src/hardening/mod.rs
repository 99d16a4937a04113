//! Process hardening the daemon applies to itself at start, in this order:
//!
//! 1. no core dumps and not dumpable ([`apply`]), before any secret is loaded, so secrets
//!    cannot be read from a crash dump or by ptrace from another process of the same user;
//! 2. started as root: once the listeners are bound, the switch to the service user with
//!    no supplementary groups ([`privileges`]); in every case, no capabilities left and
//!    no-new-privileges set;
//! 3. once the secrets are loaded: the filesystem view ([`filesystem`], Landlock) and the
//!    system-call filter ([`syscalls`], seccomp), both before the async runtime starts any
//!    thread, so that every thread inherits them ([`confine`]).
//!
//! `docs/cookbook/hardening.md` explains all of it for operators.

pub mod filesystem;
pub mod privileges;
pub mod syscalls;

use std::path::Path;

use crate::config::Config;

/// Why hardening failed; start-up stops rather than run with secrets exposed.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot disable core dumps: {0}")]
    CoreLimit(nix::Error),
    #[error("cannot mark the process non-dumpable: {0}")]
    Dumpable(nix::Error),
    #[error(
        "{0} threads run before the sandbox is applied; it would not cover them (this is a bug in relaisd)"
    )]
    Threads(usize),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Filesystem(#[from] filesystem::FilesystemError),
    #[error(transparent)]
    Syscalls(#[from] syscalls::SyscallError),
}

/// Applies the hardening; call before any secret is loaded.
pub fn apply() -> Result<(), HardeningError> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardeningError::CoreLimit)?;
    nix::sys::prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    Ok(())
}

/// Gives up privileges: switches to `target` when started as root, then sheds every
/// capability and sets no-new-privileges. Changing user resets the dumpable flag to the
/// system's default, so it is cleared again here.
pub fn drop_privileges(target: Option<&privileges::Target>) -> Result<(), HardeningError> {
    if let Some(target) = target {
        target.switch()?;
    }
    privileges::shed_capabilities()?;
    nix::sys::prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    Ok(())
}

/// Applies the filesystem view and the system-call filter, unless a `danger_` setting
/// turns one off; each such setting, and a kernel that enforces less, is logged as a
/// warning. Call from the only thread, before the runtime starts.
pub fn confine(config: &Config, config_file: Option<&Path>) -> Result<(), HardeningError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(HardeningError::Threads(threads));
    }
    if config.hardening.danger_disable_landlock {
        tracing::warn!(
            "hardening.danger_disable_landlock is set: the daemon can reach every file its user may"
        );
    } else {
        let view = filesystem::View::for_config(config, config_file);
        match view.enforce()? {
            filesystem::Enforcement::Full => {
                tracing::info!(
                    paths = view.rules.len(),
                    "filesystem sandbox (Landlock) enforced"
                )
            }
            filesystem::Enforcement::Partial => tracing::warn!(
                "this kernel enforces the filesystem sandbox (Landlock) only in part: truncation or device ioctls stay unrestricted"
            ),
            filesystem::Enforcement::None => tracing::warn!(
                "this kernel does not offer Landlock: the filesystem sandbox is not enforced; boot with lsm=...,landlock to enable it"
            ),
        }
    }
    if config.hardening.danger_disable_seccomp {
        tracing::warn!(
            "hardening.danger_disable_seccomp is set: the daemon may make any system call"
        );
    } else {
        let outbound = match config.storage.backend {
            crate::config::StorageBackend::Sqlite => syscalls::Outbound::None,
            crate::config::StorageBackend::Postgres => syscalls::Outbound::Database,
        };
        syscalls::install(outbound)?;
        tracing::info!("system-call filter (seccomp) installed");
    }
    Ok(())
}

/// Threads of this process, from `/proc/self/task`; 0 when it cannot be read.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

#[cfg(test)]
mod tests;
