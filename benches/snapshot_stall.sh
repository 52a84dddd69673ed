#!/bin/sh
# Measures what snapshot builds cost one writer: three `slct serve` processes (snapshot
# every 10,000 entries, the default), PRELOAD seconds of 64 writers creating states, then
# one writer for MEASURE seconds. Prints the writer's p50, p99, p99.9 and max, and the
# snapshots the leader built meanwhile with how long each took.
# Usage: benches/snapshot_stall.sh [SLCT_BINARY] [PRELOAD] [MEASURE] [BASE_PORT]
#        (default: target/release/slct 45 60 19000; 45 s makes about 300,000 states here)
set -eu
BIN=${1:-target/release/slct}
PRELOAD=${2:-45}
MEASURE=${3:-60}
BASE=${4:-19000}
cd "$(dirname "$0")/.."
cargo bench --bench put_states --no-run 2>/dev/null
BENCH=$(ls -t target/release/deps/put_states-* | grep -v '\.d$' | head -1)
DATA=$(mktemp -d)
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
PIDS=""
for i in 1 2 3; do
  RUST_LOG=warn,slct::raft=info "$BIN" serve --id "$i" --listen "127.0.0.1:$((BASE + i))" \
    --data "$DATA/$i" --peers "$PEERS" >>"$DATA/$i.log" 2>&1 &
  PIDS="$PIDS $!"
done
trap 'kill $PIDS 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
export SLCT_SERVER="http://127.0.0.1:$((BASE + 1))"
echo "== preload: 64 writers for $PRELOAD s"
"$BENCH" "$PRELOAD" 64
for i in 1 2 3; do : >"$DATA/$i.log"; done
echo "== measure: 1 writer for $MEASURE s"
"$BENCH" "$MEASURE" 1
echo "== snapshots built meanwhile (all nodes)"
grep -h "built snapshot" "$DATA"/*.log || echo "none logged"
