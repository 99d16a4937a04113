//! The system-call filter (seccomp): an allow-list of what relaisd needs once it serves,
//! installed on every thread before the async runtime starts its workers.
//!
//! What a forbidden call does, and why:
//!
//! - A call outside the allow-list fails with `EPERM`. The call's caller sees an ordinary
//!   error (a backup that fails, a request answered with an internal error) and the relay
//!   goes on serving everyone else; the error says "operation not permitted", which points
//!   at this filter (`strace -f` names the call). Killing the thread instead would leave
//!   the runtime waiting for it forever, so that is never done.
//! - `execve`, `execveat` and `ptrace` end the whole process (`SIGSYS`, shown by systemd as
//!   `status=31/SYS`). relaisd never runs a program nor traces one: such a call means its
//!   code was subverted, and a relay that stops (and is restarted by systemd) is better
//!   than one that keeps running an attacker's payload. This is a second filter; the
//!   kernel applies the strictest answer of all installed filters.
//!
//! The allow-list was found by running the whole test suite against the real binary under
//! `strace -f` with the filter on, taking every call made after the filter was installed
//! and checking that none was refused, not by guessing; the few calls the tests cannot
//! reach say why they are here. It exists for x86_64 only: elsewhere relaisd refuses to
//! start until the filter is written for that architecture or explicitly turned off.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Why the filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    #[error(
        "the system-call filter is written for x86_64 only, not {0}; set hardening.danger_disable_seccomp = true to run without it"
    )]
    Unsupported(&'static str),
    #[error("cannot build the system-call filter: {0}")]
    Build(String),
    #[error("cannot install the system-call filter: {0}")]
    Install(seccompiler::Error),
}

/// What the daemon reaches over the network itself, beyond Unix sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Nothing: clients arrive on listeners bound before the filter.
    None,
    /// A PostgreSQL server over TCP (IPv4 or IPv6).
    Database,
}

/// Installs both filters on every thread of the process.
pub fn install(outbound: Outbound) -> Result<(), SyscallError> {
    let (fatal, allowed) = programs(outbound)?;
    seccompiler::apply_filter_all_threads(&fatal).map_err(SyscallError::Install)?;
    seccompiler::apply_filter_all_threads(&allowed).map_err(SyscallError::Install)?;
    Ok(())
}

