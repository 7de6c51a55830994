//! Reconnect delays: capped exponential backoff with full jitter, so a fleet of agents
//! that lost the controller at the same moment does not reconnect in lockstep; and the
//! rotation through the controller's replicas, which waits only after a whole round failed.

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

/// Which of `replicas` to try, and when to wait: every failure moves on to the next
/// replica at once, since another may well be up; only a whole round of failures in a row
/// means the controller is down, and calls for the backoff.
#[derive(Debug, Clone)]
pub struct Rotation {
    replicas: usize,
    current: usize,
    /// Failures in a row since a replica last worked.
    failures: usize,
}

impl Rotation {
    pub fn new(replicas: usize) -> Self {
        Self { replicas: replicas.max(1), current: 0, failures: 0 }
    }

    /// The replica to try now, the one that last worked while it does.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The attempt with the current replica ended (`worked`: after a working stream);
    /// moves on to the next and returns whether to wait with the backoff first.
    pub fn failed(&mut self, worked: bool) -> bool {
        if worked {
            self.failures = 0;
        }
        self.failures += 1;
        self.current = (self.current + 1) % self.replicas;
        self.failures.is_multiple_of(self.replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_waits_only_after_a_whole_round_failed() {
        let mut one = Rotation::new(1);
        assert_eq!([one.failed(true), one.failed(false), one.failed(true)], [true; 3], "one replica: as before");
        assert_eq!(one.current(), 0);

        let mut three = Rotation::new(3);
        let mut seen = Vec::new();
        for worked in [false, false, false, false, true, false, false, false] {
            let tried = three.current();
            seen.push((tried, three.failed(worked)));
        }
        assert_eq!(
            seen,
            [
                (0, false),
                (1, false),
                (2, true), // all three down: back off
                (0, false),
                (1, false), // a stream that worked ends: the next replica at once...
                (2, false),
                (0, true), // ...and the backoff once all three failed since
                (1, false),
            ]
        );
    }

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
