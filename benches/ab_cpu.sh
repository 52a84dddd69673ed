#!/usr/bin/env bash
# CPU per write of two slct builds (or settings) measured at the same time: two clusters
# of three `slct serve` processes each, A on 127.0.0.1:BASE+1..3 and B on BASE+101..103,
# each driven by its own wrk with vs_etcd.sh's slct load (PUT /state/<fresh id>, 1 KiB
# data, one blocked recv) for the same SECONDS. Both share the machine's cores, disk and
# slowdowns, so their ratio holds where a run of one and then a run of the other differ
# by more than the change (this machine's speed drifts by 1.5x within an hour).
# Prints, per side: writes, writes/s, the three servers' CPU per write (utime + stime
# from /proc/PID/stat over the run), p50 and p99. Swap the sides between runs.
#
# Usage: benches/ab_cpu.sh SLCT_A SLCT_B [SECONDS] [CONNS] [BASE_PORT]
#   (defaults 15 s, 64 connections per side, 19500). ENV_A / ENV_B: extra environment
#   for a side's servers, e.g. ENV_B="MIMALLOC_PURGE_DELAY=1000".
set -euo pipefail
BIN_A=${1:?usage: benches/ab_cpu.sh SLCT_A SLCT_B [SECONDS] [CONNS] [BASE_PORT]}
BIN_B=${2:?usage: benches/ab_cpu.sh SLCT_A SLCT_B [SECONDS] [CONNS] [BASE_PORT]}
SECS=${3:-15}
CONNS=${4:-64}
BASE=${5:-19500}
THREADS=$((CONNS < 2 ? CONNS : 2)) # wrk needs a connection per thread
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
bench_scratch slct-ab

ticks() { # SIDE -> CPU clock ticks of its three servers so far
  local side=$1 total=0 i
  for i in 1 2 3; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/${PID[$side$i]}/stat")))
  done
  echo "$total"
}

slct_cluster A "$BASE" "$BIN_A" "${ENV_A:-}"
slct_cluster B "$((BASE + 100))" "$BIN_B" "${ENV_B:-}"
LEADER_A=$(slct_leader "$BASE")
LEADER_B=$(slct_leader "$((BASE + 100))")
PORT_A=$((BASE + LEADER_A))
PORT_B=$((BASE + 100 + LEADER_B))
A0=$(ticks A)
B0=$(ticks B)
for side in A B; do
  port=PORT_$side
  VS_TARGET=slct VS_RUN="ab$side$$" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 10s \
    --latency -s "$ROOT/benches/vs_etcd.lua" "http://127.0.0.1:${!port}" >"$TMP/wrk$side.txt" 2>&1 &
  PIDS+=($!)
  eval "WRK_$side=$!"
done
wait "$WRK_A" "$WRK_B"
A1=$(ticks A)
B1=$(ticks B)
python3 - "$TMP/wrkA.txt" "$TMP/wrkB.txt" "$((A1 - A0))" "$((B1 - B0))" "$(getconf CLK_TCK)" \
  "$SECS" "$BIN_A ${ENV_A:-}" "$BIN_B ${ENV_B:-}" <<'PY'
import re, sys
wrk_a, wrk_b, ticks_a, ticks_b, hz, secs, name_a, name_b = sys.argv[1:]
for side, path, ticks, name in (("A", wrk_a, ticks_a, name_a), ("B", wrk_b, ticks_b, name_b)):
    text = open(path).read()
    result = re.search(r"^RESULT .*$", text, re.M)
    if not result:
        sys.exit(f"side {side}: wrk printed no RESULT:\n{text}")
    f = dict(kv.split("=") for kv in result.group(0).split()[1:])
    requests = int(f["requests"])
    bad = int(f["non2xx"]) + int(f["sockerr"])
    cpu = int(ticks) / int(hz) * 1e6 / requests
    print(f"{side} {name.strip()}: {requests} writes, {requests / float(secs):,.0f}/s, "
          f"CPU per write {cpu:,.0f} µs, p50 {int(f['p50_us']) / 1000:.2f} ms, "
          f"p99 {int(f['p99_us']) / 1000:.2f} ms" + (f"  INVALID: {bad} errors" if bad else ""))
PY
