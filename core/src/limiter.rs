//! Limits on what clients may repeat: failed enrollments and authentications per source
//! (an IPv4 address or an IPv6 /64), with the audit log's aggregation of repeated
//! failures, KeyPackage claims per device and user, and hourly counts per device (groups
//! created, KeyPackages published). The time is always the caller's. Counts are kept in memory over
//! fixed windows, for a bounded number of keys.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::DeviceId;

/// Keys tracked at most by the failure limiter (sources, and source and user pairs);
/// beyond it the oldest go. An entry is under 100 bytes, so the bound is a few MiB.
const TRACKED_ATTEMPTS_MAX: usize = 65_536;
/// (device, user) pairs tracked at most by the claim limiter; beyond it the oldest go.
const TRACKED_CLAIMS_MAX: usize = 100_000;
/// The failure limiter's window: `limits.auth_failures_per_minute` counts per minute.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failed enrollments one source may make per window across all users, as a multiple of
/// `limits.auth_failures_per_minute` (which bounds each user apart). Five users' worth:
/// an office behind one NAT where a few people mistype their codes at the same time is
/// not refused, while one address spraying codes over many users gets 50 guesses a
/// minute by default, against 80-bit codes, and 50 write transactions, not thousands.
const ENROLL_FAILURES_PER_SOURCE_FACTOR: u32 = 5;
/// The window of the hourly limits.
const HOUR: Duration = Duration::from_secs(3600);
/// Devices an hourly limiter tracks before it forgets those whose window is over; only
/// enrolled devices are counted, so this bounds memory, not who may act.
const DEVICES_TRACKED_MAX: usize = 100_000;
/// Bytes of a user name's SHA-256 that key the limiter: fixed-size keys whatever the
/// name, and no collision to fear among the names an address can try in a minute.
const USER_DIGEST_BYTES: usize = 16;

/// One key's current window.
struct Window {
    since: Instant,
    /// Events (for the failure limiter: reserved attempts) counted in this window.
    count: u32,
    /// Failures confirmed in this window; the first of them is written to the audit log.
    failures: u32,
    /// Failures confirmed but not yet written to the audit log, carried over windows
    /// until the next failure that is written.
    unlogged: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            since: now,
            count: 0,
            failures: 0,
            unlogged: 0,
        }
    }

    /// Starts a new window if this one is over; what was not logged stays to be logged.
    fn roll_over(&mut self, length: Duration, now: Instant) {
        if now.duration_since(self.since) >= length {
            self.since = now;
            self.count = 0;
            self.failures = 0;
        }
    }
}

/// Events per key over fixed windows, for a bounded number of keys: past the bound, keys
/// whose window is over go first, then the keys whose window began earliest.
struct WindowCounts<K> {
    window: Duration,
    keys_max: usize,
    entries: Mutex<HashMap<K, Window>>,
}

