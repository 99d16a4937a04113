//! The exit codes of Relais's programs (`relaisd`, `relais`, `relais-bench`), so that a
//! script calling any of them can tell its own mistake from a failure worth retrying.
//!
//! Beside success (0) and `FAILURE`, they are the codes of BSD's `sysexits.h`, which
//! operators' scripts and service managers already know.

/// The command ran and failed, or found what it checked not intact (the relay refused a
/// request, the network failed, the audit chain is broken): read the message. Not a
/// sysexits code: C's `EXIT_FAILURE`.
pub const FAILURE: u8 = 1;

/// `EX_USAGE`: the command line asked for something that cannot work (an unknown flag, a
/// missing argument, a bad value, an unknown conversation): fix the call; run again as it
/// is, it fails the same way.
pub const EX_USAGE: u8 = 64;

/// `EX_DATAERR`: the input data is wrong (a backup that does not match its checksum): use
/// other data.
pub const EX_DATAERR: u8 = 65;

/// `EX_UNAVAILABLE`: a service the command needs did not answer (relaisd's admin socket):
/// start it, or check the permissions on its socket, then retry.
pub const EX_UNAVAILABLE: u8 = 69;

/// `EX_SOFTWARE`: an internal failure (the async runtime could not start, the process could
/// not protect itself or adopt its listeners): report it; retrying rarely helps.
pub const EX_SOFTWARE: u8 = 70;

/// `EX_CONFIG`: the configuration or the local setup is missing or wrong (a bad
/// configuration file, unreadable keys, a device not enrolled, an unwritable output file):
/// fix it on this machine, then retry.
pub const EX_CONFIG: u8 = 78;
