//! Giving up privileges: a daemon started as root binds its listeners, gives its data
//! directory to its service user, then becomes that user with no supplementary groups;
//! whoever started it, it ends with no capabilities and with no-new-privileges set.
//!
//! Under systemd the unit already starts relaisd as `relais` with no capabilities, so the
//! switch is skipped and shedding capabilities finds nothing to shed.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use caps::CapSet;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::config::Process;

/// How deep the data directory may nest; it holds a few files and `keys/`, so anything
/// deeper is not ours and is left alone rather than walked.
const DATA_DEPTH_MAX: usize = 8;

/// Why the daemon could not give up its privileges; it does not serve with them.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "process.user {0:?} does not exist; create it (`systemd-sysusers relaisd.conf`, or `useradd --system --shell /usr/sbin/nologin {0}`), set process.user to an existing user or numeric id, or start relaisd as the user it should run as"
    )]
    UnknownUser(String),
    #[error(
        "process.group {0:?} does not exist; create it or set process.group to an existing group or numeric id"
    )]
    UnknownGroup(String),
    #[error(
        "process.user {0:?} has no entry in the user database to take a primary group from; set process.group"
    )]
    NoPrimaryGroup(String),
    #[error(
        "relaisd started as root would keep running as root (process.user or process.group is root); set them to an unprivileged user such as relais"
    )]
    StaysRoot,
    #[error(
        "cannot give {path} to uid {uid}: {source}; check that it is a local directory root may change"
    )]
    Chown {
        path: PathBuf,
        uid: u32,
        source: Errno,
    },
    #[error("cannot {action}: {source}")]
    Switch { action: &'static str, source: Errno },
    #[error("cannot drop capabilities: {0}")]
    Capabilities(String),
    #[error(
        "{path} is out of reach for uid {uid} ({source}); let that user search every parent directory (chmod o+x) or move the data directory"
    )]
    Unreachable {
        path: PathBuf,
        uid: u32,
        source: std::io::Error,
    },
}

/// The unprivileged user and group a root-started daemon becomes, resolved while the user
/// database can still be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uid: Uid,
    pub gid: Gid,
}

impl Target {
    /// Resolves `[process]`; refuses root, since switching to it would drop nothing.
    pub fn resolve(process: &Process) -> Result<Target, PrivilegeError> {
        let unknown_user = || PrivilegeError::UnknownUser(process.user.clone());
        let (uid, primary) = match process.user.parse::<u32>() {
            Ok(uid) => {
                let entry = nix::unistd::User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten();
                (Uid::from_raw(uid), entry.map(|u| u.gid))
            }
            Err(_) => {
                let user = nix::unistd::User::from_name(&process.user)
                    .ok()
                    .flatten()
                    .ok_or_else(unknown_user)?;
                (user.uid, Some(user.gid))
            }
        };
        let gid = match &process.group {
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => Gid::from_raw(gid),
                Err(_) => {
                    nix::unistd::Group::from_name(group)
                        .ok()
                        .flatten()
                        .ok_or_else(|| PrivilegeError::UnknownGroup(group.clone()))?
                        .gid
                }
            },
            None => primary.ok_or_else(|| PrivilegeError::NoPrimaryGroup(process.user.clone()))?,
        };
        if uid.is_root() || gid.as_raw() == 0 {
            return Err(PrivilegeError::StaysRoot);
        }
        Ok(Target { uid, gid })
    }

    /// Creates `dir` if needed and gives it, and everything under it, to the target user,
    /// as systemd's `StateDirectory=` does: a data directory that root created or touched
    /// would otherwise be unreadable after the switch.
    ///
    /// The walk opens every directory relative to its parent without following symbolic
    /// links, and changes links themselves rather than their targets, so a link planted in
    /// the data directory cannot make root give away a file elsewhere.
    pub fn give_directory(&self, dir: &Path) -> Result<(), PrivilegeError> {
        let chown = |source| PrivilegeError::Chown {
            path: dir.to_owned(),
            uid: self.uid.as_raw(),
            source,
        };
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| chown(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut top = Dir::open(dir, flags, Mode::empty()).map_err(chown)?;
        nix::unistd::fchown(top.as_fd(), Some(self.uid), Some(self.gid)).map_err(chown)?;
        self.give_entries(&mut top, 0).map_err(chown)
    }

    fn give_entries(&self, dir: &mut Dir, depth: usize) -> Result<(), Errno> {
        if depth >= DATA_DEPTH_MAX {
            return Ok(());
        }
        let names: Vec<CString> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_owned())
            .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
            .collect();
        for name in names {
            nix::unistd::fchownat(
                dir.as_fd(),
                name.as_c_str(),
                Some(self.uid),
                Some(self.gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match Dir::openat(dir.as_fd(), name.as_c_str(), flags, Mode::empty()) {
                Ok(mut child) => self.give_entries(&mut child, depth + 1)?,
                // Files, sockets and symbolic links have nothing under them.
                Err(Errno::ENOTDIR | Errno::ELOOP) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Switches to the target user and group, with no supplementary groups. The bounding
    /// set is emptied first, while the capability to do so is still held.
    pub fn switch(&self) -> Result<(), PrivilegeError> {
        let switch = |action| move |source| PrivilegeError::Switch { action, source };
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| PrivilegeError::Capabilities(e.to_string()))?;
        nix::unistd::setgroups(&[]).map_err(switch("clear the supplementary groups"))?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid).map_err(switch("switch group"))?;
        nix::unistd::setresuid(self.uid, self.uid, self.uid).map_err(switch("switch user"))?;
        Ok(())
    }

    /// Fails unless the switched process can reach `path`: the kernel checks every parent
    /// directory, and a temporary or home directory of root's is often closed to others.
    pub fn check_reachable(&self, path: &Path) -> Result<(), PrivilegeError> {
        std::fs::metadata(path)
            .map(drop)
            .map_err(|source| PrivilegeError::Unreachable {
                path: path.to_owned(),
                uid: self.uid.as_raw(),
                source,
            })
    }
}

/// Sheds every capability the process may hold (effective, permitted, inheritable,
/// ambient, and the bounding set where that is still allowed), then sets no-new-privileges
/// so that no later `execve` could gain any back.
pub fn shed_capabilities() -> Result<(), PrivilegeError> {
    let failed = |e: caps::errors::CapsError| PrivilegeError::Capabilities(e.to_string());
    // Emptying the bounding set needs CAP_SETPCAP; an unprivileged process without it
    // keeps its bounding set, which no-new-privileges makes unusable anyway.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).map_err(failed)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(failed)?;
    // Only call capset when there is something to clear: the systemd unit starts relaisd
    // with no capability and forbids capset (it is in @privileged).
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        if !caps::read(None, set).map_err(failed)?.is_empty() {
            caps::clear(None, set).map_err(failed)?;
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(|source| PrivilegeError::Switch {
        action: "set no-new-privileges",
        source,
    })?;
    let left = caps::read(None, CapSet::Permitted).map_err(failed)?;
    if !left.is_empty() {
        return Err(PrivilegeError::Capabilities(format!(
            "{left:?} are still permitted"
        )));
    }
    Ok(())
}

/// Resolves the target when the daemon runs as root; `None` when there is nothing to drop.
pub fn target_if_root(process: &Process) -> Result<Option<Target>, PrivilegeError> {
    if nix::unistd::geteuid().is_root() {
        Target::resolve(process).map(Some)
    } else {
        Ok(None)
    }
}