impl<K: std::hash::Hash + Eq + Clone> WindowCounts<K> {
    fn new(window: Duration, keys_max: usize) -> WindowCounts<K> {
        WindowCounts {
            window,
            keys_max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Events counted for `key` in its current window; a poisoned lock counts as
    /// everything, since a limiter that cannot count must not let everything by.
    #[cfg(test)]
    fn count(&self, key: &K, now: Instant) -> u32 {
        let Ok(entries) = self.entries.lock() else {
            return u32::MAX;
        };
        self.current(entries.get(key), now)
    }

    /// An entry's count if its window is still open, else 0.
    fn current(&self, entry: Option<&Window>, now: Instant) -> u32 {
        match entry {
            Some(w) if now.duration_since(w.since) < self.window => w.count,
            _ => 0,
        }
    }

    /// The first of `keys` with `limit` events or more in its current window, looked up
    /// under one lock; with a poisoned lock the first key, as `count` would say.
    fn first_reaching(
        &self,
        keys: impl IntoIterator<Item = K>,
        limit: u32,
        now: Instant,
    ) -> Option<K> {
        let entries = self.entries.lock();
        keys.into_iter().find(|key| match &entries {
            Err(_) => true,
            Ok(entries) => self.current(entries.get(key), now) >= limit,
        })
    }

    /// Counts one event for each key.
    fn add(&self, keys: &[K], now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        self.make_room(&mut entries, keys, now);
        for key in keys {
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Window::new(now));
            entry.roll_over(self.window, now);
            entry.count = entry.count.saturating_add(1);
        }
    }

    /// Counts one event for each key if every one of them is below its limit, all under
    /// one lock, so that concurrent callers cannot all pass the check before any of them
    /// is counted. Returns the window each was counted in (for a refund), or `None`,
    /// counting nothing, if a key is at its limit or the lock is poisoned.
    fn try_reserve(&self, keys: &[(K, u32)], now: Instant) -> Option<Vec<(K, Instant)>> {
        let mut entries = self.entries.lock().ok()?;
        if keys
            .iter()
            .any(|(key, limit)| self.current(entries.get(key), now) >= *limit)
        {
            return None;
        }
        let new: Vec<K> = keys.iter().map(|(key, _)| key.clone()).collect();
        self.make_room(&mut entries, &new, now);
        let reserved = new
            .into_iter()
            .map(|key| {
                let entry = entries
                    .entry(key.clone())
                    .or_insert_with(|| Window::new(now));
                entry.roll_over(self.window, now);
                entry.count = entry.count.saturating_add(1);
                (key, entry.since)
            })
            .collect();
        Some(reserved)
    }

    /// Takes back reserved events, each only if its window is still the one it was
    /// counted in.
    fn refund(&self, reserved: &[(K, Instant)]) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        for (key, since) in reserved {
            if let Some(entry) = entries.get_mut(key).filter(|w| w.since == *since) {
                entry.count = entry.count.saturating_sub(1);
            }
        }
    }

    /// Confirms a failure of `key`: whether it is the first of its window, to be written
    /// to the audit log with the failures counted since the last one written.
    fn confirm_failure(&self, key: &K, now: Instant) -> AuditFailure {
        let Ok(mut entries) = self.entries.lock() else {
            return AuditFailure::Write { unlogged: 0 };
        };
        // Evicted meanwhile (or never reserved): counted afresh, which at worst writes one
        // entry more, within the same bound on tracked keys.
        self.make_room(&mut entries, std::slice::from_ref(key), now);
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| Window::new(now));
        entry.roll_over(self.window, now);
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures == 1 {
            AuditFailure::Write {
                unlogged: std::mem::take(&mut entry.unlogged),
            }
        } else {
            entry.unlogged = entry.unlogged.saturating_add(1);
            AuditFailure::Counted
        }
    }

    /// Makes room for those of `keys` not tracked yet. Past the bound, windows that are
    /// over go first, then the oldest, an eighth of the bound beyond what is needed at
    /// once, so that a full map is sorted once per so many new keys, not for every one.
    fn make_room(&self, entries: &mut HashMap<K, Window>, keys: &[K], now: Instant) {
        let new = keys.iter().filter(|k| !entries.contains_key(*k)).count();
        if entries.len() + new <= self.keys_max {
            return;
        }
        entries.retain(|_, w| now.duration_since(w.since) < self.window);
        let over = (entries.len() + new).saturating_sub(self.keys_max);
        if over == 0 {
            return;
        }
        let mut oldest: Vec<(Instant, K)> = entries
            .iter()
            .filter(|(k, _)| !keys.contains(k))
            .map(|(k, w)| (w.since, k.clone()))
            .collect();
        oldest.sort_unstable_by_key(|(since, _)| *since);
        for (_, key) in oldest.into_iter().take(over + self.keys_max / 8) {
            entries.remove(&key);
        }
    }
}

/// Where failed attempts come from, as the failure limiter counts them: an IPv4 address,
/// or an IPv6 /64, the prefix one subscriber or host usually gets, so that stepping
/// through its 2^64 addresses gains nothing. An IPv4-mapped IPv6 address is its IPv4
/// address (a dual-stack listener sees IPv4 clients that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The /64 prefix, the rest zeroed.
    V6(Ipv6Addr),
}

impl From<IpAddr> for Source {
    fn from(addr: IpAddr) -> Source {
        match addr {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6(prefix) => write!(f, "{prefix}/64"),
        }
    }
}

