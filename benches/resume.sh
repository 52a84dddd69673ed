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
# shellcheck source=benches/lib.sh
. benches/lib.sh
bench_scratch slct-resume
slct_cluster slct "$BASE" "$SLCT_BIN"
slct_leader "$BASE" >/dev/null
echo "$SLCT_BIN, three nodes on 127.0.0.1:$((BASE + 1))-$((BASE + 3))" >&2
SLCT_PIDS=$(IFS=,; echo "${PIDS[*]}") \
  "$RESUME_BENCH_BIN" --server "http://127.0.0.1:$((BASE + 1))" "$@"
