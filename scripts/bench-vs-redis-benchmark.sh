#!/usr/bin/env bash
# Is nano-bench the bottleneck? Against one Redis, alternating rounds of redis-benchmark and
# nano-bench with the same connections, pipeline depth, keyspace and value size; prints the
# medians, the ratio nano-bench / redis-benchmark and each tool's CPU seconds per million requests.
#
#   scripts/bench-vs-redis-benchmark.sh          (ROUNDS=5, PIPELINES="1 16", CONNS=50, N=1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} PIPELINES=${PIPELINES:-"1 16"} CONNS=${CONNS:-50} N=${N:-1000000}
BENCH=target/release/nano-bench
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p nano-bench
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }
work=$(mktemp -d /tmp/nano-bench-vs.XXXXXX)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$port" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
redis-benchmark -p "$port" -t set -n 200000 -r 100000 -d 64 -P 16 -c 50 -q >/dev/null # populate key:*
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
cpu() { awk '{print $1+$2}' "$1"; } # user + sys seconds from /usr/bin/time -f '%U %S'
echo "$(redis-server --version | cut -d' ' -f1-3); $(nproc) CPUs; GET, $CONNS connections, $N requests, 64 B values, 100000 keys"
printf '%-4s %14s %14s %7s %16s %16s\n' P redis-benchmark nano-bench ratio rb-cpu-s/Mreq nb-cpu-s/Mreq
for P in $PIPELINES; do
  : >"$work/rb"; : >"$work/nb"; : >"$work/rbc"; : >"$work/nbc"
  for _ in $(seq "$ROUNDS"); do
    /usr/bin/time -o "$work/t" -f '%U %S' redis-benchmark -p "$port" -t get -c "$CONNS" -P "$P" -n "$N" -d 64 -r 100000 --csv \
      2>/dev/null | tr -d '"' | awk -F, '$1=="GET"{print $2}' >>"$work/rb"
    echo "$(cpu "$work/t") * 1000000 / $N" | bc -l >>"$work/rbc"
    /usr/bin/time -o "$work/t" -f '%U %S' "$BENCH" --no-progress --threads 1 --target "127.0.0.1:$port" --protocol resp \
      --concurrency "$CONNS" --pipeline "$P" --workload get --keyspace 100000 --value-size 64 --requests $((N / CONNS)) \
      --json "$work/nb.json" >/dev/null
    python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["ops_per_sec"])' "$work/nb.json" >>"$work/nb"
    echo "$(cpu "$work/t") * 1000000 / $N" | bc -l >>"$work/nbc"
  done
  rb=$(median <"$work/rb"); nb=$(median <"$work/nb")
  printf '%-4s %14.0f %14.0f %6.2fx %16.3f %16.3f\n' "$P" "$rb" "$nb" "$(echo "$nb / $rb" | bc -l)" \
    "$(median <"$work/rbc")" "$(median <"$work/nbc")"
done
echo "(both tools single-threaded: nano-bench runs with --threads 1, like redis-benchmark's default)"
