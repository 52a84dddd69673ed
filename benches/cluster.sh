#!/bin/sh
# Measures state creates against three `slct serve` processes, with and without group
# commit. Usage: benches/cluster.sh [SECONDS] [BASE_PORT]   (default: 5 17000)
# Nodes listen on BASE_PORT+1..3 (not 7001-7003, so a running `slct dev` is left alone).
set -eu
SECONDS_PER_RUN=${1:-5}
BASE=${2:-17000}
cd "$(dirname "$0")/.."
cargo build --release --bin slct
cargo bench --bench put_states --no-run
BENCH=$(ls -t target/release/deps/put_states-* | grep -v '\.d$' | head -1)
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
for mode in group-commit no-group-commit; do
  DATA=$(mktemp -d)
  FLAG=""
  [ "$mode" = no-group-commit ] && FLAG=--no-group-commit
  PIDS=""
  for i in 1 2 3; do
    RUST_LOG=warn target/release/slct serve --id "$i" --listen "127.0.0.1:$((BASE + i))" \
      --data "$DATA/$i" --peers "$PEERS" $FLAG >"$DATA/$i.log" 2>&1 &
    PIDS="$PIDS $!"
  done
  echo "== $mode"
  SLCT_SERVER="http://127.0.0.1:$((BASE + 1))" "$BENCH" "$SECONDS_PER_RUN" 1 64
  kill $PIDS
  wait $PIDS 2>/dev/null || true
  rm -rf "$DATA"
done
