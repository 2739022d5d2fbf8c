#!/usr/bin/env bash
# Server CPU time (user and system, in clock ticks from /proc/PID/stat) spent on N pipelined EVALs
# (50 connections, -P 16, the #18 benchmark's script), Redis 7 and NanoDB alternated, two rounds
# each. Where scripts/eval-instructions.sh counts instructions, this shows what they cost in time.
#
#   scripts/eval-cpu.sh            # target/release/nanodb-server
#
# Environment: NANODB (binary), N (EVALs per run, default 300000).
set -euo pipefail
cd "$(dirname "$0")/.."
NANODB=${NANODB:-target/release/nanodb-server} N=${N:-300000}
SCRIPT="return redis.call('incr',KEYS[1])"
work=$(mktemp -d /tmp/nanodb-evalcpu.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ready() { for _ in $(seq 200); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done; echo "no PONG on $1" >&2; exit 1; }
rp=$(port) np=$(port)
redis-server --port "$rp" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & R=$!; pids+=($R)
"$NANODB" --http-addr off --grpc-addr off --tcp-addr off --resp-addr 127.0.0.1:"$np" --persistence off >"$work/nanodb.log" 2>&1 & M=$!; pids+=($M)
ready "$rp"; ready "$np"
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
for side in redis nanodb redis nanodb; do
  if [ $side = redis ]; then p=$rp pid=$R; else p=$np pid=$M; fi
  read -r u0 s0 < <(ticks "$pid")
  redis-benchmark -p "$p" -n "$N" -c 50 -P 16 eval "$SCRIPT" 1 k >/dev/null 2>&1
  read -r u1 s1 < <(ticks "$pid")
  printf '%-7s %d EVALs: user %d ticks, system %d ticks\n' "$side" "$N" $((u1 - u0)) $((s1 - s0))
done
