#!/usr/bin/env bash
# Installs and starts fleet-agent on a source host. Terraform's user-data runs it at first
# boot (see terraform/agent); it is idempotent, so it can also be re-run by hand.
#
#   FLEET_CONTROLLER   controller URL the agent connects to (required; https://). With
#                      several controller replicas, all their URLs, comma-separated
#                      (https://c1:7300,https://c2:7300): the agent streams with one and
#                      moves to the next when it fails
#   FLEET_CA_PIN       sha256:HEX pin of the controller's CA (fleet-controller ca pin)
#   FLEET_JOIN_TOKEN   a short-lived join token (fleetctl token create --role agent);
#                      needed until the agent has enrolled, useless once it expires
#   FLEET_AGENT_URL    where to download the fleet-agent binary (required unless
#                      /usr/local/bin/fleet-agent already exists)
#   FLEET_AGENT_SHA256 expected sha256 of that binary (required with FLEET_AGENT_URL)
#   FLEET_HOST_ID      optional; the agent defaults to the EC2 instance id (IMDSv2)
#
# `bootstrap.sh uninstall` stops the agent and removes every rule, chain and file it made.
set -euo pipefail

if [[ "${1:-}" == uninstall ]]; then
  systemctl disable --now fleet-agent.service 2>/dev/null || true
  # Removes our chains and jumps in both families and the saved set, so nothing comes back.
  if [[ -x /usr/local/bin/fleet-agent ]]; then
    /usr/local/bin/fleet-agent cleanup --state-dir /var/lib/teefleet
  fi
  rm -f /etc/systemd/system/fleet-agent.service /etc/teefleet/agent.env /usr/local/bin/fleet-agent
  systemctl daemon-reload
  echo "bootstrap: fleet-agent uninstalled"
  exit 0
fi

: "${FLEET_CONTROLLER:?set FLEET_CONTROLLER to the controller URL (or the URLs of its replicas, comma-separated)}"
bin=/usr/local/bin/fleet-agent

install_packages() {
  if command -v iptables-restore >/dev/null; then return; fi
  if command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables iproute2
  elif command -v dnf >/dev/null; then
    dnf install -y -q iptables-nft iproute
  elif command -v yum >/dev/null; then
    yum install -y -q iptables iproute
  else
    echo "bootstrap: cannot install iptables on this distribution" >&2
    exit 1
  fi
}

install_binary() {
  if [[ -z "${FLEET_AGENT_URL:-}" ]]; then
    [[ -x "$bin" ]] || { echo "bootstrap: set FLEET_AGENT_URL or install $bin first" >&2; exit 1; }
    return
  fi
  : "${FLEET_AGENT_SHA256:?set FLEET_AGENT_SHA256 to the sha256 of the binary}"
  local tmp
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' RETURN
  curl -fsSL --retry 5 -o "$tmp" "$FLEET_AGENT_URL"
  echo "$FLEET_AGENT_SHA256  $tmp" | sha256sum -c --quiet -
  install -m 0755 "$tmp" "$bin"
}

install_packages
install_binary

install -d -m 0755 /etc/teefleet
umask 077
{
  echo "FLEET_CONTROLLER=$FLEET_CONTROLLER"
  [[ -n "${FLEET_CA_PIN:-}" ]] && echo "FLEET_CA_PIN=$FLEET_CA_PIN"
  [[ -n "${FLEET_JOIN_TOKEN:-}" ]] && echo "FLEET_JOIN_TOKEN=$FLEET_JOIN_TOKEN"
  [[ -n "${FLEET_HOST_ID:-}" ]] && echo "FLEET_HOST_ID=$FLEET_HOST_ID"
} > /etc/teefleet/agent.env.new
mv /etc/teefleet/agent.env.new /etc/teefleet/agent.env

unit_dir=/etc/systemd/system
here=$(cd "$(dirname "$0")" && pwd)
if [[ -f "$here/systemd/fleet-agent.service" ]]; then
  install -m 0644 "$here/systemd/fleet-agent.service" "$unit_dir/fleet-agent.service"
else
  # user-data carries the unit inline (see terraform/agent/user-data.sh.tftpl).
  install -m 0644 /dev/stdin "$unit_dir/fleet-agent.service" <<<"${FLEET_AGENT_UNIT:?no unit file found}"
fi
systemctl daemon-reload
systemctl enable fleet-agent.service
systemctl restart fleet-agent.service
echo "bootstrap: fleet-agent installed and started"
