#!/usr/bin/env bash
# Crash harness (issue #16): kill -9 NanoDB under load and check what it acknowledged.
#
#   scripts/crash-cluster.sh [--single] [crash-harness flags...]
#
# Default: three nanodb-server processes in cluster mode (--node-id, --raft-addr, --cluster-peers)
# on free loopback ports, --fsync always, writers and readers on every node over the binary TCP
# protocol and RESP, the leader and random nodes killed with SIGKILL and restarted from their data
# dirs; then every acknowledged write must be on every node, nothing unsent may appear, and each
# shared key's history must be linearizable. Multi-key groups too (issue #18, unless --no-groups):
# tagged 10-key MSETs and version-guarded transfers (TXN; MULTI/EXEC on one node) must be whole or
# absent after every restart and at the end, and the accounts' sum conserved. --single runs one server without cluster flags (kill
# -9 + restart: acknowledged writes survive). Flags after it go to the harness and override the
# defaults below (e.g. --duration 60s --kills 20 --election-timeout-ms 300 --keep); see
# `target/debug/crash-harness --help`. Exit status 0 = passed.
#
# Binaries: $NANODB_BIN and $CRASH_HARNESS (default target/debug/...), built if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
NANODB_BIN=${NANODB_BIN:-target/debug/nanodb-server}
CRASH_HARNESS=${CRASH_HARNESS:-target/debug/crash-harness}
if [ ! -x "$NANODB_BIN" ] || [ ! -x "$CRASH_HARNESS" ]; then
  cargo build -p nanodb-server -p crash-harness
fi

nodes=3
if [ "${1:-}" = --single ]; then nodes=1; shift; fi
if [ "$nodes" -gt 1 ] && ! "$NANODB_BIN" --help | grep -- --raft-addr >/dev/null; then
  echo "crash-cluster: $NANODB_BIN has no --raft-addr (no cluster mode in this build); run with --single" >&2
  exit 2
fi
exec "$CRASH_HARNESS" --server "$NANODB_BIN" --nodes "$nodes" --duration 60s --kills 10 "$@"
