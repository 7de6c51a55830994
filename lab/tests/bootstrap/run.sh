#!/usr/bin/env bash
# Runs deploy/bootstrap.sh for real, as root, in throwaway copy-on-write roots: a private
# mount namespace, an overlay over / (this machine's Debian) with its upper layer in a temp
# dir, and a chroot into it. Packages are built here (a stub fleet-agent, an ELF wrapper
# around stub-agent.sh, in a .deb made by dpkg-deb and a tarball laid out as scripts/package
# makes them) and served over HTTP on 127.0.0.1. systemd is not PID 1 here, so the chroot's
# systemctl is systemctl-shim.sh: it runs the unit's ExecStart with its EnvironmentFile in
# the background. Every run is traced (strace, execve) so the join token can be looked for
# in every command line. Driven by lab/tests/bootstrap.rs; exit 77 means skipped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
skip() {
  echo "SKIP bootstrap test: $*" >&2
  exit 77
}

if [[ "${1:-}" != --inside ]]; then
  [[ $EUID -eq 0 ]] || skip "needs root (mount namespace, overlayfs, chroot)"
  for tool in unshare chroot dpkg-deb cc python3 curl strace setsid; do
    command -v "$tool" >/dev/null || skip "$tool is missing (scripts/setup installs it)"
  done
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || skip "overlayfs is not available"
  # The roots are copies of this machine's: an agent installed here would be in all of them.
  [[ ! -e /etc/teefleet && ! -e /usr/bin/fleet-agent && ! -e /usr/local/bin/fleet-agent ]] ||
    skip "this machine has teefleet installed; the copy-on-write roots would not start clean"
  exec unshare --mount --propagation private "$0" --inside
fi

TOKEN="tf1-SECRET-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PIN="sha256:$(printf 'pin' | sha256sum | cut -d' ' -f1)"
readonly TOKEN PIN
work=$(mktemp -d "${TMPDIR:-/tmp}/bootstrap-test.XXXXXX")
failures=0
pids=()
roots=()

