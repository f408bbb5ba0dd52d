#!/usr/bin/env bash
# Measurements of a real 3-node fleetlog cluster on this machine (127.0.0.1), each printed with
# what it measured. Nothing here is asserted: these are numbers for docs and closing notes.
#
#   benches/cluster.sh throughput        appends/s and latency with 1 and 64 clients
#   benches/cluster.sh failover [N]      leader killed (SIGKILL) -> first acknowledged write, N times
#   benches/cluster.sh learner [EVENTS]  load EVENTS events (default 1,000,000), then time a new
#                                        learner catching up; checks it serves the same chain head
#   benches/cluster.sh alert-failover [N] `fleetlog-bench alert --kill-leader`: N rounds of an
#                                        alert the policy rolls back on, the leader SIGKILLed
#                                        right after acknowledging it (and started again)
#   benches/cluster.sh up                start a cluster, print the leader's URL and keep it running
#                                        until interrupted (for `fleetlog-bench append` or perf)
#   benches/cluster.sh fanout [AGENTS] [one|all]
#                                        `fleetlog-bench fanout`: AGENTS (default 10,000) simulated
#                                        agents on node 1 (one) or spread over the 3 nodes (all),
#                                        a rollback timed to each; then etcd the same way if installed,
#                                        then the machine's loopback floor (HOSTS=N registers N hosts)
#
# Uses the debug binary `make test` builds (dependencies -O2, workspace crates -O3). Set FLEETLOG (and BENCH) to use
# others, SNAPSHOT_EVERY to change the snapshot interval (entries) the nodes run with.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetlog-target}"
FLEETLOG="${FLEETLOG:-$CARGO_TARGET_DIR/debug/fleetlog}"
# The load generators are a binary of their own, built next to fleetlog.
BENCH="${BENCH:-$(dirname "$FLEETLOG")/fleetlog-bench}"
BASE_PORT="${BASE_PORT:-7401}"
SNAPSHOT_EVERY="${SNAPSHOT_EVERY:-500000}"
WORK="$(mktemp -d /tmp/fleetlog-bench.XXXXXX)"
declare -A PIDS

address() { echo "127.0.0.1:$((BASE_PORT + $1 - 1))"; }

start_node() {
  local id=$1
  "$FLEETLOG" serve --node-id "$id" --listen "$(address "$id")" --data "$WORK/node-$id" \
    --snapshot-every "$SNAPSHOT_EVERY" 2>>"$WORK/node-$id.log" >/dev/null &
  PIDS[$id]=$!
  for _ in $(seq 1 300); do
    curl -sf "http://$(address "$id")/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "node $id did not start; log: $WORK/node-$id.log" >&2
  exit 1
}

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop_all; [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"' EXIT

wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://$(address "$1")/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "node $1 never became ready" >&2
  exit 1
}

start_cluster() {
  for id in 1 2 3; do start_node "$id"; done
  "$FLEETLOG" --server "http://$(address 1)" cluster init \
    --members "1=$(address 1),2=$(address 2),3=$(address 3)" >/dev/null
  for id in 1 2 3; do wait_ready "$id"; done
}

alert_failover() {
  start_cluster
  echo "== an alert to the policy's rollback, the leader killed right after acknowledging it ($1 rounds)"
  "$BENCH" --server "http://$(address 1),http://$(address 2),http://$(address 3)" alert --kill-leader --rounds "$1"
  # The bench started the nodes it killed again itself: stop those too.
  pkill -f -- "--data $WORK/" || true
}

leader() {
  curl -sf "http://$(address "$1")/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"] or "")'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

throughput() {
  start_cluster
  for clients in 1 64; do
    echo "== $clients client(s), single-event requests, 256-byte payloads, sent to the leader"
    "$BENCH" --server "http://$(address "$(leader 1)")" append \
      --clients "$clients" --batch 1 --payload-bytes 256 --total $((clients == 1 ? 5000 : 30000))
  done
}

failover() {
  local rounds=${1:-3}
  start_cluster
  for round in $(seq 1 "$rounds"); do
    local old
    old=$(leader 1)
    local survivor=$(( old % 3 + 1 ))
    kill -9 "${PIDS[$old]}"
    local killed_at
    killed_at=$(now_ms)
    local attempt=0
    # Writes go to a surviving node, which forwards them to whichever leader is elected.
    while true; do
      attempt=$((attempt + 1))
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://$(address "$survivor")/v1/events" \
        -d "{\"events\":[{\"id\":\"failover-$round-$attempt\",\"type\":\"bench.failover\",\"data\":{}}]}" || true)
      [ "$code" = 201 ] && break
      [ -n "${VERBOSE:-}" ] && echo "  $(( $(now_ms) - killed_at )) ms: HTTP $code"
    done
    local acked_at
    acked_at=$(now_ms)
    echo "round $round: leader $old killed; first acknowledged write after $((acked_at - killed_at)) ms (new leader $(leader "$survivor"))"
    start_node "$old"
    wait_ready "$old"
    sleep 1
  done
}

