#!/usr/bin/env bash
# Alternated nano-bench A/B of two NanoDB builds over the binary TCP protocol, gRPC and REST: each
# round starts A, measures, stops it, then the same for B, so the noise of this shared machine hits
# both. Prints ops/s and p99 per run, then the median of each side and their ratio per protocol.
#
#   scripts/ab-nano-bench.sh OLD_BIN NEW_BIN
#
# Environment: ROUNDS (default 3), PROTOCOLS (default "tcp grpc http"), NB (the nano-bench binary,
# default target/release/nano-bench), ARGS (the load, default GETs of 64-byte values, 50 users,
# one request in flight each, 4 s after a 1 s warm-up), A_FLAGS / B_FLAGS (extra server flags for a
# side) and A_ARGS / B_ARGS (extra nano-bench arguments for a side). Authentication on against
# off, same build:
#   B_FLAGS="--requirepass pw" B_ARGS="--password pw" scripts/ab-nano-bench.sh BIN BIN
set -euo pipefail
A=${1:?usage: ab-nano-bench.sh A_BIN B_BIN} B=${2:?second binary}
ROUNDS=${ROUNDS:-3} PROTOCOLS=${PROTOCOLS:-"tcp grpc http"} NB=${NB:-target/release/nano-bench}
ARGS=${ARGS:-"--workload get --populate --concurrency 50 --duration 4s --warmup 1s --value-size 64"}
work=$(mktemp -d /tmp/nanodb-ab-nb.XXXXXX); pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
tcp=$(port) grpc=$(port) http=$(port)
start() { # BIN EXTRA_FLAGS
  # shellcheck disable=SC2086
  "$1" ${2:-} --tcp-addr 127.0.0.1:"$tcp" --grpc-addr 127.0.0.1:"$grpc" --http-addr 127.0.0.1:"$http" \
    --resp-addr off --persistence off >"$work/server.log" 2>&1 & pid=$!
  for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$http") 2>/dev/null && return; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for proto in $PROTOCOLS; do
  target=127.0.0.1:${!proto}
  : >"$work/$proto-a"; : >"$work/$proto-b"
  for round in $(seq "$ROUNDS"); do
    for side in a b; do
      bin=$([ "$side" = a ] && echo "$A" || echo "$B")
      flags=$([ "$side" = a ] && echo "${A_FLAGS:-}" || echo "${B_FLAGS:-}")
      extra=$([ "$side" = a ] && echo "${A_ARGS:-}" || echo "${B_ARGS:-}")
      start "$bin" "$flags"
      # shellcheck disable=SC2086
      "$NB" --protocol "$proto" --target "$target" $ARGS $extra --json "$work/run.json" >/dev/null
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      read -r ops p99 < <(python3 -c "import json;d=json.load(open('$work/run.json'));print(round(d['ops_per_sec']), d['latency_us']['p99'])")
      echo "$ops" >>"$work/$proto-$side"
      printf '%-5s round %d %s: %9s ops/s  p99 %s us\n' "$proto" "$round" "$side" "$ops" "$p99"
    done
  done
  ma=$(median <"$work/$proto-a") mb=$(median <"$work/$proto-b")
  printf '%-5s median A %s  B %s  B/A %s\n' "$proto" "$ma" "$mb" "$(python3 -c "print(round($mb/$ma, 3))")"
done
