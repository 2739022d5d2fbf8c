#!/usr/bin/env bash
# The three-node cluster in containers (issue #17), built and run here without a registry from the
# host-built server (the debootstrap base is cached by tag, see docker.sh):
# - docker/cluster-test.sh: every protocol through the published ports, the leader's container
#   killed (a new leader, writes go on), restarted (nothing acknowledged lost);
# - docker/partition-test.sh: the crash harness's clients and checks while the Raft network is
#   cut (leader isolated, follower isolated, a flapping link), about a minute and a half;
# - docker/failover-partition.sh with 2 trials, so that the measuring script keeps working.
# Needs a Docker engine; set NANODB_CI_DOCKER=optional to skip on a machine without one.
. "$(dirname "$0")/../lib.sh"
if ! docker info >/dev/null 2>&1; then
  [ "${NANODB_CI_DOCKER:-required}" = optional ] && { echo "docker cluster: no engine here; skipped (NANODB_CI_DOCKER=optional)"; exit 0; }
  fail "no Docker engine (docker info failed); set NANODB_CI_DOCKER=optional to skip this check"
fi
if ! "$NANODB_BIN" --help | grep -q -- --raft-addr; then
  echo "docker cluster: $NANODB_BIN has no --raft-addr (no cluster mode); skipped"
  exit 0
fi
need_apt redis-tools curl
# The compose file parses (the image named in it is built with docker/Dockerfile, which needs a
# registry; the scripts use the local image instead).
if command -v docker-compose >/dev/null; then
  docker-compose -f docker/compose.cluster.yaml config -q || fail "docker/compose.cluster.yaml does not parse"
else
  docker compose -f docker/compose.cluster.yaml config -q || fail "docker/compose.cluster.yaml does not parse"
fi
export CRASH_HARNESS=${CRASH_HARNESS:-$PWD/target/debug/crash-harness}
[ -x "$CRASH_HARNESS" ] || cargo build -p crash-harness
# Bounded: a first debootstrap on a slow mirror (docker.sh normally made the base already), then
# about a minute for the scenario, two for the partitions, half a minute for the trials.
NANODB_BIN="$NANODB_BIN" timeout 900 docker/cluster-test.sh || fail "docker cluster test"
NANODB_BIN="$NANODB_BIN" timeout 300 docker/partition-test.sh || fail "docker partition test"
NANODB_BIN="$NANODB_BIN" TRIALS=2 timeout 180 docker/failover-partition.sh || fail "docker failover-under-partition trials"
