#!/usr/bin/env bash
# Sync calls per write at one connection: three `slct serve` processes on loopback, wrk
# driving the leader with vs_etcd.sh's slct load (wrk -t1 -c1, PUT /state/<fresh id>
# with 1 KiB data and one blocked recv), and `strace -f -c` counting fdatasync, fsync
# and sync_file_range on the leader and on one follower for SECONDS. Prints each
# syscall's count per write. strace slows the traced processes: the counts are the
# figure, not the rate.
#
# Usage: benches/syncs_per_write.sh [SECONDS] [BASE_PORT]   (default: 10, 19400)
#   SLCT_BIN=path skips the cargo build.
set -euo pipefail
SECS=${1:-10}
BASE=${2:-19400}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
slct_bin
bench_scratch slct-syncs
slct_cluster slct "$BASE" "$SLCT_BIN"
LEADER=$(slct_leader "$BASE")
FOLLOWER=$((LEADER % 3 + 1))
URL="http://127.0.0.1:$((BASE + LEADER))"
# Warm-up: the first writes create files and fill caches.
VS_TARGET=slct VS_RUN=warm$$ wrk -t1 -c1 -d2s -s "$ROOT/benches/vs_etcd.lua" "$URL" >/dev/null 2>&1

declare -A STRACE
for node in "$LEADER" "$FOLLOWER"; do
  strace -f -c -e trace=fdatasync,fsync,sync_file_range -o "$TMP/strace-$node.txt" \
    -p "${PID[slct$node]}" 2>/dev/null &
  STRACE[$node]=$!
done
sleep 1 # strace attaches to every thread
VS_TARGET=slct VS_RUN=run$$ wrk -t1 -c1 -d"${SECS}s" --timeout 10s -s "$ROOT/benches/vs_etcd.lua" \
  "$URL" >"$TMP/wrk.txt" 2>&1
sleep 0.5
for node in "$LEADER" "$FOLLOWER"; do
  kill -INT "${STRACE[$node]}"
  wait "${STRACE[$node]}" || true
done
REQUESTS=$(grep -o 'RESULT requests=[0-9]*' "$TMP/wrk.txt" | cut -d= -f2)
grep -q 'non2xx=0 sockerr=0' "$TMP/wrk.txt" || { echo "INVALID: errors in the run" >&2; cat "$TMP/wrk.txt" >&2; }
echo "slct $("$SLCT_BIN" --version 2>/dev/null | head -1); $REQUESTS writes in ${SECS}s at one connection (under strace)"
for node in "$LEADER" "$FOLLOWER"; do
  role=leader
  [ "$node" = "$FOLLOWER" ] && role=follower
  for call in fdatasync fsync sync_file_range; do
    calls=$(awk -v c="$call" '$NF == c { print $4 }' "$TMP/strace-$node.txt")
    calls=${calls:-0}
    python3 -c "print(f'$role  $call: $calls calls, {$calls / max($REQUESTS, 1):.2f} per write')"
  done
done
