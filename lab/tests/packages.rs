//! The packages as an operator gets them. `scripts/package --profile dev` writes both .deb
//! files, the tarballs and SHA256SUMS; the .deb files are installed, removed and purged
//! with dpkg in a throwaway copy-on-write root: an overlay over `/` whose upper layer is a
//! temporary directory, mounted in a private mount and network namespace and entered with
//! chroot, so the machine's own files, users and iptables are never touched.
//!
//! A `systemctl` stand-in (first in PATH inside the root) logs every call and runs only the
//! offline ones (`--root=`), with `/run/systemd/system` present so the maintainer scripts
//! behave as on a booted host: what they ask systemd to do is then in the log.

use std::path::{Path, PathBuf};
use std::process::Command;

use teefleet_lab::{procs, require_root_or_skip, systemd};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Mounts the overlay (upper, work, merged root, package directory as $1..$4), then runs
/// the commands given as $5 in the chroot.
const IN_ROOT: &str = r#"
set -euo pipefail
upper=$1 work=$2 root=$3 pkg=$4
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mkdir -p "$root/run/systemd/system" "$root/pkg" "$root/usr/local/sbin"
mount --bind "$pkg" "$root/pkg"
cat >"$root/usr/local/sbin/systemctl" <<'SHIM'
#!/bin/sh
echo "$*" >>/var/log/teefleet-test-systemctl
case " $* " in *" --root="*) exec /usr/bin/systemctl "$@" ;; esac
exit 0
SHIM
chmod 755 "$root/usr/local/sbin/systemctl"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" /bin/bash -euo pipefail -c "$5"
"#;

struct Root {
    dir: tempfile::TempDir,
    packages: PathBuf,
}

impl Root {
    fn new(packages: &Path) -> Root {
        let dir = tempfile::Builder::new().prefix("teefleet-pkg-root-").tempdir().expect("tempdir");
        for sub in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Root { dir, packages: packages.to_path_buf() }
    }

    /// Runs `script` as root in the copy-on-write root; panics with its output on failure.
    fn run(&self, script: &str) -> String {
        let d = self.dir.path();
        let out = Command::new("unshare")
            .args(["--mount", "--net", "--fork", "bash", "-c", IN_ROOT, "in-root"])
            .args([d.join("upper"), d.join("work"), d.join("root"), self.packages.clone()])
            .arg(script)
            .output()
            .expect("unshare");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "in the throwaway root, `{script}` failed:\n{text}");
        text
    }

    /// A path as the root sees it, read from the upper layer (what the packages changed).
    fn changed(&self, path: &str) -> PathBuf {
        self.dir.path().join("upper").join(path.trim_start_matches('/'))
    }

    /// Whether the packages left `path` in the root (a symlink counts, wherever it points).
    fn has(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.changed(path)).is_ok()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.changed(path)).unwrap_or_default()
    }

    /// The systemctl calls logged since the last look.
    fn systemctl_calls(&self) -> Vec<String> {
        let log = self.changed("/var/log/teefleet-test-systemctl");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_owned).collect()
    }
}

fn starts_something(call: &str) -> bool {
    call.split_whitespace().any(|w| ["start", "restart", "try-restart", "reload-or-restart", "--now"].contains(&w))
}