/// The two programs: calls that end the process, and the allow-list.
fn programs(outbound: Outbound) -> Result<(BpfProgram, BpfProgram), SyscallError> {
    let arch = target_arch()?;
    let build = |e: seccompiler::BackendError| SyscallError::Build(e.to_string());
    let fatal = SeccompFilter::new(
        FATAL.iter().map(|&call| (call, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        arch,
    )
    .map_err(build)?;
    let allowed = SeccompFilter::new(
        allowed_rules(outbound)?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(build)?;
    let compile =
        |f: SeccompFilter| -> Result<BpfProgram, SyscallError> { f.try_into().map_err(build) };
    Ok((compile(fatal)?, compile(allowed)?))
}

#[cfg(target_arch = "x86_64")]
fn target_arch() -> Result<seccompiler::TargetArch, SyscallError> {
    Ok(seccompiler::TargetArch::x86_64)
}

#[cfg(not(target_arch = "x86_64"))]
fn target_arch() -> Result<seccompiler::TargetArch, SyscallError> {
    Err(SyscallError::Unsupported(std::env::consts::ARCH))
}

/// Pairs each call's number with its name, for [`allowed_names`].
#[cfg(target_arch = "x86_64")]
macro_rules! calls {
    ($($call:path),* $(,)?) => {
        &[$((syscall_name(stringify!($call)), $call)),*]
    };
}

/// `brk` from `libc::SYS_brk`, at compile time.
#[cfg(target_arch = "x86_64")]
const fn syscall_name(path: &'static str) -> &'static str {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        if matches!(
            &[bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]],
            b"SYS_"
        ) && let Some((_, name)) = path.split_at_checked(i + 4)
        {
            return name;
        }
        i += 1;
    }
    path
}

/// Calls allowed only with some arguments (see `allowed_rules`).
const ARGUMENT_CHECKED: &[&str] = &["socket", "prctl", "clone", "tgkill", "ioctl"];

/// The names of every call the filter can allow, for checking that the systemd unit's
/// own filter allows them too.
pub fn allowed_names() -> Vec<&'static str> {
    ALLOWED
        .iter()
        .chain(RESOLVER)
        .map(|&(name, _)| name)
        .chain(ARGUMENT_CHECKED.iter().copied())
        .collect()
}

/// Calls that end the process: relaisd never runs or traces another program.
#[cfg(target_arch = "x86_64")]
const FATAL: &[i64] = &[libc::SYS_execve, libc::SYS_execveat, libc::SYS_ptrace];
#[cfg(not(target_arch = "x86_64"))]
const FATAL: &[i64] = &[];

/// Calls allowed with any arguments, grouped by what needs them. Everything here was seen
/// in use by the serving daemon across the test suite, except where a comment says why.
/// What the C library's resolver needs to find a PostgreSQL server by name, allowed only
/// with `storage.backend = "postgres"`: `uname` for the host's own name, `lseek` as it
/// reads /etc/hosts, datagrams sent with `sendmmsg` and awaited with `poll`.
#[cfg(target_arch = "x86_64")]
const RESOLVER: &[(&str, i64)] = calls![
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_bind,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_uname,
    libc::SYS_lseek,
];
#[cfg(not(target_arch = "x86_64"))]
const RESOLVER: &[(&str, i64)] = &[];

#[cfg(target_arch = "x86_64")]
const ALLOWED: &[(&str, i64)] = calls![
    // Memory: the allocator, thread stacks. `brk` and `mremap` serve the allocator's main
    // heap and large reallocations; the `mlock` family keeps secrets out of swap (D8).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    // Threads (tokio's workers, SQLite's connection threads) and their synchronisation;
    // `sched_yield` is what spinning locks fall back to under contention.
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Signals: SIGTERM and SIGINT, and thread start and exit.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time: normally read without a system call (vDSO), but a virtual machine whose clock
    // source is unstable falls back to the real calls.
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_clock_nanosleep,
    // Randomness: TLS, nonces, enrollment codes.
    libc::SYS_getrandom,
    // The event loop.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd2,
    // Files: the database and its journal, backups, /proc/self for the metrics, the free
    // space of the data directory.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fcntl,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_getdents64,
    // SQLite makes a relative database path absolute with the working directory: `--dev`
    // keeps its state in `./relais-dev`.
    libc::SYS_getcwd,
    libc::SYS_unlink,
    libc::SYS_chmod,
    // Sockets: accepting clients, the admin socket and its peers' credentials, systemd's
    // notifications, the runtime's signal pipe.
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_socketpair,
    // journald: a log entry too large for one datagram goes through a sealed memory file
    // passed with `sendmsg` (read in tracing-journald; the tests run without journald).
    libc::SYS_memfd_create,
    libc::SYS_sendmsg,
    // The admin socket's roles compare peers with the daemon's own user; the metrics
    // report the file descriptor limit.
    libc::SYS_geteuid,
    libc::SYS_prlimit64,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED: &[(&str, i64)] = &[];

/// The allow-list, with argument checks where a call's arguments decide its risk.
fn allowed_rules(outbound: Outbound) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SyscallError> {
    let build = |e: seccompiler::BackendError| SyscallError::Build(e.to_string());
    let argument_is = |index: u8, value: i32| -> Result<SeccompRule, SyscallError> {
        let condition = SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            value as u64,
        )
        .map_err(build)?;
        SeccompRule::new(vec![condition]).map_err(build)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .map(|&(_, call)| (call, Vec::new()))
        .collect();
    let masked = |index: u8, mask: u64| -> Result<SeccompRule, SyscallError> {
        let condition = SeccompCondition::new(
            index,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(mask),
            mask,
        )
        .map_err(build)?;
        SeccompRule::new(vec![condition]).map_err(build)
    };
    // New sockets are Unix sockets only (systemd and journald notifications, PostgreSQL on
    // its local socket): clients arrive through `accept4`. The PostgreSQL backend adds
    // AF_INET and AF_INET6 for a database over TCP (and the resolver's queries, `poll`ed).
    let mut families = vec![argument_is(0, libc::AF_UNIX)?];
    if outbound == Outbound::Database {
        families.push(argument_is(0, libc::AF_INET)?);
        families.push(argument_is(0, libc::AF_INET6)?);
        for &(_, call) in RESOLVER {
            rules.insert(call, Vec::new());
        }
        // FIONREAD only: the size of a DNS answer waiting on the resolver's socket.
        rules.insert(
            libc::SYS_ioctl,
            vec![argument_is(1, libc::FIONREAD as i32)?],
        );
    }
    rules.insert(libc::SYS_socket, families);
    // prctl only to name threads (tokio and SQLite name theirs).
    rules.insert(libc::SYS_prctl, vec![argument_is(0, libc::PR_SET_NAME)?]);
    // clone only for threads (a C library without clone3 falls back to it): never a new
    // process.
    rules.insert(libc::SYS_clone, vec![masked(0, libc::CLONE_THREAD as u64)?]);
    // Signals only to this process's own threads (abort, the runtime's wake-ups).
    let own = i32::try_from(std::process::id()).map_err(|e| SyscallError::Build(e.to_string()))?;
    rules.insert(libc::SYS_tgkill, vec![argument_is(0, own)?]);
    Ok(rules)
}
