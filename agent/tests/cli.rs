//! The `fleet-agent` binary's configuration errors: each exits 64 (EX_USAGE) with a
//! message naming what to fix, including the settings taken from the environment and those
//! that depend on the state directory.

mod common;

use std::process::{Command, Output};

use common::{Netns, root_or_skip};

const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Runs the agent (inside `netns` if given) with `args` and `env`, and nothing from the
/// caller's environment that could change what it does.
fn agent(netns: Option<&Netns>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = env!("CARGO_BIN_EXE_fleet-agent");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, bin]);
            c
        }
        None => Command::new(bin),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLEET_") {
            command.env_remove(key);
        }
    }
    command.args(args).args(["--host-id", "h1", "--metrics-listen", "off"]).envs(env.iter().copied());
    command.output().expect("run fleet-agent")
}

fn usage_error(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{text}");
    text
}

#[test]
fn plaintext_and_insecure_must_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_str().expect("utf-8");
    let text = usage_error(&agent(None, &["--controller", "http://127.0.0.1:1", "--state-dir", state], &[]));
    assert!(text.contains("--controller http://127.0.0.1:1 is plaintext") && text.contains("--insecure"), "{text}");
    let env = [("FLEET_CONTROLLER", "https://127.0.0.1:1"), ("FLEET_INSECURE", "true")];
    let text = usage_error(&agent(None, &["--state-dir", state], &env));
    assert!(text.contains("drop --insecure"), "{text}");
    let env = [("FLEET_CA_PIN", PIN)];
    let text =
        usage_error(&agent(None, &["--controller", "http://127.0.0.1:1", "--insecure", "--state-dir", state], &env));
    assert!(text.contains("need an https://"), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "nothing was written");
}

#[test]
fn fleet_controller_takes_a_comma_separated_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_str().expect("utf-8");
    let run = |env: &str, args: &[&str]| {
        let args = [&["--state-dir", state][..], args].concat();
        usage_error(&agent(None, &args, &[("FLEET_CONTROLLER", env)]))
    };
    // Both URLs arrive (a space after the comma is fine), and still need --insecure.
    let text = run("http://127.0.0.1:1, http://127.0.0.1:2", &[]);
    assert!(text.contains("--controller http://127.0.0.1:1,http://127.0.0.1:2 is plaintext"), "{text}");
    let text = run("https://127.0.0.1:1,http://127.0.0.1:2", &[]);
    assert!(text.contains("--controller mixes https:// and http:// URLs"), "{text}");
    let text = run("https://127.0.0.1:1,https://127.0.0.1:2,https://127.0.0.1:1/", &[]);
    assert!(text.contains("--controller lists https://127.0.0.1:1 twice"), "{text}");
    let text = run("https://127.0.0.1:1,,https://127.0.0.1:2", &[]);
    assert!(text.contains("--controller") && text.contains("\"\" is not an http(s)://HOST[:PORT] URL"), "{text}");
    // Flags replace the environment's list rather than adding to it.
    let text = run("http://127.0.0.1:1,http://127.0.0.1:2", &["--controller", "http://127.0.0.1:3"]);
    assert!(text.contains("--controller http://127.0.0.1:3 is plaintext"), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "nothing was written");
}

#[test]
fn https_needs_a_pin_or_a_saved_ca_and_a_token_or_a_certificate() {
    if !root_or_skip("https_needs_a_pin_or_a_saved_ca_and_a_token_or_a_certificate") {
        return;
    }
    // The agent applies its saved set and starts its drift loop before it looks at the
    // state directory's TLS files, so it runs in a namespace of its own.
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_str().expect("utf-8");
    let base = ["--controller", "https://127.0.0.1:1", "--state-dir", state];
    let text = usage_error(&agent(Some(&ns), &base, &[]));
    assert!(text.contains("ca.pem does not exist yet") && text.contains("--ca-pin"), "{text}");
    let text = usage_error(&agent(Some(&ns), &base, &[("FLEET_CA_PIN", PIN)]));
    assert!(text.contains("no client certificate yet") && text.contains("--join-token"), "{text}");
}

/// `fleet-agent cleanup` as the uninstall script runs it: with the agent's settings in the
/// environment or not, it removes our chain and jump and nothing else; mixed with the
/// agent's flags it is a usage error.
#[test]
fn cleanup_removes_our_chains_and_nothing_else() {
    if !root_or_skip("cleanup_removes_our_chains_and_nothing_else") {
        return;
    }
    let ns = Netns::new();
    let cleanup = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_fleet-agent"), "cleanup"]).args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLEET_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied()).output().expect("run fleet-agent cleanup")
    };
    ns.iptables("-A PREROUTING -j MARK --set-mark 7");
    let foreign = ns.foreign();
    for env in [&[][..], &[("FLEET_CONTROLLER", "https://127.0.0.1:1"), ("FLEET_HEALTH_INTERVAL", "10")]] {
        ns.iptables("-N TEEFLEET-PRE");
        ns.iptables("-I PREROUTING 1 -m comment --comment teefleet -j TEEFLEET-PRE");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().to_str().expect("utf-8");
        let output = cleanup(&["--state-dir", state], env);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(!ns.save().contains("TEEFLEET"), "{}", ns.save());
        assert_eq!(ns.foreign(), foreign);
    }
    let text = usage_error(&cleanup(&["--controller", "http://127.0.0.1:1"], &[]));
    assert!(text.contains("--controller"), "{text}");
}
