//! `relaisd restore`: rebuilds a data directory from a checked backup.
//!
//! The backup is copied once, in slices, into a private file beside the database while its
//! SHA-256 is computed; only a copy that matches the checksum is synced and renamed into
//! place, so memory stays flat whatever the database's size, and an interrupted or damaged
//! restore leaves no `relais.db` behind.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use super::progress::{Progress, Unit};
use super::serve::private_dir;
use relais_protocol::exit::{EX_CONFIG, EX_DATAERR};

/// Bytes read and written at a time.
const SLICE_BYTES: usize = 1 << 20;

/// Checks a backup against its checksum and installs it as `DATA/relais.db`.
pub fn restore(from: &Path, data: &Path, quiet: bool) -> ExitCode {
    match restore_inner(from, data, quiet) {
        Ok(target) => {
            println!("restored {} into {}", from.display(), target.display());
            eprintln!(
                "start the relay on it (data_dir = {:?}), owned by the relay's user \
                 (`chown -R relais:relais {}` when restoring as root); the server's keys and \
                 TLS files are not part of the backup",
                data.display(),
                data.display()
            );
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn restore_inner(from: &Path, data: &Path, quiet: bool) -> Result<PathBuf, (u8, String)> {
    let expected = expected_digest(from)?;
    let mut input = File::open(from)
        .map_err(|e| (EX_DATAERR, format!("cannot read {}: {e}", from.display())))?;
    let size = input.metadata().map(|m| m.len()).ok();
    private_dir(data).map_err(|e| (EX_CONFIG, e))?;
    let target = data.join("relais.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = target.as_os_str().to_owned();
        p.push(suffix);
        if Path::new(&p).exists() {
            return Err((
                EX_CONFIG,
                format!(
                    "{} already holds a database; restore into an empty data directory",
                    data.display()
                ),
            ));
        }
    }
    // Left over by an interrupted restore, never by the relay: ours to replace.
    let partial = data.join("relais.db.restoring");
    let _ = std::fs::remove_file(&partial);
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| {
            (
                EX_CONFIG,
                format!("cannot create {}: {e}", partial.display()),
            )
        })?;
    let copied = copy_hashing(&mut input, &mut output, from, &partial, size, quiet);
    let outcome = copied.and_then(|actual| {
        if actual == expected {
            Ok(())
        } else {
            Err((
                EX_DATAERR,
                format!(
                    "{} does not match its checksum (damaged or altered); use another backup",
                    from.display()
                ),
            ))
        }
    });
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &target).map_err(|e| {
        (
            EX_CONFIG,
            format!("cannot rename {} into place: {e}", partial.display()),
        )
    })?;
    // The rename is durable once the directory is.
    if let Ok(dir) = File::open(data) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

/// The digest the backup's checksum file records.
fn expected_digest(from: &Path) -> Result<String, (u8, String)> {
    let sum_path = crate::admin::checksum_path(from);
    let text = std::fs::read_to_string(&sum_path).map_err(|e| {
        (
            EX_DATAERR,
            format!("cannot read the checksum {}: {e}", sum_path.display()),
        )
    })?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase())
}

/// Copies `input` to `output` in slices, syncs it, and returns the SHA-256 of what was
/// copied, in hexadecimal.
fn copy_hashing(
    input: &mut File,
    output: &mut File,
    from: &Path,
    to: &Path,
    size: Option<u64>,
    quiet: bool,
) -> Result<String, (u8, String)> {
    let mut progress = Progress::start("restore", size, Unit::Bytes, quiet);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; SLICE_BYTES];
    let mut done = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .map_err(|e| (EX_DATAERR, format!("cannot read {}: {e}", from.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output
            .write_all(&buffer[..n])
            .map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", to.display())))?;
        done += n as u64;
        progress.set(done);
    }
    output
        .sync_all()
        .map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", to.display())))?;
    progress.finish(done);
    Ok(hex::encode(hasher.finalize()))
}
