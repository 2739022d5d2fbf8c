#!/usr/bin/env bash
# Network partitions on the three-node cluster in containers (issue #17): brings the cluster of
# docker/compose.cluster.yaml up as docker/cluster-test.sh does (no registry needed), then runs the
# crash harness against it with --docker-node: its clients write and read on every node through
# the published ports while it cuts nodes off the Raft network (`docker network disconnect`,
# then `connect`): the leader isolated (the majority must elect a leader and acknowledge writes,
# the old leader step down and catch up after the heal), a follower isolated, the leader's link
# flapping. Then the harness's checks: no write acknowledged by a node while it was cut off,
# nothing acknowledged lost, nothing unsent present, every node equal, each shared key's history
# linearizable (see tools/crash-harness/src/partition.rs). Tears everything down on exit.
#
#   docker/partition-test.sh [crash-harness flags...]   e.g. --duration 120s --partition-hold 6s
#
#   NANODB_BIN       the server binary for the image (see build-image.sh)
#   CRASH_HARNESS    the harness (default target/debug/crash-harness, built if missing)
set -euo pipefail
# shellcheck disable=SC2034 # read by cluster-lib.sh (the compose project name)
CLUSTER_NAME=partition
. "$(dirname "$0")/cluster-lib.sh"
harness=${CRASH_HARNESS:-target/debug/crash-harness}
[ -x "$harness" ] || cargo build -q -p crash-harness
"$harness" --help | grep -q -- --docker-node \
  || { echo "partition-test: $harness has no --docker-node; rebuild it" >&2; exit 1; }

cluster_up
echo "partition-test: three nodes up in project $PROJECT, leader $(leader); partitioning $RAFT_NET"
# --ready-timeout bounds every wait inside the run (a new leader, a catch-up, the convergence);
# `timeout` bounds the whole. --op-timeout 1s: a request to a cut-off node waits for a quorum it
# cannot reach; giving up after 1 s (the write is then indeterminate) lets each client send
# several requests per cut, which is what the minority check looks at.
timeout 600 "$harness" --docker-network "$RAFT_NET" \
  --docker-node "1=$(ccontainer 1 | cut -c1-12)" --docker-node "2=$(ccontainer 2 | cut -c1-12)" \
  --docker-node "3=$(ccontainer 3 | cut -c1-12)" \
  --duration 60s --partition-hold 4s --op-timeout 1s --ready-timeout 60s "$@" \
  || die "the crash harness found a violation or failed (its report is above)"
echo "partition-test: ok"
