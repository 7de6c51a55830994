//! Tag selectors: a session may choose its sources by the EC2 tags they carry instead of
//! naming them, so it covers a whole tier as instances come and go.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// One EC2 tag an instance must carry, written `key=value` and matched exactly: EC2's
/// filter wildcards (`*`, `?`) are plain characters here, so what an operator types is
/// what is matched. An empty value matches a tag whose value is empty, not any value.
///
/// The limits are EC2's: a key of 1 to 128 characters, a value of at most 256. A key may
/// not contain `=` (the first `=` separates key and value), and neither may contain a
/// control or bidi character, which no one types on purpose (EC2 does not allow them) and
/// which could rewrite a terminal that shows the session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagSelector {
    key: String,
    value: String,
}

/// How much of a refused input an error quotes: enough to recognise it, bounded so a
/// hostile input cannot make a log line or a status message huge.
const EXCERPT: usize = 64;

fn excerpt(s: &str) -> String {
    let cut: String = s.chars().take(EXCERPT).collect();
    if cut.len() < s.len() { format!("{cut:?}...") } else { format!("{cut:?}") }
}

fn invalid(reason: String) -> ValidationError {
    ValidationError::new("tag", reason)
}

impl TagSelector {
    pub const MAX_KEY_CHARS: usize = 128;
    pub const MAX_VALUE_CHARS: usize = 256;

    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, ValidationError> {
        let (key, value) = (key.into(), value.into());
        if key.is_empty() {
            return Err(invalid(format!(
                "tag {} has an empty key; write KEY=VALUE, e.g. role=web",
                excerpt(&format!("={value}"))
            )));
        }
        if key.chars().count() > Self::MAX_KEY_CHARS {
            return Err(invalid(format!(
                "tag key {} is longer than {} characters, EC2's limit",
                excerpt(&key),
                Self::MAX_KEY_CHARS
            )));
        }
        if key.contains('=') {
            return Err(invalid(format!("tag key {} contains '=', which separates key and value", excerpt(&key))));
        }
        if value.chars().count() > Self::MAX_VALUE_CHARS {
            return Err(invalid(format!(
                "the value of tag key {} is longer than {} characters, EC2's limit",
                excerpt(&key),
                Self::MAX_VALUE_CHARS
            )));
        }
        if key.chars().chain(value.chars()).any(crate::text::acts_on_terminals) {
            return Err(invalid(format!(
                "tag {} contains a control character or one that reorders text",
                excerpt(&format!("{key}={value}"))
            )));
        }
        Ok(Self { key, value })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether an instance with these tags carries this one.
    pub fn is_carried_by<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter().any(|(k, v)| k == self.key && v == self.value)
    }
}

/// Whether an instance with `tags` carries every tag of `selectors`: selectors AND together,
/// as EC2 filters do. No selector matches nothing, so that a session without selectors can
/// never pick up every instance by mistake.
pub fn carries_all<'a>(selectors: &[TagSelector], tags: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> bool {
    !selectors.is_empty() && selectors.iter().all(|s| s.is_carried_by(tags.clone()))
}

impl FromStr for TagSelector {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(invalid(format!("{} is not KEY=VALUE, e.g. role=web", excerpt(s))));
        };
        Self::new(key, value)
    }
}

impl TryFrom<String> for TagSelector {
    type Error = ValidationError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TagSelector> for String {
    fn from(t: TagSelector) -> String {
        t.to_string()
    }
}

impl fmt::Display for TagSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> TagSelector {
        s.parse().expect("a tag selector")
    }

    #[test]
    fn parses_at_the_first_equals_sign() {
        let t = tag("role=web");
        assert_eq!((t.key(), t.value()), ("role", "web"));
        let t = tag("aws:autoscaling:groupName=web-asg");
        assert_eq!(t.key(), "aws:autoscaling:groupName");
        let t = tag("query=a=b");
        assert_eq!((t.key(), t.value()), ("query", "a=b"));
        assert_eq!(tag("env=").value(), "", "an empty value is a value");
        assert_eq!(tag("Name=web server 1").to_string(), "Name=web server 1");
    }

    #[test]
    fn errors_say_what_to_write() {
        let reason = |s: &str| s.parse::<TagSelector>().unwrap_err().reason;
        assert_eq!(reason("role"), "\"role\" is not KEY=VALUE, e.g. role=web");
        assert_eq!(reason("=web"), "tag \"=web\" has an empty key; write KEY=VALUE, e.g. role=web");
        assert!(reason(&format!("{}=x", "k".repeat(129))).contains("longer than 128 characters"));
        assert!(reason(&format!("k={}", "v".repeat(257))).contains("longer than 256 characters"));
        assert!(reason("role=web\n").contains("control character"));
        assert!(!reason("role=\u{1b}[2J").chars().any(char::is_control), "the quote escapes it");
        assert_eq!(TagSelector::new("a=b", "c").unwrap_err().field, "tag");
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        assert!(format!("{}=x", "é".repeat(128)).parse::<TagSelector>().is_ok());
        assert!(format!("k={}", "é".repeat(256)).parse::<TagSelector>().is_ok());
        assert!(format!("{}=x", "é".repeat(129)).parse::<TagSelector>().is_err());
    }

    #[test]
    fn matching_is_exact_and_all_must_hold() {
        let tags = [("role", "web"), ("env", "prod")];
        assert!(carries_all(&[tag("role=web"), tag("env=prod")], tags));
        assert!(!carries_all(&[tag("role=web"), tag("env=staging")], tags));
        assert!(!carries_all(&[tag("role=we*")], tags), "no wildcards");
        assert!(!carries_all(&[tag("Role=web")], tags), "keys are case-sensitive");
        assert!(!carries_all(&[], tags), "no selector selects nothing");
        assert!(carries_all(&[tag("env=")], [("env", "")]));
        assert!(!carries_all(&[tag("env=")], [("env", "prod")]));
    }

    #[test]
    fn serde_is_the_text_form() {
        let t: TagSelector = serde_json::from_str("\"role=web\"").expect("valid");
        assert_eq!(t, tag("role=web"));
        assert_eq!(serde_json::to_string(&t).expect("serializes"), "\"role=web\"");
        assert!(serde_json::from_str::<TagSelector>("\"role\"").is_err());
    }
}
