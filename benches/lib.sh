# Shared by the bench scripts that start clusters of three `slct serve` processes on
# loopback: a scratch directory, the processes started, both cleaned up on exit
# (Ctrl-C included), and the wait for a cluster's leader.
#
# Source it after `set -euo pipefail` and `cd` to the checkout:  . benches/lib.sh
#   slct_bin                   SLCT_BIN := itself if set, else a release build of the
#                              checkout (built now)
#   bench_scratch PREFIX       TMP := a new directory /tmp/PREFIX.XXXXXX, removed on exit
#                              unless KEEP=1 (then its path is printed)
#   slct_cluster NAME BASE BIN [ENV]
#                              nodes 1-3 of BIN on 127.0.0.1:BASE+1..3, data in
#                              $TMP/NAME<i>, logs in ${LOGS:-$TMP}/NAME<i>.log, pids in
#                              PID[NAME<i>] (and PIDS); ENV: extra NAME=value words for
#                              their environment; SLCT_LOG sets RUST_LOG (default warn)
#   slct_leader BASE           prints the leader's node id once all three answer
#                              /readyz; after 30 s fails, showing the logs' last lines
# Any other process a script starts and wants stopped on exit goes in PIDS too.

PIDS=()
declare -A PID

bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${TMP:-}" ]; then
    if [ "${KEEP:-0}" = 1 ]; then echo "kept: $TMP" >&2; else rm -rf "$TMP"; fi
  fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

slct_bin() {
  if [ -z "${SLCT_BIN:-}" ]; then
    cargo build --release --bin slct >&2
    SLCT_BIN=$(pwd)/target/release/slct
  fi
}

bench_scratch() { # PREFIX
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
}

slct_cluster() { # NAME BASE BIN [ENV]
  local name=$1 base=$2 bin=$3 extra=${4:-} i
  local peers="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # ENV is a list of NAME=value words
    env $extra RUST_LOG="${SLCT_LOG:-warn}" "$bin" serve --id "$i" \
      --listen "127.0.0.1:$((base + i))" --data "$TMP/$name$i" --peers "$peers" \
      >"${LOGS:-$TMP}/$name$i.log" 2>&1 &
    PID[$name$i]=$!
    PIDS+=($!)
  done
}

slct_leader() { # BASE
  local base=$1 id i
  for _ in $(seq 150); do
    id=$(curl -sf "http://127.0.0.1:$((base + 1))/cluster" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"] or "")' \
        2>/dev/null || true)
    for i in 1 2 3; do
      curl -sf "http://127.0.0.1:$((base + i))/readyz" >/dev/null || id=""
    done
    if [ -n "$id" ]; then
      echo "$id"
      return
    fi
    sleep 0.2
  done
  echo "no ready cluster with a leader on 127.0.0.1:$((base + 1))-$((base + 3)) after 30 s" >&2
  for i in "${LOGS:-$TMP}"/*.log; do echo "== $i" >&2 && tail -3 "$i" >&2; done
  exit 1
}
