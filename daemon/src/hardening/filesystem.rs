//! The filesystem view (Landlock): once its listeners are bound and its secrets loaded,
//! relaisd can reach only what it serves from, whatever its user's file permissions say.
//!
//! Landlock is applied in best-effort mode. The rights handled are those of ABI 5, tested
//! on this project's build kernel; a Debian 12 appliance kernel (6.1) offers ABI 2, where
//! the kernel enforces the same rules except truncation (ABI 3) and device ioctls (ABI 5),
//! which stay unrestricted there. A kernel without Landlock enforces nothing, and the
//! daemon says so at start.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access as _, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};

use crate::config::{Config, StorageBackend};

/// The newest Landlock ABI whose rights were tested against the daemon.
pub const ABI_TESTED: ABI = ABI::V5;

/// Files the libraries inside relaisd read by themselves; optional, since a minimal
/// system may lack one and each library has a fallback.
const RUNTIME_FILES: &[&str] = &[
    "/dev/urandom",
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu/online",
];

/// What the C library reads to resolve a host name.
const RESOLVER_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// The files a PostgreSQL URL names (`sslrootcert`, `sslcert`, `sslkey`).
fn postgres_files(url: &str) -> Vec<PathBuf> {
    let Ok(url) = url::Url::parse(url) else {
        return Vec::new();
    };
    url.query_pairs()
        .filter(|(k, _)| matches!(&**k, "sslrootcert" | "sslcert" | "sslkey"))
        .map(|(_, v)| PathBuf::from(&*v))
        .collect()
}

/// Why the filesystem view could not be applied; start-up stops.
#[derive(Debug, thiserror::Error)]
pub enum FilesystemError {
    #[error(
        "cannot open {path} to allow it in the filesystem sandbox: {source}; create it or fix the configuration"
    )]
    Missing {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("cannot apply the filesystem sandbox (Landlock): {0}")]
    Landlock(#[from] landlock::RulesetError),
}

/// What relaisd may do beneath one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Read files and list directories.
    Read,
    /// Read, create, write, truncate and remove files and directories.
    ReadWrite,
    /// Only remove entries: the admin socket's directory, to remove the socket at exit.
    Remove,
}

/// One path and what may be done beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub allowed: Allowed,
    /// Whether start-up fails when the path does not exist (optional paths are skipped).
    pub required: bool,
}

/// How much of the view the running kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    None,
}

/// Everything the serving daemon touches on disk.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub rules: Vec<Rule>,
}

impl View {
    /// The view for a configuration; `config_file` is `None` in development mode.
    pub fn for_config(config: &Config, config_file: Option<&Path>) -> View {
        let mut view = View::default();
        // The database, its WAL and shared-memory files, and the keys live here.
        view.add(&config.data_dir, Allowed::ReadWrite, true);
        // SQLite creates `-wal` and `-shm` files beside a database placed elsewhere.
        if let Some(parent) = config.storage.path.as_deref().and_then(Path::parent) {
            view.add(parent, Allowed::ReadWrite, true);
        }
        if let Some(backups) = &config.backup.directory {
            // Backups are written, then read back to compute their checksum.
            view.add(backups, Allowed::ReadWrite, true);
        }
        if let Some(file) = config_file {
            view.add(file, Allowed::Read, true);
        }
        // The development key source's TLS files, read again on SIGHUP.
        for file in config.tls.certificate.iter().chain(&config.tls.private_key) {
            view.add(file, Allowed::Read, false);
        }
        // systemd credentials (LoadCredential=, LoadCredentialEncrypted=).
        if let Some(credentials) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            view.add(Path::new(&credentials), Allowed::Read, false);
        }
        if let Some(directory) = config.admin_socket().parent() {
            view.add(directory, Allowed::Remove, true);
        }
        // Metrics read /proc/self/{stat,status,fd}; the rule holds this process's own
        // directory (the link is resolved now), not other processes'.
        view.add(Path::new("/proc/self"), Allowed::Read, true);
        // What the libraries open on their own, seen in the tests: SQLite seeds its
        // random numbers (WAL salts) from /dev/urandom; the C library's allocator reads
        // the overcommit policy and the number of processors when it sizes its arenas.
        for file in RUNTIME_FILES {
            view.add(Path::new(file), Allowed::Read, false);
        }
        if config.storage.backend == StorageBackend::Postgres {
            // Resolving the database's host name, whenever a connection is made again.
            for file in RESOLVER_FILES {
                view.add(Path::new(file), Allowed::Read, false);
            }
            // The CA and client certificate files named in the URL, read at each connection.
            for file in postgres_files(config.storage.url.as_deref().unwrap_or_default()) {
                view.add(&file, Allowed::Read, true);
            }
        }
        view
    }

    fn add(&mut self, path: &Path, allowed: Allowed, required: bool) {
        self.rules.push(Rule {
            path: path.to_owned(),
            allowed,
            required,
        });
    }

    /// Restricts the calling thread, and every thread it starts later, to the view.
    pub fn enforce(&self) -> Result<Enforcement, FilesystemError> {
        self.enforce_as(ABI_TESTED)
    }

    /// As [`View::enforce`], handling only the rights of `abi`: tests use it to check what
    /// an older kernel enforces.
    pub fn enforce_as(&self, abi: ABI) -> Result<Enforcement, FilesystemError> {
        let handled = AccessFs::from_all(abi);
        let mut ruleset = Ruleset::default().handle_access(handled)?.create()?;
        for rule in &self.rules {
            let fd = match PathFd::new(&rule.path) {
                Ok(fd) => fd,
                Err(_) if !rule.required => continue,
                Err(source) => {
                    return Err(FilesystemError::Missing {
                        path: rule.path.clone(),
                        source,
                    });
                }
            };
            let mut access = rights(rule.allowed) & handled;
            if !rule.path.is_dir() {
                // Directory rights on a file are an error for the kernel.
                access &= AccessFs::from_file(abi);
            }
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
        }
        let status = ruleset.restrict_self()?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => Enforcement::Full,
            RulesetStatus::PartiallyEnforced => Enforcement::Partial,
            RulesetStatus::NotEnforced => Enforcement::None,
        })
    }
}

fn rights(allowed: Allowed) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    match allowed {
        Allowed::Read => read,
        Allowed::ReadWrite => {
            read | AccessFs::WriteFile
                | AccessFs::Truncate
                | AccessFs::MakeReg
                | AccessFs::MakeDir
                | AccessFs::RemoveFile
                | AccessFs::RemoveDir
        }
        Allowed::Remove => BitFlags::from(AccessFs::RemoveFile),
    }
}
