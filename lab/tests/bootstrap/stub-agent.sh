#!/bin/bash
# Stands in for fleet-agent in bootstrap.sh's test (lab/tests/bootstrap/run.sh): records how it
# was called and serves /readyz on FLEET_METRICS_LISTEN like the agent. A controller URL
# containing "never-ready" keeps /readyz at 503; one containing "unreachable" makes `leave`
# exit 69 (EX_UNAVAILABLE) as the agent does when it cannot reach the controller.
calls=/var/log/stub-agent-calls
token=absent
[[ -n "${FLEET_JOIN_TOKEN:-}" ]] && token=present
case "${1:-run}" in
  leave)
    echo "leave args=[$*] controller=${FLEET_CONTROLLER:-} pin=${FLEET_CA_PIN:-} token=$token" >>"$calls"
    [[ "${FLEET_CONTROLLER:-}" == *unreachable* ]] && exit 69
    exit 0
    ;;
  cleanup)
    echo "cleanup args=[$*]" >>"$calls"
    exit 0
    ;;
esac
echo "run args=[$*] method=${FLEET_JOIN_METHOD:-} token=$token backend=${FLEET_IPTABLES_BACKEND:-}" >>"$calls"
listen=${FLEET_METRICS_LISTEN:-127.0.0.1:9477}
status=200
[[ "${FLEET_CONTROLLER:-}" == *never-ready* ]] && status=503
exec python3 - "${listen%:*}" "${listen##*:}" "$status" <<'PY'
import http.server, sys
host, port, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = status if self.path == "/readyz" else 404
        body = b"ready\n" if code == 200 else b"not ready: waiting for the first rule set\n"
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("stub agent listening", flush=True)
http.server.HTTPServer((host, port), H).serve_forever()
PY
