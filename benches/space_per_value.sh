#!/bin/sh
# Measures disk space per value: three `slct serve` processes, COUNT detached sends of
# a VALUE_KB KB value each to one channel, then the bytes each node's data directory
# holds, part by part (`du`, so what the files take on disk), against the bytes of the
# values; then the same after the values are received, and after COUNT more values
# went through one at a time (sent, then received).
# Usage: benches/space_per_value.sh [SLCT_BINARY] [COUNT] [VALUE_KB] [BASE_PORT]
#        (default: target/release/slct 100 900 19000)
set -eu
BIN=${1:-target/release/slct}
COUNT=${2:-100}
VALUE_KB=${3:-900}
BASE=${4:-19000}
DATA=$(mktemp -d)
PEERS="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
PIDS=""
for i in 1 2 3; do
  RUST_LOG=warn "$BIN" serve --id "$i" --listen "127.0.0.1:$((BASE + i))" \
    --data "$DATA/$i" --peers "$PEERS" >"$DATA/$i.log" 2>&1 &
  PIDS="$PIDS $!"
done
trap 'kill $PIDS 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$DATA"' EXIT

python3 - "$BASE" "$COUNT" "$VALUE_KB" "$DATA" <<'PY'
import http.client, json, os, subprocess, sys, time
base, count, value_kb, data = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
nodes = [f"127.0.0.1:{base + i}" for i in (1, 2, 3)]

def request(host, method, path, body=None):
    conn = http.client.HTTPConnection(host, timeout=60)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body, headers)
    r = conn.getresponse()
    return r.status, r.read()

def leader():
    while True:
        try:
            status, body = request(nodes[0], "GET", "/cluster")
            lead = json.loads(body).get("leader") if status == 200 else None
            if lead:
                return nodes[int(lead) - 1]
        except OSError:
            pass
        time.sleep(0.1)

def du(path):
    """Bytes the files under `path` take on disk (allocated blocks)."""
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])

PARTS = [("wal", "wal"), ("sm/db", "sm/db"), ("sm/blobs", "sm/blobs"),
         ("sm/values", "sm/values"), ("sm/other", None), ("snapshots", "snapshots")]

def report(what, values_bytes):
    print(f"== {what}")
    print("node " + " ".join(f"{name:>10}" for name, _ in PARTS) + f" {'total':>10} {'x values':>9}")
    for i in (1, 2, 3):
        root = os.path.join(data, str(i))
        sizes = {}
        for name, rel in PARTS:
            if rel is not None:
                sizes[name] = du(os.path.join(root, rel))
        sizes["sm/other"] = (du(os.path.join(root, "sm")) - sizes["sm/db"] - sizes["sm/blobs"]
                             - sizes["sm/values"])
        total = du(root)
        ratio = f"{total / values_bytes:9.2f}" if values_bytes else f"{'-':>9}"
        print(f"{i:>4} " + " ".join(f"{sizes[n] / 1e6:9.1f}M" for n, _ in PARTS)
              + f" {total / 1e6:9.1f}M {ratio}")

def settle():
    """Waits until no node's data directory changes for 3 s (checkpoints, snapshots and
    purges done)."""
    last, stable_since = None, time.time()
    while time.time() - stable_since < 3:
        now = du(data)
        if now != last:
            last, stable_since = now, time.time()
        time.sleep(0.5)

lead = leader()
value = "x" * (value_kb * 1000)
body = json.dumps(value)
status, answer = request(lead, "PUT", "/chan/space", json.dumps({"capacity": 0}))
assert status in (200, 201), (status, answer)
settle()
report("empty cluster", 0)
for n in range(count):
    status, answer = request(lead, "POST", "/chan/space/send", body)
    assert status == 202, (status, answer)
settle()
values = count * len(body)
print(f"{count} detached sends of {len(body)} bytes: {values / 1e6:.1f} MB of values")
report("after the sends", values)
for n in range(count):
    status, answer = request(lead, "POST", "/chan/space/recv?wait=0")
    assert status == 200, (status, answer[:200])
settle()
report("after receiving them all", values)
for n in range(count):
    status, answer = request(lead, "POST", "/chan/space/send", body)
    assert status == 202, (status, answer)
    status, answer = request(lead, "POST", "/chan/space/recv?wait=0")
    assert status == 200, (status, answer[:200])
settle()
report(f"after {count} more sent and received one at a time", values)
PY
