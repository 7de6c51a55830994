//! A token bucket for what someone outside may make the controller write: an agent's
//! events (a host whose rules are fought over could otherwise turn every drift check into
//! a row), and the audit rows of refused calls.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Budget {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
    /// Refused since the last allowed one, so the caller can say how many it dropped.
    refused: u64,
}

/// What `Budget::take` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Go ahead; `after_refusing` were refused since the last one allowed.
    Allowed { after_refusing: u64 },
    /// Over budget; `first` is true for the first refusal in a row, worth one warning.
    Refused { first: bool },
}

impl Budget {
    /// Up to `burst` at once, then one per `every`. Time is passed in, so the bucket is
    /// pure and its tests need no clock.
    pub fn new(burst: u32, every: Duration, now: Instant) -> Self {
        Self {
            capacity: f64::from(burst),
            per_second: 1.0 / every.as_secs_f64(),
            tokens: f64::from(burst),
            last: now,
            refused: 0,
        }
    }

    pub fn take(&mut self, now: Instant) -> Take {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed { after_refusing: std::mem::take(&mut self.refused) }
        } else {
            self.refused += 1;
            Take::Refused { first: self.refused == 1 }
        }
    }

    /// Whether the bucket is full again, so that forgetting it changes nothing but the
    /// count of refusals `take` would report.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut b = Budget::new(3, Duration::from_secs(1), t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Take::Allowed { after_refusing: 0 });
        }
        assert_eq!(b.take(at(10)), Take::Refused { first: true });
        assert_eq!(b.take(at(20)), Take::Refused { first: false });
        assert_eq!(b.take(at(1100)), Take::Allowed { after_refusing: 2 });
        assert_eq!(b.take(at(1100)), Take::Refused { first: true });
        for _ in 0..3 {
            assert!(matches!(b.take(at(60_000)), Take::Allowed { .. }), "refills up to the burst only");
        }
        assert!(matches!(b.take(at(60_000)), Take::Refused { .. }));
        assert!(!b.is_full(at(60_000)));
        assert!(b.is_full(at(63_000)));
    }
}