/// What the failure limiter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Attempts {
    /// Authentications from a source that failed: unknown keys and bad signatures.
    Authenticate(Source),
    /// Enrollments from a source that failed, whatever the user.
    EnrollFrom(Source),
    /// Enrollments from a source for one user that failed (the name's digest).
    EnrollFor(Source, [u8; USER_DIGEST_BYTES]),
    /// Authentications of a device that is revoked, or whose account is suspended,
    /// expired or deleted: never limited (the answer says why), but audited once a window.
    Refused(DeviceId),
}

/// Whether a failure goes to the audit log, so that an address failing over and over
/// writes one entry a window, not one per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailure {
    /// The first failure of its source in this window: write it, saying how many failures
    /// were counted, not written, since the source's previous entry.
    Write { unlogged: u32 },
    /// Counted, to be mentioned by the source's next entry.
    Counted,
}

/// Limits failed enrollment and authentication attempts.
///
/// A valid signature of an enrolled device is never asked about: only unknown keys and
/// bad signatures count against authentication, so guessing never locks devices out.
/// Enrollments are counted per source and user, `limits.auth_failures_per_minute` each,
/// so that wrong codes for one user leave the others' enrollments alone, and per source
/// across users, [`ENROLL_FAILURES_PER_SOURCE_FACTOR`] times as many.
pub struct FailureLimiter {
    per_minute: u32,
    counts: WindowCounts<Attempts>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            per_minute,
            counts: WindowCounts::new(FAILURE_WINDOW, TRACKED_ATTEMPTS_MAX),
        }
    }

    /// Takes an attempt slot for an enrollment from `source` for `user` (`None` for a
    /// name that is not valid, counted against the source only), or `None` when the
    /// source or the pair has used up its failures for the window. The attempt counts as
    /// a failure from now on, so that concurrent attempts cannot all be evaluated;
    /// [`Reservation::refund`] takes it back when it succeeds.
    pub fn try_reserve_enrollment(
        &self,
        source: Source,
        user: Option<&str>,
        now: Instant,
    ) -> Option<Reservation<'_>> {
        let per_source = self
            .per_minute
            .saturating_mul(ENROLL_FAILURES_PER_SOURCE_FACTOR);
        let mut keys = vec![(Attempts::EnrollFrom(source), per_source)];
        if let Some(user) = user {
            let digest = Sha256::digest(user.as_bytes());
            let mut key = [0u8; USER_DIGEST_BYTES];
            key.copy_from_slice(&digest[..USER_DIGEST_BYTES]);
            keys.push((Attempts::EnrollFor(source, key), self.per_minute));
        }
        let reserved = self.counts.try_reserve(&keys, now)?;
        Some(Reservation {
            counts: &self.counts,
            reserved,
        })
    }

    /// Counts a failed authentication (an unknown key or a bad signature) from `source`;
    /// `false` when the source had used up its failures for the window already, and the
    /// attempt should be answered as rate-limited.
    pub fn authentication_failed(&self, source: Source, now: Instant) -> bool {
        let key = Attempts::Authenticate(source);
        self.counts
            .try_reserve(&[(key, self.per_minute)], now)
            .is_some()
    }
}

impl FailureLimiter {
    /// Counts a refused authentication of `device` (revoked, suspended, expired): a lost
    /// phone reconnecting in a loop writes one audit entry a window, not one per attempt.
    pub fn device_refused(&self, device: DeviceId, now: Instant) -> AuditFailure {
        self.counts.confirm_failure(&Attempts::Refused(device), now)
    }
}

/// An attempt counted as a failure before it is evaluated. Dropped, it stays counted.
#[must_use = "a reservation is refunded on success, confirmed as a failure, or dropped"]
pub struct Reservation<'a> {
    counts: &'a WindowCounts<Attempts>,
    /// The source-wide key first, then the (source, user) key if any.
    reserved: Vec<(Attempts, Instant)>,
}

