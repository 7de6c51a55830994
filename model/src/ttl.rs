//! How long a session lives: "mirror this host for the next hour while we investigate".

use std::{fmt, str::FromStr, time::Duration};

use crate::{ValidationError, parse_duration};

/// A session's lifetime, counted from when it is set; the session deletes itself at the
/// end. Bounded: under a minute is more likely a typo than a plan (and shorter than the
/// controller checks for expiry), and over 30 days is a session that should be deleted
/// by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(Duration);

impl Ttl {
    pub const MIN: Duration = Duration::from_secs(60);
    pub const MAX: Duration = Duration::from_secs(30 * 86_400);

    pub fn new(ttl: Duration) -> Result<Self, ValidationError> {
        if ttl < Self::MIN || ttl > Self::MAX {
            return Err(ValidationError::new(
                "ttl",
                format!("{}s is not a session lifetime: give 1m to 30d", ttl.as_secs()),
            ));
        }
        Ok(Self(ttl))
    }

    pub fn from_secs(secs: u64) -> Result<Self, ValidationError> {
        Self::new(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for Ttl {
    type Err = ValidationError;

    /// `90m`, `2h`, `7d`, as every duration flag.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ttl = parse_duration(text).map_err(|why| ValidationError::new("ttl", why))?;
        Self::new(ttl)
            .map_err(|_| ValidationError::new("ttl", format!("{text:?} is not a session lifetime: give 1m to 30d")))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

/// What an update does to a session's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlChange {
    /// The session keeps the expiry it has, or none.
    #[default]
    Keep,
    /// The session expires this long from now.
    Set(Ttl),
    /// The session no longer expires.
    Clear,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!("2h".parse::<Ttl>().map(Ttl::secs), Ok(7_200));
        assert_eq!("1m".parse::<Ttl>().map(Ttl::secs), Ok(60));
        assert_eq!("30d".parse::<Ttl>().map(Ttl::secs), Ok(2_592_000));
        assert_eq!(
            "59s".parse::<Ttl>().unwrap_err().to_string(),
            "ttl: \"59s\" is not a session lifetime: give 1m to 30d"
        );
        assert!("31d".parse::<Ttl>().is_err());
        assert!("2".parse::<Ttl>().unwrap_err().reason.contains("not a duration"));
        assert_eq!(Ttl::from_secs(0).unwrap_err().field, "ttl");
        assert!(Ttl::from_secs(u64::MAX).is_err());
    }
}
