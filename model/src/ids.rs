use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::ValidationError;

fn check_token(value: &str, what: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new("", format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(ValidationError::new("", format!("{what} is longer than {max} characters")));
    }
    let first_ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(ValidationError::new(
            "",
            format!(
                "{what} {value:?} may contain only letters, digits, '-', '_' and '.', and must start with a letter or digit"
            ),
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let check: fn(&str) -> Result<(), ValidationError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A host running an agent: its EC2 instance id, or any name an operator gives with
    /// `--host-id` for hosts outside EC2.
    HostId,
    |s| check_token(s, "host id", 64)
);

string_id!(
    /// An EC2 instance id such as `i-0123456789abcdef0`.
    InstanceId,
    |s| {
        let hex = s.strip_prefix("i-").unwrap_or("");
        if (hex.len() == 8 || hex.len() == 17) && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            Ok(())
        } else {
            Err(ValidationError::new("", format!("{s:?} is not an EC2 instance id (expected i- and 8 or 17 lowercase hex digits)")))
        }
    }
);

string_id!(
    /// A registered collector: its EC2 instance id, or the name an operator gave a
    /// collector that is not an instance (a load balancer, an appliance).
    CollectorId,
    |s| check_token(s, "collector", 64)
);

impl CollectorId {
    /// The EC2 instance, when the collector is one.
    pub fn instance(&self) -> Option<InstanceId> {
        self.0.parse().ok()
    }
}

impl From<InstanceId> for CollectorId {
    fn from(id: InstanceId) -> Self {
        // An instance id always satisfies the collector alphabet and length.
        CollectorId(id.0)
    }
}

string_id!(
    /// A session's name. It becomes part of an iptables comment, so its alphabet is kept
    /// to characters that need no quoting.
    SessionName,
    |s| check_token(s, "session name", 63)
);

string_id!(
    /// What kind of thing an agent did or saw: a short snake_case word such as
    /// `drift_repaired`. Agents may add kinds, so the alphabet is checked, not a list.
    EventKind,
    |s| {
        let ok = (1..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(())
        } else {
            // Debug formatting escapes control characters; the excerpt bounds the message.
            let excerpt: String = s.chars().take(64).collect();
            Err(ValidationError::new("kind", format!("{excerpt:?} is not a snake_case word of at most 32 characters")))
        }
    }
);

impl From<&CollectorId> for HostId {
    /// The host whose agent runs on the collector: same alphabet and length.
    fn from(id: &CollectorId) -> Self {
        HostId(id.0.clone())
    }
}

impl From<InstanceId> for HostId {
    fn from(id: InstanceId) -> Self {
        // An instance id always satisfies the host id alphabet and length.
        HostId(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds() {
        for ok in ["drift_repaired", "state_ignored", "a", "apply_failed2"] {
            assert!(ok.parse::<EventKind>().is_ok(), "{ok}");
        }
        for bad in ["", "Drift", "2x", "a-b", "a b", "_x", &"a".repeat(33)] {
            assert_eq!(bad.parse::<EventKind>().unwrap_err().field, "kind", "{bad:?}");
        }
        let err = "a\u{1b}[2J".parse::<EventKind>().unwrap_err();
        assert!(err.reason.contains("\\u{1b}"), "control characters are escaped: {}", err.reason);
    }

    #[test]
    fn instance_ids() {
        assert!("i-0123456789abcdef0".parse::<InstanceId>().is_ok());
        assert!("i-01234567".parse::<InstanceId>().is_ok());
        for bad in ["", "i-", "i-0123", "i-0123456789ABCDEF0", "x-01234567", "i-0123456g", "i-01234567 "] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_reject_shell_and_iptables_syntax() {
        assert!("web-tier_1.a".parse::<SessionName>().is_ok());
        for bad in ["", "-x", "a b", "a\"b", "a;b", "a\nb", "$(x)", "ä", &"a".repeat(64)] {
            let err = bad.parse::<SessionName>().unwrap_err();
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn serde_validates() {
        let ok: SessionName = serde_json_from("\"abc\"");
        assert_eq!(ok.as_str(), "abc");
        assert!(serde_json::from_str::<SessionName>("\"a b\"").is_err());
    }

    fn serde_json_from<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_str(s).expect("valid json")
    }
}
