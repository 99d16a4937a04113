//! The device key file: 32 raw bytes, created 0600 in a 0700 directory, refused when others
//! can read it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::ClientError;

/// Creates `dir` (and its parents) private to the user if it does not exist.
pub fn private_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ClientError::State(format!("cannot create {}: {e}", dir.display())))
}

/// Writes a new key file; an existing file at `path` is an error, never overwritten.
pub fn write(path: &Path, secret: &[u8; 32]) -> Result<(), ClientError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClientError::State(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(secret)
        .and_then(|()| file.sync_all())
        .map_err(|e| ClientError::State(format!("cannot write {}: {e}", path.display())))
}

/// Moves a key file written by [`write`] into place, durably.
pub fn install(from: &Path, to: &Path) -> Result<(), ClientError> {
    std::fs::rename(from, to)
        .map_err(|e| ClientError::State(format!("cannot create {}: {e}", to.display())))?;
    // The rename is durable only once the directory is.
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ClientError::State(format!("cannot sync {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Reads a key file, refusing one that other users can read.
pub fn read(path: &Path) -> Result<Zeroizing<[u8; 32]>, ClientError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ClientError::State(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ClientError::State(format!(
            "{} is readable by other users; run `chmod 600 {}` (the device key must stay private)",
            path.display(),
            path.display()
        )));
    }
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| ClientError::State(format!("{}: {e}", path.display())))?,
    );
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        ClientError::State(format!("{} is not a device key (32 bytes)", path.display()))
    })?;
    Ok(Zeroizing::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_privately_and_open_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        let fresh = dir.path().join("device.key.new");
        write(&fresh, &[7; 32]).expect("write");
        assert!(write(&fresh, &[8; 32]).is_err(), "never overwritten");
        install(&fresh, &path).expect("install");
        assert!(!fresh.exists());
        assert_eq!(*read(&path).expect("read"), [7; 32]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read(&path).expect_err("refused").to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