finish() {
  local root pidfile
  for root in "${roots[@]+"${roots[@]}"}"; do
    for pidfile in "$root"/merged/run/shim-*.pid; do
      [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null
    done
  done
  for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for root in "${roots[@]+"${roots[@]}"}"; do
    umount -R "$root/merged" 2>/dev/null || umount -lR "$root/merged" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap finish EXIT

ok() { echo "ok   $*"; }
fail() {
  echo "FAIL $*" >&2
  failures=$((failures + 1))
}
expect() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- packages ---------------------------------------------------------------------------
cat >"$work/wrapper.c" <<'C'
#include <unistd.h>
/* An ELF fleet-agent for bootstrap.sh's architecture check; runs the stub script. */
int main(int argc, char **argv) {
  char *args[argc + 2];
  args[0] = "bash";
  args[1] = "/opt/teefleet-stub/agent.sh";
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  args[argc + 1] = 0;
  execv("/bin/bash", args);
  return 127;
}
C
cc -O -o "$work/fleet-agent" "$work/wrapper.c"

unit() {
  cat <<UNIT
[Unit]
Description=teefleet agent (test stub)
ConditionPathExists=/etc/teefleet/agent.env

[Service]
Type=notify
EnvironmentFile=/etc/teefleet/agent.env
Environment=FLEET_STATE_DIR=/var/lib/teefleet
ExecStart=/usr/bin/fleet-agent
RestartPreventExitStatus=64

[Install]
WantedBy=multi-user.target
UNIT
}

# deb VERSION ARCH OUT: a fleet-agent .deb with the contract's layout.
deb() {
  local version=$1 arch=$2 out=$3 root
  root=$(mktemp -d "$work/deb.XXXXXX")
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/teefleet" "$root/usr/share/teefleet"
  install -m 0755 "$work/fleet-agent" "$root/usr/bin/fleet-agent"
  unit >"$root/lib/systemd/system/fleet-agent.service"
  echo "# FLEET_CONTROLLER=https://controller.internal:7300" >"$root/etc/teefleet/agent.env.example"
  install -m 0755 "$repo/deploy/bootstrap.sh" "$root/usr/share/teefleet/bootstrap.sh"
  cat >"$root/DEBIAN/control" <<CONTROL
Package: fleet-agent
Version: $version
Architecture: $arch
Maintainer: teefleet tests <tests@teefleet.invalid>
Description: teefleet agent (bootstrap.sh test stub)
CONTROL
  echo /etc/teefleet/agent.env.example >"$root/DEBIAN/conffiles"
  printf '#!/bin/sh\nset -e\nsystemctl daemon-reload\nsystemctl enable fleet-agent.service\n' >"$root/DEBIAN/postinst"
  chmod 0755 "$root/DEBIAN/postinst"
  dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
}

release=$work/release
badarch=$work/release-badarch
mkdir -p "$release" "$badarch"
deb 0.1.0 amd64 "$release/fleet-agent_0.1.0_amd64.deb"
deb 0.2.0 amd64 "$release/fleet-agent_0.2.0_amd64.deb"
deb 0.1.0 arm64 "$badarch/fleet-agent_0.1.0_amd64.deb"
mkdir -p "$work/tar/fleet-agent-0.1.0"
install -m 0755 "$work/fleet-agent" "$work/tar/fleet-agent-0.1.0/fleet-agent"
unit >"$work/tar/fleet-agent-0.1.0/fleet-agent.service"
echo "# example" >"$work/tar/fleet-agent-0.1.0/agent.env.example"
install -m 0755 "$repo/deploy/bootstrap.sh" "$work/tar/fleet-agent-0.1.0/bootstrap.sh"
tar -czf "$release/fleet-agent-0.1.0-x86_64-linux.tar.gz" -C "$work/tar" fleet-agent-0.1.0
sha() { sha256sum "$1" | cut -d' ' -f1; }
DEB1=$(sha "$release/fleet-agent_0.1.0_amd64.deb")
DEB2=$(sha "$release/fleet-agent_0.2.0_amd64.deb")
BADARCH=$(sha "$badarch/fleet-agent_0.1.0_amd64.deb")
TARBALL=$(sha "$release/fleet-agent-0.1.0-x86_64-linux.tar.gz")

# serve DIR PORT: an HTTP server for the release directory.
serve() {
  python3 -m http.server --bind 127.0.0.1 --directory "$1" "$2" >>"$work/http-$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$2/" && return 0
    sleep 0.1
  done
  echo "http server on $2 did not start" >&2
  exit 1
}

# --- roots --------------------------------------------------------------------------------
# new_root NAME: a copy-on-write root of this machine with the shims and the script in it,
# in $R.
new_root() {
  local r=$work/$1
  mkdir -p "$r/upper" "$r/work" "$r/merged"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$r/upper,workdir=$r/work" "$r/merged"
  roots+=("$r")
  mount -t proc proc "$r/merged/proc"
  mount --rbind /dev "$r/merged/dev"
  install -m 0755 "$here/systemctl-shim.sh" "$r/merged/usr/bin/systemctl"
  printf '#!/bin/sh\n# journalctl -u UNIT -n N: the shim keeps each unit'"'"'s output in /var/log/UNIT.log\ntail -n 30 /var/log/fleet-agent.service.log 2>/dev/null\n' >"$r/merged/usr/bin/journalctl"
  chmod 0755 "$r/merged/usr/bin/journalctl"
  install -d "$r/merged/opt/teefleet-stub"
  install -m 0755 "$here/stub-agent.sh" "$r/merged/opt/teefleet-stub/agent.sh"
  install -m 0755 "$repo/deploy/bootstrap.sh" "$r/merged/root/bootstrap.sh"
  rm -f "$r/merged/var/log/stub-agent-calls"
  R=$r
}

# run NAME ROOT ARGS... with the variables in ENV_LINES (one export each, as user-data
# writes them): runs bootstrap.sh under strace in ROOT; sets $rc and $out.
run() {
  local name=$1 r=$2 pid
  shift 2
  printf '%s\n' "${ENV_LINES[@]+"${ENV_LINES[@]}"}" >"$r/merged/root/user-env"
  rm -f "$r/merged/run/bootstrap.rc"
  out=$work/$name.out
  # The variables are sourced from a file, as user-data sets them, so no command line
  # carries them; strace follows every process bootstrap.sh starts, and is detached once
  # the script has exited (the agent it started keeps running, untraced). A background job
  # inherits SIGTERM ignored, and strace would keep it so: --default-signal gives it back;
  # strace with -o blocks fatal signals unless -I 1.
  env -i --default-signal=TERM PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    chroot "$r/merged" strace -I 1 -f -qq -e trace=execve -s 8192 -o "/var/log/execve-$name.log" \
    /bin/bash -c '. /root/user-env; /root/bootstrap.sh "$@"; echo $? >/run/bootstrap.rc' bootstrap "$@" \
    >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1200); do
    [[ -s "$r/merged/run/bootstrap.rc" ]] && break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rc=$(cat "$r/merged/run/bootstrap.rc" 2>/dev/null || echo timeout)
  sed "s/^/    [$name] /" "$out"
}

has() { grep -qF -- "$2" "$1"; }
hasnt() { ! grep -qF -- "$2" "$1"; }
absent() { [[ ! -e "$1" && ! -L "$1" ]]; }
# Nothing bootstrap.sh made temporarily is left: no temp dir, no half-written env file.
no_temps() {
  local r=$1
  [[ -z "$(find "$r/upper/tmp" -mindepth 1 -maxdepth 1 2>/dev/null)" ]] &&
    [[ -z "$(find "$r/upper/etc/teefleet" "$r/upper/usr/local/bin" "$r/upper/etc/systemd/system" -maxdepth 1 \
      \( -name '*.new' -o -name 'agent.env.??????' -o -name 'bootstrap.env.??????' \) 2>/dev/null)" ]]
}
mode_of() { stat -c %a "$1"; }
readyz() { curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz" || true; }
# shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
dpkg_status() { chroot "$1/merged" dpkg-query -W -f='${Status} ${Version}' fleet-agent 2>/dev/null || true; }

port=$(free_port)
url="http://127.0.0.1:$port"

# --- 1. Debian: the server starts late, token join, then re-run, upgrade, uninstall -------
echo "== deb install while the package server is still down (connection refused first)"
new_root deb
A=$R
listenA="127.0.0.1:$(free_port)"
ENV_LINES=(
  "export FLEET_CONTROLLER='https://controller-a.internal:7300,https://controller-b.internal:7300'"
  "export FLEET_CA_PIN='$PIN'"
  "export FLEET_JOIN_TOKEN='$TOKEN'"
  "export FLEET_RELEASE_URL='$url'"
  "export FLEET_VERSION='0.1.0'"
  "export FLEET_DEB_SHA256='$DEB1'"
  "export FLEET_IPTABLES_BACKEND='nft'"
  "export FLEET_METRICS_LISTEN='$listenA'"
  "export FLEET_READY_TIMEOUT='30s'"
)
started=$(date +%s%N)
(sleep 3 && serve "$release" "$port" && date +%s%N >"$work/server-up") &
late=$!
run deb-install "$A"
wait "$late"
mapfile -t -O "${#pids[@]}" pids < <(pgrep -f "http.server --bind 127.0.0.1 --directory $release $port")
expect "install succeeds once the server answers (rc $rc)" [ "$rc" = 0 ]
late_ms=$((($(cat "$work/server-up") - started) / 1000000))
expect "the server came up ${late_ms} ms after the script started (connections refused until then)" [ "$late_ms" -ge 2500 ]
expect "and then served the package" has "$work/http-$port.log" "GET /fleet-agent_0.1.0_amd64.deb"
expect "says the agent is ready" has "$out" "fleet-agent 0.1.0 is ready"
expect "the .deb is installed" [ "$(dpkg_status "$A")" = "install ok installed 0.1.0" ]
expect "the agent answers /readyz" [ "$(readyz "$listenA")" = 200 ]
expect "agent.env is 0600" [ "$(mode_of "$A/merged/etc/teefleet/agent.env")" = 600 ]
expect "agent.env carries the token to the agent" has "$A/merged/etc/teefleet/agent.env" "FLEET_JOIN_TOKEN=$TOKEN"
expect "agent.env has the join method token" has "$A/merged/etc/teefleet/agent.env" "FLEET_JOIN_METHOD=token"
expect "agent.env has the pin" has "$A/merged/etc/teefleet/agent.env" "FLEET_CA_PIN=$PIN"
expect "bootstrap.env keeps the release settings" has "$A/merged/etc/teefleet/bootstrap.env" "FLEET_DEB_SHA256=$DEB1"
expect "the agent got the token from its env file" has "$A/merged/var/log/stub-agent-calls" "run args=[] method=token token=present backend=nft"
expect "no temporary files left" no_temps "$A"
cp "$A/merged/etc/teefleet/agent.env" "$work/agent.env.first"

echo "== re-run of the copy the package left, with no environment"
ENV_LINES=()
run deb-rerun "$A" # /root/bootstrap.sh is the same script as /usr/share/teefleet/bootstrap.sh
expect "re-run succeeds (rc $rc)" [ "$rc" = 0 ]
expect "re-run keeps the installed package" has "$out" "fleet-agent 0.1.0 is installed; keeping it"
expect "re-run keeps agent.env as it was" cmp -s "$work/agent.env.first" "$A/merged/etc/teefleet/agent.env"
expect "the agent was restarted with the same settings" \
  [ "$(grep -c 'run args=\[\] method=token token=present backend=nft' "$A/merged/var/log/stub-agent-calls")" = 2 ]

echo "== upgrade: only the new version and its checksum are given"
ENV_LINES=("export FLEET_VERSION=0.2.0" "export FLEET_DEB_SHA256=$DEB2")
run deb-upgrade "$A"
expect "upgrade succeeds (rc $rc)" [ "$rc" = 0 ]
expect "0.2.0 is installed" [ "$(dpkg_status "$A")" = "install ok installed 0.2.0" ]
expect "the upgrade keeps the controller, pin and token" \
  cmp -s <(grep -v -e '^#' "$work/agent.env.first") <(grep -v -e '^#' "$A/merged/etc/teefleet/agent.env")
expect "bootstrap.env records the new version" has "$A/merged/etc/teefleet/bootstrap.env" "FLEET_INSTALLED_VERSION=0.2.0"
expect "no temporary files left" no_temps "$A"

echo "== uninstall"
mkdir -p "$A/merged/var/lib/teefleet" && echo key >"$A/merged/var/lib/teefleet/agent.key"
ENV_LINES=()
run deb-uninstall "$A" uninstall
expect "uninstall succeeds (rc $rc)" [ "$rc" = 0 ]
expect "leave was called with the saved controller and pin, without the token" has "$A/merged/var/log/stub-agent-calls" \
  "leave args=[leave --state-dir /var/lib/teefleet] controller=https://controller-a.internal:7300,https://controller-b.internal:7300 pin=$PIN token=absent"
expect "cleanup used the configured backend" has "$A/merged/var/log/stub-agent-calls" \
  "cleanup args=[cleanup --iptables-backend nft --state-dir /var/lib/teefleet]"
expect "says the host was revoked" has "$out" "host revoked by the controller"
expect "the package is purged" [ -z "$(dpkg_status "$A")" ]
for path in /usr/bin/fleet-agent /lib/systemd/system/fleet-agent.service /etc/teefleet /var/lib/teefleet \
  /usr/share/teefleet /etc/systemd/system/multi-user.target.wants/fleet-agent.service; do
  expect "$path is gone" absent "$A/merged$path"
done
expect "the agent is stopped" [ "$(readyz "$listenA")" = 000 ]

# --- 2. refusals: bad checksum, wrong architecture, bad input, not ready -----------------
base=(
  "export FLEET_CONTROLLER=https://controller.internal:7300"
  "export FLEET_CA_PIN=$PIN"
  "export FLEET_JOIN_TOKEN=$TOKEN"
  "export FLEET_RELEASE_URL=$url"
  "export FLEET_VERSION=0.1.0"
)
echo "== wrong checksum"
new_root refusals
B=$R
ENV_LINES=("${base[@]}" "export FLEET_DEB_SHA256=$(printf '0%.0s' $(seq 64))")
run bad-sha "$B"
expect "a wrong checksum fails (rc $rc)" [ "$rc" = 1 ]
expect "and says so" has "$out" "expected 0000000000000000000000000000000000000000000000000000000000000000; not installing it"
expect "nothing is installed" [ -z "$(dpkg_status "$B")" ]
expect "no configuration is written" absent "$B/merged/etc/teefleet/agent.env"
expect "no temporary files left" no_temps "$B"

echo "== wrong architecture"
port2=$(free_port)
serve "$badarch" "$port2"
ENV_LINES=("${base[@]}" "export FLEET_RELEASE_URL=http://127.0.0.1:$port2" "export FLEET_DEB_SHA256=$BADARCH")
run bad-arch "$B"
expect "a package for another architecture fails (rc $rc)" [ "$rc" = 1 ]
expect "and says which" has "$out" "is built for arm64 but this host is $(uname -m)"
expect "nothing is installed" [ -z "$(dpkg_status "$B")" ]
expect "no temporary files left" no_temps "$B"

echo "== a URL with a quote in it"
ENV_LINES=("${base[@]}" "export FLEET_DEB_SHA256=$DEB1" "export FLEET_CONTROLLER=\"https://c.internal:7300'x\"")
run bad-url "$B"
expect "is refused before anything is downloaded (rc $rc)" [ "$rc" = 1 ]
expect "naming the variable" has "$out" "FLEET_CONTROLLER is not https:// URLs"
ENV_LINES=("${base[@]}" "export FLEET_DEB_SHA256=$DEB1" "export FLEET_JOIN_TOKEN='$TOKEN x'")
run bad-token "$B"
expect "a token with a space is refused (rc $rc)" [ "$rc" = 1 ]
expect "without showing it" has "$out" "FLEET_JOIN_TOKEN is not a join token"

echo "== the agent never becomes ready"
listenB="127.0.0.1:$(free_port)"
ENV_LINES=("${base[@]}" "export FLEET_DEB_SHA256=$DEB1" "export FLEET_CONTROLLER=https://never-ready.internal:7300"
  "export FLEET_READY_TIMEOUT=3s" "export FLEET_METRICS_LISTEN=$listenB")
start=$(date +%s)
run not-ready "$B"
took=$(($(date +%s) - start))
expect "a readiness timeout fails (rc $rc)" [ "$rc" = 1 ]
expect "with the reason" has "$out" "fleet-agent was not ready within 3s; last answer from http://$listenB/readyz: not ready: waiting for the first rule set"
expect "and the agent's last log lines" has "$out" "last lines of journalctl -u fleet-agent.service:"
expect "within the timeout and a little (${took}s)" [ "$took" -lt 15 ]
expect "no temporary files left" no_temps "$B"

# --- 3. elsewhere: the tarball, instance identity, uninstall with an unreachable controller
echo "== tarball on a distribution that is not Debian (instance identity, no token)"
new_root tarball
C=$R
printf 'NAME="Amazon Linux"\nID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2023"\n' >"$C/merged/etc/os-release"
listenC="127.0.0.1:$(free_port)"
ENV_LINES=(
  "export FLEET_CONTROLLER=https://unreachable.internal:7300"
  "export FLEET_CA_PIN=$PIN"
  "export FLEET_RELEASE_URL=$url"
  "export FLEET_VERSION=0.1.0"
  "export FLEET_DEB_SHA256=$DEB1"
  "export FLEET_TARBALL_SHA256=$TARBALL"
  "export FLEET_METRICS_LISTEN=$listenC"
)
run tar-install "$C"
expect "tarball install succeeds (rc $rc)" [ "$rc" = 0 ]
expect "the binary is in /usr/local/bin" [ -x "$C/merged/usr/local/bin/fleet-agent" ]
expect "the unit's ExecStart names it" has "$C/merged/etc/systemd/system/fleet-agent.service" "ExecStart=/usr/local/bin/fleet-agent"
expect "the .deb was not used" [ -z "$(dpkg_status "$C")" ]
expect "instance identity is the default without a token" has "$C/merged/etc/teefleet/agent.env" "FLEET_JOIN_METHOD=instance-identity"
expect "no token is saved" hasnt "$C/merged/etc/teefleet/agent.env" "FLEET_JOIN_TOKEN"
expect "the agent answers /readyz" [ "$(readyz "$listenC")" = 200 ]
expect "no temporary files left" no_temps "$C"
ENV_LINES=()
run tar-uninstall "$C" uninstall
expect "uninstall succeeds with the controller unreachable (rc $rc)" [ "$rc" = 0 ]
expect "and warns that the host stays enrolled" has "$out" "warning: the controller could not be reached"
expect "cleanup used the default backend" has "$C/merged/var/log/stub-agent-calls" \
  "cleanup args=[cleanup --iptables-backend auto --state-dir /var/lib/teefleet]"
for path in /usr/local/bin/fleet-agent /etc/systemd/system/fleet-agent.service /etc/teefleet /usr/local/share/teefleet; do
  expect "$path is gone" absent "$C/merged$path"
done

# --- 4. the token never shows ------------------------------------------------------------
echo "== the join token is never printed nor on a command line"
expect "the trace follows the script's children (dpkg-deb's command line is in it)" \
  has "$A/merged/var/log/execve-deb-install.log" '["dpkg-deb", "--field"'
for f in "$work"/*.out; do
  expect "not in $(basename "$f")" hasnt "$f" "$TOKEN"
done
for r in "${roots[@]}"; do
  for f in "$r"/merged/var/log/execve-*.log; do
    expect "not in any command line of $(basename "$f") ($(grep -c execve "$f") execs traced)" hasnt "$f" "$TOKEN"
  done
  for f in "$r/merged/var/log/systemctl-shim.log" "$r/merged/var/log/fleet-agent.service.log"; do
    [[ -f "$f" ]] && expect "not in $(basename "$f")" hasnt "$f" "$TOKEN"
  done
done

if ((failures)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all bootstrap checks passed"
