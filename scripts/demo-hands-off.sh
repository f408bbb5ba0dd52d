#!/usr/bin/env bash
# The hands-off demo (README): a 3-node cluster on 127.0.0.1, 20 real `fleetlog agent` processes
# whose command writes the release into a file, a release-safety policy (`fleetlog policy set`),
# then `fleetlog deploy start` and no other command from anyone: the policy starts, bakes and
# completes the waves by itself; during the second wave's bake an alert fires (this script stands
# in for Alertmanager and posts its webhook with curl), and the policy rolls the environment back
# by itself. `fleetlog deploy why` shows the decision, `fleetlog fleet` every host back on 1.0.
#
#   scripts/demo-hands-off.sh         (AGENTS=20, BASE_PORT=7521; KEEP=1 keeps the work directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetlog-target}"
FLEETLOG="${FLEETLOG:-$CARGO_TARGET_DIR/debug/fleetlog}"
BASE_PORT="${BASE_PORT:-7521}"
AGENTS="${AGENTS:-20}"
CANARIES=2
WORK="$(mktemp -d /tmp/fleetlog-hands-off.XXXXXX)"
PIDS=()

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/prerequisites.sh" >&2; exit 1; }
done
[ -x "$FLEETLOG" ] || { echo "no $FLEETLOG: run make build (or make demo) first" >&2; exit 1; }

address() { echo "127.0.0.1:$((BASE_PORT + $1 - 1))"; }
SERVERS="http://$(address 1),http://$(address 2),http://$(address 3)"
export FLEETLOG_SERVER="http://$(address 1)"

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Shows a command a person types, then runs it.
typed() { printf '\033[2m$ fleetlog %s\033[0m\n' "$*"; "$FLEETLOG" "$@"; }

# Follows deployment $1 from node 1, printing each decision of the policy as it appears (with the
# seconds since $3, an EPOCHREALTIME), until the deployment view satisfies the Python expression
# $2 (on `view`); reads only.
cat >"$WORK/follow.py" <<'PY'
import json, sys, time, urllib.request
server, deployment, condition, since = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
counter = f"{sys.argv[5]}/printed-{deployment}"  # decisions already printed, across calls
try:
    printed = int(open(counter).read())
except FileNotFoundError:
    printed = 0
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(path):
    with opener.open(server + path, timeout=5) as answer:
        return json.load(answer)
deadline = time.time() + 120
while True:
    view = get(f"/v1/deployments/{deployment}")
    for event in get(f"/v1/deployments/{deployment}/decisions")["events"][printed:]:
        printed += 1
        data, decision = event["data"], event["data"].get("decision", {})
        observed = decision.get("observed", {})
        what = f'{event["type"]} {data.get("wave", "")}'.strip()
        if event["type"] == "wave.completed":
            what += f' (baked {decision["threshold"]["bake_seconds"]} s, {observed["converged"]} of {observed["selected"]} healthy)'
        if event["type"] == "rollback":
            what += f' to {event["release"]}: {data["reason"]}'
        print(f'  +{time.time() - since:5.1f} s  seq {event["seq"]:>4}  {what}  by {event["actor"]}', flush=True)
    open(counter, "w").write(str(printed))
    if eval(condition, {"view": view}):
        break
    if time.time() > deadline:
        sys.exit(f"gave up after 120 s waiting for: {condition}\n{json.dumps(view, indent=1)}")
    time.sleep(0.1)
PY
follow() { python3 "$WORK/follow.py" "$FLEETLOG_SERVER" "$1" "$2" "$3" "$WORK"; }

