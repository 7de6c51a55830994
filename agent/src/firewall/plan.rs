//! What to change: from the rules of one family (rendered by [`super::render`]) and what
//! the kernel holds (read by [`super::observe`]), the `iptables-restore --noflush` input
//! that makes the kernel hold those rules and nothing else of ours, and what a read-back
//! must then show. Pure, so the exact transactions are pinned by golden tests.

use teefleet_model::RuleSet;

use super::{
    layout::{ByHook, Expected, Family, Hook, Jump, Owner, TABLE},
    observe::Observed,
    render::{Control, arrival_lines, arrivals_of, gate_lines, has_lines, rules_of},
};

/// Whom each owned chain's rules are for, in order: what a read-back must show.
pub fn expected_sessions(set: &RuleSet, family: Family) -> Expected {
    expected_with_control(set, family, &Control::default())
}

/// [`expected_sessions`] with the controllers' exclusions. In the order
/// [`super::render::render_with_control`] writes them: exclusions, mirror rules, then (in
/// PREROUTING's chain) a collector's gate and counting rules, one per raw direction.
pub fn expected_with_control(set: &RuleSet, family: Family, control: &Control) -> Expected {
    let control = if has_lines(set, family) { control.count(family) } else { 0 };
    let rules = rules_of(set, family);
    let arrivals = arrivals_of(set, family);
    ByHook::from_fn(|hook| {
        let mirrors =
            rules.iter().filter(|r| Hook::of(r.direction()) == hook).map(|r| Owner::Session(r.session().clone()));
        let counting = hook == Hook::Pre && !arrivals.is_empty();
        let gate = std::iter::repeat_n(Owner::None, if counting { gate_lines().len() } else { 0 });
        let counted = arrivals.iter().filter(|_| counting).flat_map(|a| {
            std::iter::repeat_n(Owner::Arrival(a.session().clone(), a.source().clone()), arrival_lines(a))
        });
        std::iter::repeat_n(Owner::None, control).chain(mirrors).chain(gate).chain(counted).collect()
    })
}

/// The `iptables-restore --noflush` input that turns the observed state into `rules` (the
/// output of [`super::render::render_rules`] for one family), or `None` when there is
/// nothing to do (no rules and nothing of ours installed).
///
/// Non-empty rules always get both chains and both jumps, so "applied" has one shape.
/// Declaring a chain (`:CHAIN - [0:0]`) creates it or flushes it inside the transaction,
/// so the kernel switches from the old rules to the new ones at once.
pub fn plan(rules: &[String], observed: &Observed) -> Option<String> {
    let mut lines = Vec::new();
    if rules.is_empty() {
        lines.extend(removal_lines(observed));
        if lines.is_empty() {
            return None;
        }
    } else {
        lines.extend(Hook::ALL.iter().map(|h| format!(":{} - [0:0]", h.chain())));
        lines.extend(rules.iter().cloned());
        for (hook, jumps) in observed.jumps.iter() {
            lines.extend(jump_repair_lines(hook, jumps));
        }
    }
    let mut text = format!("*{TABLE}\n");
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    Some(text)
}

/// Leaves exactly one canonical jump, first in its built-in chain. When that is not what
/// is there (missing, moved below a foreign rule, duplicated, hand-made with other
/// matches), every jump to our chain is deleted by its specification and the canonical one
/// is inserted at the top. Deleting by specification, never by position, means a rule
/// another program inserts meanwhile cannot be hit. A jump below a foreign rule could
/// miss packets that rule accepts, hence the top.
fn jump_repair_lines(hook: Hook, jumps: &[Jump]) -> Vec<String> {
    let canonical = hook.jump_spec();
    if let [only] = jumps
        && only.position == 1
        && only.spec == canonical
    {
        return Vec::new();
    }
    let mut lines: Vec<String> = jumps.iter().map(|j| format!("-D {} {}", hook.builtin(), j.spec)).collect();
    lines.push(format!("-I {} 1 {canonical}", hook.builtin()));
    lines
}

