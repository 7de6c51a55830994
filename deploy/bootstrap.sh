#!/usr/bin/env bash
# Installs fleet-agent on a source or collector host, starts it and waits until it is ready.
# Terraform's user-data runs it at first boot (deploy/terraform/agent); it exits non-zero,
# with the reason, when the agent does not come up, so cloud-init marks the boot failed.
# The settings it was given are kept in /etc/teefleet, so the copy left on the host can be
# re-run (to repair or upgrade) without any environment.
#
#   FLEET_CONTROLLER      controller URL(s), https://, comma-separated for several (required)
#   FLEET_CA_PIN          sha256:HEX pin of the controller's CA (fleet-controller ca pin) (required)
#   FLEET_JOIN_METHOD     instance-identity (default) or token (the default when a token is set)
#   FLEET_JOIN_TOKEN      join token (fleetctl token create --role agent), with method token
#   FLEET_RELEASE_URL     the directory holding the packages (scripts/package's output)
#   FLEET_VERSION         the version to install, e.g. 0.1.0
#   FLEET_DEB_SHA256      sha256 of fleet-agent_VERSION_ARCH.deb (required on Debian/Ubuntu)
#   FLEET_TARBALL_SHA256  sha256 of fleet-agent-VERSION-ARCH-linux.tar.gz (required elsewhere)
#   optional: FLEET_IPTABLES_BACKEND (auto|nft|legacy), FLEET_HOST_ID, FLEET_IMDS_ENDPOINT,
#             FLEET_METRICS_LISTEN (127.0.0.1:9477), FLEET_READY_TIMEOUT (120s; 90s, 5m, 1h)
#
# `bootstrap.sh uninstall` revokes the host when the controller can be reached, removes the
# agent's rules with the configured backend, then the package, its credentials and state.
#
# The join token is never printed and never passed on a command line: it goes from this
# script's environment into /etc/teefleet/agent.env (0600), which systemd reads.
set -euo pipefail
umask 022

readonly CONF_DIR=/etc/teefleet
readonly AGENT_ENV=$CONF_DIR/agent.env
readonly BOOT_ENV=$CONF_DIR/bootstrap.env
readonly STATE_DIR=/var/lib/teefleet
readonly UNIT=fleet-agent.service
readonly TARBALL_UNIT=/etc/systemd/system/$UNIT
readonly TARBALL_BIN=/usr/local/bin/fleet-agent
readonly TARBALL_SHARE=/usr/local/share/teefleet
# What goes to the agent (systemd reads it) and what only this script needs again.
readonly AGENT_KEYS="FLEET_CONTROLLER FLEET_CA_PIN FLEET_JOIN_METHOD FLEET_JOIN_TOKEN FLEET_IPTABLES_BACKEND FLEET_HOST_ID FLEET_IMDS_ENDPOINT FLEET_METRICS_LISTEN"
readonly BOOT_KEYS="FLEET_RELEASE_URL FLEET_VERSION FLEET_DEB_SHA256 FLEET_TARBALL_SHA256 FLEET_READY_TIMEOUT FLEET_INSTALLED_FORMAT"

say() { printf 'teefleet-bootstrap: %s\n' "$*"; }
warn() { printf 'teefleet-bootstrap: warning: %s\n' "$*" >&2; }
die() {
  printf 'teefleet-bootstrap: error: %s\n' "$*" >&2
  exit 1
}

