#!/usr/bin/env bash
# slct against etcd on this machine: three etcd members and three `slct serve`
# processes on loopback, both started by this run, both with fsync before acknowledging
# (etcd as shipped; slct as built). wrk drives each cluster's leader with a fresh key per
# request and 1 KiB values (benches/vs_etcd.lua):
#   etcd  POST /v3/kv/put                 (v3 JSON gateway, base64 key, 1,024-byte value)
#   slct  PUT /state/<fresh id>           (1,024-character `data`, one select blocked on
#                                          a recv from a channel of its own)
# at 64 connections (wrk -t2 -c64) and at 1 connection (wrk -t1 -c1: wrk needs a
# connection per thread). Prints rate, p50, p99, CPU per write and the ratios slct/etcd.
#
# CPU per write = sum over the three server processes of utime+stime (/proc/PID/stat,
# read before and after the run) / requests. "others" is the CPU the rest of the machine
# used meanwhile (/proc/stat busy time less the six servers and wrk), in cores: the load
# beside the figure. A run with a non-2xx answer or a socket error is marked INVALID.
#
# Usage: benches/vs_etcd.sh [SECONDS] [REPEAT] [BASE_PORT]     (default: 10 1 19000)
#   slct on BASE+1..3, etcd clients on BASE+11..13, etcd peers on BASE+21..23
#   (never 7001-7003, so a running `slct dev` is left alone). With REPEAT > 1 the four
#   runs are interleaved REPEAT times and the summary shows medians.
#   SLCT_BIN=path skips the cargo build; WARMUP=seconds (default 2) per cluster.
#   Raw wrk output and server logs are kept if KEEP=1 (path printed at the end);
#   SLCT_LOG=filter sets the nodes' RUST_LOG (default warn; info logs each snapshot).
set -euo pipefail
SECS=${1:-10}
REPEAT=${2:-1}
BASE=${3:-19000}
WARMUP=${WARMUP:-2}
cd "$(dirname "$0")/.."
ROOT=$(pwd)

need() { # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 from Debian" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}
need etcd etcd-server
need wrk wrk
need curl curl
need python3 python3

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
slct_bin

bench_scratch vs-etcd

# --- the two clusters -------------------------------------------------------------
slct_cluster slct "$BASE" "$SLCT_BIN"
ETCD_CLUSTER="e1=http://127.0.0.1:$((BASE + 21)),e2=http://127.0.0.1:$((BASE + 22)),e3=http://127.0.0.1:$((BASE + 23))"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$TMP/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((BASE + 10 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((BASE + 10 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((BASE + 20 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 20 + i))" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
    --initial-cluster-token "vs-etcd-$$" --log-level warn >"$TMP/etcd$i.log" 2>&1 &
  PID[etcd$i]=$!
  PIDS+=($!)
done

# etcd's leader: the member whose /v3/maintenance/status names itself as the leader.
etcd_leader() {
  local deadline=$((SECONDS + 30)) i out
  while [ $SECONDS -lt $deadline ]; do
    for i in 1 2 3; do
      out=$(curl -sf -X POST -d '{}' "http://127.0.0.1:$((BASE + 10 + i))/v3/maintenance/status" |
        python3 -c '
import json, sys
s = json.load(sys.stdin)
print("yes" if s.get("leader") and s["leader"] == s["header"]["member_id"] else "")' \
        2>/dev/null || true)
      if [ "$out" = yes ]; then
        echo "127.0.0.1:$((BASE + 10 + i))"
        return
      fi
    done
    sleep 0.2
  done
  echo "etcd: no leader after 30 s" >&2
  for i in 1 2 3; do echo "== etcd$i.log" >&2 && tail -3 "$TMP/etcd$i.log" >&2; done
  exit 1
}
SLCT_LEADER_ID=$(slct_leader "$BASE")
SLCT_LEADER=127.0.0.1:$((BASE + SLCT_LEADER_ID))
ETCD_LEADER=$(etcd_leader)
# The JSON gateway path (etcd 3.4 serves /v3/; older ones only /v3beta/): the Lua
# script posts to /v3/kv/put, so check that it answers.
if ! curl -sf -X POST -d '{"key":"dnMtcHJvYmU=","value":"MQ=="}' \
  "http://$ETCD_LEADER/v3/kv/put" >/dev/null; then
  echo "etcd at $ETCD_LEADER does not serve /v3/kv/put ($(etcd --version | head -1))" >&2
  exit 1
fi
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), leader $ETCD_LEADER;" \
  "slct $SLCT_BIN, leader $SLCT_LEADER;" \
  "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); ${SECS}s per run" >&2

# --- measuring --------------------------------------------------------------------
HZ=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local sum=0 pid f
  for pid in "$@"; do
    # fields after the ")" that ends the command name: state is 1, utime 12, stime 13
    f=$(sed 's/.*) //' "/proc/$pid/stat")
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo $sum
}
machine_busy() { # all CPUs' busy ticks: user nice system irq softirq steal
  awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
children_ticks() { # this shell's waited-for children: cutime + cstime
  local f
  f=$(sed 's/.*) //' "/proc/$$/stat")
  set -- $f
  echo $((${14} + ${15}))
}

SEQ=0
# run SYSTEM CONNS SECONDS -> appends one line to $TMP/results
run() {
  local system=$1 conns=$2 secs=$3 leader pids threads=2 out
  SEQ=$((SEQ + 1))
  if [ "$system" = slct ]; then
    leader=$SLCT_LEADER
    pids=("${PID[slct1]}" "${PID[slct2]}" "${PID[slct3]}")
  else
    leader=$ETCD_LEADER
    pids=("${PID[etcd1]}" "${PID[etcd2]}" "${PID[etcd3]}")
  fi
  [ "$conns" -lt 2 ] && threads=1
  local all=("${PID[@]}")
  local c0 m0 w0 c1 m1 w1 a0 a1 load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  c0=$(cpu_ticks "${pids[@]}")
  a0=$(cpu_ticks "${all[@]}")
  m0=$(machine_busy)
  w0=$(children_ticks)
  out=$TMP/wrk-$SEQ-$system-$conns.txt
  VS_TARGET=$system VS_RUN=$(printf 'r%03d%04d' "$SEQ" $(($$ % 10000))) \
    wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s --latency \
    -s "$ROOT/benches/vs_etcd.lua" "http://$leader" >"$out" 2>&1 || true
  c1=$(cpu_ticks "${pids[@]}")
  a1=$(cpu_ticks "${all[@]}")
  m1=$(machine_busy)
  w1=$(children_ticks)
  local result
  result=$(grep '^RESULT ' "$out" || echo "RESULT requests=0 duration_us=1")
  echo "$system $conns $secs cpu_ticks=$((c1 - c0)) hz=$HZ others_ticks=$(((m1 - m0) - (a1 - a0) - (w1 - w0))) load=${load// /,} ${result#RESULT }" \
    >>"$TMP/results"
  grep '^FIRST_ERROR' "$out" >&2 || true
}

if [ "$WARMUP" -gt 0 ]; then
  echo "warming up: ${WARMUP}s at 64 connections on each cluster" >&2
  run etcd 64 "$WARMUP"
  run slct 64 "$WARMUP"
  mv "$TMP/results" "$TMP/warmup"
fi
for r in $(seq "$REPEAT"); do
  for conns in 64 1; do
    for system in etcd slct; do
      echo "run $r: $system, $conns connection(s), ${SECS}s, from $(date -u +%T.%3N)" >&2
      run "$system" "$conns" "$SECS"
    done
  done
done

# --- what the clusters hold: every answered write is there, under a key of its own ----
ETCD_REV=$(curl -sf -X POST -d '{}' "http://$ETCD_LEADER/v3/maintenance/status" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
SLCT_WAITING=$(curl -sf "http://$SLCT_LEADER/metrics" |
  awk '/^slct_states\{.*waiting/ {print $2}')
cat "$TMP/warmup" "$TMP/results" 2>/dev/null | awk -v rev="$ETCD_REV" -v waiting="$SLCT_WAITING" '
  { for (i = 4; i <= NF; i++) if ($i ~ /^requests=/) { split($i, kv, "="); n[$1] += kv[2] } }
  END {
    printf "check: etcd at revision %d after %d puts answered (+1 probe); ", rev, n["etcd"]
    printf "slct has %s waiting states after %d creates answered\n", waiting, n["slct"]
  }' >&2

# --- the table --------------------------------------------------------------------
python3 - "$TMP/results" <<'PY'
import statistics, sys

rows = []
for line in open(sys.argv[1]):
    system, conns, secs, *kv = line.split()
    r = dict(item.split("=", 1) for item in kv)
    n = int(r["requests"])
    dur = int(r["duration_us"]) / 1e6
    hz = int(r["hz"])
    rows.append({
        "system": system, "conns": int(conns), "n": n,
        "rate": n / dur if n else 0.0,
        "p50": int(r.get("p50_us", 0)) / 1000, "p99": int(r.get("p99_us", 0)) / 1000,
        "cpu_us": int(r["cpu_ticks"]) / hz * 1e6 / n if n else 0.0,
        "others": max(0, int(r["others_ticks"])) / hz / dur,
        "load": r["load"].replace(",", " "),
        "bad": int(r.get("non2xx", 0)) + int(r.get("sockerr", 0)) + (n == 0),
    })

print()
print(f"{'load':<10} {'system':<6} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'CPU/write':>10} {'errors':>6}  machine: others' CPU, loadavg")
for r in rows:
    flag = "" if r["bad"] == 0 else "  INVALID"
    print(f"{r['conns']:>3} conn{'s' if r['conns'] > 1 else ' ':<5} {r['system']:<6} "
          f"{r['rate']:>9,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
          f"{r['cpu_us']:>7,.0f} µs {r['bad']:>6}  {r['others']:.2f} cores, {r['load']}{flag}")

def med(system, conns, key):
    vals = [r[key] for r in rows if r["system"] == system and r["conns"] == conns]
    return statistics.median(vals) if vals else float("nan")

def ratio(conns, key):
    e, s = med("etcd", conns, key), med("slct", conns, key)
    return (s, e, s / e if e else float("nan"))

many = "median of runs" if len(rows) > 4 else "one run each"
print(f"\nslct / etcd ({many}):")
checks = [
    ("64 conns: rate", ratio(64, "rate"), "goal >= 1.5x", lambda x: x >= 1.5, "{:,.0f}/s"),
    ("64 conns: p99", ratio(64, "p99"), "goal <= 1x", lambda x: x <= 1.0, "{:.2f} ms"),
    ("64 conns: CPU per write", ratio(64, "cpu_us"), "goal: slct <= 270 µs",
     None, "{:,.0f} µs"),
    ("1 conn: p50", ratio(1, "p50"), "goal <= 1x", lambda x: x <= 1.0, "{:.2f} ms"),
    ("1 conn: rate", ratio(1, "rate"), "", None, "{:,.0f}/s"),
    ("1 conn: CPU per write", ratio(1, "cpu_us"), "", None, "{:,.0f} µs"),
]
for name, (s, e, x), goal, ok, fmt in checks:
    if name == "64 conns: CPU per write":
        met = "met" if s <= 270 else "not met"
    elif ok:
        met = "met" if ok(x) else "not met"
    else:
        met = ""
    print(f"  {name:<24} slct {fmt.format(s):>10}  etcd {fmt.format(e):>10}  "
          f"= {x:.2f}x   {goal} {met}".rstrip())
if any(r["bad"] for r in rows):
    print("\nSome runs had errors (non-2xx or socket errors): those figures are not valid.")
    sys.exit(1)
PY
