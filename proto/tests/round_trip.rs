//! Every valid model value survives the trip through its wire form unchanged, through the
//! same conversions the controller and the agents use.

use proptest::{collection::vec, option, prelude::*};
use teefleet_model::{
    CollectorId, Filter, RuleSet, SessionSpec,
    strategy::{self, config},
};
use teefleet_proto::v1 as pb;

fn session_spec() -> impl Strategy<Value = SessionSpec> {
    (
        strategy::session_name(),
        vec(strategy::host_id(), 0..4),
        vec(strategy::tag_selector(), 0..3),
        strategy::instance_id(),
        strategy::filter(4),
        any::<bool>(),
        option::of(1..=teefleet_model::Vni::MAX),
        any::<bool>(),
    )
        .prop_filter_map(
            "a session the model admits",
            |(name, sources, tags, collector, filter, routed, vni, off)| {
                let vni = vni.map(teefleet_model::Vni::new).transpose().ok()?;
                Some(
                    SessionSpec::selecting(name, sources, tags, CollectorId::from(collector), filter)
                        .ok()?
                        .with_allow_routed(routed)
                        .with_vni(vni)
                        .with_disable_source_check(off),
                )
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rule_sets(set in strategy::rule_set(6)) {
        prop_assert_eq!(RuleSet::try_from(pb::RuleSet::from(&set)), Ok(set));
    }

    #[test]
    fn filters(filter in strategy::filter(8)) {
        prop_assert_eq!(Filter::try_from(&pb::Filter::from(&filter)), Ok(filter));
    }

    #[test]
    fn session_requests(spec in session_spec()) {
        prop_assert_eq!(SessionSpec::try_from(&pb::CreateSessionRequest::from(&spec)), Ok(spec));
    }
}

/// A request whose fields are anything from valid to garbage, independently.
fn hostile_request() -> impl Strategy<Value = pb::CreateSessionRequest> {
    let text = |valid: BoxedStrategy<String>| strategy::hostile(valid);
    (
        text(strategy::session_name_text().boxed()),
        vec(text(strategy::instance_id_text().boxed()), 0..3),
        vec(text(strategy::tag_selector_text().boxed()), 0..3),
        text(strategy::instance_id_text().boxed()),
        option::of((
            0..5i32,
            0..6i32,
            option::of((0..70_000u32, 0..70_000u32)),
            vec(text(strategy::cidr_text().boxed()), 0..3),
            prop_oneof![Just(0.0), 0.0..2.0f64],
        )),
        prop_oneof![Just(0u32), any::<u32>()],
    )
        .prop_map(|(name, sources, source_tags, collector, filter, vni)| pb::CreateSessionRequest {
            name,
            sources,
            source_tags,
            collector,
            filter: filter.map(|(direction, protocol, ports, cidrs, sample)| pb::Filter {
                direction,
                protocol,
                ports: ports.map(|(first, last)| pb::PortRange { first, last }),
                cidrs,
                sample,
                max_pps: 0,
            }),
            vni,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// fleetctl's local check and the controller's agree: no problems exactly when the
    /// request converts.
    #[test]
    fn problems_exactly_when_refused(req in hostile_request()) {
        let problems = teefleet_proto::create_session_problems(&req);
        match SessionSpec::try_from(&req) {
            Ok(_) => prop_assert!(problems.is_empty(), "{:?}", problems),
            Err(e) => prop_assert!(!problems.is_empty(), "{} refused, but no problem listed", e),
        }
    }
}