impl Reservation<'_> {
    /// The attempt succeeded, or failed for the server's own reasons: it does not count.
    pub fn refund(self) {
        self.counts.refund(&self.reserved);
    }

    /// The attempt failed in a way worth auditing: it stays counted, and the answer says
    /// whether this failure is the one of its window that the audit log gets.
    pub fn failed(self, now: Instant) -> AuditFailure {
        match self.reserved.first() {
            Some((key, _)) => self.counts.confirm_failure(key, now),
            None => AuditFailure::Write { unlogged: 0 },
        }
    }
}

/// Limits how often one device claims KeyPackages of one user. Every claim uses up one
/// one-time KeyPackage of each of the user's devices: a device claiming in a loop would
/// leave them only their last-resort KeyPackage, which MLS allows to be reused but
/// advises against relying on.
pub struct ClaimLimiter {
    per_hour: u32,
    counts: WindowCounts<(DeviceId, String)>,
}

impl ClaimLimiter {
    pub fn new(per_hour: u32) -> ClaimLimiter {
        ClaimLimiter {
            per_hour,
            counts: WindowCounts::new(Duration::from_secs(3600), TRACKED_CLAIMS_MAX),
        }
    }

    /// Refuses a claim naming a user this device has claimed `per_hour` times within the
    /// hour, saying which.
    pub fn check(&self, device: DeviceId, users: &[String], now: Instant) -> Result<(), String> {
        let keys = users.iter().map(|u| (device, u.clone()));
        match self.counts.first_reaching(keys, self.per_hour, now) {
            Some((_, user)) => Err(format!(
                "this device claimed KeyPackages of {user} {} times within the hour; \
                 try again later",
                self.per_hour
            )),
            None => Ok(()),
        }
    }

    /// Counts a claim that took KeyPackages of `users` (users that exist: names made up
    /// to fill the limiter's memory are never counted).
    pub fn claimed(&self, device: DeviceId, users: &[String], now: Instant) {
        let keys: Vec<(DeviceId, String)> = users.iter().map(|u| (device, u.clone())).collect();
        self.counts.add(&keys, now);
    }
}

/// Counts one kind of request per device in fixed hourly windows. A window starts at a
/// device's first request after the previous one ended, so a device gets at most twice
/// the rate across a window's edge, never more.
pub struct HourlyLimiter {
    per_hour: u32,
    windows: Mutex<HashMap<DeviceId, (Instant, u32)>>,
}

