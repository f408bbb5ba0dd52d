//! Growing, jittered pauses. Between attempts to reach a server they double from
//! [`BACKOFF_FIRST`] to [`BACKOFF_MAX`]; between retries of an agent's failed command they double
//! from `--retry-initial-seconds` to `--retry-max-seconds` ([`RetryPolicy`]). Each pause is drawn
//! between half and all of its current bound, so many clients that lost the same node (or hosts
//! whose command failed together) do not come back in lockstep.

use std::time::Duration;

use rand::Rng;

pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The pause before the next attempt grows with each failure; `reset` after a success.
pub struct Backoff {
    bound: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { bound: BACKOFF_FIRST }
    }

    pub fn reset(&mut self) {
        self.bound = BACKOFF_FIRST;
    }

    pub async fn wait(&mut self) {
        let pause = jittered(self.bound);
        self.bound = (self.bound * 2).min(BACKOFF_MAX);
        tokio::time::sleep(pause).await;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// A pause drawn uniformly between half and all of `bound`.
pub fn jittered(bound: Duration) -> Duration {
    bound.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// How long an agent waits before retrying a command that failed: the bound is `initial` after
/// the first failed attempt and doubles with each further one, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The bound of the pause after attempt `attempt` (counted from 1) failed.
    pub fn bound(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The pause after attempt `attempt` failed: jittered within its bound.
    pub fn pause(&self, attempt: u32) -> Duration {
        jittered(self.bound(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry pauses double from the initial bound, stop growing at the maximum, and stay jittered
    /// between half and all of their bound.
    #[test]
    fn retry_pauses_double_up_to_the_maximum_with_jitter() {
        let policy = RetryPolicy { initial: Duration::from_secs(10), max: Duration::from_secs(600) };
        let bounds: Vec<u64> = (1..=8).map(|attempt| policy.bound(attempt).as_secs()).collect();
        assert_eq!(bounds, [10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(policy.bound(0), Duration::from_secs(10));
        assert_eq!(policy.bound(u32::MAX), Duration::from_secs(600));
        for attempt in [1, 3, 40] {
            let bound = policy.bound(attempt);
            for _ in 0..100 {
                let pause = policy.pause(attempt);
                assert!(pause >= bound / 2 && pause <= bound, "{pause:?} outside {bound:?}");
            }
        }
    }
}
