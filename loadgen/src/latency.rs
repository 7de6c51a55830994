//! Percentiles of a set of latencies.

use serde::Serialize;

/// Nearest-rank percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<f64>) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let i = (q * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Some(Summary {
            count: samples.len(),
            min_ms: samples[0],
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: samples[samples.len() - 1],
        })
    }
}

/// `later - earlier` in milliseconds, negative if `later` is in fact earlier.
pub fn signed_ms(later: tokio::time::Instant, earlier: tokio::time::Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(earlier.duration_since(later).as_secs_f64() * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(Summary::of(Vec::new()), None);
        let s = Summary::of((1..=100).rev().map(f64::from).collect()).expect("samples");
        assert_eq!((s.count, s.min_ms, s.p50_ms, s.p99_ms, s.max_ms), (100, 1.0, 50.0, 99.0, 100.0));
        let one = Summary::of(vec![7.0]).expect("one");
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn signed() {
        let a = tokio::time::Instant::now();
        let b = a + Duration::from_millis(5);
        assert!((signed_ms(b, a) - 5.0).abs() < 1e-9);
        assert!((signed_ms(a, b) + 5.0).abs() < 1e-9);
    }
}
