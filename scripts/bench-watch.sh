#!/usr/bin/env bash
# What watching costs (issue #8's closing figures), measured in one run against one server and
# printed as Markdown on stdout:
#  - SET throughput with 0, 1 and 100 idle gRPC watchers on keys the load never writes, the runs
#    alternated (0,1,100,0,1,100,...) to spread the machine's noise, medians and ratios to 0;
#  - event delivery latency, write to receipt: writes over $PROTOCOL, one gRPC prefix Watch.
# From the repository root (takes about 2 minutes after the build):
#
#   scripts/bench-watch.sh
#
# Environment: PROTOCOL (resp; or tcp, grpc, http), ROUNDS (3), WATCHERS ("0 1 100"), DURATION
# (10s), WARMUP (2s), CONCURRENCY (50), PIPELINE (1), KEYSPACE (100000), VALUE_SIZE (64),
# LAT_RATE (5000 writes/s), LAT_WRITERS (4), LAT_DURATION (10s), NANODB_ARGS (extra server flags),
# PROFILE (release; debug for a quick check of the script itself), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=${PROTOCOL:-resp} ROUNDS=${ROUNDS:-3} WATCHERS=${WATCHERS:-"0 1 100"}
DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} CONCURRENCY=${CONCURRENCY:-50} PIPELINE=${PIPELINE:-1}
KEYSPACE=${KEYSPACE:-100000} VALUE_SIZE=${VALUE_SIZE:-64}
LAT_RATE=${LAT_RATE:-5000} LAT_WRITERS=${LAT_WRITERS:-4} LAT_DURATION=${LAT_DURATION:-10s}
PROFILE=${PROFILE:-release}
SERVER=target/$PROFILE/nanodb-server BENCH=target/$PROFILE/nano-bench
work=$(mktemp -d /tmp/nanodb-bench-watch.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { for _ in $(seq 1 "${2:-200}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" -q -p nanodb-server -p nano-bench
fi

# NanoDB with every frontend on a free port, nothing kept on disk
gp=$(port) hp=$(port) tp=$(port) rp=$(port)
"$SERVER" --grpc-addr "127.0.0.1:$gp" --http-addr "127.0.0.1:$hp" --tcp-addr "127.0.0.1:$tp" \
  --resp-addr "127.0.0.1:$rp" --data-dir "$work/data" --persistence off ${NANODB_ARGS:-} >"$work/nanodb.log" 2>&1 &
pids+=($!)
case $PROTOCOL in tcp) wp=$tp ;; resp) wp=$rp ;; grpc) wp=$gp ;; http) wp=$hp ;;
  *) echo "PROTOCOL must be tcp, resp, grpc or http" >&2; exit 1 ;; esac
for p in "$gp" "$wp"; do
  listening "$p" || { echo "nanodb-server did not start:" >&2; cat "$work/nanodb.log" >&2; exit 1; }
done

set_flags=(--protocol "$PROTOCOL" --workload set --concurrency "$CONCURRENCY" --pipeline "$PIPELINE"
  --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP")
lat_flags=(--write-protocol "$PROTOCOL" --concurrency "$LAT_WRITERS" --rate "$LAT_RATE" --duration "$LAT_DURATION"
  --warmup 1s --value-size "$VALUE_SIZE")
runs=()
for round in $(seq 1 "$ROUNDS"); do
  for w in $WATCHERS; do
    out="$work/set-$w-$round.json"
    echo "round $round/$ROUNDS: SET over $PROTOCOL with $w idle watchers" >&2
    "$BENCH" --no-progress --target "127.0.0.1:$wp" "${set_flags[@]}" --watchers "$w" \
      --watch-addr "127.0.0.1:$gp" --label "$w watchers" --json "$out" >"$work/set-$w-$round.txt" 2>&1 ||
      { cat "$work/set-$w-$round.txt" >&2; [ -s "$out" ] || exit 1; }
    runs+=("$w" "$out")
  done
done
echo "event delivery latency: $LAT_RATE writes/s over $PROTOCOL, one gRPC prefix Watch" >&2
lat="$work/latency.json"
"$BENCH" watch-latency --target "127.0.0.1:$gp" --write-target "127.0.0.1:$wp" "${lat_flags[@]}" --json "$lat" \
  >"$work/latency.txt" 2>&1 || { cat "$work/latency.txt" >&2; [ -s "$lat" ] || exit 1; }

python3 - "$lat" "$PROTOCOL" "$ROUNDS" "$WATCHERS" \
  "nano-bench --target 127.0.0.1:PORT ${set_flags[*]} --watchers N --watch-addr 127.0.0.1:GRPC_PORT" \
  "nano-bench watch-latency --target 127.0.0.1:GRPC_PORT --write-target 127.0.0.1:PORT ${lat_flags[*]}" \
  "$(nproc)" "${runs[@]}" <<'PY'
import datetime, json, statistics, sys
lat, proto, rounds, watchers, set_cmd, lat_cmd, cpus, *runs = sys.argv[1:]
by = {}
for w, path in zip(runs[::2], runs[1::2]):
    by.setdefault(int(w), []).append(json.load(open(path)))
order = [int(w) for w in watchers.split()]
base = statistics.median(r["ops_per_sec"] for r in by[order[0]]) if order and order[0] in by else None
ms = lambda us: f"{us / 1000:.3f}"
print(f"### Watch cost ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, scripts/bench-watch.sh)")
print()
print(f"SET over {proto}, one server, {cpus} CPUs shared by client and server; {rounds} rounds with the "
      "watcher counts alternated, medians; idle gRPC Watch streams on keys the load never writes.")
print()
print(f"| idle watchers | SET ops/s (median) | ratio to {order[0] if order else 0} | runs (ops/s) | errors |")
print("|---:|---:|---:|---|---:|")
for w in order:
    rs = by.get(w, [])
    med = statistics.median(r["ops_per_sec"] for r in rs)
    ratio = f"{med / base:.3f}" if base else "n/a"
    each = " / ".join(f"{r['ops_per_sec']:,.0f}" for r in rs)
    print(f"| {w} | {med:,.0f} | {ratio} | {each} | {sum(r['errors'] for r in rs)} |")
j = json.load(open(lat)); l = j["latency_us"]; e = j["events"]
print()
print(f"| event delivery, {proto} write to gRPC Watch receipt | writes/s | events | missing | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {j['concurrency']} writers, values {j['value_size']} B | {j['rate']:,.0f} | {e['recorded']:,} | {e['missing']} | "
      f"{ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} | {ms(l['p999'])} | {ms(l['max'])} |")
print()
print("```sh")
print(set_cmd)
print(lat_cmd)
print("```")
if j["errors"]:
    print(f"\n**The latency run had errors:** {j['errors_by_kind']}")
PY
