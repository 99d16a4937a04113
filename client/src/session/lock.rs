//! One process per home. A device's MLS state is loaded into memory when its home is
//! opened and saved as changes: a second process on the same home would work from a stale
//! copy, overwrite the first's ratchets with older ones and make the device reuse message
//! keys. So every process that opens a home holds its lock, an advisory lock on the file
//! `lock` inside it, released when the process ends however it ends.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ClientError;

/// How often a process waiting for the lock tries again.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The lock on a home, held until dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl HomeLock {
    /// Takes the lock on `home`, waiting up to `wait` while another process holds it (one
    /// short command after another); then fails with [`ClientError::HomeInUse`], which names
    /// the holder's process id. A home that does not exist is not enrolled.
    pub async fn acquire(home: &Path, wait: Duration) -> Result<HomeLock, ClientError> {
        if !home.is_dir() {
            return Err(ClientError::NotEnrolled(home.to_owned()));
        }
        let path = home.join("lock");
        let failed =
            |e: std::io::Error| ClientError::State(format!("cannot lock {}: {e}", path.display()));
        let deadline = Instant::now() + wait;
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(failed)?;
            match file.try_lock() {
                // Locked, unless the holder removed the file meanwhile (a failed
                // enrollment, see [`HomeLock::remove`]): then lock the one at `path` now.
                Ok(()) if same_file(&file, &path).map_err(failed)? => break file,
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(ClientError::HomeInUse {
                        home: home.to_owned(),
                        pid: holder.trim().parse().ok(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
            }
        };
        // For the next process's message: who holds it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(failed)?;
        Ok(HomeLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file, then releases the lock: for an enrollment that failed in a
    /// home it found empty, which it leaves empty. A process waiting for the lock meanwhile
    /// finds the file gone once it gets it, and locks a new one.
    pub(crate) fn remove(self) -> Result<(), ClientError> {
        std::fs::remove_file(&self.path)
            .map_err(|e| ClientError::State(format!("cannot remove {}: {e}", self.path.display())))
    }
}

/// Whether `file` is still the file at `path` (not removed, nor replaced).
fn same_file(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok((now.dev(), now.ino()) == (held.dev(), held.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_then_is_told_who_holds_the_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = HomeLock::acquire(&dir.path().join("nobody"), Duration::ZERO).await;
        assert!(matches!(missing, Err(ClientError::NotEnrolled(_))));

        let first = HomeLock::acquire(dir.path(), Duration::ZERO)
            .await
            .expect("first");
        let started = Instant::now();
        let second = HomeLock::acquire(dir.path(), Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
        let Err(ClientError::HomeInUse { home, pid }) = second else {
            panic!("the home is in use: {second:?}");
        };
        assert_eq!(
            (home.as_path(), pid),
            (dir.path(), Some(std::process::id()))
        );
        assert!(
            ClientError::HomeInUse { home, pid }
                .to_string()
                .contains(&format!("process {}", std::process::id()))
        );
        drop(first);
        let third = HomeLock::acquire(dir.path(), Duration::ZERO).await;
        assert!(third.is_ok(), "free again once dropped: {third:?}");
    }

    /// A holder that removes the lock file (a failed enrollment) hands the lock to a
    /// waiter all the same: the waiter locks the new file at the path, and a third process
    /// is kept off it.
    #[tokio::test]
    async fn a_waiter_locks_a_new_file_once_the_holder_removed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_owned();
        let first = HomeLock::acquire(&home, Duration::ZERO)
            .await
            .expect("first");
        let waiter = {
            let home = home.clone();
            tokio::spawn(async move { HomeLock::acquire(&home, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.remove().expect("remove");
        let second = waiter
            .await
            .expect("task")
            .expect("the waiter gets the lock");
        assert!(second.path().exists(), "a new lock file");
        let third = HomeLock::acquire(&home, Duration::ZERO).await;
        assert!(
            matches!(third, Err(ClientError::HomeInUse { .. })),
            "held by the waiter: {third:?}"
        );
    }
}
