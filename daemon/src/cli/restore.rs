//! `relaisd restore`: rebuilds a data directory from a checked backup.

use std::path::Path;
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use super::serve::private_dir;
use relais_protocol::exit::{EX_CONFIG, EX_DATAERR};

/// Checks a backup against its checksum and installs it as `DATA/relais.db`.
pub fn restore(from: &Path, data: &Path) -> ExitCode {
    match restore_inner(from, data) {
        Ok(target) => {
            println!("restored {} into {}", from.display(), target.display());
            eprintln!(
                "start the relay on it (data_dir = {:?}); the server's keys and TLS files are not part of the backup",
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

fn restore_inner(from: &Path, data: &Path) -> Result<std::path::PathBuf, (u8, String)> {
    let sum_path = crate::admin::checksum_path(from);
    let expected = std::fs::read_to_string(&sum_path).map_err(|e| {
        (
            EX_DATAERR,
            format!("cannot read the checksum {}: {e}", sum_path.display()),
        )
    })?;
    let expected = expected
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let bytes = std::fs::read(from)
        .map_err(|e| (EX_DATAERR, format!("cannot read {}: {e}", from.display())))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err((
            EX_DATAERR,
            format!(
                "{} does not match its checksum (damaged or altered); use another backup",
                from.display()
            ),
        ));
    }
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
    crate::keys::write_private(&target, &bytes)
        .map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", target.display())))?;
    Ok(target)
}
