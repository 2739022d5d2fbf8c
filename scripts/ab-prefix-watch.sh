#!/usr/bin/env bash
# Does one idle prefix watcher slow writers down? nano-bench SET over RESP, pipeline 16, against two NanoDB
# builds, each without and with one idle gRPC prefix Watch (a Python client generated from proto/),
# alternated over ROUNDS, medians. Usage: scripts/ab-prefix-watch.sh OLD_BIN NEW_BIN
set -euo pipefail
OLD=${1:?old binary} NEW=${2:?new binary} ROUNDS=${ROUNDS:-3} VENV=${VENV:-/tmp/nanodb-ci-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null || "$VENV/bin/pip" install -q grpcio grpcio-tools
work=$(mktemp -d /tmp/nanodb-abp.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$work" --grpc_python_out="$work" proto/nanodb/v1/*.proto
cat >"$work/watch.py" <<'PY'
import sys, grpc
sys.path.insert(0, sys.argv[2])
from nanodb.v1 import kv_pb2_grpc, watch_pb2 as w
events = kv_pb2_grpc.KVStub(grpc.insecure_channel(sys.argv[1])).Watch(w.WatchRequest(key=b"__idle:", prefix=True))
events.initial_metadata()
print("registered", flush=True)
for _ in events:
    pass
PY
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start() { "$1" --grpc-addr 127.0.0.1:"$3" --http-addr off --tcp-addr off --resp-addr 127.0.0.1:"$2" --persistence off >/dev/null 2>&1 & pids+=($!)
  for _ in $(seq 200); do [ "$(redis-cli -p "$2" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done; exit 1; }
ro=$(port); go=$(port); rn=$(port); gn=$(port); start "$OLD" "$ro" "$go"; start "$NEW" "$rn" "$gn"
NANO_BENCH=${NANO_BENCH:-target/release/nano-bench}
# nano-bench drives about 1M SET/s here, where contention between the cores shows; its JSON
# summary carries the throughput.
bench() { "$NANO_BENCH" --target 127.0.0.1:"$1" --protocol resp --workload set --concurrency 50 --pipeline 16 \
  --keyspace 100000 --value-size 64 --duration 5s --warmup 1s --json "$work/run.json" >/dev/null 2>&1
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ops_per_sec"])' "$work/run.json"; }
for _ in $(seq "$ROUNDS"); do for side in old new; do
  r=$([ $side = old ] && echo "$ro" || echo "$rn"); g=$([ $side = old ] && echo "$go" || echo "$gn")
  echo "$side none $(bench "$r")" >>"$work/res"
  "$VENV/bin/python" "$work/watch.py" 127.0.0.1:"$g" "$work" >"$work/w.out" 2>&1 & wp=$!
  for _ in $(seq 200); do grep -q registered "$work/w.out" && break; sleep 0.05; done
  echo "$side prefix $(bench "$r")" >>"$work/res"
  kill "$wp"; wait "$wp" 2>/dev/null || true
done; done
python3 - "$work/res" <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, mode, v = line.split(); d[(side, mode)].append(float(v))
print("| build | SET ops/s, no watcher | one idle prefix watcher | ratio |\n|---|---:|---:|---:|")
for side in ["old", "new"]:
    a, b = statistics.median(d[(side, "none")]), statistics.median(d[(side, "prefix")])
    print(f"| {side} | {a:,.0f} | {b:,.0f} | {b/a:.3f} |")
PY
