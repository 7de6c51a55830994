//! Who is calling: operator bearer tokens and their roles. Secrets are 256 random bits;
//! the store keeps only their SHA-256.

use std::{fmt, str::FromStr};

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// What a token may do. Operator roles are ordered (an admin may do what an operator may,
/// and so on); an agent token only enrolls an agent and is refused everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn rank(self) -> Option<u8> {
        match self {
            Role::Agent => None,
            Role::Viewer => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
        }
    }

    /// Whether a caller with this role may do what needs `need` (an operator role).
    pub fn allows(self, need: Role) -> bool {
        matches!((self.rank(), need.rank()), (Some(have), Some(need)) if have >= need)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected agent, viewer, operator or admin")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// The caller of an admin call, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Token {
        id: String,
        role: Role,
    },
    /// The controller runs with --insecure: nobody is authenticated, everybody may do all.
    Insecure,
}

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            Principal::Token { role, .. } => *role,
            Principal::Insecure => Role::Admin,
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Principal::Token { id, role } => format!("token:{id} ({role})"),
            Principal::Insecure => "insecure".to_owned(),
        }
    }
}

/// A new token: its public id and the secret the caller must present. The secret embeds
/// the id so a person holding one can tell which token it is.
pub fn new_token() -> Result<(String, String), ring::error::Unspecified> {
    let rng = SystemRandom::new();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill(&mut id)?;
    rng.fill(&mut secret)?;
    let id = hex::encode(id);
    Ok((id.clone(), format!("tf1.{id}.{}", hex::encode(secret))))
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The shortest bootstrap token the controller accepts from its environment.
pub const MIN_BOOTSTRAP_LEN: usize = 16;
/// Longer bearer values are refused unread.
pub const MAX_TOKEN_LEN: usize = 256;

/// The secret of an `authorization: Bearer <secret>` value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, secret) = header.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty() && secret.len() <= MAX_TOKEN_LEN).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_agents_are_apart() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer) && !Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for need in [Role::Viewer, Role::Operator, Role::Admin] {
            assert!(!Role::Agent.allows(need));
        }
        for role in [Role::Agent, Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(role.as_str().parse(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_unique_and_carry_their_id() {
        let (id, secret) = new_token().expect("rng");
        let (other, other_secret) = new_token().expect("rng");
        assert_ne!(id, other);
        assert_ne!(hash_secret(&secret), hash_secret(&other_secret));
        assert!(secret.starts_with(&format!("tf1.{id}.")) && secret.len() == 4 + 12 + 1 + 64);
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
        assert_eq!(bearer(&format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1))), None);
    }
}
