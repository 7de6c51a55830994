//! What `iptables-save -c -t mangle` shows of the agent's objects: its chains with their
//! rules and counters, and the jumps to them from the built-in chains. Everything else on
//! the host is someone else's; it is skipped here and so can never be planned against.

use std::collections::BTreeMap;

use teefleet_model::SessionName;

use super::{
    ApplyError, Counter,
    layout::{ByHook, Expected, Hook, Jump, Owner},
};

/// A rule in one of our chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The rule text after `-A CHAIN `.
    pub spec: String,
    pub counter: Counter,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Our chains that exist, with their rules in order.
    pub chains: BTreeMap<String, Vec<SavedRule>>,
    /// The jumps to each hook's chain from its built-in chain.
    pub jumps: ByHook<Vec<Jump>>,
}

/// [`Observed`] without counters: what must not change between two drift checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    chains: BTreeMap<String, Vec<String>>,
    jumps: ByHook<Vec<Jump>>,
}

impl Observed {
    /// Parses `iptables-save -t mangle` output, with or without `-c` counters.
    pub fn parse(save: &str) -> Result<Observed, ApplyError> {
        let mut observed = Observed::default();
        let mut builtin_positions = ByHook::<usize>::default();
        for line in save.lines() {
            // iptables-nft prints this comment and exits 0 when nft rules it cannot
            // represent live in the table; planning against it could destroy them.
            if line.starts_with('#') && line.contains("incompatible") {
                return Err(ApplyError::Incompatible(line.trim_start_matches(['#', ' ']).to_owned()));
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if Hook::ALL.iter().any(|h| h.chain() == name) {
                    observed.chains.entry(name.to_owned()).or_default();
                }
                continue;
            }
            let (counter, rule) = split_counter(line);
            let Some((chain, spec)) = rule.strip_prefix("-A ").and_then(|r| r.split_once(' ')) else {
                continue;
            };
            if let Some(rules) = observed.chains.get_mut(chain) {
                rules.push(SavedRule { spec: spec.to_owned(), counter });
                continue;
            }
            for hook in Hook::ALL {
                if chain != hook.builtin() {
                    continue;
                }
                builtin_positions[hook] += 1;
                let mut tokens = spec.split_whitespace();
                let jumps_here = std::iter::from_fn(|| tokens.next())
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| matches!(w[0], "-j" | "-g") && w[1] == hook.chain());
                if jumps_here {
                    observed.jumps[hook].push(Jump { position: builtin_positions[hook], spec: spec.to_owned() });
                }
            }
        }
        Ok(observed)
    }

    /// True when nothing of ours exists.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.values().all(Vec::is_empty)
    }

    pub fn shape(&self) -> Shape {
        Shape {
            chains: self
                .chains
                .iter()
                .map(|(name, rules)| (name.clone(), rules.iter().map(|r| r.spec.clone()).collect()))
                .collect(),
            jumps: self.jumps.clone(),
        }
    }

    /// Packets and bytes per session, summed over our mirror rules by their comments.
    pub fn counters(&self) -> BTreeMap<SessionName, Counter> {
        let mut sums = BTreeMap::<SessionName, Counter>::new();
        for (owner, counter) in self.tallies() {
            if let Owner::Session(session) = owner {
                *sums.entry(session).or_default() += counter;
            }
        }
        sums
    }

    /// Packets and bytes per owner (session, or a collector's session and source), summed
    /// over our rules by their comments; rules of no owner are left out.
    pub fn tallies(&self) -> BTreeMap<Owner, Counter> {
        let mut sums = BTreeMap::<Owner, Counter>::new();
        for rule in self.chains.values().flatten() {
            let owner = owner_of(&rule.spec);
            if owner != Owner::None {
                *sums.entry(owner).or_default() += rule.counter;
            }
        }
        sums
    }

    /// Checks that the kernel holds what was applied: for each hook, our chain with one
    /// rule per expected session in order, and exactly one canonical jump at the top. With
    /// nothing expected, nothing of ours may exist. The error says what differs.
    pub fn verify(&self, expected: &Expected) -> Result<(), String> {
        if expected.values().all(Vec::is_empty) {
            return if self.is_empty() { Ok(()) } else { Err("objects of ours remain after removing them".to_owned()) };
        }
        for hook in Hook::ALL {
            let Some(rules) = self.chains.get(hook.chain()) else {
                return Err(format!("chain {} is missing", hook.chain()));
            };
            let owners: Vec<Owner> = rules.iter().map(|r| owner_of(&r.spec)).collect();
            let want = &expected[hook];
            if owners != *want {
                return Err(format!(
                    "chain {} holds {} rules of {:?}, expected {} of {:?}",
                    hook.chain(),
                    rules.len(),
                    owners,
                    want.len(),
                    want
                ));
            }
            let canonical = [Jump { position: 1, spec: hook.jump_spec() }];
            if self.jumps[hook] != canonical {
                return Err(format!("{} does not start with exactly one jump to {}", hook.builtin(), hook.chain()));
            }
        }
        Ok(())
    }
}

