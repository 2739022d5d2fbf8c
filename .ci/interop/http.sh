#!/usr/bin/env bash
# The REST API as users meet it: the README's own curl and SSE examples, run as written against a
# fresh server, an SSE client (curl -N) receiving a write and a publish, then a schemathesis fuzz
# run against /openapi.json (bounded in time) that must find no 5xx.
. "$(dirname "$0")/../lib.sh"
need_apt curl

port=$(free_port)
start_nanodb --http-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"
base="http://127.0.0.1:$port"

# 1. The README's examples, extracted from their marked blocks and run unmodified with NANODB_HTTP
# set: the curl block, then the SSE block (curl -N streams that wait for `: ready` before writing).
# Both run twice against the same server, so their comments must hold on a rerun too, not only on
# an empty data dir.
examples=$(mktemp /tmp/nanodb-http-examples.XXXXXX.sh); _cleanup_dirs+=("$examples")
awk '/<!-- http-examples:start -->/{on=1; next} /<!-- http-examples:end -->/{on=0} on && !/^```/' README.md >"$examples"
[ "$(grep -c curl "$examples")" -ge 10 ] || fail "README http examples not found"
sse_examples=$(mktemp /tmp/nanodb-sse-examples.XXXXXX.sh); _cleanup_dirs+=("$sse_examples")
awk '/<!-- sse-examples:start -->/{on=1; next} /<!-- sse-examples:end -->/{on=0} on && !/^```/' README.md >"$sse_examples"
grep -q 'curl -sN' "$sse_examples" || fail "README SSE examples not found"
for run in 1 2; do
  out=$(NANODB_HTTP="127.0.0.1:$port" timeout 60 bash -euo pipefail "$examples" 2>&1) \
    || fail "README examples failed (run $run): $out"
  expect() { grep -qF -- "$1" <<<"$out" || fail "README examples (run $run): expected '$1' in output:
$out"; }
  expect 'hello world'
  expect '"encoding":"utf8"'
  expect '\0 377'          # od -c of the binary value under a key with '/' and ' '
  expect ' 412'
  expect ' 200'
  expect 'x-ttl-ms:'
  expect '{"value":5}'
  expect '"next_cursor"'
  expect '{"ok":{"value":3}}'
  expect '"field":"name"'
  expect '{"ttl_ms":'
  expect '{"applied":true}'
  expect '{"length":1}'
  expect '{"type":"hash"}'
  expect '"value":"job-1"'
  expect '204'
  expect '"protocol":"http"'
  expect 'nanodb_keys '
  # The conditional writes, in order: If-None-Match on an existing key, If-Match with the ETag
  # just read, the same ETag again (stale).
  [ "$(grep -Eo ' (200|412)$' <<<"$out" | tr -d ' ' | paste -sd,)" = "412,200,412" ] \
    || fail "README examples (run $run): conditional writes did not answer 412, 200, 412:
$out"
  echo "http: README curl examples ok (run $run)"

  out=$(NANODB_HTTP="127.0.0.1:$port" timeout 60 bash -euo pipefail "$sse_examples" 2>&1) \
    || fail "README SSE examples failed (run $run): $out"
  grep -qx ': ready' <<<"$out" || fail "README SSE examples (run $run): no ready line in:
$out"
  grep -qx 'data: {"type":"put","key":"user:2","key_encoding":"utf8","value":"Ada","encoding":"utf8","version":[0-9]*,"op":"set"}' <<<"$out" \
    || fail "README SSE examples (run $run): no put event in:
$out"
  grep -qx 'data: {"type":"message","channel":"news","channel_encoding":"utf8","message":"hello","encoding":"utf8"}' <<<"$out" \
    || fail "README SSE examples (run $run): no message in:
$out"
  echo "http: README SSE examples ok (run $run)"
done

# 2. Server-Sent Events with curl -N: a watcher sees a write made with curl, a subscriber a publish.
# Readiness is the server's subscriber gauge, polled; each stream is bounded by --max-time.
sse_dir=$(mktemp -d /tmp/nanodb-sse.XXXXXX); _cleanup_dirs+=("$sse_dir")
curl -sN --max-time 30 -D "$sse_dir/watch.h" "$base/v1/watch?key=sse%20key&values=true" >"$sse_dir/watch" &
_cleanup_pids+=("$!")
curl -sN --max-time 30 "$base/v1/subscribe/sse-news" >"$sse_dir/sub" &
_cleanup_pids+=("$!")
# poll SECONDS CONDITION...: true once CONDITION holds, false after SECONDS.
poll() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.05; done
}
subscribed() { curl -sf "$base/metrics" | grep -qx 'nanodb_feed_subscribers 2'; }
poll 10 subscribed || fail "sse: the two streams did not subscribe"
written=$(curl -sf -X PUT --data-binary 'hello sse' "$base/v1/kv/sse%20key") || fail "sse: put failed"
version=${written//[^0-9]/}
received=$(curl -sf -X POST --data-binary 'extra!' "$base/v1/publish/sse-news") || fail "sse: publish failed"
[ "$received" = '{"receivers":1}' ] || fail "sse: publish reached $received"
poll 10 grep -qF '"value":"hello sse"' "$sse_dir/watch" || fail "sse: no event for the write: $(cat "$sse_dir/watch")"
poll 10 grep -qF '"message":"extra!"' "$sse_dir/sub" || fail "sse: no message: $(cat "$sse_dir/sub")"
grep -qi '^content-type: text/event-stream' "$sse_dir/watch.h" || fail "sse: not text/event-stream"
grep -qx 'data: {"type":"put","key":"sse key","key_encoding":"utf8","value":"hello sse","encoding":"utf8","version":'"$version"',"op":"set"}' \
  "$sse_dir/watch" || fail "sse: unexpected event: $(cat "$sse_dir/watch")"
echo "http: SSE with curl -N ok"

# 3. Schema fuzzing: every generated request must get a non-5xx answer. The two event-stream
# routes are left out: a valid request to them is answered with an endless stream by design, which
# the fuzzer would report as a timeout (their bad-input answers are covered by the Rust tests).
need_pip schemathesis
st_dir=$(mktemp -d /tmp/nanodb-st.XXXXXX); _cleanup_dirs+=("$st_dir")
# Run from a scratch directory: schemathesis writes its cache (.schemathesis/) into the cwd.
# A failed case (a 5xx) fails the check at once. Schemathesis itself sometimes dies with a runtime
# error inside Hypothesis's optimiser after every case passed; that says nothing about the server,
# so such a run is repeated with the next seed (three crashes in a row still fail).
for seed in 4 5 6; do
  set +e
  (cd "$st_dir" && timeout 150 "$VENV/bin/st" run "$base/openapi.json" \
    --exclude-path-regex '^/v1/(watch|subscribe/)' \
    --checks not_a_server_error --max-examples 25 --max-time 60 --workers 2 --seed "$seed" \
    --phases examples,coverage,fuzzing --suppress-health-check all --request-timeout 5) >"$st_dir/out" 2>&1
  code=$?
  set -e
  tail -25 "$st_dir/out"
  [ "$code" -eq 0 ] && break
  if grep -Eq '[0-9]+ failed|Failures:|Server error|timed out' "$st_dir/out" || [ "$code" -eq 124 ]; then
    fail "schemathesis found a server error (or timed out) with seed $seed"
  fi
  grep -q 'Runtime Error' "$st_dir/out" || fail "schemathesis exited $code with seed $seed"
  echo "http: schemathesis crashed internally with seed $seed (no failed case); retrying"
  [ "$seed" -lt 6 ] || fail "schemathesis crashed three times in a row"
done
curl -sf "$base/healthz" >/dev/null || fail "server is not healthy after fuzzing"
echo "http: ok"
