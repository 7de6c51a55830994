//! Where the agent's objects live in the kernel, and the words for them that rendering,
//! reading back and planning share: the table, the two hooks (a built-in chain and the
//! chain of ours it jumps to), the address families, the comments that mark what is ours,
//! and values kept one per hook or one per family.

use std::{
    marker::PhantomData,
    net::IpAddr,
    ops::{Index, IndexMut},
};

use teefleet_model::{HostId, IpFamily, MirrorRule, RuleDirection, SessionName};

/// The table all agent chains live in: TEE is a mangle-table target.
pub const TABLE: &str = "mangle";
/// The comment on the jump rules, so a person reading `iptables -S` sees who owns them.
pub const JUMP_COMMENT: &str = "teefleet";
/// Rules carry the comment `teefleet:<session>`, so counters map back to sessions.
pub const RULE_COMMENT_PREFIX: &str = "teefleet:";
/// A collector's counting rules carry `teefleet-rx:<session>/<source host>`.
pub const ARRIVAL_COMMENT_PREFIX: &str = "teefleet-rx:";

/// A built-in chain and the agent-owned chain it jumps to. Ingress rules hang off
/// PREROUTING (before routing, so forwarded and local traffic alike), egress rules off
/// POSTROUTING (after routing, the last point before the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Pre,
    Post,
}

impl Hook {
    /// In the order `iptables-save` prints our chains' rules and a transaction declares them.
    pub const ALL: [Hook; 2] = [Hook::Pre, Hook::Post];

    /// The hook whose chain holds the rules of `direction`.
    pub fn of(direction: RuleDirection) -> Hook {
        match direction {
            RuleDirection::Ingress => Hook::Pre,
            RuleDirection::Egress => Hook::Post,
        }
    }

    pub fn builtin(self) -> &'static str {
        match self {
            Hook::Pre => "PREROUTING",
            Hook::Post => "POSTROUTING",
        }
    }

    pub fn chain(self) -> &'static str {
        match self {
            Hook::Pre => "TEEFLEET-PRE",
            Hook::Post => "TEEFLEET-POST",
        }
    }

    /// The jump rule's specification, as `iptables-save` prints it after `-A BUILTIN`.
    pub fn jump_spec(self) -> String {
        format!("-m comment --comment {JUMP_COMMENT} -j {}", self.chain())
    }
}

/// An address family. Each has its own tools (`iptables*` or `ip6tables*`) and its own
/// restore transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The family of the traffic a rule mirrors.
    pub fn of_rule(rule: &MirrorRule) -> Family {
        match rule.family() {
            IpFamily::Ipv4 => Family::V4,
            IpFamily::Ipv6 => Family::V6,
        }
    }

    /// `ipv4` or `ipv6`, for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// A rule in a built-in chain that jumps to one of ours, with its 1-based position in
/// that chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub position: usize,
    /// The rule text after `-A BUILTIN `.
    pub spec: String,
}

/// Whom a rule in one of our chains is for, as its comment says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// No session: the controllers' exclusions (or a comment we did not write).
    None,
    /// A mirror rule of this session.
    Session(SessionName),
    /// A collector's counting rule for this session's clones from this source host.
    Arrival(SessionName, HostId),
}

impl Owner {
    /// The comment text that marks a rule as this owner's (none for [`Owner::None`]).
    pub fn comment(&self) -> Option<String> {
        match self {
            Owner::None => None,
            Owner::Session(session) => Some(format!("{RULE_COMMENT_PREFIX}{session}")),
            Owner::Arrival(session, source) => Some(format!("{ARRIVAL_COMMENT_PREFIX}{session}/{source}")),
        }
    }

    /// The owner a comment names; anything else is [`Owner::None`].
    pub fn of_comment(comment: &str) -> Owner {
        if let Some(session) = comment.strip_prefix(RULE_COMMENT_PREFIX).and_then(|s| s.parse().ok()) {
            return Owner::Session(session);
        }
        let arrival = comment.strip_prefix(ARRIVAL_COMMENT_PREFIX).and_then(|rest| {
            let (session, source) = rest.split_once('/')?;
            Some(Owner::Arrival(session.parse().ok()?, source.parse().ok()?))
        });
        arrival.unwrap_or(Owner::None)
    }
}

/// What a read-back of each owned chain must show, rule by rule: whom each rule is for.
pub type Expected = ByHook<Vec<Owner>>;