# Everything temporary is listed here and removed on any exit, failed or not.
temps=()
cleanup_temps() {
  local t
  for t in "${temps[@]+"${temps[@]}"}"; do
    rm -rf -- "$t"
  done
}
trap cleanup_temps EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Reads KEY=VALUE lines of a file this script wrote; a variable already set and non-empty in
# the environment wins, so user-data's values replace saved ones. The files are parsed, not
# sourced: nothing in them is ever run.
load_saved() {
  local file=$1 line key value
  [[ -r "$file" ]] || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" == FLEET_*=* ]] || continue
    key=${line%%=*}
    value=${line#*=}
    [[ "$key" =~ ^FLEET_[A-Z0-9_]+$ ]] || continue
    if [[ -z "${!key:-}" ]]; then
      printf -v "$key" '%s' "$value"
    fi
  done <"$file"
}

# Values end up in a systemd environment file unquoted, so each must be plain text: the
# checks below refuse quotes, spaces, backslashes and anything else a parser could read twice.
check() {
  local name=$1 pattern=$2 what=$3
  [[ -z "${!name:-}" || "${!name}" =~ $pattern ]] || die "$name is not $what"
}

validate() {
  # In a bracket expression ] must come first and - last to be literal.
  local url='https://[]A-Za-z0-9._~%:/@[-]+'
  check FLEET_CONTROLLER "^$url(,$url)*$" "https:// URLs (comma-separated, no spaces or quotes)"
  check FLEET_CA_PIN '^sha256:[0-9a-f]{64}$' "sha256: followed by 64 lowercase hex digits"
  check FLEET_JOIN_METHOD '^(instance-identity|token)$' "instance-identity or token"
  # The token's value is never shown, even when it is refused.
  check FLEET_JOIN_TOKEN '^[A-Za-z0-9._~+/=-]{1,512}$' "a join token (letters, digits and ._~+/=- only)"
  check FLEET_IPTABLES_BACKEND '^(auto|nft|legacy)$' "auto, nft or legacy"
  check FLEET_HOST_ID '^[A-Za-z0-9._:-]{1,128}$' "a host id (letters, digits and ._:-)"
  check FLEET_IMDS_ENDPOINT '^https?://[]A-Za-z0-9._~%:/[-]+$' "an http(s):// URL without spaces or quotes"
  check FLEET_METRICS_LISTEN '^(off|[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5})$' "ADDR:PORT or off"
  check FLEET_RELEASE_URL '^https?://[]A-Za-z0-9._~%:/@+[-]+$' "an http(s):// URL without spaces, quotes or a query"
  check FLEET_VERSION '^[0-9A-Za-z.+~-]{1,64}$' "a version such as 0.1.0"
  check FLEET_DEB_SHA256 '^[0-9a-f]{64}$' "64 lowercase hex digits"
  check FLEET_TARBALL_SHA256 '^[0-9a-f]{64}$' "64 lowercase hex digits"
  check FLEET_READY_TIMEOUT '^[0-9]+(s|m|h)?$' "a duration such as 120s, 2m or 1h"
  case "$FLEET_JOIN_METHOD" in
    token) [[ -n "${FLEET_JOIN_TOKEN:-}" ]] || die "FLEET_JOIN_METHOD=token needs FLEET_JOIN_TOKEN" ;;
    instance-identity) ;;
  esac
}

seconds() {
  local d=$1
  case "$d" in
    *h) echo $((${d%h} * 3600)) ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
  esac
}

# The Debian architecture name and the one uname and the tarball use.
host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo "amd64 x86_64" ;;
    aarch64 | arm64) echo "arm64 aarch64" ;;
    *) die "unsupported architecture $(uname -m) (fleet-agent is built for x86_64 and aarch64)" ;;
  esac
}

# deb on Debian, Ubuntu and their derivatives (with dpkg present); the tarball elsewhere.
install_format() {
  local id="" id_like="" word
  if [[ -r /etc/os-release ]]; then
    id=$(sed -n 's/^ID=//p' /etc/os-release | tr -d "\"'")
    id_like=$(sed -n 's/^ID_LIKE=//p' /etc/os-release | tr -d "\"'")
  fi
  for word in $id $id_like; do
    if [[ "$word" == debian || "$word" == ubuntu ]] && command -v dpkg >/dev/null; then
      echo deb
      return
    fi
  done
  echo tarball
}

# Retries connection refused too: at first boot the network, a proxy or the artifact server
# may come up after this script starts.
download() {
  local url=$1 out=$2
  curl --fail --silent --show-error --location --proto '=http,https' \
    --connect-timeout 10 --max-time 600 \
    --retry 10 --retry-connrefused --retry-delay 2 --retry-max-time 300 \
    --output "$out" "$url" || die "could not download $url (curl exit $?)"
}

verify_sha256() {
  local file=$1 want=$2 name=$3 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [[ "$got" == "$want" ]] || die "$name: sha256 is $got, expected $want; not installing it"
}

# e_machine of an ELF file: 3e is x86_64, b7 aarch64.
elf_arch() {
  local magic machine
  magic=$(od -An -tx1 -N4 "$1" | tr -d ' \n')
  [[ "$magic" == 7f454c46 ]] || { echo "not an ELF executable"; return; }
  machine=$(od -An -tx1 -j18 -N2 "$1" | tr -d ' \n')
  case "$machine" in
    3e00) echo x86_64 ;;
    b700) echo aarch64 ;;
    *) echo "ELF machine 0x$machine" ;;
  esac
}

installed_version() {
  case "$1" in
    deb) dpkg-query -W -f='${Status} ${Version}\n' fleet-agent 2>/dev/null | sed -n 's/^install ok installed //p' ;;
    tarball) [[ -x "$TARBALL_BIN" ]] && printf '%s\n' "${SAVED_VERSION:-}" ;;
  esac
}

