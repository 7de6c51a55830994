//! Reconnect delays: capped exponential backoff with full jitter, so a fleet of agents
//! that lost the controller at the same moment does not reconnect in lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 0.5 s, 1 s, 2 s, ... up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    /// The upper bound of the next delay: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A uniformly random delay in `[0, ceiling]`, then doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(fastrand::f64())
    }

    /// Called after a stream that worked, so a later outage starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..40 {
            let ceiling = b.ceiling();
            assert!(b.next_delay() <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings[..8], [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(ceilings[39], 30000);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }
}
