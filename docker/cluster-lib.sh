# shellcheck shell=bash
# Shared by docker/cluster-test.sh, docker/partition-test.sh and docker/failover-partition.sh
# (source it after `set -euo pipefail`): the three-node cluster of docker/compose.cluster.yaml
# under a project of its own, built and run on a machine without a registry (the image from
# docker/build-image.sh: the debootstrap base plus the host's binary, $NANODB_BIN honoured), its
# ports published on loopback at ports Docker picks, torn down (containers, networks, volumes) on
# exit. Every wait has a deadline.
#
#   cluster_up            build the image, start the three nodes, wait until healthy with a leader
#   cport N PORT          the host port node N publishes for container port PORT (8080, 6379, ...)
#   ccontainer N          node N's container id
#   leader                the id the three nodes agree leads (waits up to 60 s)
#   status N              node N's GET /v1/cluster
#   RAFT_NET              the network the Raft ports are reached on (cut it to partition a node)

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
command -v curl >/dev/null && command -v python3 >/dev/null \
  || { echo "cluster: needs curl and python3" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "cluster: no Docker engine (docker info failed)" >&2; exit 1; }
# docker-compose v1 (Debian's package) or the compose plugin: whichever is here.
if command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  echo "cluster: needs docker-compose or the docker compose plugin" >&2
  exit 1
fi
# Lowercase letters, digits and dashes: valid for both compose versions.
PROJECT=${NANODB_PROJECT:-nanodb-${CLUSTER_NAME:-cluster}-$$}
# shellcheck disable=SC2034 # used by the scripts that source this
RAFT_NET=${PROJECT}_raft
# Every host port picked by Docker (an empty variable: see the compose file), health checked every
# second.
for _n in 1 2 3; do
  for _p in TCP GRPC HTTP RESP; do export "NANODB${_n}_${_p}_PORT="; done
done
export NANODB_HEALTH_INTERVAL=1s

dc() { timeout 180 "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.cluster.yaml "$@"; }

cluster_down() {
  # Reconnect nothing, stop everything: a partitioned node goes down with the rest.
  dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
}

# On exit: the scripts' background processes (CLUSTER_PIDS), the cluster, temp dirs (CLUSTER_TMP).
CLUSTER_PIDS=()
CLUSTER_TMP=()
_cluster_exit() {
  local p d
  for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  cluster_down
  for d in "${CLUSTER_TMP[@]}"; do rm -rf "$d"; done
}
trap _cluster_exit EXIT

# die MESSAGE: the nodes' log tails, then exit 1 (the EXIT trap tears down).
die() {
  echo "FAIL: $*" >&2
  local n c
  for n in 1 2 3; do
    c=$(ccontainer "$n" 2>/dev/null) || continue
    [ -n "$c" ] || continue
    echo "--- node $n log" >&2
    docker logs --tail 25 "$c" 2>&1 | cut -c1-300 >&2 || true
  done
  exit 1
}

# A container keeps its id across `docker kill` and `start`; compose is slow to ask (v1 is Python),
# so cluster_up asks once and remembers.
declare -A _CONTAINER=()
ccontainer() {
  if [ -n "${_CONTAINER[$1]:-}" ]; then echo "${_CONTAINER[$1]}"; else dc ps -q "node$1"; fi
}

cport() {
  local c out
  c=$(ccontainer "$1") && [ -n "$c" ] || return 1
  out=$(docker port "$c" "$2/tcp" | head -1) || return 1
  echo "${out##*:}"
}

status() {
  local p
  p=$(cport "$1" 8080) || return 1
  curl -fsS -m 2 "http://127.0.0.1:$p/v1/cluster"
}

# wait_healthy N...: the nodes' containers report healthy, within 60 s.
wait_healthy() {
  local deadline=$(( $(date +%s) + 60 )) n s c
  for n in "$@"; do
    while :; do
      c=$(ccontainer "$n")
      s=$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null || echo gone)
      [ "$s" = healthy ] && break
      [ "$(date +%s)" -lt "$deadline" ] || die "node $n not healthy within 60 s ($s)"
      sleep 0.2
    done
  done
}

# leader: prints the id every node names as leader, the leader saying so itself; within 60 s.
leader() {
  local deadline=$(( $(date +%s) + 60 )) n ids l
  while :; do
    ids=""
    for n in 1 2 3; do
      ids+="$(status "$n" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id"))' 2>/dev/null || echo none) "
    done
    read -r l _ <<<"$ids"
    if [ "$l" != None ] && [ "$l" != none ] && [ "$ids" = "$l $l $l " ]; then
      echo "$l"
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "cluster: no agreed leader within 60 s (nodes say: $ids)" >&2; return 1; }
    sleep 0.1
  done
}

cluster_up() {
  local image
  image=$(docker/build-image.sh) || exit 1
  export NANODB_IMAGE=$image
  local out
  out=$(dc up -d --no-build 2>&1) || { echo "$out" >&2; die "docker compose up failed"; }
  local n
  for n in 1 2 3; do _CONTAINER[$n]=$(dc ps -q "node$n"); done
  wait_healthy 1 2 3
  leader >/dev/null || die "the cluster elected no leader"
}