impl HourlyLimiter {
    pub fn new(per_hour: u32) -> HourlyLimiter {
        HourlyLimiter {
            per_hour,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `device`; false (nothing counted) when it has used up the hour.
    pub fn take(&self, device: DeviceId, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= DEVICES_TRACKED_MAX && !windows.contains_key(&device) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < HOUR);
        }
        let window = windows.entry(device).or_insert((now, 0));
        if now.duration_since(window.0) >= HOUR {
            *window = (now, 0);
        }
        if window.1 >= self.per_hour {
            return false;
        }
        window.1 += 1;
        true
    }

    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(addr: &str) -> Source {
        Source::from(addr.parse::<IpAddr>().expect("addr"))
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_prefixes() {
        let cases = [
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("::ffff:192.0.2.1", "192.0.2.1", true),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("2001:db8::1", "192.0.2.1", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(source(a) == source(b), same, "{a} and {b}");
        }
        let shown = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ];
        for (addr, want) in shown {
            assert_eq!(source(addr).to_string(), want);
        }
    }

    #[test]
    fn enrollment_failures_count_per_user_and_per_source() {
        // Two per user and source, ten per source (five times two) across users.
        let limiter = FailureLimiter::new(2);
        let t0 = Instant::now();
        let mut steps: Vec<(&str, Option<String>, bool)> = vec![
            ("192.0.2.1", Some("alice".into()), true),
            ("192.0.2.1", Some("alice".into()), true),
            ("192.0.2.1", Some("alice".into()), false),
            ("192.0.2.1", Some("bob".into()), true),
            ("192.0.2.2", Some("alice".into()), true),
            ("2001:db8::1", Some("alice".into()), true),
            ("2001:db8::2", Some("alice".into()), true),
            ("2001:db8::3", Some("alice".into()), false),
            ("2001:db8:0:1::3", Some("alice".into()), true),
            ("192.0.2.1", None, true),
        ];
        // 192.0.2.1 has four failures: six more users reach its bound of ten.
        for i in 0..6 {
            steps.push(("192.0.2.1", Some(format!("user{i}")), true));
        }
        steps.push(("192.0.2.1", Some("carol".into()), false));
        steps.push(("192.0.2.1", None, false));
        steps.push(("192.0.2.3", Some("carol".into()), true));
        for (i, (addr, user, allowed)) in steps.into_iter().enumerate() {
            let reserved = limiter.try_reserve_enrollment(source(addr), user.as_deref(), t0);
            assert_eq!(reserved.is_some(), allowed, "step {i}: {addr} {user:?}");
        }
        let later = t0 + FAILURE_WINDOW;
        assert!(
            limiter
                .try_reserve_enrollment(source("192.0.2.1"), Some("alice"), later)
                .is_some(),
            "a new window"
        );
    }

    #[test]
    fn reservations_are_taken_atomically_and_refunds_give_them_back() {
        let limiter = FailureLimiter::new(3);
        let from = source("192.0.2.1");
        let t0 = Instant::now();
        let attempts = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..40)
                .map(|_| scope.spawn(|| limiter.try_reserve_enrollment(from, Some("alice"), t0)))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        let mut held: Vec<Reservation<'_>> = attempts.into_iter().flatten().collect();
        assert_eq!(held.len(), 3, "attempts in flight count before they fail");
        held.pop().expect("one").refund();
        let again = limiter.try_reserve_enrollment(from, Some("alice"), t0);
        assert!(again.is_some(), "a refund gives the slot back");
        assert!(
            limiter
                .try_reserve_enrollment(from, Some("alice"), t0)
                .is_none()
        );

        // A refund from a window that is over leaves the new window's count alone.
        let later = t0 + FAILURE_WINDOW;
        let fresh: Vec<_> = (0..3)
            .map(|_| limiter.try_reserve_enrollment(from, Some("alice"), later))
            .collect();
        assert!(fresh.iter().all(Option::is_some));
        for old in held {
            old.refund();
        }
        assert!(
            limiter
                .try_reserve_enrollment(from, Some("alice"), later)
                .is_none()
        );
    }

    #[test]
    fn a_refused_device_is_audited_once_a_window_and_never_limited() {
        let limiter = FailureLimiter::new(1);
        let t0 = Instant::now();
        let (lost, other) = (DeviceId(7), DeviceId(8));
        assert_eq!(
            limiter.device_refused(lost, t0),
            AuditFailure::Write { unlogged: 0 }
        );
        for _ in 0..100 {
            assert_eq!(limiter.device_refused(lost, t0), AuditFailure::Counted);
        }
        assert_eq!(
            limiter.device_refused(other, t0),
            AuditFailure::Write { unlogged: 0 }
        );
        assert_eq!(
            limiter.device_refused(lost, t0 + FAILURE_WINDOW),
            AuditFailure::Write { unlogged: 100 }
        );
    }

    #[test]
    fn the_audit_log_gets_one_failure_per_source_and_window() {
        let limiter = FailureLimiter::new(100);
        let from = source("2001:db8::1");
        let t0 = Instant::now();
        let minute = |n: u32| t0 + FAILURE_WINDOW * n;
        let cases = [
            // (when, user, expected)
            (minute(0), "alice", AuditFailure::Write { unlogged: 0 }),
            (minute(0), "alice", AuditFailure::Counted),
            (minute(0), "bob", AuditFailure::Counted),
            (minute(0), "alice", AuditFailure::Counted),
            (minute(1), "carol", AuditFailure::Write { unlogged: 3 }),
            (minute(1), "carol", AuditFailure::Counted),
            (minute(3), "alice", AuditFailure::Write { unlogged: 1 }),
            (minute(4), "alice", AuditFailure::Write { unlogged: 0 }),
        ];
        for (i, (at, user, want)) in cases.into_iter().enumerate() {
            let reservation = limiter
                .try_reserve_enrollment(from, Some(user), at)
                .expect("below the limit");
            assert_eq!(reservation.failed(at), want, "case {i}");
        }
        let elsewhere = limiter
            .try_reserve_enrollment(source("192.0.2.1"), Some("alice"), minute(4))
            .expect("below the limit");
        assert_eq!(
            elsewhere.failed(minute(4)),
            AuditFailure::Write { unlogged: 0 }
        );
    }