impl Shape {
    /// What changed from `self` (what the agent applied) to `now`, for a person.
    pub fn describe_change(&self, now: &Shape) -> String {
        let mut changes = Vec::new();
        for hook in Hook::ALL {
            let (builtin, chain) = (hook.builtin(), hook.chain());
            match (self.chains.get(chain), now.chains.get(chain)) {
                (Some(_), None) => changes.push(format!("chain {chain} was deleted")),
                (None, Some(_)) => changes.push(format!("chain {chain} was created")),
                (Some(was), Some(is)) if was != is => changes.push(if is.is_empty() {
                    format!("chain {chain} was flushed")
                } else if is.len() != was.len() {
                    format!("chain {chain} has {} rules instead of {}", is.len(), was.len())
                } else {
                    format!("rules in chain {chain} were changed")
                }),
                _ => {}
            }
            let (was, is) = (&self.jumps[hook], &now.jumps[hook]);
            if was != is {
                changes.push(match is.as_slice() {
                    [] => format!("the jump from {builtin} to {chain} was removed"),
                    [one] if one.position != 1 => {
                        format!("the jump from {builtin} moved to position {}", one.position)
                    }
                    [_] => format!("the jump from {builtin} to {chain} was changed"),
                    many => format!("{builtin} has {} jumps to {chain}", many.len()),
                });
            }
        }
        if changes.is_empty() { "the rules changed".to_owned() } else { changes.join("; ") }
    }
}

/// `[packets:bytes] -A ...` as `iptables-save -c` prints it, or the line as is.
fn split_counter(line: &str) -> (Counter, &str) {
    let parsed = line.strip_prefix('[').and_then(|rest| {
        let (inner, rule) = rest.split_once("] ")?;
        let (packets, bytes) = inner.split_once(':')?;
        Some((Counter { packets: packets.parse().ok()?, bytes: bytes.parse().ok()? }, rule))
    });
    parsed.unwrap_or((Counter::default(), line))
}

/// The session named by a rule's `teefleet:<session>` comment.
pub fn session_of(spec: &str) -> Option<SessionName> {
    match owner_of(spec) {
        Owner::Session(session) => Some(session),
        _ => None,
    }
}

/// Whom a rule is for, by its comment.
pub fn owner_of(spec: &str) -> Owner {
    let comment = spec.split_once("--comment ").and_then(|(_, rest)| {
        // iptables-save quotes a comment with characters outside [A-Za-z0-9_-], such as ':'.
        match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next(),
            None => rest.split_whitespace().next(),
        }
    });
    comment.map_or(Owner::None, Owner::of_comment)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Our chains and jumps among foreign rules, with counters.
    pub(in crate::firewall) const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:TEEFLEET-POST - [0:0]
