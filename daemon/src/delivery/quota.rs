//! Per-device quotas of the delivery service: how often a device may register groups and
//! publish KeyPackages, and the disk guard that refuses application messages before the
//! data directory's file system fills (security review, issue 29, finding 6).
//!
//! The queue quotas (per recipient, per sender) are the writer's (`store/writer/segment.rs`):
//! they depend on what storage holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::Limits;
use relais_core::limiter::HourlyLimiter;

/// How often the disk guard reads the free space: often enough that a flood at the
/// largest message rate cannot write more than a few hundred MiB between two looks,
/// rarely enough to cost nothing.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The delivery service's per-device quotas.
pub struct Quotas {
    /// `limits.groups_created_per_hour`.
    pub groups_created: HourlyLimiter,
    /// `limits.key_package_publications_per_hour`.
    pub publications: HourlyLimiter,
    /// `limits.groups_created_max`.
    pub groups_created_max: i64,
    pub disk: Arc<DiskGuard>,
}

impl Quotas {
    /// The quotas `limits` asks for, with the disk guard watching the file system that
    /// holds `database` (None on PostgreSQL, whose disk is the database server's: its own
    /// monitoring watches it, not this node).
    pub fn new(limits: &Limits, database: Option<&Path>) -> Quotas {
        Quotas {
            groups_created: HourlyLimiter::new(limits.groups_created_per_hour),
            publications: HourlyLimiter::new(limits.key_package_publications_per_hour),
            groups_created_max: limits.groups_created_max,
            disk: match database {
                Some(path) => DiskGuard::start(path.to_owned(), limits.disk_free_bytes_min),
                None => DiskGuard::off(),
            },
        }
    }
}

/// The free space kept when `limits.disk_free_bytes_min` is unset, unless a tenth of the
/// file system is less ([`DEFAULT_FREE_SHARE_DIVISOR`]).
const DEFAULT_FREE_BYTES_MIN: u64 = 1024 * 1024 * 1024;
/// Unset, at most this fraction of the file system is kept free: a 2 GiB state partition
/// keeps 200 MiB, not half of itself.
const DEFAULT_FREE_SHARE_DIVISOR: u64 = 10;

/// Whether the data directory's file system is below `limits.disk_free_bytes_min`, read
/// with statvfs(2) every [`DISK_CHECK_INTERVAL`] (allowed by the sandbox: the metrics
/// read the same figure), never per message.
pub struct DiskGuard {
    path: PathBuf,
    /// `limits.disk_free_bytes_min` as configured; None for the default rule.
    free_bytes_min: Option<u64>,
    low: AtomicBool,
}

impl DiskGuard {
    /// Reads the free space once, then, inside a tokio runtime, every interval for as
    /// long as the guard lives.
    pub fn start(path: PathBuf, free_bytes_min: Option<u64>) -> Arc<DiskGuard> {
        let guard = Arc::new(DiskGuard {
            path,
            free_bytes_min,
            low: AtomicBool::new(false),
        });
        guard.check();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch(Arc::downgrade(&guard)));
        }
        guard
    }

    /// A guard that never trips, for storage on another machine.
    pub fn off() -> Arc<DiskGuard> {
        Arc::new(DiskGuard {
            path: PathBuf::new(),
            free_bytes_min: Some(0),
            low: AtomicBool::new(false),
        })
    }

    /// Whether application messages are refused for lack of disk space.
    pub fn low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    fn check(&self) {
        let (free, total) = match nix::sys::statvfs::statvfs(&self.path) {
            Ok(stat) => (
                stat.blocks_available().saturating_mul(stat.fragment_size()),
                stat.blocks().saturating_mul(stat.fragment_size()),
            ),
            Err(error) => {
                // Keep the last answer: a transient failure should neither open nor close.
                let path = self.path.display();
                tracing::warn!(%error, %path, "cannot read the free disk space");
                return;
            }
        };
        let minimum = self
            .free_bytes_min
            .unwrap_or_else(|| DEFAULT_FREE_BYTES_MIN.min(total / DEFAULT_FREE_SHARE_DIVISOR));
        let low = free < minimum;
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    free_bytes = free,
                    minimum,
                    path = %self.path.display(),
                    "the data directory's disk is nearly full: application messages are \
                     refused until space is freed (limits.disk_free_bytes_min)"
                );
            } else {
                tracing::warn!(
                    free_bytes = free,
                    "disk space is back: application messages accepted again"
                );
            }
        }
    }
}

async fn watch(guard: Weak<DiskGuard>) {
    let mut every = tokio::time::interval(DISK_CHECK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(guard) = guard.upgrade() else { return };
        // statvfs is a quick system call but still one: off the runtime's threads.
        let checked = tokio::task::spawn_blocking(move || guard.check()).await;
        if checked.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_guard_trips_below_its_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(DiskGuard::start(dir.path().into(), Some(u64::MAX)).low());
        assert!(!DiskGuard::start(dir.path().into(), Some(0)).low());
    }
}