/// Deletes the jumps first (a referenced chain cannot be deleted), then flushes and
/// deletes each owned chain that exists.
fn removal_lines(observed: &Observed) -> Vec<String> {
    let mut lines = Vec::new();
    for (hook, jumps) in observed.jumps.iter() {
        lines.extend(jumps.iter().map(|j| format!("-D {} {}", hook.builtin(), j.spec)));
    }
    for hook in Hook::ALL.into_iter().filter(|h| observed.chains.contains_key(h.chain())) {
        lines.push(format!("-F {}", hook.chain()));
        lines.push(format!("-X {}", hook.chain()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use teefleet_model::{Protocol, RuleDirection, SessionName};

    use super::*;
    use crate::firewall::{
        observe::tests::SAVED,
        render::{
            render_rules,
            tests::{both_families, rule, set, tail, tail_in, web_with_controllers},
        },
    };

    fn plan_v4(set: &RuleSet, observed: &Observed) -> Option<String> {
        plan(&render_rules(set, Family::V4), observed)
    }

    #[test]
    fn full_transaction_with_no_jumps_yet() {
        let s = set(vec![
            rule("web", RuleDirection::Ingress, Protocol::Tcp, Some((443, 443)), None),
            rule("dns", RuleDirection::Egress, Protocol::Udp, Some((53, 53)), Some("10.2.0.0/16")),
            rule("all", RuleDirection::Ingress, Protocol::All, None, None),
        ]);
        let want = format!(
            "*mangle
:TEEFLEET-PRE - [0:0]
:TEEFLEET-POST - [0:0]
-A TEEFLEET-PRE {all}
-A TEEFLEET-PRE -p tcp -m tcp --dport 443 {web}
-A TEEFLEET-POST -d 10.2.0.0/16 -p udp -m udp --sport 53 {dns}
-I PREROUTING 1 -m comment --comment teefleet -j TEEFLEET-PRE
-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST
COMMIT
",
            all = tail_in("all"),
            web = tail_in("web"),
            dns = tail("dns"),
        );
        assert_eq!(plan_v4(&s, &Observed::default()).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn duplicate_foreign_and_missing_jumps_are_repaired() {
        let s = set(vec![rule("a", RuleDirection::Egress, Protocol::All, None, None)]);
        let o = Observed::parse(SAVED).expect("parse");
        let want = format!(
            "*mangle
:TEEFLEET-PRE - [0:0]
:TEEFLEET-POST - [0:0]
-A TEEFLEET-POST {a}
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -i eth0 -j TEEFLEET-PRE
-I PREROUTING 1 -m comment --comment teefleet -j TEEFLEET-PRE
-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST
COMMIT
",
            a = tail("a")
        );
        assert_eq!(plan_v4(&s, &o).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn jumps_already_in_place_are_left_alone() {
        let s = set(vec![rule("a", RuleDirection::Ingress, Protocol::Icmp, None, None)]);
        let o = Observed {
            chains: Hook::ALL.iter().map(|h| (h.chain().to_owned(), vec![])).collect(),
            jumps: ByHook::from_fn(|h| vec![Jump { position: 1, spec: h.jump_spec() }]),
        };
        let want = format!(
            "*mangle\n:TEEFLEET-PRE - [0:0]\n:TEEFLEET-POST - [0:0]\n-A TEEFLEET-PRE -p icmp {}\nCOMMIT\n",
            tail_in("a")
        );
        assert_eq!(plan_v4(&s, &o).as_deref(), Some(want.as_str()));

        // A canonical jump that a foreign rule pushed down is moved back to the top.
        let mut moved = o.clone();
        moved.jumps[Hook::Post][0].position = 2;
        let plan = plan_v4(&s, &moved).expect("plan");
        assert!(
            plan.ends_with(
                "-D POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST\n-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST\nCOMMIT\n"
            ),
            "{plan}"
        );
    }

    #[test]
    fn empty_set_removes_what_exists_and_is_idempotent() {
        let empty = set(vec![]);
        let o = Observed::parse(SAVED).expect("parse");
        let want = "*mangle
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -i eth0 -j TEEFLEET-PRE
-F TEEFLEET-PRE
-X TEEFLEET-PRE
-F TEEFLEET-POST
-X TEEFLEET-POST
COMMIT
";
        assert_eq!(plan_v4(&empty, &o).as_deref(), Some(want));
        assert_eq!(plan_v4(&empty, &Observed::default()), None);
        let only_post = Observed { chains: [("TEEFLEET-POST".to_owned(), vec![])].into(), jumps: ByHook::default() };
        assert_eq!(
            plan_v4(&empty, &only_post).as_deref(),
            Some("*mangle\n-F TEEFLEET-POST\n-X TEEFLEET-POST\nCOMMIT\n")
        );
    }

    #[test]
    fn a_read_back_must_show_each_chains_sessions_in_order() {
        let s = both_families();
        let six: SessionName = "six".parse().expect("name");
        assert_eq!(expected_sessions(&s, Family::V6), ByHook::new(vec![Owner::Session(six)], vec![]));
    }

    #[test]
    fn the_controllers_exclusions_are_expected_first() {
        let (s, control) = web_with_controllers();
        let web: SessionName = "web".parse().expect("name");
        assert_eq!(
            expected_with_control(&s, Family::V4, &control),
            ByHook::new(vec![Owner::None, Owner::Session(web.clone())], vec![Owner::None, Owner::Session(web)])
        );
        // No rules of a family, no chains: nothing to exclude either.
        assert_eq!(expected_with_control(&s, Family::V6, &control), ByHook::default());
    }
}
