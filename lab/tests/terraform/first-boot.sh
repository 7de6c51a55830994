#!/usr/bin/env bash
# An instance's first boot, as far as teefleet sees it: cloud-init runs the user-data EC2
# holds for the instance, as root, once. Here that happens in a lab host's network namespace
# (whose IMDS stand-in answers for the instance) and in a throwaway copy-on-write root of
# this machine: a private mount namespace, an overlay over / with its upper layer in WORK,
# and a chroot. systemd is not PID 1 here, so the root's systemctl is
# ../bootstrap/systemctl-shim.sh. HOSTS_LINE goes into the root's /etc/hosts: the DNS
# record an operator points at the controllers' load balancer.
#
# The script then stays until SIGTERM, when it runs `teefleet-bootstrap uninstall` in the
# root (as an operator retiring the host would) and stops what is left. What user-data and
# uninstall exited with go to WORK/user-data.rc and WORK/uninstall.rc.
#
#   ip netns exec NETNS unshare --mount --propagation private first-boot.sh WORK USER_DATA HOSTS_LINE
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$1
user_data=$2
hosts_line=$3
root=$work/root
merged=$root/merged

mkdir -p "$root/upper" "$root/work" "$merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$root/upper,workdir=$root/work" "$merged"
mount -t proc proc "$merged/proc"
mount -t sysfs sysfs "$merged/sys"
mount --rbind /dev "$merged/dev"
mount -t tmpfs tmpfs "$merged/run"
install -m 0755 "$here/../bootstrap/systemctl-shim.sh" "$merged/usr/bin/systemctl"
echo "$hosts_line" >>"$merged/etc/hosts"
install -d -m 0700 "$merged/var/lib/cloud/instance"
install -m 0700 "$user_data" "$merged/var/lib/cloud/instance/user-data.txt"

in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$merged" "$@"
}

retire() {
  local rc=0 pid
  echo "first-boot: teefleet-bootstrap uninstall"
  in_root /usr/local/sbin/teefleet-bootstrap uninstall || rc=$?
  echo "$rc" >"$work/uninstall.rc"
  pid=$(cat "$merged/run/shim-fleet-agent.service.pid" 2>/dev/null || true)
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  exit 0
}
trap retire TERM

rc=0
in_root /bin/bash /var/lib/cloud/instance/user-data.txt || rc=$?
echo "first-boot: user-data exited $rc"
echo "$rc" >"$work/user-data.rc"
# Wait for SIGTERM; `wait` returns as soon as it arrives.
while :; do
  sleep 1 &
  wait $! || true
done