#[test]
fn debs_install_enable_without_starting_and_purge_cleanly() {
    if !require_root_or_skip() {
        return;
    }
    if Command::new("cargo").args(["deb", "--version"]).output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED debs_install...: cargo-deb is missing (scripts/setup installs it)");
        return;
    }
    let started = std::time::Instant::now();
    let packages = procs::package_dev().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("scripts/package --profile dev took {:?}", started.elapsed());

    let agent_deb = format!("fleet-agent_{VERSION}_amd64.deb");
    let controller_deb = format!("fleet-controller_{VERSION}_amd64.deb");
    let agent_tgz = format!("fleet-agent-{VERSION}-x86_64-linux.tar.gz");
    let controller_tgz = format!("fleet-controller-{VERSION}-x86_64-linux.tar.gz");
    // SHA256SUMS covers exactly the four artifacts, and they match.
    let sums = std::fs::read_to_string(packages.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut named: Vec<&str> = sums.lines().filter_map(|l| l.split_once("  ").map(|(_, f)| f)).collect();
    named.sort_unstable();
    let mut expected = vec![agent_deb.as_str(), controller_deb.as_str(), agent_tgz.as_str(), controller_tgz.as_str()];
    expected.sort_unstable();
    assert_eq!(named, expected, "SHA256SUMS:\n{sums}");
    let check = Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(&packages).output();
    assert!(check.is_ok_and(|o| o.status.success()), "sha256sum --check failed in {}", packages.display());
    for (tgz, files) in [
        (&agent_tgz, vec!["fleet-agent", "fleet-agent.service", "agent.env.example", "bootstrap.sh"]),
        (&controller_tgz, vec!["fleet-controller", "fleetctl", "fleet-controller.service", "controller.env.example"]),
    ] {
        let list = Command::new("tar").arg("-tzf").arg(packages.join(tgz)).output().expect("tar");
        let mut listed: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_owned).collect();
        listed.sort();
        let dir = tgz.split(&format!("-{VERSION}-")).next().map(|n| format!("{n}-{VERSION}/")).unwrap_or_default();
        let mut want: Vec<String> =
            std::iter::once(dir.clone()).chain(files.iter().map(|f| format!("{dir}{f}"))).collect();
        want.sort();
        assert_eq!(listed, want, "{tgz}");
    }

    let root = Root::new(&packages);
    let installing = std::time::Instant::now();
    root.run(&format!("dpkg -i /pkg/{agent_deb} /pkg/{controller_deb}"));
    eprintln!("installing both packages took {:?}", installing.elapsed());
    for file in [
        "/usr/bin/fleet-agent",
        "/usr/bin/fleet-controller",
        "/usr/bin/fleetctl",
        "/usr/share/teefleet/bootstrap.sh",
        "/etc/teefleet/agent.env.example",
        "/etc/teefleet/controller.env.example",
        "/etc/systemd/system/multi-user.target.wants/fleet-agent.service",
        "/etc/systemd/system/multi-user.target.wants/fleet-controller.service",
    ] {
        assert!(root.has(file), "{file} after install");
    }
    // Debian 12 has merged /usr: /lib/systemd/system lands in /usr/lib/systemd/system.
    let unit_dir = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .into_iter()
        .find(|d| root.has(&format!("{d}/fleet-agent.service")))
        .expect("the agent's unit is installed");
    let user = root.read("/etc/passwd").lines().find(|l| l.starts_with("teefleet:")).map(str::to_owned);
    let user = user.expect("the controller's postinst created the teefleet user");
    assert!(user.ends_with(":/nonexistent:/usr/sbin/nologin"), "{user}");
    assert!(root.read("/etc/group").lines().any(|l| l.starts_with("teefleet:")), "teefleet group");
    let calls = root.systemctl_calls();
    assert!(calls.iter().any(|c| c.contains("daemon-reload")), "postinst reloads systemd: {calls:?}");
    assert!(!calls.iter().any(|c| starts_something(c)), "postinst must not start anything: {calls:?}");
    assert!(!root.has("/var/lib/teefleet"), "nothing ran the agent");

    // The installed units, as systemd on this host reads them.
    if systemd::analyze_available() {
        let verify = root.run(&format!(
            "systemd-analyze verify {unit_dir}/fleet-agent.service {unit_dir}/fleet-controller.service 2>&1"
        ));
        assert!(!verify.contains("fleet-"), "systemd-analyze verify of the installed units:\n{verify}");
        for unit in ["fleet-agent.service", "fleet-controller.service"] {
            let score = systemd::exposure(&root.changed(&format!("{unit_dir}/{unit}"))).expect("exposure");
            assert!(score <= systemd::MAX_EXPOSURE, "installed {unit} scores {score}");
        }
    } else {
        eprintln!("SKIPPED the installed units' systemd-analyze checks: systemd-analyze is missing");
    }

    // Removal stops the agent and removes its rules (in the root's own network namespace)
    // but keeps its state and settings; purge deletes them. The controller's user stays.
    root.run(
        "mkdir -p /var/lib/teefleet && echo saved >/var/lib/teefleet/ruleset.json && \
              echo FLEET_IPTABLES_BACKEND=legacy >/etc/teefleet/agent.env && \
              echo FLEET_DATABASE_URL=postgres://x >/etc/teefleet/controller.env",
    );
    let removed = root.run("dpkg -r fleet-agent fleet-controller 2>&1");
    assert!(removed.contains("no teefleet rules were installed") || removed.contains("cleanup"), "{removed}");
    let calls = root.systemctl_calls();
    for unit in ["fleet-agent.service", "fleet-controller.service"] {
        assert!(calls.iter().any(|c| c == &format!("stop {unit}")), "prerm stops {unit}: {calls:?}");
    }
    assert!(!root.has("/usr/bin/fleet-agent"), "binary removed");
    assert_eq!(root.read("/var/lib/teefleet/ruleset.json"), "saved\n", "removal keeps the state");
    assert!(root.has("/etc/teefleet/agent.env"), "removal keeps agent.env");
    root.run("dpkg -P fleet-agent fleet-controller");
    assert!(!root.has("/var/lib/teefleet"), "purge deletes the state");
    assert!(!root.has("/etc/teefleet"), "purge deletes the settings");
    assert!(root.read("/etc/passwd").lines().any(|l| l.starts_with("teefleet:")), "the system user stays");
}
