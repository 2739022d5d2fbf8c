#!/usr/bin/env bash
# Bulk loading: `nanodb-cli --pipe` into NanoDB against `redis-cli --pipe` into Redis, the same N
# keys and values from a file, alternated rounds on fresh servers (persistence off on both: this
# measures the loaders and the servers' write paths, not disks). Prints each round's seconds and
# keys/s, the medians and the ratio Redis time / NanoDB time (above 1.0: nanodb-cli is faster).
#
#   scripts/bench-bulk-load.sh
#
# Environment: N (default 1000000), ROUNDS (default 5), NANODB (default
# target/release/nanodb-server), CLI (default target/release/nanodb-cli), CLI_ARGS (extra
# nanodb-cli flags, e.g. "--pipe-batch 1024").
set -euo pipefail
N=${N:-1000000} ROUNDS=${ROUNDS:-5}
NANODB=${NANODB:-target/release/nanodb-server} CLI=${CLI:-target/release/nanodb-cli}
work=$(mktemp -d /tmp/nanodb-bulk.XXXXXX); pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 400); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The same data both ways: key:<i> = value-<i>.
python3 - "$N" "$work" <<'PY'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
with open(f"{work}/nanodb.txt", "w") as a, open(f"{work}/redis.resp", "w") as b:
    for i in range(n):
        k, v = f"key:{i}", f"value-{i}"
        a.write(f"put {k} {v}\n")
        b.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
PY
echo "data: $N puts, $(du -h "$work/nanodb.txt" | cut -f1) for nanodb-cli, $(du -h "$work/redis.resp" | cut -f1) for redis-cli"
: >"$work/n"; : >"$work/r"
for round in $(seq "$ROUNDS"); do
  p=$(port)
  "$NANODB" --grpc-addr off --http-addr off --resp-addr off --tcp-addr 127.0.0.1:"$p" --persistence off \
    --data-dir "$work/d" >"$work/nanodb.log" 2>&1 & pid=$!
  wait_port "$p"
  s=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$CLI" -p "$p" --pipe ${CLI_ARGS:-} <"$work/nanodb.txt" >"$work/out" || { cat "$work/out"; exit 1; }
  e=$(date +%s.%N)
  grep -q "errors: 0, replies: $N" "$work/out" || { cat "$work/out"; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  tn=$(echo "$e - $s" | bc -l); echo "$tn" >>"$work/n"

  p=$(port)
  redis-server --port "$p" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pid=$!
  wait_port "$p"
  s=$(date +%s.%N)
  redis-cli -p "$p" --pipe <"$work/redis.resp" >"$work/out"
  e=$(date +%s.%N)
  grep -q "errors: 0, replies: $N" "$work/out" || { cat "$work/out"; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  tr=$(echo "$e - $s" | bc -l); echo "$tr" >>"$work/r"
  printf 'round %d: nanodb-cli --pipe %.2f s (%.0f keys/s)   redis-cli --pipe %.2f s (%.0f keys/s)\n' \
    "$round" "$tn" "$(echo "$N / $tn" | bc -l)" "$tr" "$(echo "$N / $tr" | bc -l)"
done
mn=$(median <"$work/n"); mr=$(median <"$work/r")
printf 'median: nanodb-cli %.2f s, redis-cli %.2f s; ratio (redis time / nanodb time) %.2fx\n' "$mn" "$mr" "$(echo "$mr / $mn" | bc -l)"