learner() {
  local events=${1:-1000000}
  start_cluster
  # A small fleet and a deployment first, so the learner must also rebuild views, not only events.
  local cli=("$FLEETLOG" --server "http://$(address 1)")
  "${cli[@]}" release create --service shop --release 1.0 >/dev/null
  "${cli[@]}" release create --service shop --release 2.0 >/dev/null
  for host in 1 2 3 4 5 6; do
    "${cli[@]}" target register --service shop --env prod --host "web-$host" >/dev/null
  done
  "${cli[@]}" deploy start --service shop --env prod --release 2.0 --id d-1 --wave all:percent=100 >/dev/null
  "${cli[@]}" deploy wave d-1 all >/dev/null
  echo "== loading $events events (batches of 1,000 events, 8 clients)"
  local started
  started=$(now_ms)
  "$BENCH" --server "http://$(address "$(leader 1)")" append \
    --clients 8 --batch 1000 --payload-bytes 256 --total "$events" >/dev/null
  echo "loaded in $(( $(now_ms) - started )) ms"
  curl -sf "http://$(address 1)/v1/cluster" | python3 -c 'import json,sys; d=json.load(sys.stdin)["this_node"]; print("node 1: snapshot_index", d["snapshot_index"], "purged_index", d["purged_index"])'
  start_node 4
  echo "== adding node 4 as a learner (returns once it has caught up)"
  started=$(now_ms)
  "$FLEETLOG" --server "http://$(address 1)" cluster add-learner --node-id 4 --addr "$(address 4)" >/dev/null
  echo "leader has replicated its whole log to the learner after $(( $(now_ms) - started )) ms"
  local head
  head=$(curl -sf "http://$(address 1)/v1/events?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_seq"])')
  # Caught up = the learner has applied (and serves) every event the cluster holds.
  for _ in $(seq 1 6000); do
    applied=$(curl -sf "http://$(address 4)/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_seq"])' 2>/dev/null || echo 0)
    [ "$applied" -ge "$head" ] && break
    sleep 0.1
  done
  echo "learner caught up (applied seq $applied of $head) in $(( $(now_ms) - started )) ms"
  curl -sf "http://$(address 4)/v1/cluster" | python3 -c 'import json,sys; d=json.load(sys.stdin)["this_node"]; print("learner: snapshot_index", d["snapshot_index"], "applied_index", d["applied_index"])'
  local leader_head learner_head
  leader_head=$(curl -sf "http://$(address 1)/v1/events/$head" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
  learner_head=$(curl -sf "http://$(address 4)/v1/events/$head" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
  echo "head seq $head: leader hash $leader_head, learner hash $learner_head"
  [ "$leader_head" = "$learner_head" ] && echo "learner serves the same chain head" || { echo "MISMATCH"; exit 1; }
  for view in "/v1/fleet?consistency=local" "/v1/deployments?consistency=local" "/v1/hosts/web-3?consistency=local"; do
    local on_leader on_learner
    on_leader=$(curl -sf "http://$(address 1)$view" || true)
    on_learner=$(curl -sf "http://$(address 4)$view" || true)
    if [ -n "$on_leader" ] && [ "$on_leader" = "$on_learner" ]; then
      echo "identical on leader and learner: $view"
    else
      echo "VIEW MISMATCH: $view"; exit 1
    fi
  done
}

fanout() {
  local agents=$1 spread=$2 servers
  start_cluster
  servers="http://$(address 1)"
  if [ "$spread" = all ]; then servers="http://$(address 1),http://$(address 2),http://$(address 3)"; fi
  echo "fan-out: $agents agents on $spread of 3 nodes (fresh cluster, so memory per watcher is of this run)"
  # HOSTS: hosts registered in the environment rolled back (default: one per agent).
  "$BENCH" --server "$servers" fanout --agents "$agents" --rounds "${ROUNDS:-5}" ${HOSTS:+--hosts "$HOSTS"}
}

up() {
  start_cluster
  echo "leader: http://$(address "$(leader 1)")  (data in $WORK; Ctrl-C stops the cluster)"
  wait
}

case "${1:-}" in
  throughput) throughput ;;
  up) up ;;
  alert-failover) alert_failover "${2:-10}" ;;
  failover) failover "${2:-3}" ;;
  learner) learner "${2:-1000000}" ;;
  fanout) fanout "${2:-10000}" "${3:-one}" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
