#!/usr/bin/env bash
# nano-bench as a user runs it: against real Redis 7 over RESP (populate, hits, counters, error
# kinds, exit codes), against the NanoDB binary over the binary TCP protocol, and a refused target.
. "$(dirname "$0")/../lib.sh"

need_apt redis-server redis-tools
BENCH=${NANO_BENCH_BIN:-target/debug/nano-bench}
cargo build -q -p nano-bench # no-op after the tests
dir=$(mktemp -d /tmp/nano-bench-ci.XXXXXX); _cleanup_dirs+=("$dir")
field() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); [v:=v[k] for k in sys.argv[2].split(".")]; print(v)' "$1" "$2"; }

rport=$(free_port)
redis-server --port "$rport" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
_cleanup_pids+=($!)
for _ in $(seq 1 100); do [ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
[ "$(redis-cli -p "$rport" ping)" = PONG ] || fail "redis-server did not start"

# populate + pipelined GETs: every read hits, every request is counted
"$BENCH" --no-progress --target "127.0.0.1:$rport" --protocol resp --concurrency 4 --pipeline 8 \
  --requests 2000 --workload get --keyspace 5000 --populate --json "$dir/get.json" >"$dir/get.out" \
  || fail "resp get run: $(cat "$dir/get.out")"
[ "$(field "$dir/get.json" requests)" = 8000 ] || fail "resp get: requests $(field "$dir/get.json" requests)"
[ "$(field "$dir/get.json" errors)" = 0 ] || fail "resp get: errors $(cat "$dir/get.out")"
[ "$(field "$dir/get.json" misses)" = 0 ] || fail "resp get: misses after --populate"
[ "$(redis-cli -p "$rport" dbsize)" = 5000 ] || fail "populate: dbsize $(redis-cli -p "$rport" dbsize)"

# INCR on one key from 3 users over 2 shared connections: Redis agrees on the count
"$BENCH" --no-progress --target "127.0.0.1:$rport" --protocol resp --concurrency 3 --connections 2 \
  --pipeline 4 --requests 100 --workload incr --keyspace 1 --key-prefix ctr: >/dev/null || fail "resp incr run"
[ "$(redis-cli -p "$rport" get ctr:000000000000)" = 300 ] || fail "incr: counter is $(redis-cli -p "$rport" get ctr:000000000000)"

# server errors are counted by kind and make the exit code 2
redis-cli -p "$rport" lpush list:000000000000 x >/dev/null
set +e
"$BENCH" --no-progress --target "127.0.0.1:$rport" --protocol resp --concurrency 1 --requests 10 \
  --workload incr --keyspace 1 --key-prefix list: --json "$dir/err.json" >"$dir/err.out"
code=$?
set -e
[ "$code" -eq 2 ] || fail "request errors: expected exit 2, got $code"
[ "$(field "$dir/err.json" errors_by_kind.resp\ WRONGTYPE)" = 10 ] || fail "WRONGTYPE not counted: $(cat "$dir/err.out")"
grep -q WRONGTYPE "$dir/err.out" || fail "the summary does not show the error kind"

# a refused target: one line, exit 1
closed=$(free_port)
set +e
out=$("$BENCH" --no-progress --target "127.0.0.1:$closed" --protocol resp --requests 1 2>&1 >/dev/null)
code=$?
set -e
[ "$code" -eq 1 ] || fail "refused: expected exit 1, got $code"
[ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "cannot connect to 127.0.0.1:$closed (resp)" \
  || fail "refused: expected one clear line, got: $out"

# the binary TCP protocol against the server binary, open loop
tport=$(free_port)
start_nanodb --tcp-addr "127.0.0.1:$tport"
wait_port "$tport" || fail "server did not start"
"$BENCH" --no-progress --target "127.0.0.1:$tport" --protocol tcp --concurrency 4 --duration 1s \
  --rate 2000 --workload mixed --populate --keyspace 1000 --json "$dir/tcp.json" --hdr-out "$dir/tcp.hgrm" \
  --plot "$dir/tcp.svg" >/dev/null || fail "tcp run"
[ "$(field "$dir/tcp.json" errors)" = 0 ] || fail "tcp: errors"
python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['requests']; sys.exit(0 if 1700 <= r <= 2300 else 1)" "$dir/tcp.json" \
  || fail "tcp open loop: $(field "$dir/tcp.json" requests) requests, expected about 2000"
grep -q '1/(1-Percentile)' "$dir/tcp.hgrm" || fail "--hdr-out format"
grep -q '<svg' "$dir/tcp.svg" || fail "--plot"

# NanoDB's RESP port, when this build has it
nport=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$nport"
if wait_port "$nport" 3 2>/dev/null; then
  "$BENCH" --no-progress --target "127.0.0.1:$nport" --protocol resp --concurrency 4 --pipeline 8 \
    --requests 500 --workload get --keyspace 1000 --populate --json "$dir/nresp.json" >/dev/null || fail "nanodb resp run"
  [ "$(field "$dir/nresp.json" errors)" = 0 ] && [ "$(field "$dir/nresp.json" misses)" = 0 ] || fail "nanodb resp: errors or misses"
else
  echo "nano-bench: NanoDB's RESP frontend is not in this build; skipped"
fi
echo "nano-bench: ok"
