//! A pushed rule set is outside input: the agent re-validates it (with `teefleet-proto`'s
//! conversion, the controller's own) because a controller bug or compromise must not reach
//! iptables. Whatever the message holds (any strings, any numbers, enum values the schema
//! does not know), the conversion does not panic; what it accepts renders inside the
//! grammar in `grammar/mod.rs`; what it refuses is named by its field without echoing
//! control characters into the Nack. That valid sets survive the wire is
//! `proto/tests/round_trip.rs`.

mod grammar;

use grammar::check_rule_line;
use proptest::{collection::vec, num::f64 as float, option, prelude::*};
use teefleet_agent::firewall::{Family, render::render_rule};
use teefleet_model::{
    MaxPps, RuleSet, Vni,
    strategy::{self, config, hostile},
};
use teefleet_proto::v1 as pb;

/// Enum values the schema knows, and any others.
fn enum_value(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![3 => 0..=known, 1 => any::<i32>()]
}

fn number(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), 1..=max, any::<u32>()]
}

/// Each field anything from valid to garbage, independently of the others.
fn hostile_rule() -> impl Strategy<Value = pb::MirrorRule> {
    let raw = (
        hostile(strategy::session_name_text()),
        enum_value(3),
        hostile(strategy::ip().prop_map(|ip| ip.to_string())),
        enum_value(4),
        option::of((number(65536), number(65536)).prop_map(|(first, last)| pb::PortRange { first, last })),
        prop_oneof![Just(String::new()), hostile(strategy::cidr_text())],
        prop_oneof![Just(0.0), 0.0..=1.0f64, float::ANY],
        number(MaxPps::MAX + 1),
    )
        .prop_map(|(session, direction, gateway, protocol, ports, peer_cidr, sample, max_pps)| pb::MirrorRule {
            session,
            direction,
            gateway,
            protocol,
            ports,
            peer_cidr,
            sample,
            max_pps,
            ..Default::default()
        });
    let vxlan = (
        prop_oneof![3 => Just(0), 1 => number(Vni::MAX + 1)],
        hostile(strategy::ip().prop_map(|ip| ip.to_string())),
        enum_value(2),
    );
    (raw, vxlan).prop_map(|(rule, (vni, vxlan_remote, family))| pb::MirrorRule { vni, vxlan_remote, family, ..rule })
}

fn any_rule() -> impl Strategy<Value = pb::MirrorRule> {
    prop_oneof![strategy::mirror_rule().prop_map(|r| pb::MirrorRule::from(&r)), hostile_rule()]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn pushed_sets_are_refused_or_render_inside_the_grammar(
        version in prop_oneof![0..=RuleSet::MAX_VERSION, any::<u64>()],
        rules in vec(any_rule(), 0..6),
    ) {
        match RuleSet::try_from(pb::RuleSet { version, rules: rules.clone(), collector: false, arrivals: vec![] }) {
            Ok(set) => {
                prop_assert_eq!(set.version(), version);
                prop_assert!(set.rules().len() <= rules.len());
                for rule in set.rules() {
                    let family = Family::of_rule(rule);
                    let line = render_rule(rule, family);
                    check_rule_line(&line, family).map_err(TestCaseError::fail)?;
                }
            }
            Err(e) => {
                let too_high = version > RuleSet::MAX_VERSION && e.field == "version";
                prop_assert!(e.field.starts_with("rules[") || too_high, "{}", e);
                prop_assert!(!e.to_string().chars().any(char::is_control), "{:?}", e.to_string());
            }
        }
    }

    #[test]
    fn one_bad_field_refuses_the_whole_set(
        set in strategy::rule_set(4).prop_filter("a rule to spoil", |s| !s.is_empty()),
        bad in hostile_rule(),
        at in any::<proptest::sample::Index>(),
    ) {
        let mut rules: Vec<pb::MirrorRule> = set.rules().iter().map(pb::MirrorRule::from).collect();
        let i = at.index(rules.len() + 1);
        rules.insert(i, bad.clone());
        let alone = RuleSet::try_from(pb::RuleSet { version: 1, rules: vec![bad], collector: false, arrivals: vec![] });
        let whole = RuleSet::try_from(pb::RuleSet { version: 1, rules, collector: false, arrivals: vec![] });
        match alone {
            // Never a partial set: one refused rule refuses all, and names its index.
            Err(e) => {
                let err = whole.expect_err("a set with a refused rule");
                prop_assert_eq!(err.field, e.field.replacen("rules[0]", &format!("rules[{i}]"), 1));
            }
            Ok(one) => {
                let mut all = set.rules().to_vec();
                all.extend(one.rules().iter().cloned());
                prop_assert_eq!(whole, RuleSet::new(1, all));
            }
        }
    }
}
