//! Durations written the way operators write them, in every flag of the three binaries:
//! `90s`, `30m`, `1h`, `7d`.

use std::time::Duration;

/// Parses `<positive integer><s|m|h|d>`. A bare number is refused: "1" could mean seconds
/// or hours, and a new flag is no place to guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// [`parse_duration`], and also a bare number of seconds: for the flags that took seconds
/// before they took durations, so existing unit files and scripts keep working.
pub fn parse_duration_or_seconds(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return parse_duration(&format!("{text}s"));
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "1", "h", "1.5h", "-1h", "1 h", "1hh", "0m", "99999999999999999999d", "1w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bare_seconds_where_they_were_accepted() {
        assert_eq!(parse_duration_or_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration_or_seconds("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration_or_seconds("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0", "x", "-5", "5 s", "99999999999999999999"] {
            assert!(parse_duration_or_seconds(bad).is_err(), "{bad:?}");
        }
    }
}
