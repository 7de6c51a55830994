//! The shipped systemd units and environment examples (`deploy/systemd`, `deploy/env`):
//! `systemd-analyze verify` passes, the offline security score is at most 3.0, the
//! settings operators rely on are there, and every setting the binaries read from the
//! environment is explained in the example file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use teefleet_lab::{procs, systemd};

const UNITS: [(&str, &str); 2] =
    [("fleet-agent.service", "fleet-agent"), ("fleet-controller.service", "fleet-controller")];

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The values of `key=` in a unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

/// A systemd time span as the units write them: `30s`, `2min` or bare seconds.
fn seconds(value: &str) -> Duration {
    let secs = match value.strip_suffix("min") {
        Some(m) => m.parse::<u64>().map(|m| m * 60),
        None => value.trim_end_matches('s').parse::<u64>(),
    };
    Duration::from_secs(secs.unwrap_or_else(|e| panic!("time span {value}: {e}")))
}

#[test]
fn units_verify_and_score_at_most_3() {
    if !systemd::analyze_available() {
        eprintln!("SKIPPED units_verify_and_score_at_most_3: systemd-analyze is missing, the units are not checked");
        return;
    }
    // verify checks that ExecStart= exists: a copy points at the binaries just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut copies = Vec::new();
    for (unit, bin) in UNITS {
        let text = read(&deploy(&format!("systemd/{unit}")));
        let exec = format!("ExecStart=/usr/bin/{bin}\n");
        assert_eq!(text.matches(&exec).count(), 1, "{unit} runs {exec}");
        let built = procs::binary(bin).unwrap_or_else(|e| panic!("{e}"));
        let copy = dir.path().join(unit);
        std::fs::write(&copy, text.replace(&exec, &format!("ExecStart={}\n", built.display()))).expect("write");
        copies.push(copy);
    }
    let paths: Vec<&Path> = copies.iter().map(PathBuf::as_path).collect();
    systemd::verify(&paths).unwrap_or_else(|e| panic!("{e}"));
    for (unit, _) in UNITS {
        let score = systemd::exposure(&deploy(&format!("systemd/{unit}"))).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{unit}: overall exposure {score}");
        assert!(score <= systemd::MAX_EXPOSURE, "{unit} scores {score}, above {}", systemd::MAX_EXPOSURE);
    }
}

#[test]
fn a_misspelt_setting_fails_verify() {
    if !systemd::analyze_available() {
        eprintln!("SKIPPED a_misspelt_setting_fails_verify: systemd-analyze is missing");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("fleet-agent.service");
    let text = read(&deploy("systemd/fleet-agent.service"))
        .replace("ExecStart=/usr/bin/fleet-agent", "ExecStart=/bin/true")
        .replace("Type=notify", "Type=notfy");
    std::fs::write(&unit, text).expect("write");
    let err = systemd::verify(&[&unit]).expect_err("verify must see the bad Type=");
    assert!(err.to_string().contains("service type"), "{err}");
}

#[test]
fn units_have_what_operators_rely_on() {
    let agent = read(&deploy("systemd/fleet-agent.service"));
    let controller = read(&deploy("systemd/fleet-controller.service"));
    for (name, unit, env) in
        [("agent", &agent, "/etc/teefleet/agent.env"), ("controller", &controller, "/etc/teefleet/controller.env")]
    {
        assert_eq!(values(unit, "Type"), ["notify"], "{name}");
        assert_eq!(values(unit, "RestartPreventExitStatus"), ["64"], "{name}: exit 64 is a configuration error");
        assert_eq!(values(unit, "ConditionPathExists"), [env], "{name}: never runs unconfigured");
        assert_eq!(values(unit, "EnvironmentFile"), [env], "{name}");
        assert_eq!(values(unit, "NoNewPrivileges"), ["yes"], "{name}");
    }
    let stop = seconds(values(&agent, "TimeoutStopSec")[0]);
    assert!(stop > teefleet_agent::SHUTDOWN_GRACE, "agent TimeoutStopSec {stop:?} must exceed its grace");
    let start = seconds(values(&agent, "TimeoutStartSec")[0]);
    assert!(start > teefleet_agent::notify::READY_WAIT, "agent TimeoutStartSec {start:?} must exceed READY_WAIT");
    assert_eq!(values(&agent, "CapabilityBoundingSet"), ["CAP_NET_ADMIN CAP_NET_RAW"]);
    assert_eq!(values(&agent, "StateDirectory"), ["teefleet"]);
    assert_eq!(values(&agent, "Environment"), ["FLEET_STATE_DIR=/var/lib/teefleet"]);

    assert_eq!(values(&controller, "User"), ["teefleet"]);
    assert_eq!(values(&controller, "CapabilityBoundingSet"), [""]);
    let files: u64 = values(&controller, "LimitNOFILE")[0].parse().expect("LimitNOFILE");
    // One descriptor per agent stream, the 256 the controller keeps, and the default
    // --max-connections of 50 000 must fit.
    assert!(files >= 50_000 + 256, "LimitNOFILE={files}");
}

/// `FLEET_*` (and other) variables `BIN --help` says it reads.
fn env_vars(bin: &str) -> BTreeSet<String> {
    let path = procs::binary(bin).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(&path).arg("--help").output().expect("--help");
    assert!(out.status.success(), "{bin} --help: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("[env: ").skip(1).filter_map(|rest| rest.split(['=', ']']).next()).map(str::to_owned).collect()
}

#[test]
fn env_examples_explain_every_setting() {
    for (bin, example) in [("fleet-agent", "env/agent.env.example"), ("fleet-controller", "env/controller.env.example")]
    {
        let text = read(&deploy(example));
        let vars = env_vars(bin);
        assert!(vars.len() >= 8, "{bin} --help lists {vars:?}");
        for var in &vars {
            let line = format!("#{var}=");
            let at = text.lines().position(|l| l.starts_with(&line) || l.starts_with(&line[1..]));
            let at = at.unwrap_or_else(|| panic!("{example} does not set {var}"));
            // Each setting (or group of settings) comes after a comment that explains it.
            let lines: Vec<&str> = text.lines().collect();
            let explained = lines[..at]
                .iter()
                .rev()
                .find(|l| !(l.starts_with('#') && !l.starts_with("# ") && l.contains('=')))
                .is_some_and(|l| l.starts_with("# "));
            assert!(explained, "{example}: {var} has no explanation above it");
        }
    }
}