    #[test]
    fn authentication_failures_are_apart_from_enrollments() {
        let limiter = FailureLimiter::new(2);
        let t0 = Instant::now();
        let from = source("2001:db8::1");
        assert!(limiter.authentication_failed(from, t0));
        assert!(limiter.authentication_failed(source("2001:db8::2"), t0));
        assert!(!limiter.authentication_failed(from, t0), "the same /64");
        assert!(limiter.authentication_failed(source("2001:db8:0:1::1"), t0));
        assert!(
            limiter
                .try_reserve_enrollment(from, Some("alice"), t0)
                .is_some()
        );
        assert!(limiter.authentication_failed(from, t0 + FAILURE_WINDOW));
    }

    #[test]
    fn tracked_attempts_stay_within_their_bound() {
        let counts = WindowCounts::new(FAILURE_WINDOW, 64);
        let t0 = Instant::now();
        for key in 0..10_000u32 {
            let at = t0 + Duration::from_millis(u64::from(key));
            assert!(counts.try_reserve(&[(key, 1)], at).is_some(), "{key}");
            let tracked = counts.entries.lock().expect("lock").len();
            assert!(tracked <= 64, "{tracked} keys tracked");
            assert_eq!(counts.count(&key, at), 1, "the newest key stays");
        }
        let limiter = FailureLimiter::new(10);
        assert_eq!(limiter.counts.keys_max, TRACKED_ATTEMPTS_MAX);
    }

    #[test]
    fn claims_are_limited_per_device_and_user_for_an_hour() {
        let limiter = ClaimLimiter::new(2);
        let (alice, mallory) = (DeviceId(1), DeviceId(2));
        let bob = vec!["bob@x.gouv.fr".to_owned()];
        let both = vec!["carol@x.gouv.fr".to_owned(), "bob@x.gouv.fr".to_owned()];
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(limiter.check(mallory, &bob, t0).is_ok());
            limiter.claimed(mallory, &bob, t0);
        }
        let refused = limiter
            .check(mallory, &both, t0)
            .expect_err("bob a third time");
        assert!(refused.contains("bob@x.gouv.fr"), "{refused}");
        assert!(
            limiter.check(mallory, &both[..1], t0).is_ok(),
            "carol is apart"
        );
        assert!(
            limiter.check(alice, &both, t0).is_ok(),
            "other devices are apart"
        );
        assert!(
            limiter
                .check(mallory, &bob, t0 + Duration::from_secs(3601))
                .is_ok()
        );
    }

    #[test]
    fn window_counts_forget_the_oldest_keys_past_their_bound() {
        let counts = WindowCounts::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for (key, at) in [(1, 0), (2, 1), (3, 2)] {
            counts.add(&[key], t0 + Duration::from_secs(at));
        }
        let now = t0 + Duration::from_secs(3);
        assert_eq!(counts.count(&1, now), 0, "the oldest key went");
        assert_eq!((counts.count(&2, now), counts.count(&3, now)), (1, 1));
        counts.add(&[4, 5], now);
        assert_eq!((counts.count(&4, now), counts.count(&5, now)), (1, 1));
        assert_eq!((counts.count(&2, now), counts.count(&3, now)), (0, 0));
    }

    #[test]
    fn hourly_limits_count_per_device_and_start_over_after_the_hour() {
        let limiter = HourlyLimiter::new(2);
        let start = Instant::now();
        let (a, b) = (DeviceId(1), DeviceId(2));
        assert!(limiter.take(a, start));
        assert!(limiter.take(a, start + Duration::from_secs(1)));
        assert!(!limiter.take(a, start + Duration::from_secs(2)));
        assert!(
            limiter.take(b, start + Duration::from_secs(2)),
            "per device"
        );
        assert!(!limiter.take(a, start + HOUR - Duration::from_secs(1)));
        assert!(limiter.take(a, start + HOUR), "a new window");
    }
}
