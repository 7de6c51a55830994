//! Lifetimes written the way operators write them: `90s`, `30m`, `1h`, `7d`.

use std::time::Duration;

/// Parses `<positive integer><s|m|h|d>`. A bare number is refused: "1" could mean seconds
/// or hours, and a token's lifetime is no place to guess.
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let hint = || format!("{text:?} is not a duration; write e.g. 90s, 30m, 1h or 7d");
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(hint)?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| hint())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(hint()),
    };
    match n.checked_mul(seconds) {
        Some(0) => Err(format!("{text:?}: a duration must be longer than zero")),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_lifetime("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_lifetime("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_lifetime("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_lifetime("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "1", "h", "1.5h", "-1h", "1 h", "1hh", "0m", "99999999999999999999d", "1w"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
