#!/bin/sh
# Measures a follower catching up by snapshot: three `slct serve` processes, one kept
# down while STATES states are created, then restarted. Prints the time until it has the
# last state, the snapshot file's size, the bytes it received on its port meanwhile
# (`ss`; includes the few appends around the snapshot), and how many snapshot transfers
# the leader gave up on because a chunk request timed out.
# Usage: benches/snapshot_catchup.sh [SLCT_BINARY] [STATES] [BASE_PORT]
#        (default: target/release/slct 40000 18000)
set -eu
BIN=${1:-target/release/slct}
STATES=${2:-40000}
BASE=${3:-18000}
DATA=$(mktemp -d)
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
start() {
  RUST_LOG=warn,slct=info "$BIN" serve --id "$1" --listen "127.0.0.1:$((BASE + $1))" \
    --data "$DATA/$1" --peers "$PEERS" --snapshot-threshold 1000 >>"$DATA/$1.log" 2>&1 &
  eval "PID$1=$!"
}
start 1; start 2; start 3
trap 'kill $PID1 $PID2 $PID3 2>/dev/null || true; rm -rf "$DATA"' EXIT
leader() {
  until L=$(curl -sf "http://127.0.0.1:$((BASE + 1))/cluster" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"] or "")') && [ -n "$L" ]; do
    sleep 0.1
  done
  echo "$L"
}
LEADER=$(leader)
DOWN=$((LEADER % 3 + 1))
eval "kill -9 \$PID$DOWN"
python3 - "http://127.0.0.1:$((BASE + LEADER))" "$STATES" <<'PY'
import http.client, json, sys, threading
base, states = sys.argv[1], int(sys.argv[2])
host = base.removeprefix("http://")
def work(k):
    conn = http.client.HTTPConnection(host)
    for i in range(k, states, 32):
        body = json.dumps({"data": {"n": i, "note": "snapshot catch-up"}})
        conn.request("PUT", f"/state/s{i}", body, {"Content-Type": "application/json"})
        r = conn.getresponse(); r.read()
        assert r.status == 201, (r.status, i)
threads = [threading.Thread(target=work, args=(k,)) for k in range(32)]
for t in threads: t.start()
for t in threads: t.join()
PY
LAST="s$((STATES - 1))"
until [ -f "$DATA/$LEADER/snapshots/current.snap" ]; do sleep 0.1; done
sleep 2 # let the leader's last snapshot (every 1000 entries) settle
SNAP=$(stat -c %s "$DATA/$LEADER/snapshots/current.snap")
T0=$(date +%s.%N)
start "$DOWN"
until curl -sf -o /dev/null "http://127.0.0.1:$((BASE + DOWN))/state/$LAST?stale=true"; do
  sleep 0.02
done
T1=$(date +%s.%N)
RECEIVED=$(ss -tinH state established "( sport = :$((BASE + DOWN)) )" |
  grep -o 'bytes_received:[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
grep -q "installed snapshot" "$DATA/$DOWN.log" || echo "warning: no snapshot installed"
TIMEOUTS=$(grep "failed to send snapshot" "$DATA/$LEADER.log" | grep -c "timed out" || true)
echo "states=$STATES snapshot_file=${SNAP}B catch_up=$(echo "$T1 - $T0" | bc)s" \
  "received_on_port=${RECEIVED}B timed_out_transfers=$TIMEOUTS"
