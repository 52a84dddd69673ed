#!/usr/bin/env bash
# How long a node that holds many states takes from start to ready after `kill -9`.
#
# Three `slct serve` processes (release build) on 127.0.0.1:BASE+1..BASE+3; wrk
# (-t2 -c64) creates STATES states with 100-byte data through the leader; once every
# node has applied the same index, a follower is killed with SIGKILL and started again,
# RUNS times, and each time the seconds from its start to its first 200 on `/readyz`
# (it knows a leader, has caught up and hears a quorum) are printed, then their median.
# The cluster is idle while a node is down, so what is timed is opening the data
# directory (sled's recovery, the check of every stored value) and the log's replay
# since the last checkpoint, not a catch-up of writes made meanwhile.
#
# Usage: benches/restart.sh [STATES] [RUNS] [BASE_PORT]   (default: 1000000, 3, 19500)
#   SLCT_BIN=path skips the cargo build; DATA=dir keeps the nodes' data there (default:
#   a temporary directory, removed at the end).
set -euo pipefail
STATES=${1:-1000000}
RUNS=${2:-3}
BASE=${3:-19500}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ -z "${SLCT_BIN:-}" ]; then
  cargo build --release --quiet
  SLCT_BIN=$ROOT/target/release/slct
fi
if [ -n "${DATA:-}" ]; then KEEP=1; else DATA=$(mktemp -d /tmp/slct-restart.XXXXXX); KEEP=; fi
mkdir -p "$DATA"
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
declare -A PID

start() {
  "$SLCT_BIN" serve --id "$1" --listen "127.0.0.1:$((BASE + $1))" --data "$DATA/$1" \
    --peers "$PEERS" >>"$DATA/$1.log" 2>&1 &
  PID[$1]=$!
}
stop_all() {
  for id in "${!PID[@]}"; do kill "${PID[$id]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$KEEP" ] || rm -rf "$DATA"
}
trap stop_all EXIT

# field URL NAME: a top-level number of the JSON at URL, or nothing.
field() {
  curl -s --max-time 2 "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null || true
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$((BASE + $1))/readyz")" = 200 ]; }

for id in 1 2 3; do start "$id"; done
until ready 1 && ready 2 && ready 3; do sleep 0.2; done
LEADER=$(field "http://127.0.0.1:$((BASE + 1))/cluster" leader)

# Each of wrk's two threads creates half the states, then stops and leaves a file
# behind; wrk itself runs until its duration is up, so it is interrupted then.
LUA=$DATA/load.lua
cat >"$LUA" <<EOF
local per_thread = math.ceil($STATES / 2)
local threads = {}
function setup(thread) thread:set("tid", #threads); table.insert(threads, thread) end
function init(args) sent = 0; created = 0 end
local body = '{"data":"' .. string.rep("x", 100) .. '"}'
function request()
  sent = sent + 1
  return wrk.format("PUT", "/state/s" .. tid .. "-" .. sent, {["Content-Type"] = "application/json"}, body)
end
function response(status)
  if status == 201 then created = created + 1 end
  if created == per_thread then
    io.open("$DATA/loaded-" .. tid, "w"):close()
    wrk.thread:stop()
  end
end
EOF
echo "loading $STATES states through node $LEADER ..."
t0=$(date +%s)
wrk -t2 -c64 -d3600s -s "$LUA" "http://127.0.0.1:$((BASE + LEADER))" >"$DATA/wrk.out" 2>&1 &
WRK=$!
until [ -e "$DATA/loaded-0" ] && [ -e "$DATA/loaded-1" ]; do
  kill -0 "$WRK" 2>/dev/null || { echo "wrk stopped early:"; cat "$DATA/wrk.out"; exit 1; }
  sleep 1
done
kill -INT "$WRK"
wait "$WRK" || true
echo "loaded in $(($(date +%s) - t0)) s"

applied() { field "http://127.0.0.1:$((BASE + $1))/cluster" last_applied; }
until [ -n "$(applied 1)" ] && [ "$(applied 1)" = "$(applied 2)" ] && [ "$(applied 2)" = "$(applied 3)" ]; do
  sleep 0.5
done
echo "every node applied index $(applied 1); on disk: $(du -sh "$DATA/1" | cut -f1) per node"

VICTIM=$((LEADER % 3 + 1))
times=()
for run in $(seq 1 "$RUNS"); do
  kill -9 "${PID[$VICTIM]}"
  wait "${PID[$VICTIM]}" 2>/dev/null || true
  t0=$(date +%s%N)
  start "$VICTIM"
  until ready "$VICTIM"; do sleep 0.05; done
  t=$(python3 -c "print(($(date +%s%N) - $t0) / 1e9)")
  times+=("$t")
  printf 'run %d: node %d ready %.2f s after its start\n' "$run" "$VICTIM" "$t"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median of %d: %.2f s\n", NR, (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
