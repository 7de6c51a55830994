//! How much of a session's clones may be lost before the session is degraded.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A share of clones, 0 to 1: written `0.5%` or `0.005`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct MaxLoss(f64);

impl MaxLoss {
    /// 1 %: a healthy path loses none, so more than this is a path that drops clones.
    pub const DEFAULT: MaxLoss = MaxLoss(0.01);

    pub fn new(share: f64) -> Result<MaxLoss, ValidationError> {
        if (0.0..=1.0).contains(&share) {
            Ok(MaxLoss(share))
        } else {
            Err(ValidationError::new(
                "max_loss",
                format!("{share} is not a share of clones between 0 and 1 (0 % to 100 %)"),
            ))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

// Never NaN: every constructor checks the range.
impl Eq for MaxLoss {}

impl Default for MaxLoss {
    fn default() -> Self {
        MaxLoss::DEFAULT
    }
}

impl TryFrom<f64> for MaxLoss {
    type Error = ValidationError;

    fn try_from(share: f64) -> Result<Self, Self::Error> {
        MaxLoss::new(share)
    }
}

impl From<MaxLoss> for f64 {
    fn from(m: MaxLoss) -> f64 {
        m.0
    }
}

impl FromStr for MaxLoss {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::new("max_loss", format!("{text:?} is not a share: write 1% or 0.01"));
        let share = match text.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => text.trim().parse::<f64>().map_err(|_| bad())?,
        };
        MaxLoss::new(share)
    }
}

impl fmt::Display for MaxLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Percent with no more digits than it has: 1%, 0.5%, 12.25%.
        let percent = (self.0 * 100.0 * 1e6).round() / 1e6;
        write!(f, "{percent}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_or_share_and_nothing_outside_zero_to_one() {
        for (text, share) in [("1%", 0.01), ("0.5 %", 0.005), ("0.02", 0.02), ("0", 0.0), ("100%", 1.0)] {
            assert_eq!(text.parse::<MaxLoss>().map(MaxLoss::get), Ok(share), "{text}");
        }
        for text in ["", "%", "-1%", "101%", "1.5", "NaN", "inf", "one"] {
            assert!(text.parse::<MaxLoss>().is_err(), "{text}");
        }
        assert_eq!("0.5%".parse::<MaxLoss>().map(|m| m.to_string()).as_deref(), Ok("0.5%"));
        assert_eq!(MaxLoss::DEFAULT.to_string(), "1%");
        assert!(serde_json::from_str::<MaxLoss>("2.0").is_err());
    }
}