/// Something there is exactly one of per hook or per family, so a value can be looked up
/// by it and every one of them visited.
pub trait Key: Copy + 'static {
    /// Every key, in the order values are visited.
    const ALL: [Self; 2];

    /// Where this key's value is kept: its place in [`Key::ALL`].
    fn slot(self) -> usize;
}

impl Key for Hook {
    const ALL: [Hook; 2] = Hook::ALL;

    fn slot(self) -> usize {
        self as usize
    }
}

impl Key for Family {
    const ALL: [Family; 2] = Family::ALL;

    fn slot(self) -> usize {
        self as usize
    }
}

/// One `T` per key: looked up by the key itself, so no value can be read with another
/// key's position.
pub struct Keyed<K, T> {
    values: [T; 2],
    key: PhantomData<K>,
}

/// One value per hook.
pub type ByHook<T> = Keyed<Hook, T>;
/// One value per address family.
pub type ByFamily<T> = Keyed<Family, T>;

impl<K: Key, T> Keyed<K, T> {
    /// The value of every key, from `f`, called in the order of [`Key::ALL`].
    pub fn from_fn(f: impl FnMut(K) -> T) -> Self {
        Keyed { values: K::ALL.map(f), key: PhantomData }
    }

    /// Every key with its value, in the order of [`Key::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.into_iter().zip(&self.values)
    }

    /// Every value, in the order of [`Key::ALL`].
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Keyed<K, U> {
        Keyed { values: self.values.map(f), key: PhantomData }
    }
}

impl<T> ByHook<T> {
    pub fn new(pre: T, post: T) -> Self {
        Keyed { values: [pre, post], key: PhantomData }
    }
}

impl<T> ByFamily<T> {
    pub fn new(v4: T, v6: T) -> Self {
        Keyed { values: [v4, v6], key: PhantomData }
    }
}

impl<K: Key, T> Index<K> for Keyed<K, T> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        &self.values[key.slot()]
    }
}

impl<K: Key, T> IndexMut<K> for Keyed<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.values[key.slot()]
    }
}

// Written out rather than derived: a derive would also require the key type to be
// `Default`, `Clone`, ... although no key value is stored.
impl<K, T: Default> Default for Keyed<K, T> {
    fn default() -> Self {
        Keyed { values: Default::default(), key: PhantomData }
    }
}

impl<K, T: Clone> Clone for Keyed<K, T> {
    fn clone(&self) -> Self {
        Keyed { values: self.values.clone(), key: PhantomData }
    }
}

impl<K, T: PartialEq> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<K, T: Eq> Eq for Keyed<K, T> {}

impl<K: Key + std::fmt::Debug, T: std::fmt::Debug> std::fmt::Debug for Keyed<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_their_key() {
        let mut jumps = ByHook::<Vec<usize>>::default();
        jumps[Hook::Post].push(2);
        assert_eq!(jumps[Hook::Pre], Vec::<usize>::new());
        assert_eq!(jumps.iter().map(|(h, v)| (h, v.len())).collect::<Vec<_>>(), [(Hook::Pre, 0), (Hook::Post, 1)]);
        let labels = ByFamily::from_fn(Family::label);
        assert_eq!((labels[Family::V4], labels[Family::V6]), ("ipv4", "ipv6"));
        assert_eq!(format!("{labels:?}"), r#"{V4: "ipv4", V6: "ipv6"}"#);
        assert_eq!(labels.map(str::len), ByFamily::new(4, 4));
        assert_eq!(ByHook::new("pre", "post")[Hook::Post], "post");
    }

    #[test]
    fn owners_round_trip_through_their_comments() {
        let web: SessionName = "web".parse().expect("name");
        for owner in [Owner::Session(web.clone()), Owner::Arrival(web, "i-0abc.x_y".parse().expect("host"))] {
            assert_eq!(Owner::of_comment(&owner.comment().expect("a comment")), owner);
        }
        for other in ["teefleet-control", "teefleet", "teefleet-rx:web", "teefleet:Bad Name", "someone-else"] {
            assert_eq!(Owner::of_comment(other), Owner::None, "{other}");
        }
    }

    #[test]
    fn hooks_name_their_chains() {
        assert_eq!(Hook::of(RuleDirection::Ingress).chain(), "TEEFLEET-PRE");
        assert_eq!(Hook::of(RuleDirection::Egress).builtin(), "POSTROUTING");
        assert_eq!(Hook::Pre.jump_spec(), "-m comment --comment teefleet -j TEEFLEET-PRE");
    }
}
