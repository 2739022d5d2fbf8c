#!/usr/bin/env bash
# The three-node cluster in containers (docker/compose.cluster.yaml), on a machine with the Docker
# engine and no registry, checked from the host as a user would:
#
#  1. builds the image (docker/build-image.sh: the debootstrap base + the host's server binary,
#     $NANODB_BIN honoured) and brings the cluster up (each node healthy, a leader agreed);
#  2. writes over every protocol, each to one node, and reads each back from another node over
#     another protocol (RESP with redis-cli, REST with curl, the binary protocol with nanodb-cli,
#     gRPC with a client generated from proto/);
#  3. starts a writer on the two followers (RESP, every acknowledged write recorded), kills the
#     leader's container (`docker kill`), and checks that the survivors elect a new leader, that
#     writes go on being acknowledged, and that every protocol still writes;
#  4. starts the killed container again, waits until it follows the new leader, and checks that
#     every acknowledged write is on all three nodes and nothing unsent is;
#  5. tears everything down on exit (containers, networks, volumes), pass or fail.
#
# Every wait has a deadline; CI runs it under `timeout` (.ci/interop/docker-cluster.sh).
#
#   NANODB_BIN       the server binary for the image (see build-image.sh)
#   NANODB_CLI_BIN   nanodb-cli on the host (default target/debug/nanodb-cli, else release)
#   VENV             a Python virtualenv with grpcio and grpcio-tools (made if missing)
set -euo pipefail
# shellcheck disable=SC2034 # read by cluster-lib.sh (the compose project name)
CLUSTER_NAME=ctest
. "$(dirname "$0")/cluster-lib.sh"

cli=${NANODB_CLI_BIN:-}
if [ -z "$cli" ]; then
  for b in target/debug/nanodb-cli target/release/nanodb-cli; do [ -x "$b" ] && { cli=$b; break; }; done
