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
