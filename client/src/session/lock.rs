//! One process per home. A device's MLS state is loaded into memory when its home is
//! opened and saved as changes: a second process on the same home would work from a stale
//! copy, overwrite the first's ratchets with older ones and make the device reuse message
//! keys. So every process that opens a home holds its lock, an advisory lock on the file
//! `lock` inside it, released when the process ends however it ends.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
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
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
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
        }
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
}
