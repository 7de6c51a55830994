//! The state file is read as root at start, before the agent connects, and what it holds
//! goes straight into the kernel. A crash mid-write, a full disk or a hand edit can leave
//! any bytes there, so: any file content gives either the whole set it describes or an
//! error, never a panic and never part of a set; every truncation of a saved file is an
//! error; what loads renders inside the grammar in `grammar/mod.rs`.

mod grammar;

use std::fs;

use grammar::check_rule_line;
use proptest::prelude::*;
use serde_json::Value;
use teefleet_agent::{
    StateStore,
    firewall::{Family, render::render_rule},
    state::StateError,
};
use teefleet_model::{
    MirrorRule, RuleSet,
    strategy::{self, config},
};
use tokio::runtime::{Builder, Runtime};

/// Each case touches the filesystem, so fewer of them than for the pure properties.
const CASES: u32 = 64;
/// Each of these cases loads its file once per byte (about a thousand times).
const TRUNCATION_CASES: u32 = 8;

struct Fixture {
    _dir: tempfile::TempDir,
    store: StateStore,
    runtime: Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = StateStore::new(dir.path());
        let runtime = Builder::new_current_thread().build().expect("a runtime");
        Fixture { _dir: dir, store, runtime }
    }

    fn load(&self, bytes: &[u8]) -> Result<Option<RuleSet>, StateError> {
        fs::write(self.store.path(), bytes).expect("write the state file");
        self.runtime.block_on(self.store.load())
    }
}

/// Bytes that JSON gives meaning to, and some it does not allow.
const JSON_BYTES: &[u8] = b"{}[]\":,0123456789-.eE+ \\ntfa\x00\xff";

/// A valid saved file with one to four bytes inserted, removed or replaced: close enough
/// to get past the JSON parser and reach the model's checks.
fn damaged_file() -> impl Strategy<Value = Vec<u8>> {
    let saved = strategy::rule_set(3).prop_map(|set| serde_json::to_vec_pretty(&set).expect("a rule set encodes"));
    strategy::edited(saved, JSON_BYTES, 4)
}

/// The set `bytes` describes if every rule in it is valid, decided rule by rule apart from
/// the loader, so a loader that skipped a bad rule would disagree.
fn whole_set(bytes: &[u8]) -> Option<RuleSet> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let version = value.get("version")?.as_u64()?;
    let rules = value.get("rules")?.as_array()?;
    let rules: Vec<MirrorRule> = rules.iter().map(|r| serde_json::from_value(r.clone()).ok()).collect::<Option<_>>()?;
    RuleSet::new(version, rules).ok()
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn any_file_loads_whole_or_not_at_all(
        bytes in prop_oneof![damaged_file(), any::<Vec<u8>>(), "[ -~]{0,64}".prop_map(String::into_bytes)],
    ) {
        let fixture = Fixture::new();
        match fixture.load(&bytes) {
            Ok(Some(set)) => {
                let whole = whole_set(&bytes);
                prop_assert_eq!(Some(&set), whole.as_ref(), "{}", String::from_utf8_lossy(&bytes));
                for rule in set.rules() {
                    let family = Family::of_rule(rule);
                    check_rule_line(&render_rule(rule, family), family).map_err(TestCaseError::fail)?;
                }
            }
            Ok(None) => prop_assert!(false, "a file that exists loaded as no file"),
            Err(e) => prop_assert!(matches!(e, StateError::Corrupt { .. }), "{}", e),
        }
    }

}

proptest! {
    #![proptest_config(config(TRUNCATION_CASES))]

    #[test]
    fn every_truncation_of_a_saved_file_is_refused(set in strategy::rule_set(3)) {
        let fixture = Fixture::new();
        fixture.runtime.block_on(fixture.store.save(&set)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let saved = fs::read(fixture.store.path()).expect("the saved file");
        prop_assert_eq!(fixture.load(&saved).ok(), Some(Some(set)));
        for len in 0..saved.len() {
            let result = fixture.load(&saved[..len]);
            prop_assert!(matches!(result, Err(StateError::Corrupt { .. })), "{} bytes of {}: {:?}", len, saved.len(), result);
        }
    }
}
