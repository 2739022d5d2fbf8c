#!/usr/bin/env bash
# Issue #18's figures, Redis 7 and NanoDB alternated in the same run (persistence off on both):
#   eval  redis-benchmark -n N -c 50 [-P 16] eval "return redis.call('incr',KEYS[1])" 1 k
#   multi nano-bench --protocol resp --workload txn: MULTI, 3 SETs, EXEC per request (P1, 50 users)
# and NanoDB alone (no Redis equivalent): an etcd-style transaction of 3 puts over gRPC (KV.Txn)
# and the binary TCP protocol (TXN), beside single SETs over the same protocol for scale.
# Prints each run, then medians and the NanoDB / Redis ratios.
#
#   scripts/bench-txn.sh
#
# Environment: ROUNDS (default 5), N (redis-benchmark requests, default 200000), NANODB, NB
# (release binaries by default), DURATION (nano-bench runs, default 4s after a 1s warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} N=${N:-200000} DURATION=${DURATION:-4s}
NANODB=${NANODB:-target/release/nanodb-server} NB=${NB:-target/release/nano-bench}
command -v redis-benchmark >/dev/null || { echo "bench-txn: needs redis-server and redis-benchmark (redis-tools)" >&2; exit 2; }
work=$(mktemp -d /tmp/nanodb-bench-txn.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ready() { for _ in $(seq 200); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done; echo "no PONG on $1" >&2; tail -5 "$work"/*.log >&2; exit 1; }
redis=$(port) resp=$(port) grpc=$(port) tcp=$(port)
redis-server --port "$redis" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
"$NANODB" --http-addr off --resp-addr 127.0.0.1:"$resp" --grpc-addr 127.0.0.1:"$grpc" --tcp-addr 127.0.0.1:"$tcp" \
  --persistence off >"$work/nanodb.log" 2>&1 & pids+=($!)
ready "$redis"; ready "$resp"
rb() { # PORT PIPELINE -> requests per second of the EVAL
  # The test name holds a comma (the script's text), so the CSV is read as CSV.
  redis-benchmark -p "$1" -n "$N" -c 50 -P "$2" --csv eval "return redis.call('incr',KEYS[1])" 1 k 2>/dev/null |
    python3 -c 'import csv,sys; rows=[r for r in csv.reader(sys.stdin) if len(r) > 1 and r[0] != "test"]; print(rows[-1][1])'
}
nb() { # PROTOCOL TARGET WORKLOAD -> ops/s
  "$NB" --no-progress --protocol "$1" --target "$2" --workload "$3" --concurrency 50 --duration "$DURATION" \
    --warmup 1s --value-size 64 --keyspace 100000 --json "$work/run.json" >/dev/null
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$work/run.json"
}
rows=(eval1 eval16 multi grpc-txn grpc-set tcp-txn tcp-set)
for r in "${rows[@]}"; do : >"$work/$r.redis"; : >"$work/$r.nanodb"; done
for round in $(seq "$ROUNDS"); do
  rb "$redis" 1 >>"$work/eval1.redis"; rb "$resp" 1 >>"$work/eval1.nanodb"
  rb "$redis" 16 >>"$work/eval16.redis"; rb "$resp" 16 >>"$work/eval16.nanodb"
  nb resp 127.0.0.1:"$redis" txn >>"$work/multi.redis"; nb resp 127.0.0.1:"$resp" txn >>"$work/multi.nanodb"
  nb grpc 127.0.0.1:"$grpc" txn >>"$work/grpc-txn.nanodb"; nb grpc 127.0.0.1:"$grpc" set >>"$work/grpc-set.nanodb"
  nb tcp 127.0.0.1:"$tcp" txn >>"$work/tcp-txn.nanodb"; nb tcp 127.0.0.1:"$tcp" set >>"$work/tcp-set.nanodb"
  printf 'round %s:' "$round"; for r in "${rows[@]}"; do printf ' %s %s/%s' "$r" "$(tail -1 "$work/$r.redis" 2>/dev/null || true)" "$(tail -1 "$work/$r.nanodb")"; done; echo
done
echo "$(redis-server --version | cut -d' ' -f1-3); $(nproc) CPUs; medians of $ROUNDS alternated rounds"
printf '%-10s %12s %12s %8s\n' row Redis NanoDB ratio
for r in "${rows[@]}"; do
  n=$(median <"$work/$r.nanodb")
  if [ -s "$work/$r.redis" ]; then
    d=$(median <"$work/$r.redis"); printf '%-10s %12.0f %12.0f %7.2fx\n' "$r" "$d" "$n" "$(echo "$n / $d" | bc -l)"
  else
    printf '%-10s %12s %12.0f %8s\n' "$r" - "$n" -
  fi
done
