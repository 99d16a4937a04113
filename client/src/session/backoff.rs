//! When a session tries to reconnect: exponential backoff with jitter, bounded, and
//! started afresh once a connection has stayed up for a while.

use std::time::Duration;

/// The first wait's upper bound: a relay that restarts (an upgrade, a key rotation) is
/// back within a second or two, and a device that tries again at once only adds to the
/// crowd reconnecting at that moment.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait: a device offline for hours still comes back within half a minute of
/// its relay, and ten thousand waiting devices cost a relay a few hundred attempts a second.
const LONGEST: Duration = Duration::from_secs(30);
/// A connection that lasted this long was healthy: the next loss starts from `FIRST` again,
/// where one that keeps failing soon after it opened keeps backing off.
pub(crate) const HEALTHY: Duration = Duration::from_secs(60);

/// The attempts made since the last healthy connection.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt, `random` (in `[0, 1)`) placing it in the upper half
    /// of the attempt's bound, so that devices cut off together do not come back together.
    pub(crate) fn next(&mut self, random: f64) -> Duration {
        let bound = FIRST.saturating_mul(1 << self.attempt.min(16)).min(LONGEST);
        self.attempt = self.attempt.saturating_add(1);
        bound.mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0)
    }

    /// Starts again from the shortest wait.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_bound_and_are_spread_by_the_jitter() {
        let mut backoff = Backoff::default();
        let lowest: Vec<Duration> = (0..8).map(|_| backoff.next(0.0)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            lowest,
            [
                ms(500),
                ms(1_000),
                ms(2_000),
                ms(4_000),
                ms(8_000),
                ms(15_000),
                ms(15_000),
                ms(15_000)
            ]
        );
        for _ in 0..100 {
            assert_eq!(backoff.next(0.999_999).as_secs(), 29, "never past 30 s");
        }
        backoff.reset();
        assert_eq!(backoff.next(0.5), ms(750), "from the start again");
    }
}
