#!/usr/bin/env bash
# Restart time with 1,000,000 keys: NanoDB recovering from its data directory next to Redis 7
# loading the same keys from its append-only file, measured the same way (process start until the
# server answers PING with PONG; Redis answers -LOADING until it is done).
#
#   cargo build --release -p nanodb-server && scripts/restart-time.sh
#
# Keys are 16 bytes, values 64 bytes, written with `redis-cli --pipe` to both servers with
# fsync everysec / appendfsync everysec. Environment: KEYS (default 1000000), ROUNDS (default 3).
set -euo pipefail
BIN=${NANODB_BIN:-target/release/nanodb-server}
KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-3}
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p nanodb-server first" >&2; exit 2; }
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
work=$(mktemp -d /tmp/nanodb-restart.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ms() { date +%s%3N; }
# quiesce_redis PORT: waits until Redis has no AOF rewrite running or scheduled. After loading, Redis
# rewrites its AOF in a forked child; stopping the parent does not stop the child, which would
# then compete with the next measurement.
quiesce_redis() {
  until redis-cli -p "$1" info persistence 2>/dev/null | tr -d '\r' \
      | awk -F: '$1=="aof_rewrite_in_progress"||$1=="aof_rewrite_scheduled"{s+=$2} END{exit s!=0}'; do
    sleep 0.05
  done
}
# wait_pong PORT: returns once PING answers PONG (polls; no fixed sleep).
wait_pong() { until [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; do sleep 0.01; done; }
start_redis() { redis-server --port "$1" --dir "$work/redis" --appendonly yes --appendfsync everysec --save '' >"$work/redis.log" 2>&1 & RPID=$!; pids+=("$RPID"); }
start_nanodb() { "$BIN" --resp-addr "127.0.0.1:$1" --grpc-addr off --http-addr off --tcp-addr off --data-dir "$work/nanodb" --fsync everysec >"$work/nanodb.log" 2>&1 & NPID=$!; pids+=("$NPID"); }

python3 - "$work/load.resp" "$KEYS" <<'PY'
import sys, os
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        k = b"k:%014d" % i; v = os.urandom(32).hex().encode()
        f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
mkdir -p "$work/redis" "$work/nanodb"
rp=$(port); np=$(port)
start_redis "$rp"; start_nanodb "$np"; wait_pong "$rp"; wait_pong "$np"
redis-cli -p "$rp" --pipe <"$work/load.resp" >/dev/null
redis-cli -p "$np" --pipe <"$work/load.resp" >/dev/null
quiesce_redis "$rp"
echo "loaded: redis dbsize=$(redis-cli -p "$rp" dbsize) nanodb dbsize=$(redis-cli -p "$np" dbsize)"
kill -TERM "$RPID" "$NPID"; wait "$RPID" "$NPID" 2>/dev/null || true
echo "on disk: redis $(du -sh "$work/redis" | cut -f1), nanodb $(du -sh "$work/nanodb" | cut -f1)"

r=(); n=()
for _ in $(seq "$ROUNDS"); do
  t=$(ms); start_redis "$rp"; wait_pong "$rp"; r+=($(( $(ms) - t )))
  [ "$(redis-cli -p "$rp" dbsize)" = "$KEYS" ] || { echo "redis lost keys" >&2; exit 1; }
  quiesce_redis "$rp"
  kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true
  t=$(ms); start_nanodb "$np"; wait_pong "$np"; n+=($(( $(ms) - t )))
  [ "$(redis-cli -p "$np" dbsize)" = "$KEYS" ] || { echo "nanodb lost keys" >&2; exit 1; }
  kill -TERM "$NPID"; wait "$NPID" 2>/dev/null || true
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rm_=$(med "${r[@]}"); nm=$(med "${n[@]}")
echo "restart with $KEYS keys (ms, per round): redis ${r[*]}  nanodb ${n[*]}"
printf 'median: Redis %d ms, NanoDB %d ms, NanoDB/Redis time %s\n' "$rm_" "$nm" "$(python3 -c "print(f'{$nm/max($rm_,1):.2f}x')")"
