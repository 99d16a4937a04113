//! The authentication service's rules: user names, enrollment codes, device fingerprints,
//! challenge signatures, the per-address limit on failed attempts, and the per-device
//! limit on KeyPackage claims.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::Users;
use crate::store::DeviceId;

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud is not mistyped.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in an enrollment code: 16 of 32 symbols is 80 bits, far beyond guessing
/// within the expiry and the per-address attempt limit.
const CODE_CHARS: usize = 16;

/// A new random enrollment code, grouped by four: `ABCD-EFGH-JKMN-PQRS`.
pub fn generate_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..CODE_CHARS)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The keyed hash under which a code is stored; the code itself is never stored.
pub fn hash_code(secret: &[u8], code: &str) -> Vec<u8> {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(b"relais-enrollment-code-v1");
    mac.update(normalized.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The device id operators see: 16 hex characters of the key's SHA-256.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Whether `signature` is the device key's signature over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// Turns `alice` or `alice@domain` into `alice@domain`, refusing odd names and domains
/// that `users.allowed_domains` does not allow.
pub fn canonical_user(input: &str, server_domain: &str, users: &Users) -> Result<String, String> {
    let (name, user_domain) = match input.split_once('@') {
        Some((name, d)) => (name, d),
        None => (input, server_domain),
    };
    let name = name.to_ascii_lowercase();
    let user_domain = user_domain.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if !valid {
        return Err(format!(
            "{input:?} is not a valid user name: use 1 to 64 of a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if !crate::config::valid_domain(&user_domain) || !users.allows(&user_domain, server_domain) {
        return Err(format!(
            "{input:?} is not in a domain this server allows (see users.allowed_domains)"
        ));
    }
    Ok(format!("{name}@{user_domain}"))
}

/// Source addresses tracked at most by the failure limiter; beyond it the oldest go.
const TRACKED_ADDRESSES_MAX: usize = 65_536;
/// (device, user) pairs tracked at most by the claim limiter; beyond it the oldest go.
const TRACKED_CLAIMS_MAX: usize = 100_000;

/// Events per key over fixed windows, for a bounded number of keys: past the bound, keys
/// whose window is over go first, then the key whose window began earliest.
struct WindowCounts<K> {
    window: Duration,
    keys_max: usize,
    entries: Mutex<HashMap<K, (Instant, u32)>>,
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
    fn count(&self, key: &K, now: Instant) -> u32 {
        let Ok(entries) = self.entries.lock() else {
            return u32::MAX;
        };
        self.current(entries.get(key), now)
    }

    /// An entry's count if its window is still open, else 0.
    fn current(&self, entry: Option<&(Instant, u32)>, now: Instant) -> u32 {
        match entry {
            Some((since, n)) if now.duration_since(*since) < self.window => *n,
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
        let new = keys.iter().filter(|k| !entries.contains_key(*k)).count();
        if entries.len() + new > self.keys_max {
            entries.retain(|_, (since, _)| now.duration_since(*since) < self.window);
            let over = (entries.len() + new).saturating_sub(self.keys_max);
            if over > 0 {
                // Once per call, however many keys: a sort, not a search per key.
                let mut oldest: Vec<(Instant, K)> = entries
                    .iter()
                    .map(|(k, (since, _))| (*since, k.clone()))
                    .collect();
                oldest.sort_unstable_by_key(|(since, _)| *since);
                for (_, key) in oldest.into_iter().take(over) {
                    entries.remove(&key);
                }
            }
        }
        for key in keys {
            let entry = entries.entry(key.clone()).or_insert((now, 0));
            if now.duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }
}

/// Limits failed enrollment and authentication attempts per source address.
pub struct FailureLimiter {
    per_minute: u32,
    counts: WindowCounts<IpAddr>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            per_minute,
            counts: WindowCounts::new(Duration::from_secs(60), TRACKED_ADDRESSES_MAX),
        }
    }

    /// Whether this address may try again now.
    pub fn allowed(&self, addr: IpAddr, now: Instant) -> bool {
        self.counts.count(&addr, now) < self.per_minute
    }

    /// Records a failed attempt from this address.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        self.counts.add(&[addr], now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_normalised() {
        let code = generate_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let secret = [9u8; 32];
        let hash = hash_code(&secret, &code);
        assert_eq!(
            hash,
            hash_code(&secret, &code.to_lowercase().replace('-', ""))
        );
        assert_ne!(hash, hash_code(&[8u8; 32], &code));
        assert_eq!(hash_code(&secret, "0O1IL"), hash_code(&secret, "00111"));
    }

    #[test]
    fn user_names() {
        let cases = [
            ("alice", Ok("alice@localhost")),
            ("Alice@LOCALHOST", Ok("alice@localhost")),
            ("bob.smith-2", Ok("bob.smith-2@localhost")),
            ("alice@other.fr", Err("not in a domain")),
            ("", Err("valid user name")),
            ("al ice", Err("valid user name")),
            (".alice", Err("valid user name")),
        ];
        for (input, expected) in cases {
            match (
                canonical_user(input, "localhost", &Users::default()),
                expected,
            ) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn allowed_domains_extend_the_server_domain() {
        let users = Users {
            allowed_domains: vec!["*.gouv.fr".into()],
            expiry_warning_days: 14,
        };
        assert_eq!(
            canonical_user("Alice@Interieur.Gouv.Fr", "x.gouv.fr", &users),
            Ok("alice@interieur.gouv.fr".into())
        );
        assert_eq!(
            canonical_user("bob", "x.gouv.fr", &users),
            Ok("bob@x.gouv.fr".into())
        );
        assert!(canonical_user("eve@gouv.fr.evil.com", "x.gouv.fr", &users).is_err());
    }

    #[test]
    fn limiter_blocks_after_failures_and_recovers() {
        let limiter = FailureLimiter::new(3);
        let addr: IpAddr = "127.0.0.9".parse().expect("addr");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allowed(addr, t0));
            limiter.failed(addr, t0);
        }
        assert!(!limiter.allowed(addr, t0));
        assert!(limiter.allowed("127.0.0.10".parse().expect("addr"), t0));
        assert!(limiter.allowed(addr, t0 + Duration::from_secs(61)));
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
}
