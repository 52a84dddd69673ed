#!/usr/bin/env bash
# The resumption benchmark (examples/resume_bench.rs) against a fresh cluster of three
# `slct serve` processes that this script starts on 127.0.0.1:BASE+1..3 (not 7001-7003,
# so a running `slct dev` is left alone), data in a temp dir, removed on exit.
# Prints three rows (docs/performance.md, "Resumption"): callback ping-pong rounds/s,
# long-poll wake p50/p99 (send via a follower, poller on the leader), and resumes/s of
# 64 processes looping with the resume latency's p50/p99; each with the machine's load
# and the servers' CPU per round, wake or resume.
#
# Usage: benches/resume.sh [BASE_PORT] [-- resume_bench flags...]   (default 19100)
#   e.g. benches/resume.sh 19100 --seconds 20 --rows loop
#   SLCT_BIN / RESUME_BENCH_BIN = prebuilt binaries (skips cargo build).
set -euo pipefail
BASE=19100
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then BASE=$1; shift; fi
[ "${1:-}" = "--" ] && shift
cd "$(dirname "$0")/.."
if [ -z "${SLCT_BIN:-}" ] || [ -z "${RESUME_BENCH_BIN:-}" ]; then
  cargo build --release --bin slct --bin resume_bench >&2
fi
SLCT_BIN=${SLCT_BIN:-target/release/slct}
RESUME_BENCH_BIN=${RESUME_BENCH_BIN:-target/release/resume_bench}
TMP=$(mktemp -d /tmp/slct-resume.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
for i in 1 2 3; do
  RUST_LOG=warn "$SLCT_BIN" serve --id "$i" --listen "127.0.0.1:$((BASE + i))" \
    --data "$TMP/$i" --peers "$PEERS" >"$TMP/$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$((BASE + i))/readyz" >/dev/null && continue 2
    sleep 0.2
  done
  echo "node $i not ready after 30 s: $(tail -3 "$TMP/$i.log")" >&2
  exit 1
done
echo "slct $(git rev-parse --short HEAD 2>/dev/null), three nodes on 127.0.0.1:$((BASE + 1))-$((BASE + 3))" >&2
SLCT_PIDS=$(IFS=,; echo "${PIDS[*]}") \
  "$RESUME_BENCH_BIN" --server "http://127.0.0.1:$((BASE + 1))" "$@"
