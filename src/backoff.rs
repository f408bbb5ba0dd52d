//! Pauses between attempts to reach a server: they double from [`BACKOFF_FIRST`] to
//! [`BACKOFF_MAX`], each drawn between half and all of the current bound, so many clients that
//! lost the same node do not come back in lockstep.

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
        let low = self.bound.as_millis() as u64 / 2;
        let pause = Duration::from_millis(rand::thread_rng().gen_range(low..=self.bound.as_millis() as u64));
        self.bound = (self.bound * 2).min(BACKOFF_MAX);
        tokio::time::sleep(pause).await;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}