# Waits until every agent's file holds release $1 and the fleet view shows all hosts converged on
# it; says how long after $2 (an EPOCHREALTIME).
wait_fleet_on() {
  local release=$1 since=$2 started=$SECONDS
  while true; do
    local on_release converged
    on_release=$(cat "$WORK"/hosts/*/release 2>/dev/null | grep -cx "$release" || true)
    converged=$("$FLEETLOG" --output json fleet --service checkout --env prod | python3 -c '
import json, sys
view = json.load(sys.stdin)
print(sum(1 for host in view["hosts"] if host["converged"] and host["desired_release"] == sys.argv[1]))' "$release")
    if [ "$on_release" -eq "$AGENTS" ] && [ "$converged" -eq "$AGENTS" ]; then
      echo "all $AGENTS hosts run $release (their files and the fleet view) $(awk -v a="$since" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }') later"
      return 0
    fi
    if [ $((SECONDS - started)) -gt 60 ]; then
      echo "only $on_release files and $converged hosts on $release after 60 s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

say "a 3-node cluster on $(address 1), $(address 2), $(address 3)"
for id in 1 2 3; do
  "$FLEETLOG" serve --node-id "$id" --listen "$(address "$id")" --data "$WORK/node-$id" \
    2>"$WORK/node-$id.log" >/dev/null &
  PIDS+=($!)
done
for id in 1 2 3; do
  until curl -sf --noproxy '*' "http://$(address "$id")/healthz" >/dev/null; do sleep 0.1; done
done
"$FLEETLOG" cluster init --members "1=$(address 1),2=$(address 2),3=$(address 3)"

say "two releases of checkout"
"$FLEETLOG" release create --service checkout --release 1.0
"$FLEETLOG" release create --service checkout --release 1.1

say "$AGENTS agents (the first $CANARIES in the canary group), each given all three nodes; the command writes the release into a file"
mkdir -p "$WORK/hosts"
for n in $(seq -w 1 "$AGENTS"); do
  host="web-$n"
  group=main
  [ "$((10#$n))" -le "$CANARIES" ] && group=canary
  mkdir -p "$WORK/hosts/$host"
  FLEETLOG_LOG=warn "$FLEETLOG" agent --server "$SERVERS" --host "$host" --service checkout --env prod \
    --group "$group" --state-dir "$WORK/agents/$host" \
    --exec "echo \"\$FLEETLOG_RELEASE\" > '$WORK/hosts/$host/release'" \
    2>"$WORK/agent-$host.log" &
  PIDS+=($!)
done
until [ "$("$FLEETLOG" --output json fleet --service checkout --env prod | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["total"])')" -eq "$AGENTS" ]; do
  sleep 0.2
done
echo "$AGENTS hosts registered"

say "the release-safety policy of checkout/prod"
typed policy set --service checkout --env prod --bake-seconds 2 --first-wave-extra-bake-seconds 2 \
  --min-healthy 90% --max-failed 0 --alert severity=critical --on-trip rollback --auto-advance
"$FLEETLOG" policy show --service checkout --env prod

say "1.0 everywhere, hands-off too: one command, then the policy starts, bakes and completes it"
since=$EPOCHREALTIME
typed deploy start --service checkout --env prod --release 1.0 --wave all:percent=100 --id d-base
follow d-base 'view["state"] == "completed"' "$since"
wait_fleet_on 1.0 "$since"

say "1.1 in 3 waves (canary group, 50%, 100%): the last command anyone types"
since=$EPOCHREALTIME
typed deploy start --service checkout --env prod --release 1.1 --id d-new \
  --wave canary:group=canary --wave half:percent=50 --wave all:percent=100
echo "-- from here on nobody types anything: the policy moves the waves"
follow d-new 'view["waves"][1]["state"] == "started" and view["waves"][1]["hosts"]["converged"] == view["waves"][1]["hosts"]["selected"] > 0' "$since"
echo "-- wave half: every host it selected runs 1.1; it is baking"

say "an alert fires during the bake"
echo "(this script stands in for Alertmanager: curl POSTs the version-4 webhook payload that a"
echo " webhook_configs receiver pointed at /v1/alerts/alertmanager would send)"
cat >"$WORK/alert.json" <<JSON
{"version": "4", "status": "firing", "receiver": "fleetlog", "groupKey": "{}:{alertname=\"CheckoutErrors\"}",
 "truncatedAlerts": 0, "groupLabels": {"alertname": "CheckoutErrors"}, "commonLabels": {}, "commonAnnotations": {},
 "externalURL": "http://alertmanager.example:9093",
 "alerts": [{"status": "firing", "fingerprint": "c0ffee1234abcd01", "startsAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
   "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example:9090/graph",
   "labels": {"alertname": "CheckoutErrors", "service": "checkout", "env": "prod", "severity": "critical"},
   "annotations": {"summary": "checkout 5xx rate 4x the baseline"}}]}
JSON
echo "\$ curl -sS --fail-with-body -H 'content-type: application/json' -d @alert.json $FLEETLOG_SERVER/v1/alerts/alertmanager"
alerted=$EPOCHREALTIME
curl -sS --fail-with-body --noproxy '*' -H 'content-type: application/json' -d @"$WORK/alert.json" \
  "$FLEETLOG_SERVER/v1/alerts/alertmanager"
echo
follow d-new 'view["state"] == "aborted"' "$alerted"
wait_fleet_on 1.0 "$alerted"

say "why it rolled back, from the log alone"
typed deploy why d-new

say "the rollbacks of checkout/prod in the log"
"$FLEETLOG" --output json history --service checkout --env prod --type rollback | python3 -c '
import json, sys
events = [json.loads(line) for line in sys.stdin if line.strip()]
print(f"{len(events)} rollback event(s)")
for event in events:
    print("  seq %s to %s by %s: %s" % (event["seq"], event["release"], event["actor"], event["data"]["reason"]))'

say "the fleet: every host back on 1.0"
typed fleet --service checkout --env prod
