#!/usr/bin/env bash
# Profiles the leader of three `slct serve` processes under vs_etcd.sh's slct load
# (wrk -t2 -c64, PUT /state/<fresh id> with 1 KiB data and one blocked recv), so a
# change can be judged before and after with the same command:
#   - perf record (cpu-clock: this VM has no hardware counters) with DWARF call graphs
#     of the leader for SECONDS, after a warm-up;
#   - perf stat of each of the three processes over the same window: CPU time, context
#     switches, page faults, and syscalls (all, fdatasync/fsync, futex, reads/writes);
#   - benches/perf_summary.py over the samples: top symbols by self and by children,
#     and the samples grouped (allocator, serde_json, sled, openraft, hyper/tokio, ...).
# Raw outputs stay in OUT (default /tmp/slct-profile.<time>), not in the repository.
#
# Usage: benches/profile_leader.sh [SECONDS] [OUT] [BASE_PORT]   (default: 10, -, 19300)
#   SLCT_BIN=path skips the cargo build; CONNS (default 64); FREQ (default 499 Hz);
#   PROFILE=follower records a follower instead of the leader (perf stat covers all three).
set -euo pipefail
SECS=${1:-10}
OUT=${2:-/tmp/slct-profile.$(date +%Y%m%d-%H%M%S)}
BASE=${3:-19300}
CONNS=${CONNS:-64}
FREQ=${FREQ:-499}
THREADS=$((CONNS < 2 ? CONNS : 2)) # wrk needs a connection per thread
WARM=3
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if ! perf stat -e task-clock true >/dev/null 2>&1; then
  echo "perf cannot count here (perf_event_paranoid, or no perf_event_open in this sandbox)" >&2
  exit 1
fi
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
slct_bin
mkdir -p "$OUT"
bench_scratch slct-profile-data
LOGS=$OUT # the nodes' logs stay with the profile
slct_cluster slct "$BASE" "$SLCT_BIN"
LEADER=$(slct_leader "$BASE")
echo "leader: node $LEADER (pid ${PID[slct$LEADER]}); wrk -c$CONNS for $((WARM + SECS + 2)) s," \
  "perf for ${SECS} s after ${WARM} s; load before: $(cut -d' ' -f1-3 /proc/loadavg)" |
  tee "$OUT/info.txt" >&2

VS_TARGET=slct VS_RUN=prof$$ wrk -t"$THREADS" -c"$CONNS" -d"$((WARM + SECS + 2))s" --timeout 10s \
  --latency -s "$ROOT/benches/vs_etcd.lua" "http://127.0.0.1:$((BASE + LEADER))" \
  >"$OUT/wrk.txt" 2>&1 &
WRK=$!
PIDS+=($WRK)
sleep "$WARM"
BUSY0=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
EVENTS=task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter
EVENTS=$EVENTS,syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync,syscalls:sys_enter_futex
EVENTS=$EVENTS,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_pwrite64
EVENTS=$EVENTS,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
STATS=()
for i in 1 2 3; do
  role=follower
  [ "$i" = "$LEADER" ] && role=leader
  perf stat -e "$EVENTS" -p "${PID[slct$i]}" -o "$OUT/stat-node$i-$role.txt" -- sleep "$SECS" &
  STATS+=($!)
done
TARGET=$LEADER
if [ "${PROFILE:-leader}" = follower ]; then TARGET=$((LEADER % 3 + 1)); fi
echo "perf record of node $TARGET (${PROFILE:-leader})" | tee -a "$OUT/info.txt" >&2
perf record -F "$FREQ" --call-graph dwarf,16384 -p "${PID[slct$TARGET]}" \
  -o "$OUT/perf.data" -- sleep "$SECS" 2>"$OUT/record.log"
wait "${STATS[@]}"
BUSY1=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
wait "$WRK" || true
echo "machine busy during the window: $(python3 -c "print(round(($BUSY1 - $BUSY0) / $(getconf CLK_TCK) / $SECS, 2))") cores of $(nproc); loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" |
  tee -a "$OUT/info.txt" >&2
grep -E "RESULT|FIRST_ERROR" "$OUT/wrk.txt" | tee -a "$OUT/info.txt" >&2

echo "perf script (slow: DWARF unwinding)..." >&2
perf script -i "$OUT/perf.data" --no-inline -F comm,tid,time,period,ip,sym,dso \
  >"$OUT/perf.script" 2>/dev/null
python3 "$ROOT/benches/perf_summary.py" "$OUT/perf.script" | tee "$OUT/summary.txt"
for f in "$OUT"/stat-node*.txt; do
  echo "== $(basename "$f" .txt)"
  grep -E "task-clock|context-switches|page-faults|syscalls|seconds time" "$f"
done | tee -a "$OUT/summary.txt"
echo "raw outputs in $OUT" >&2
