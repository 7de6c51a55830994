#!/bin/bash
# systemctl for bootstrap.sh's test chroot, where systemd is not PID 1: `start`/`restart`
# run the unit's ExecStart in the background with its Environment= and EnvironmentFile (as
# systemd would, honouring ConditionPathExists and creating its StateDirectory), `stop` kills it, `is-active`/`is-failed` look at the
# process. Every call is logged, so the test can check what was asked and that no secret
# was on a command line.
echo "systemctl $*" >>/var/log/systemctl-shim.log
now=no
args=()
for a in "$@"; do
  case "$a" in
    --now) now=yes ;;
    -*) ;;
    *) args+=("$a") ;;
  esac
done
verb=${args[0]:-}
unit=${args[1]:-}
pidfile=/run/shim-$unit.pid

unit_file() {
  local d
  for d in /etc/systemd/system /lib/systemd/system; do
    [[ -f "$d/$unit" ]] && { echo "$d/$unit"; return 0; }
  done
  return 1
}
alive() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
stop() {
  if alive; then
    kill "$(cat "$pidfile")"
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive || break; sleep 0.2; done
  fi
  rm -f "$pidfile"
}
start() {
  local file exec envfile condition state mode environment
  file=$(unit_file) || { echo "Unit $unit not found." >&2; exit 5; }
  exec=$(sed -n 's/^ExecStart=//p' "$file")
  envfile=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$file")
  condition=$(sed -n 's/^ConditionPathExists=//p' "$file")
  state=$(sed -n 's/^StateDirectory=//p' "$file")
  mode=$(sed -n 's/^StateDirectoryMode=//p' "$file")
  mapfile -t environment < <(sed -n 's/^Environment=//p' "$file")
  if [[ -n "$condition" && ! -e "$condition" ]]; then return 0; fi
  if [[ -n "$state" ]]; then install -d -m "${mode:-0755}" "/var/lib/$state"; fi
  (
    # A service starts with no descriptor of its caller's, as under systemd: the agent must
    # not hold bootstrap.sh's run lock (fd 9) after the script is gone.
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    # EnvironmentFile= wins over Environment=, as in systemd.
    for assignment in "${environment[@]+"${environment[@]}"}"; do export "${assignment?}"; done
    set -a
    # shellcheck disable=SC1090
    [[ -n "$envfile" && -f "$envfile" ]] && . "$envfile"
    set +a
    read -ra argv <<<"$exec"
    exec setsid "${argv[@]}" </dev/null >>"/var/log/$unit.log" 2>&1
  ) &
  echo $! >"$pidfile"
}

case "$verb" in
  daemon-reload) ;;
  enable) mkdir -p /etc/systemd/system/multi-user.target.wants && touch "/etc/systemd/system/multi-user.target.wants/$unit" ;;
  disable)
    rm -f "/etc/systemd/system/multi-user.target.wants/$unit"
    if [[ "$now" == yes ]]; then stop; fi
    ;;
  start) alive || start ;;
  restart) stop; start ;;
  stop) stop ;;
  is-active) alive ;;
  is-failed) [[ -f "$pidfile" ]] && ! alive ;;
  *) echo "systemctl shim: $verb not supported" >&2; exit 1 ;;
esac
