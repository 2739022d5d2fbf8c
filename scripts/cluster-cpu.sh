#!/usr/bin/env bash
# Server CPU per write in a three-node cluster: what the leader and one follower spend per SET,
# next to the throughput, so that a change to the Raft path can be judged by the work it does as
# well as by ops/s (which, at one request in flight on a small VM, also follows wake-up latency).
#
#   scripts/cluster-cpu.sh [BIN...]     # default target/release/nanodb-server; several BINs alternate
#
# Each run starts three nodes on loopback (--fsync always, fresh temp data dirs), waits for a
# leader, drives it with nano-bench (--workload set, $CONNS users, --pipeline $PIPELINE,
# --protocol $PROTOCOL, 1 s warm-up + $DURATION s), reads the CPU ticks (user + system,
# /proc/PID/stat) of the leader and of one follower over $SAMPLE seconds in the middle of the
# load, and prints ops/s and microseconds of CPU per op for each. Runs repeat $ROUNDS times, the
# binaries alternating within each round.
#
# Environment: NB (default target/release/nano-bench), ROUNDS (2), CONNS (50), PIPELINE (1),
# PROTOCOL (tcp; grpc or resp), DURATION (8), SAMPLE (4). Every wait is bounded; every process and
# temp dir go on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
NB=${NB:-target/release/nano-bench} ROUNDS=${ROUNDS:-2} CONNS=${CONNS:-50} PIPELINE=${PIPELINE:-1}
PROTOCOL=${PROTOCOL:-tcp} DURATION=${DURATION:-8} SAMPLE=${SAMPLE:-4}
[ $# -gt 0 ] || set -- target/release/nanodb-server
work=$(mktemp -d /tmp/nanodb-cluster-cpu.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
leader_of() { # HTTP port of any node: the leader's id, empty while there is none
  curl -sf "127.0.0.1:$1/v1/cluster" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id") or "")' 2>/dev/null || true
}

run() { # BIN
  local bin=$1 i peers="" lid="" fid
  declare -A RAFT HTTP TARGET PID
  for i in 1 2 3; do
    RAFT[$i]=$(port); HTTP[$i]=$(port)
    peers+="${peers:+,}$i=127.0.0.1:${RAFT[$i]}"
  done
  for i in 1 2 3; do
    local tcp grpc resp
    tcp=$(port) grpc=$(port) resp=$(port)
    case $PROTOCOL in tcp) TARGET[$i]=127.0.0.1:$tcp ;; grpc) TARGET[$i]=127.0.0.1:$grpc ;; resp) TARGET[$i]=127.0.0.1:$resp ;; esac
    "$bin" --node-id "$i" --raft-addr "127.0.0.1:${RAFT[$i]}" --cluster-peers "$peers" \
      --tcp-addr "127.0.0.1:$tcp" --grpc-addr "127.0.0.1:$grpc" --resp-addr "127.0.0.1:$resp" \
      --http-addr "127.0.0.1:${HTTP[$i]}" --data-dir "$work/node$i" --fsync always >"$work/node$i.log" 2>&1 &
    PID[$i]=$!; pids+=("$!")
  done
  for _ in $(seq 300); do lid=$(leader_of "${HTTP[1]}"); [ -n "$lid" ] && break; sleep 0.1; done
  [ -n "$lid" ] || { echo "cluster-cpu: no leader within 30 s" >&2; tail -5 "$work"/node*.log >&2; exit 1; }
  fid=$((lid % 3 + 1))
  "$NB" --protocol "$PROTOCOL" --target "${TARGET[$lid]}" --workload set --concurrency "$CONNS" \
    --pipeline "$PIPELINE" --duration "${DURATION}s" --warmup 1s >"$work/nb.out" 2>&1 &
  local nb=$!
  sleep $(( (DURATION + 1 - SAMPLE) / 2 + 1 ))
  local l0 f0 l1 f1 ops
  l0=$(ticks "${PID[$lid]}"); f0=$(ticks "${PID[$fid]}")
  sleep "$SAMPLE"
  l1=$(ticks "${PID[$lid]}"); f1=$(ticks "${PID[$fid]}")
  wait "$nb" || { cat "$work/nb.out" >&2; exit 1; }
  ops=$(grep -oE '^ *[0-9,]+ ops/s' "$work/nb.out" | tr -d ', ops/' | head -1)
  python3 - "$bin" "$ops" "$l0" "$l1" "$f0" "$f1" "$SAMPLE" "$(getconf CLK_TCK)" <<'PY'
import sys
bin, ops, l0, l1, f0, f1, sample, hz = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
per = lambda a, b: (b - a) / hz / sample / ops * 1e6
print(f"{bin}: {ops} ops/s  leader {per(l0, l1):.1f} us/op  follower {per(f0, f1):.1f} us/op")
PY
  for i in 1 2 3; do kill "${PID[$i]}" 2>/dev/null || true; wait "${PID[$i]}" 2>/dev/null || true; done
  rm -rf "$work"/node*
}

for r in $(seq "$ROUNDS"); do
  for bin in "$@"; do run "$bin"; done
done
