//! Sampling and rate caps: how much of the matching traffic is cloned, so mirroring can
//! never double a busy host's traffic without bound.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// The fraction of matching packets to clone, in parts per million (1 to 1 000 000).
/// Kept as an integer so a rule compares, hashes and renders exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Sample(u32);

impl Sample {
    pub const PER_MILLION: u32 = 1_000_000;

    pub fn from_ppm(ppm: u32) -> Result<Self, ValidationError> {
        if (1..=Self::PER_MILLION).contains(&ppm) {
            Ok(Self(ppm))
        } else {
            Err(ValidationError::new("sample", format!("{ppm} parts per million is outside 1-1000000")))
        }
    }

    /// A fraction in (0, 1], rounded to the nearest millionth.
    pub fn from_fraction(fraction: f64) -> Result<Self, ValidationError> {
        if !fraction.is_finite() || fraction <= 0.0 || fraction > 1.0 {
            return Err(ValidationError::new("sample", format!("{fraction} is not a fraction in (0, 1], e.g. 0.01")));
        }
        let ppm = (fraction * f64::from(Self::PER_MILLION)).round();
        if ppm < 1.0 {
            return Err(ValidationError::new("sample", format!("{fraction} is below the smallest sample, 0.000001")));
        }
        // `ppm` is in 1..=1e6 here, so the cast is exact.
        Self::from_ppm(ppm as u32)
    }

    pub fn ppm(self) -> u32 {
        self.0
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(Self::PER_MILLION)
    }

    /// Whether every packet is cloned, i.e. the sample changes nothing.
    pub fn is_all(self) -> bool {
        self.0 == Self::PER_MILLION
    }
}

impl TryFrom<u32> for Sample {
    type Error = ValidationError;
    fn try_from(ppm: u32) -> Result<Self, Self::Error> {
        Self::from_ppm(ppm)
    }
}

impl From<Sample> for u32 {
    fn from(s: Sample) -> u32 {
        s.0
    }
}

/// `0.1`, `0.000001`, `1`: the shortest decimal that is exactly the sample.
impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / Self::PER_MILLION, self.0 % Self::PER_MILLION);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Sample {
    type Err = ValidationError;
    /// A fraction (`0.01`) or a percentage (`1%`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new("sample", format!("{s:?} is not a fraction such as 0.01 or a percentage such as 1%"))
        };
        match s.strip_suffix('%') {
            Some(pct) => Self::from_fraction(pct.parse::<f64>().map_err(|_| bad())? / 100.0),
            None => Self::from_fraction(s.parse::<f64>().map_err(|_| bad())?),
        }
    }
}

/// The most clones per second a session may send from one host (per address family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxPps(u32);

impl MaxPps {
    /// The kernel's hashlimit match accepts at most one million per second.
    pub const MAX: u32 = 1_000_000;

    pub fn new(pps: u32) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&pps) {
            Ok(Self(pps))
        } else {
            Err(ValidationError::new("max_pps", format!("{pps} is outside 1-{} packets per second", Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for MaxPps {
    type Error = ValidationError;
    fn try_from(pps: u32) -> Result<Self, Self::Error> {
        Self::new(pps)
    }
}

impl From<MaxPps> for u32 {
    fn from(m: MaxPps) -> u32 {
        m.0
    }
}

impl fmt::Display for MaxPps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How much of a session's matching traffic is cloned: a random sample, then a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(from = "RawThrottle")]
pub struct Throttle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pps: Option<MaxPps>,
}

impl Throttle {
    /// A sample of 1 clones everything, so it is the same as no sample.
    pub fn new(sample: Option<Sample>, max_pps: Option<MaxPps>) -> Self {
        Self { sample: sample.filter(|s| !s.is_all()), max_pps }
    }

    /// From the wire form, where zero means unset (proto3 has no other way to say it): a
    /// sample of 0 clones everything, a cap of 0 is no cap.
    pub fn from_zeroable(sample: f64, max_pps: u32) -> Result<Self, ValidationError> {
        let sample = (sample != 0.0).then(|| Sample::from_fraction(sample)).transpose()?;
        let max_pps = (max_pps != 0).then(|| MaxPps::new(max_pps)).transpose()?;
        Ok(Self::new(sample, max_pps))
    }

    pub fn is_none(&self) -> bool {
        self.sample.is_none() && self.max_pps.is_none()
    }
}

/// The serialised shape of a throttle, normalised on the way in by [`Throttle::new`]: a
/// rule read back from a state file or a database row with a full sample must equal the
/// same rule without one, or a set could hold both and install the same rule twice.
#[derive(Deserialize)]
struct RawThrottle {
    #[serde(default)]
    sample: Option<Sample>,
    #[serde(default)]
    max_pps: Option<MaxPps>,
}

impl From<RawThrottle> for Throttle {
    fn from(r: RawThrottle) -> Self {
        Throttle::new(r.sample, r.max_pps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        for (text, ppm, shown) in
            [("0.1", 100_000, "0.1"), ("1%", 10_000, "0.01"), ("0.000001", 1, "0.000001"), ("1", 1_000_000, "1")]
        {
            let s: Sample = text.parse().expect(text);
            assert_eq!((s.ppm(), s.to_string().as_str()), (ppm, shown), "{text}");
        }
        for bad in ["0", "-0.1", "1.5", "NaN", "inf", "0.0000001", "x", "", "%", "200%"] {
            assert_eq!(bad.parse::<Sample>().unwrap_err().field, "sample", "{bad:?}");
        }
        assert_eq!(Sample::from_fraction(0.123_456_78).expect("rounds").ppm(), 123_457);
    }

    #[test]
    fn caps() {
        assert_eq!(MaxPps::new(1).map(MaxPps::get), Ok(1));
        assert_eq!(MaxPps::new(1_000_000).map(MaxPps::get), Ok(1_000_000));
        assert_eq!(MaxPps::new(0).unwrap_err().field, "max_pps");
        assert!(MaxPps::new(1_000_001).is_err());
    }

    #[test]
    fn full_sample_is_no_sample() {
        let all = Sample::from_ppm(1_000_000).expect("valid");
        assert!(Throttle::new(Some(all), None).is_none());
        assert_eq!(serde_json::to_string(&Throttle::default()).expect("json"), "{}");
        assert!(serde_json::from_str::<Throttle>(r#"{"sample":0}"#).is_err());
        let read: Throttle = serde_json::from_str(r#"{"sample":1000000}"#).expect("a full sample");
        assert_eq!(read, Throttle::default(), "read back, a full sample is no sample either");
        assert!(serde_json::from_str::<Throttle>(r#"{"max_pps":2000000}"#).is_err());
    }
}