install_deb() {
  local deb_arch=$1 tmp=$2 name pkg_arch
  [[ -n "${FLEET_DEB_SHA256:-}" ]] || die "FLEET_DEB_SHA256 is required to install the .deb on this host"
  name="fleet-agent_${FLEET_VERSION}_${deb_arch}.deb"
  say "downloading $name"
  download "$FLEET_RELEASE_URL/$name" "$tmp/$name"
  verify_sha256 "$tmp/$name" "$FLEET_DEB_SHA256" "$name"
  pkg_arch=$(dpkg-deb --field "$tmp/$name" Architecture)
  [[ "$pkg_arch" == "$deb_arch" || "$pkg_arch" == all ]] ||
    die "$name is built for $pkg_arch but this host is $(uname -m) ($deb_arch)"
  say "installing $name"
  export DEBIAN_FRONTEND=noninteractive
  if command -v apt-get >/dev/null; then
    # apt resolves the package's dependencies (iptables, iproute2); --force-confold keeps
    # edited files. A fresh cloud image may have no package lists yet: update once and retry.
    local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$tmp/$name")
    if ! "${apt[@]}" >"$tmp/install.log" 2>&1; then
      say "installing $name needs the package lists: apt-get update"
      { apt-get update -q && "${apt[@]}"; } >"$tmp/install.log" 2>&1 ||
        { tail -n 20 "$tmp/install.log" >&2; die "apt-get could not install $name"; }
    fi
  else
    dpkg --force-confold -i "$tmp/$name" >"$tmp/install.log" 2>&1 ||
      { tail -n 20 "$tmp/install.log" >&2; die "dpkg could not install $name"; }
  fi
}

install_tarball() {
  local arch=$1 tmp=$2 name dir got
  [[ -n "${FLEET_TARBALL_SHA256:-}" ]] || die "FLEET_TARBALL_SHA256 is required to install the tarball on this host"
  name="fleet-agent-${FLEET_VERSION}-${arch}-linux.tar.gz"
  say "downloading $name"
  download "$FLEET_RELEASE_URL/$name" "$tmp/$name"
  verify_sha256 "$tmp/$name" "$FLEET_TARBALL_SHA256" "$name"
  tar -xzf "$tmp/$name" -C "$tmp" --no-same-owner
  dir="$tmp/fleet-agent-$FLEET_VERSION"
  for f in fleet-agent fleet-agent.service bootstrap.sh; do
    [[ -f "$dir/$f" ]] || die "$name has no fleet-agent-$FLEET_VERSION/$f"
  done
  got=$(elf_arch "$dir/fleet-agent")
  [[ "$got" == "$arch" ]] || die "$name holds a fleet-agent for $got but this host is $(uname -m)"
  install_prerequisites
  say "installing $name"
  install -m 0755 "$dir/fleet-agent" "$TARBALL_BIN.new"
  mv -f "$TARBALL_BIN.new" "$TARBALL_BIN"
  install -d -m 0755 "$TARBALL_SHARE"
  install -m 0755 "$dir/bootstrap.sh" "$TARBALL_SHARE/bootstrap.sh"
  [[ -f "$dir/agent.env.example" ]] && install -m 0644 "$dir/agent.env.example" "$CONF_DIR/agent.env.example"
  # The unit names /usr/bin/fleet-agent, where the .deb puts it.
  sed "s|^ExecStart=/usr/bin/fleet-agent|ExecStart=$TARBALL_BIN|" "$dir/fleet-agent.service" >"$TARBALL_UNIT.new"
  chmod 0644 "$TARBALL_UNIT.new"
  mv -f "$TARBALL_UNIT.new" "$TARBALL_UNIT"
}

# The .deb's dependencies bring iptables; the tarball needs it from the distribution.
install_prerequisites() {
  command -v iptables-restore >/dev/null && return 0
  say "installing iptables"
  if command -v dnf >/dev/null; then
    dnf install -y -q iptables-nft iproute
  elif command -v yum >/dev/null; then
    yum install -y -q iptables iproute
  elif command -v zypper >/dev/null; then
    zypper --non-interactive install iptables iproute2
  elif command -v apk >/dev/null; then
    apk add --quiet iptables ip6tables iproute2
  else
    die "iptables-restore is missing and no known package manager can install it"
  fi
}

# Writes KEY=VALUE for each named variable that is set, atomically, 0600.
write_env() {
  local file=$1 keys=$2 key tmp
  tmp=$(mktemp "$file.XXXXXX")
  temps+=("$tmp")
  chmod 0600 "$tmp"
  {
    echo "# Written by teefleet's bootstrap.sh; re-running it keeps these settings."
    for key in $keys; do
      if [[ -n "${!key:-}" ]]; then printf '%s=%s\n' "$key" "${!key}"; fi
    done
  } >"$tmp"
  mv -f "$tmp" "$file"
}