:TEEFLEET-PRE - [0:0]
[10:1000] -A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
[0:0] -A PREROUTING -p tcp -j MARK --set-xmark 0x1/0xffffffff
[0:0] -A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
[0:0] -A PREROUTING -i eth0 -j TEEFLEET-PRE
[0:0] -A INPUT -j TEEFLEET-PRE
[3:300] -A TEEFLEET-PRE -p icmp -m comment --comment \"teefleet:web\" -j TEE --gateway 10.0.0.5
[4:400] -A TEEFLEET-PRE -m comment --comment \"teefleet:web\" -j TEE --gateway 10.0.0.5
[5:500] -A TEEFLEET-PRE -j TEE --gateway 10.0.0.5
[7:700] -A TEEFLEET-POST -m comment --comment \"teefleet:dns\" -j TEE --gateway 10.0.0.6
COMMIT
";

    #[test]
    fn parses_owned_objects_and_counters() {
        let o = Observed::parse(SAVED).expect("parse");
        assert_eq!(o.chains.keys().map(String::as_str).collect::<Vec<_>>(), ["TEEFLEET-POST", "TEEFLEET-PRE"]);
        assert_eq!(o.chains["TEEFLEET-PRE"].len(), 3);
        let jump = |position, spec: &str| Jump { position, spec: spec.to_owned() };
        assert_eq!(
            o.jumps,
            ByHook::new(
                vec![
                    jump(1, "-m comment --comment teefleet -j TEEFLEET-PRE"),
                    jump(3, "-m comment --comment teefleet -j TEEFLEET-PRE"),
                    jump(4, "-i eth0 -j TEEFLEET-PRE"),
                ],
                vec![],
            )
        );
        let counters = o.counters();
        let get = |s: &str| counters[&s.parse::<SessionName>().expect("name")];
        assert_eq!(get("web"), Counter { packets: 7, bytes: 700 });
        assert_eq!(get("dns"), Counter { packets: 7, bytes: 700 });
        assert_eq!(counters.len(), 2, "a rule without our comment counts for no session");
        // Without -c the same objects are seen, with zero counters.
        let plain: String = SAVED.lines().map(|l| format!("{}\n", split_counter(l).1)).collect();
        assert_eq!(Observed::parse(&plain).expect("parse").shape(), o.shape());
    }

    #[test]
    fn incompatible_tables_are_refused() {
        let err = Observed::parse("# Table `mangle' is incompatible, use 'nft' tool.\n").unwrap_err();
        assert!(matches!(err, ApplyError::Incompatible(_)), "{err}");
    }

    #[test]
    fn verify_and_describe() {
        let web: SessionName = "web".parse().expect("name");
        let ok = "*mangle
:TEEFLEET-PRE - [0:0]
:TEEFLEET-POST - [0:0]
-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-A PREROUTING -j MARK --set-mark 1
-A POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST
-A TEEFLEET-PRE -m comment --comment \"teefleet:web\" -j TEE --gateway 10.0.0.5
COMMIT
";
        let observed = Observed::parse(ok).expect("parse");
        assert_eq!(observed.verify(&ByHook::new(vec![Owner::Session(web.clone())], vec![])), Ok(()));
        assert!(observed.verify(&ByHook::new(vec![Owner::Session(web.clone()); 2], vec![])).is_err());
        assert!(observed.verify(&ByHook::default()).is_err());
        assert_eq!(Observed::default().verify(&ByHook::default()), Ok(()));

        // The same sessions in the same order, but another rule: only the shape sees it.
        let changed = Observed::parse(&ok.replace("-A TEEFLEET-PRE -m", "-A TEEFLEET-PRE -p tcp -m")).expect("parse");
        assert_eq!(changed.verify(&ByHook::new(vec![Owner::Session(web.clone())], vec![])), Ok(()));
        assert_eq!(observed.shape().describe_change(&changed.shape()), "rules in chain TEEFLEET-PRE were changed");
        let cases = [
            (
                ok.replace("-A TEEFLEET-PRE -m comment --comment \"teefleet:web\" -j TEE --gateway 10.0.0.5\n", ""),
                "chain TEEFLEET-PRE was flushed",
            ),
            (ok.replace("COMMIT", "-A TEEFLEET-PRE -j ACCEPT\nCOMMIT"), "chain TEEFLEET-PRE has 2 rules instead of 1"),
            (
                ok.replace("-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE\n", ""),
                "the jump from PREROUTING to TEEFLEET-PRE was removed",
            ),
            (
                ok.replace(
                    "-A PREROUTING -j MARK --set-mark 1\n",
                    "-A PREROUTING -j MARK --set-mark 1\n-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE\n",
                ),
                "PREROUTING has 2 jumps to TEEFLEET-PRE",
            ),
            (
                ok.replace(
                    "-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE\n-A PREROUTING -j MARK --set-mark 1\n",
                    "-A PREROUTING -j MARK --set-mark 1\n-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE\n",
                ),
                "the jump from PREROUTING moved to position 2",
            ),
        ];
        for (now, want) in cases {
            let now = Observed::parse(&now).expect("parse");
            assert!(now.verify(&ByHook::new(vec![Owner::Session(web.clone())], vec![])).is_err(), "{want}");
            assert_eq!(observed.shape().describe_change(&now.shape()), want);
        }
        let gone = Observed::default().shape();
        assert_eq!(
            observed.shape().describe_change(&gone),
            "chain TEEFLEET-PRE was deleted; the jump from PREROUTING to TEEFLEET-PRE was removed; chain TEEFLEET-POST was deleted; the jump from POSTROUTING to TEEFLEET-POST was removed"
        );
    }
}
