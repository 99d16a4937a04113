//! The key files: the device key of an unencrypted home (32 raw bytes, created 0600 in a
//! 0700 directory, refused when others can read it), and the passphrase and key files that
//! unlock an encrypted one.

use std::io::{Read, Write};
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

/// Reads a secret file of at most `max_bytes`, refusing one that other users can read.
pub fn read_secret(path: &Path, max_bytes: u64) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    read_private(path, max_bytes, "it unlocks this device's keys")
}

/// Reads a file of at most `max_bytes` that holds a secret, refusing one that its group or
/// other users can read (or write) with what to run; `why` says in the message what the
/// secret is for. The mode is read from the file opened, so that it is the one checked.
pub fn read_private(
    path: &Path,
    max_bytes: u64,
    why: &str,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ClientError::Usage(format!(
            "{} is open to its group or other users; run `chmod 600 {}` ({why})",
            path.display(),
            path.display()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > max_bytes {
        return Err(ClientError::Usage(format!(
            "{} is longer than {max_bytes} bytes; is it the right file?",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Overwrites a key file with zeros, durably, then removes it: on a file system that
/// writes in place, the key's blocks no longer hold it (copy-on-write file systems and
/// flash translation layers may keep old blocks; `docs/reference/at-rest.md`).
pub fn wipe(path: &Path) -> Result<(), ClientError> {
    let failed =
        |e: std::io::Error| ClientError::State(format!("cannot wipe {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(failed)?.len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(failed)?;
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
    file.write_all(&zeros)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    drop(file);
    std::fs::remove_file(path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ClientError::State(format!("cannot sync {}: {e}", dir.display())))?;
    }
    Ok(())
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
        wipe(&path).expect("wipe");
        assert!(!path.exists());
    }

    #[test]
    fn secret_files_open_to_the_group_or_others_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, b"secret\n").expect("write");
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = read_private(&path, 64, "it holds a test")
                .expect_err("refused")
                .to_string();
            let chmod = format!("run `chmod 600 {}` (it holds a test)", path.display());
            assert!(error.contains(&chmod), "{mode:o}: {error}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_private(&path, 64, "it holds a test")
                .expect("private")
                .as_slice(),
            b"secret\n"
        );
        assert!(
            read_private(&path, 3, "it holds a test").is_err(),
            "too long"
        );
    }
}