# The address to ask for /readyz: a wildcard listen address is reached on loopback.
readyz_url() {
  local listen=$1 host port
  port=${listen##*:}
  host=${listen%:*}
  case "$host" in
    0.0.0.0 | "") host=127.0.0.1 ;;
    "[::]") host="[::1]" ;;
  esac
  echo "http://$host:$port/readyz"
}

journal_tail() {
  if command -v journalctl >/dev/null; then
    echo "last lines of journalctl -u $UNIT:" >&2
    journalctl -u "$UNIT" -n 30 --no-pager >&2 2>/dev/null || true
  fi
}

wait_ready() {
  local timeout=$1 listen=$2 deadline url answer=""
  deadline=$(($(date +%s) + timeout))
  if [[ "$listen" == off ]]; then
    # Without the local endpoint, the unit's own readiness (Type=notify) is what there is.
    say "waiting up to ${timeout}s for $UNIT to be active (FLEET_METRICS_LISTEN=off)"
    until systemctl is-active --quiet "$UNIT"; do
      (($(date +%s) < deadline)) || { journal_tail; die "$UNIT did not become active within ${timeout}s"; }
      sleep 1
    done
    return
  fi
  url=$(readyz_url "$listen")
  say "waiting up to ${timeout}s for $url"
  while true; do
    if answer=$(curl --silent --show-error --max-time 3 --write-out ' (HTTP %{http_code})' "$url" 2>&1); then
      [[ "$answer" == *"(HTTP 200)" ]] && return 0
    fi
    answer=${answer//$'\n'/ }
    if systemctl is-failed --quiet "$UNIT"; then
      journal_tail
      die "$UNIT failed before it was ready (see its log above)"
    fi
    if (($(date +%s) >= deadline)); then
      journal_tail
      die "fleet-agent was not ready within ${timeout}s; last answer from $url: ${answer:-none}"
    fi
    sleep 1
  done
}

do_install() {
  local format arches deb_arch arch timeout tmp current
  [[ $EUID -eq 0 ]] || die "run as root"
  command -v curl >/dev/null || die "curl is required"

  load_saved "$AGENT_ENV"
  load_saved "$BOOT_ENV"
  SAVED_VERSION=${FLEET_INSTALLED_VERSION:-}
  [[ -n "${FLEET_CONTROLLER:-}" ]] || die "FLEET_CONTROLLER is not set (and $AGENT_ENV does not name one)"
  [[ -n "${FLEET_CA_PIN:-}" ]] || die "FLEET_CA_PIN is not set (and $AGENT_ENV has none): use fleet-controller ca pin"
  if [[ -z "${FLEET_JOIN_METHOD:-}" ]]; then
    if [[ -n "${FLEET_JOIN_TOKEN:-}" ]]; then FLEET_JOIN_METHOD=token; else FLEET_JOIN_METHOD=instance-identity; fi
  fi
  FLEET_READY_TIMEOUT=${FLEET_READY_TIMEOUT:-120s}
  if [[ "$FLEET_JOIN_METHOD" == instance-identity && -n "${FLEET_JOIN_TOKEN:-}" ]]; then
    warn "FLEET_JOIN_TOKEN is ignored with FLEET_JOIN_METHOD=instance-identity (and not saved)"
    unset FLEET_JOIN_TOKEN
  fi
  validate
  # Children never need the token: only the env file carries it to the agent.
  export -n FLEET_JOIN_TOKEN 2>/dev/null || true

  arches=$(host_arch)
  read -r deb_arch arch <<<"$arches"
  format=$(install_format)
  current=$(installed_version "$format" || true)
  # A Debian revision (0.1.0-1) is still version 0.1.0.
  if [[ -n "$current" && "${FLEET_INSTALLED_FORMAT:-}" == "$format" ]] &&
    [[ -z "${FLEET_VERSION:-}" || "$current" == "$FLEET_VERSION" || "$current" == "$FLEET_VERSION"-* ]]; then
    say "fleet-agent $current is installed; keeping it"
  else
    [[ -n "${FLEET_RELEASE_URL:-}" ]] || die "FLEET_RELEASE_URL is not set (the directory holding the packages)"
    [[ -n "${FLEET_VERSION:-}" ]] || die "FLEET_VERSION is not set"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/teefleet-bootstrap.XXXXXX")
    temps+=("$tmp")
    install -d -m 0755 "$CONF_DIR"
    case "$format" in
      deb)
        install_deb "$deb_arch" "$tmp"
        # A unit or binary from an earlier tarball install would shadow the package's.
        rm -f -- "$TARBALL_UNIT" "$TARBALL_BIN"
        ;;
      tarball) install_tarball "$arch" "$tmp" ;;
    esac
  fi
  FLEET_INSTALLED_FORMAT=$format
  FLEET_INSTALLED_VERSION=${FLEET_VERSION:-$current}

  install -d -m 0755 "$CONF_DIR"
  write_env "$AGENT_ENV" "$AGENT_KEYS"
  write_env "$BOOT_ENV" "$BOOT_KEYS FLEET_INSTALLED_VERSION"
  say "wrote $AGENT_ENV and $BOOT_ENV (join method $FLEET_JOIN_METHOD)"

  systemctl daemon-reload
  systemctl enable --quiet "$UNIT"
  # --no-block: with Type=notify a blocking restart would wait on systemd's own timeout;
  # this script waits on /readyz with its own.
  systemctl restart --no-block "$UNIT"
  timeout=$(seconds "$FLEET_READY_TIMEOUT")
  wait_ready "$timeout" "${FLEET_METRICS_LISTEN:-127.0.0.1:9477}"
  say "fleet-agent ${FLEET_INSTALLED_VERSION:-} is ready"
}