fi
[ -n "$cli" ] && [ -x "$cli" ] || { echo "cluster-test: build nanodb-cli first (cargo build -p nanodb-cli)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "cluster-test: needs redis-cli (apt-get install redis-tools)" >&2; exit 1; }
venv=${VENV:-/tmp/nanodb-ci-venv}
if ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools
fi
work=$(mktemp -d /tmp/nanodb-cluster-test.XXXXXX)
CLUSTER_TMP+=("$work")
"$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$work" --grpc_python_out="$work" \
  proto/nanodb/v1/*.proto
client() { PYTHONPATH="$work" timeout 60 "$venv/bin/python" docker/cluster_client.py "$@"; }

started=$(date +%s)
cluster_up
echo "cluster-test: three nodes up in project $PROJECT, leader $(leader) (t+$(( $(date +%s) - started ))s)"

# A write on each protocol, each to another node, read back from yet another node over another
# protocol. $1 = a tag, so that the same check runs again after the failover; $2..$5 = the nodes
# that write over RESP, REST, TCP and gRPC.
scenario() {
  local tag=$1 r=$2 h=$3 t=$4 g=$5
  [ "$(redis-cli -p "$(cport "$r" 6379)" SET "resp-$tag" "resp-value-$tag")" = OK ] || die "RESP SET on node $r"
  curl -fsS -X PUT --data-binary "http-value-$tag" "http://127.0.0.1:$(cport "$h" 8080)/v1/kv/http-$tag" >/dev/null \
    || die "REST PUT on node $h"
  "$cli" -p "$(cport "$t" 7070)" put "tcp-$tag" "tcp-value-$tag" >/dev/null || die "TCP put on node $t"
  client grpc-put "$(cport "$g" 50051)" "grpc-$tag" "grpc-value-$tag" || die "gRPC Put on node $g"
}
# read_back TAG NODE...: every key of TAG read on each NODE, each over a protocol that did not write it.
read_back() {
  local tag=$1 n
  shift
  for n in "$@"; do
    [ "$(curl -fsS "http://127.0.0.1:$(cport "$n" 8080)/v1/kv/resp-$tag")" = "resp-value-$tag" ] \
      || die "REST GET on node $n of the RESP write ($tag)"
    [ "$("$cli" -p "$(cport "$n" 7070)" get "http-$tag")" = "http-value-$tag" ] \
      || die "TCP GET on node $n of the REST write ($tag)"
    [ "$(client grpc-get "$(cport "$n" 50051)" "tcp-$tag")" = "tcp-value-$tag" ] \
      || die "gRPC Get on node $n of the TCP write ($tag)"
    [ "$(redis-cli -p "$(cport "$n" 6379)" --raw GET "grpc-$tag")" = "grpc-value-$tag" ] \
      || die "RESP GET on node $n of the gRPC write ($tag)"
  done
}
scenario before 1 2 3 1
read_back before 2 3 1
echo "cluster-test: every protocol writes on every node and reads back on the others"

# The failover: a writer on the followers, the leader's container killed.
old=$(leader) || die "no leader"
survivors=()
for n in 1 2 3; do [ "$n" = "$old" ] || survivors+=("$n"); done
# (not under client's 60 s timeout: the writer stops on $work/stop, or after 300 s by itself)
PYTHONPATH="$work" "$venv/bin/python" docker/cluster_client.py writer "$work" \
  "$(cport "${survivors[0]}" 6379),$(cport "${survivors[1]}" 6379)" &
CLUSTER_PIDS+=($!)
writer=$!
deadline=$(( $(date +%s) + 30 ))
until [ "$(client count "$work")" -ge 20 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the writer got no 20 writes acknowledged within 30 s"
  sleep 0.1
done
docker kill "$(ccontainer "$old")" >/dev/null || die "docker kill of node $old"
killed_at=$(date +%s%N)
acked_at_kill=$(client count "$work")
echo "cluster-test: killed the leader, node $old ($acked_at_kill writes acknowledged so far)"
new=""
deadline=$(( $(date +%s) + 30 ))
while :; do
  for n in "${survivors[@]}"; do
    l=$(status "$n" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id"))' 2>/dev/null || true)
    if [ -n "$l" ] && [ "$l" != None ] && [ "$l" != "$old" ]; then new=$l; break 2; fi
  done
  [ "$(date +%s)" -lt "$deadline" ] || die "no new leader within 30 s of killing node $old"
  sleep 0.05
done
echo "cluster-test: node $new leads after $(( ($(date +%s%N) - killed_at) / 1000000 )) ms"
# Still down: `docker kill` counts as stopped by hand, so `restart: unless-stopped` leaves it.
[ "$(docker inspect -f '{{.State.Running}}' "$(ccontainer "$old")")" = false ] \
  || die "the killed container of node $old is running again by itself"
deadline=$(( $(date +%s) + 30 ))
until [ "$(client count "$work")" -ge $(( acked_at_kill + 50 )) ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "writes stopped: not 50 more acknowledged within 30 s of the kill"
  sleep 0.1
done
echo "cluster-test: writes continue ($(client count "$work") acknowledged) with node $old down"
[ "$(docker inspect -f '{{.State.Running}}' "$(ccontainer "$old")")" = false ] \
  || die "the killed container of node $old is running again by itself"
scenario after "${survivors[0]}" "${survivors[1]}" "${survivors[0]}" "${survivors[1]}"
read_back after "${survivors[1]}" "${survivors[0]}"

# The killed node comes back from its volume and catches up.
dc start "node$old" >/dev/null 2>&1 || die "docker compose start node$old"
wait_healthy "$old"
[ "$(leader)" != "" ] || die "no agreed leader after node $old came back"
touch "$work/stop"
wait "$writer" || die "the writer failed"
# Linearizable reads (the default) on the restarted node wait until it applied the leader's
# commit index: what it answers is what it holds.
client check "$work" "$(cport 1 8080)" "$(cport 2 8080)" "$(cport 3 8080)" || die "acknowledged writes lost, or unsent ones present"
read_back before 1 2 3
read_back after 1 2 3
[ "$(status "$old" | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])')" = follower ] \
  || die "node $old did not come back as a follower"
echo "cluster-test: node $old is back as a follower with every write; ok (t+$(( $(date +%s) - started ))s)"
