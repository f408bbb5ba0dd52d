#!/usr/bin/env bash
# The agents demo (README): a 3-node cluster on 127.0.0.1, 50 real `fleetlog agent` processes whose
# command writes the release into a file, a deployment in 3 waves, then `fleetlog rollback` (one
# event), then `fleetlog fleet` showing every host back on the old release.
#
#   scripts/demo-agents.sh            (AGENTS=50, BASE_PORT=7501; KEEP=1 keeps the work directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetlog-target}"
FLEETLOG="${FLEETLOG:-$CARGO_TARGET_DIR/debug/fleetlog}"
BASE_PORT="${BASE_PORT:-7501}"
AGENTS="${AGENTS:-50}"
WORK="$(mktemp -d /tmp/fleetlog-demo.XXXXXX)"
PIDS=()

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

# Waits until every agent's file holds release $1 and the fleet view shows all hosts converged on it.
wait_fleet_on() {
  local release=$1 started=$SECONDS start_time=$EPOCHREALTIME
  while true; do
    local on_release
    on_release=$(cat "$WORK"/hosts/*/release 2>/dev/null | grep -cx "$release" || true)
    local converged
    converged=$("$FLEETLOG" --output json fleet --service checkout --env prod | python3 -c '
import json, sys
view = json.load(sys.stdin)
print(sum(1 for host in view["hosts"] if host["converged"] and host["desired_release"] == sys.argv[1]))' "$release")
    if [ "$on_release" -eq "$AGENTS" ] && [ "$converged" -eq "$AGENTS" ]; then
      echo "all $AGENTS hosts run $release (files and fleet view) $(awk -v a="$start_time" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f ms", (b - a) * 1000 }') later"
      return 0
    fi
    if [ $((SECONDS - started)) -gt 60 ]; then
      echo "only $on_release files and $converged hosts on $release after 60 s" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# Waits until the hosts the wave selected run the deployment's release (exit code 1 on a failed
# host, 2 after 60 s).
wait_wave() {
  "$FLEETLOG" deploy wait "$1" --wave "$2" --timeout-seconds 60 --interval-ms 200
}

say "a 3-node cluster on $(address 1), $(address 2), $(address 3)"
for id in 1 2 3; do
  "$FLEETLOG" serve --node-id "$id" --listen "$(address "$id")" --data "$WORK/node-$id" \
    2>"$WORK/node-$id.log" >/dev/null &
  PIDS+=($!)
done
for id in 1 2 3; do
  until curl -sf "http://$(address "$id")/healthz" >/dev/null; do sleep 0.1; done
done
"$FLEETLOG" cluster init --members "1=$(address 1),2=$(address 2),3=$(address 3)"

say "two releases of checkout"
"$FLEETLOG" release create --service checkout --release 1.0
"$FLEETLOG" release create --service checkout --release 1.1

say "$AGENTS agents, each given all three nodes; the command writes the release into a file"
mkdir -p "$WORK/hosts"
for n in $(seq -w 1 "$AGENTS"); do
  host="web-$n"
  mkdir -p "$WORK/hosts/$host"
  FLEETLOG_LOG=warn "$FLEETLOG" agent --server "$SERVERS" --host "$host" --service checkout --env prod \
    --state-dir "$WORK/agents/$host" \
    --exec "echo \"\$FLEETLOG_RELEASE\" > '$WORK/hosts/$host/release'" \
    2>"$WORK/agent-$host.log" &
  PIDS+=($!)
done
until [ "$("$FLEETLOG" --output json fleet --service checkout --env prod | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["total"])')" -eq "$AGENTS" ]; do
  sleep 0.2
done
echo "$AGENTS hosts registered"

say "1.0 everywhere (one wave), the release to come back to"
"$FLEETLOG" deploy start --service checkout --env prod --release 1.0 --wave all:percent=100 --id d-base
"$FLEETLOG" deploy wave d-base all
wait_fleet_on 1.0
"$FLEETLOG" deploy wave d-base all --complete
"$FLEETLOG" deploy complete d-base

say "1.1 in 3 waves: canary 10%, half 50%, all 100%"
"$FLEETLOG" deploy start --service checkout --env prod --release 1.1 \
  --wave canary:percent=10 --wave half:percent=50 --wave all:percent=100 --id d-new
for wave in canary half all; do
  "$FLEETLOG" deploy wave d-new "$wave"
  wait_wave d-new "$wave"
  "$FLEETLOG" deploy wave d-new "$wave" --complete
done
"$FLEETLOG" deploy complete d-new
wait_fleet_on 1.1

say "1.1 is bad: one rollback event"
"$FLEETLOG" rollback --service checkout --env prod --reason "error rate up after 1.1"
wait_fleet_on 1.0

say "the fleet"
"$FLEETLOG" fleet --service checkout --env prod