agent_bin() {
  local b
  for b in /usr/bin/fleet-agent "$TARBALL_BIN"; do
    [[ -x "$b" ]] && { echo "$b"; return; }
  done
}

do_uninstall() {
  local bin backend rc key
  [[ $EUID -eq 0 ]] || die "run as root"
  # The saved settings, not the caller's environment, describe what is installed.
  unset FLEET_IPTABLES_BACKEND FLEET_INSTALLED_FORMAT
  load_saved "$AGENT_ENV"
  load_saved "$BOOT_ENV"
  backend=${FLEET_IPTABLES_BACKEND:-auto}
  bin=$(agent_bin || true)

  systemctl disable --now --quiet "$UNIT" 2>/dev/null || true
  if [[ -n "$bin" ]]; then
    if [[ -n "${FLEET_CONTROLLER:-}" ]]; then
      # leave reads the agent's settings from the environment, as `run` does; not the token.
      for key in $AGENT_KEYS; do
        if [[ "$key" != FLEET_JOIN_TOKEN && -n "${!key:-}" ]]; then export "${key?}"; fi
      done
      export -n FLEET_JOIN_TOKEN 2>/dev/null || true
      rc=0
      "$bin" leave --state-dir "$STATE_DIR" || rc=$?
      case $rc in
        0) say "host revoked by the controller" ;;
        69) warn "the controller could not be reached; this host stays enrolled until its certificate expires (or: fleetctl host revoke ID)" ;;
        *) warn "fleet-agent leave failed (exit $rc); revoke the host with fleetctl host revoke ID" ;;
      esac
    fi
    # If the rules cannot be removed, keep the binary so cleanup can be run again.
    "$bin" cleanup --iptables-backend "$backend" --state-dir "$STATE_DIR" ||
      die "fleet-agent cleanup --iptables-backend $backend failed; the agent is left installed so it can be re-run"
    say "removed the agent's rules (backend $backend)"
  else
    warn "no fleet-agent binary found; nothing to revoke or clean up"
  fi

  # Credentials first: whatever happens to the package, the secrets are gone.
  rm -f -- "$AGENT_ENV" "$BOOT_ENV"
  rm -rf -- "$STATE_DIR"
  if [[ "${FLEET_INSTALLED_FORMAT:-}" == deb ]] || dpkg-query -W fleet-agent >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive dpkg -P fleet-agent >/dev/null || die "dpkg -P fleet-agent failed"
  fi
  rm -f -- "$TARBALL_BIN" "$TARBALL_UNIT" "$CONF_DIR/agent.env.example"
  rm -rf -- "$TARBALL_SHARE"
  rmdir "$CONF_DIR" 2>/dev/null || true
  systemctl daemon-reload 2>/dev/null || true
  say "fleet-agent uninstalled: package, unit, credentials and state removed"
}

# One run at a time: cloud-init's and an operator's re-run would race on the package and
# the env files.
lock_run() {
  if command -v flock >/dev/null; then
    exec 9>/run/teefleet-bootstrap.lock
    flock -w 600 9 || die "another teefleet-bootstrap has been running for 10 minutes"
  fi
}

case "${1:-install}" in
  install) lock_run && do_install ;;
  uninstall) lock_run && do_uninstall ;;
  -h | --help) sed -n '2,23p' "$0" ;;
  *) die "unknown command $1 (install or uninstall)" ;;
esac
