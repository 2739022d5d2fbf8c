#!/usr/bin/env bash
# Instructions per EVAL, counted by callgrind over the whole server process (every thread, user
# space only), for the #18 benchmark's script under redis-benchmark's pipelined load: 50
# connections, -P 16, 5,000 EVALs to warm up (not counted), then N counted. Deterministic, so it
# compares builds (and Redis) without a quiet machine; it does not count kernel time or cycles.
#
#   scripts/eval-instructions.sh                      # target/release/nanodb-server
#   scripts/eval-instructions.sh redis                # redis-server, the same load
#   scripts/eval-instructions.sh /tmp/old-nanodb      # another build
#
# Environment: N (counted EVALs, default 50000), SCRIPT (default the issue's INCR script).
set -euo pipefail
cd "$(dirname "$0")/.."
SIDE=${1:-target/release/nanodb-server} N=${N:-50000}
SCRIPT=${SCRIPT:-"return redis.call('incr',KEYS[1])"}
for tool in valgrind callgrind_control redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "eval-instructions: needs valgrind and redis-tools (apt-get install -y valgrind redis-tools)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/nanodb-evalcg.XXXXXX); vp=
trap '[ -n "$vp" ] && kill "$vp" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
if [ "$SIDE" = redis ]; then
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" redis-server --port "$port" --save '' --appendonly no >"$work/log" 2>&1 &
else
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$SIDE" --http-addr off --grpc-addr off --tcp-addr off \
    --resp-addr 127.0.0.1:"$port" --persistence off >"$work/log" 2>&1 &
fi
vp=$!
for _ in $(seq 300); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.2; done
[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] || { echo "eval-instructions: the server did not start" >&2; tail -5 "$work/log" >&2; exit 1; }
redis-benchmark -p "$port" -n 5000 -c 50 -P 16 eval "$SCRIPT" 1 k >/dev/null 2>&1
callgrind_control -z "$vp" >/dev/null 2>&1
redis-benchmark -p "$port" -n "$N" -c 50 -P 16 eval "$SCRIPT" 1 k >/dev/null 2>&1
callgrind_control -d "$vp" >/dev/null 2>&1
for _ in $(seq 100); do ls "$work"/cg.out.* >/dev/null 2>&1 && break; sleep 0.1; done
total=$(awk '/^totals:/ {print $2}' "$(ls -t "$work"/cg.out.* | head -1)")
echo "$SIDE: $((total / N)) instructions per EVAL ($N EVALs, -P 16, 50 connections)"
