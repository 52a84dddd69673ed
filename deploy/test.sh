#!/usr/bin/env bash
# The deployment, tested for real: builds the image (deploy/build.sh), brings the three
# nodes of deploy/docker-compose.yml up on a network of their own, writes through one
# node and reads from the others, cuts the leader's container off the network and
# checks that a new leader takes writes, reconnects it and checks that it catches up,
# then tears everything down (containers, network, volumes, image), failed or not.
#
# Needs the Docker engine and `docker compose` or `docker-compose`, curl and jq; fails
# (never skips) without them. It talks to the containers at their own addresses on the
# network it creates, and to their ports published on 127.0.0.1. Every wait polls a
# condition (/readyz, /cluster, a read) against a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
fail() { echo "deploy test: $*" >&2; exit 1; }
for tool in docker curl jq; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
docker info >/dev/null 2>&1 || fail "cannot reach the Docker engine (docker info failed)"
if docker compose version >/dev/null 2>&1; then
  compose_cli=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cli=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi

project=slctdeploytest$$
export SLCT_IMAGE=slct-deploy-test:$$
# Ports Docker picks, so that the test never collides with a cluster already on 7001.
export SLCT_PORT_1="" SLCT_PORT_2="" SLCT_PORT_3=""
net=${project}_slct
tmp=$(mktemp -d)
passed=0
pod=""
compose() { "${compose_cli[@]}" -p "$project" -f deploy/docker-compose.yml "$@"; }
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "deploy test: failed; the nodes' last log lines:" >&2
    compose logs --no-color --tail 40 >&2 2>/dev/null || true
    if [ -n "$pod" ]; then docker logs --tail 20 "$pod" >&2 2>/dev/null || true; fi
    echo "deploy: $passed passed, 1 failed"
  fi
  if [ -n "$pod" ]; then docker rm -f -v "$pod" >/dev/null 2>&1 || true; fi
  compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  docker image rm "$SLCT_IMAGE" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
ok() { passed=$((passed + 1)); echo "deploy test: ok: $* ($((SECONDS - started)) s)"; }

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 secs=$2
  local deadline=$((SECONDS + secs))
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after $secs s: $what"
    sleep 0.2
  done
}
# get NODE PATH: the body of a 200 answer, or failure.
get() { curl -sf -m 3 "http://${ip[$1]}:7001$2"; }
leader_seen_by() { get "$1" /cluster | jq -e '.leader // empty'; }
ready() { curl -sf -m 3 -o /dev/null "http://${ip[$1]}:7001/readyz"; }

# all_agree NODES...: every node is ready and names the same leader; sets $leader.
all_agree() {
  local node seen=""
  for node in "$@"; do
    ready "$node" || return 1
    local this
    this=$(leader_seen_by "$node") || return 1
    if [ -n "$seen" ] && [ "$this" != "$seen" ]; then return 1; fi
    seen=$this
  done
  leader=$seen
}
# reads NODE ID N: the node's own replica has state ID with data {"n": N}.
reads() { get "$1" "/state/$2?stale=true" | jq -e --argjson n "$3" '.data.n == $n' >/dev/null; }
# write NODE ID N: creates state ID through NODE (201); fails while there is no leader
# (503), to be retried. A 409 can only be an earlier try of this very write that
# answered 503 `outcome_unknown` yet was applied: the reads that follow check its data.
write() {
  local code
  code=$(curl -s -m 15 -o "$tmp/put" -w '%{http_code}' -X PUT \
    -H 'content-type: application/json' -d "{\"data\": {\"n\": $3}}" \
    "http://${ip[$1]}:7001/state/$2") || code=000
  case $code in
    201 | 409) return 0 ;;
    503 | 000) return 1 ;;
    *) fail "PUT /state/$2 through node $1 answered $code: $(cat "$tmp/put")" ;;
  esac
}

echo "deploy test: building the image with deploy/build.sh"
SLCT_IMAGE=$SLCT_IMAGE deploy/build.sh
ok "image built: $(docker image inspect -f '{{.Size}}' "$SLCT_IMAGE") bytes"

# The StatefulSet's `--id-from-hostname` in the image (deploy/k8s/ is not run here): a
# container named like the pod slct-2 is node 3. Alone on loopback, so it needs no
# secret; asked from inside by the binary itself, the image having nothing else.
pod=$(docker run -d --hostname slct-2 "$SLCT_IMAGE" serve --id-from-hostname \
  --listen 127.0.0.1:7001 --peers 3=127.0.0.1:7001 --data /data)
node_id_in_pod() { docker exec "$pod" /slct cluster status 2>/dev/null | jq -e '.id == 3' >/dev/null; }
wait_for "the container named slct-2 serving as node 3" 30 node_id_in_pod
docker rm -f -v "$pod" >/dev/null
pod=""
ok "host name slct-2 makes node 3"

compose up -d
declare -A ip cid
for node in 1 2 3; do
  cid[$node]=$(compose ps -q "slct$node")
  ip[$node]=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "${cid[$node]}")
  [ -n "${ip[$node]}" ] || fail "node $node has no address on $net"
done
echo "deploy test: nodes at ${ip[1]}, ${ip[2]}, ${ip[3]} on $net"

wait_for "three nodes ready with one leader" 120 all_agree 1 2 3
ok "cluster formed by host names; leader is node $leader"
published=$(compose port slct1 7001)
curl -sf -m 3 "http://$published/healthz" >/dev/null || fail "no answer on the published port $published"
ok "node 1 answers on its published port $published"

# Through a follower, so that the write is also forwarded to the leader.
follower=$((leader % 3 + 1))
wait_for "a write through node $follower" 30 write "$follower" deploy-1 1
for node in 1 2 3; do
  wait_for "node $node reading deploy-1" 30 reads "$node" deploy-1 1
done
ok "written through node $follower, read on every node"

old=$leader
others=()
for node in 1 2 3; do [ "$node" = "$old" ] || others+=("$node"); done
aliases=$(docker inspect -f "{{range (index .NetworkSettings.Networks \"$net\").Aliases}}{{.}} {{end}}" "${cid[$old]}")
docker network disconnect "$net" "${cid[$old]}"
new_leader() { all_agree "${others[@]}" && [ "$leader" != "$old" ]; }
wait_for "a new leader among nodes ${others[*]}" 60 new_leader
wait_for "a write through node ${others[0]}" 30 write "${others[0]}" deploy-2 2
wait_for "node ${others[1]} reading deploy-2" 30 reads "${others[1]}" deploy-2 2
ok "leader $old cut off; node $leader leads and takes writes"
applied=$(get "$leader" /cluster | jq -e .last_applied)

alias_args=()
for alias in $aliases; do alias_args+=(--alias "$alias"); done
docker network connect "${alias_args[@]}" "$net" "${cid[$old]}"
ip[$old]=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "${cid[$old]}")
caught_up() {
  reads "$old" deploy-2 2 && all_agree 1 2 3 &&
    get "$old" /cluster | jq -e --argjson a "$applied" '.last_applied >= $a' >/dev/null
}
wait_for "node $old catching up" 60 caught_up
ok "node $old reconnected (at ${ip[$old]}), follows node $leader and has deploy-2"

echo "deploy test: took $((SECONDS - started)) s"
echo "deploy: $passed passed, 0 failed"
