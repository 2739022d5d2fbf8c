#!/usr/bin/env bash
# The REST API as users meet it: the README's own curl examples, run as written against a fresh
# server, then a schemathesis fuzz run against /openapi.json (bounded in time) that must find no 5xx.
. "$(dirname "$0")/../lib.sh"
need_apt curl

port=$(free_port)
start_nanodb --http-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"
base="http://127.0.0.1:$port"

# 1. The README's examples, extracted from the marked block, run unmodified with NANODB_HTTP set.
examples=$(mktemp /tmp/nanodb-http-examples.XXXXXX.sh); _cleanup_dirs+=("$examples")
awk '/<!-- http-examples:start -->/{on=1; next} /<!-- http-examples:end -->/{on=0} on && !/^```/' README.md >"$examples"
[ "$(grep -c curl "$examples")" -ge 10 ] || fail "README http examples not found"
out=$(NANODB_HTTP="127.0.0.1:$port" bash -euo pipefail "$examples" 2>&1) || fail "README examples failed: $out"
expect() { grep -qF -- "$1" <<<"$out" || fail "README examples: expected '$1' in output:
$out"; }
expect 'hello world'
expect '"encoding":"utf8"'
expect '\0 377'          # od -c of the binary value under a key with '/' and ' '
expect ' 412'
expect ' 200'
expect 'x-ttl-ms:'
expect '{"value":5}'
expect '"next_cursor"'
expect '{"ok":3}'
expect '"field":"name"'
expect '"value":"job-1"'
expect '204'
expect '"protocol":"http"'
expect 'nanodb_keys '
echo "http: README curl examples ok"

# 2. Schema fuzzing: every generated request must get a non-5xx answer.
need_pip schemathesis
st_dir=$(mktemp -d /tmp/nanodb-st.XXXXXX); _cleanup_dirs+=("$st_dir")
# Run from a scratch directory: schemathesis writes its cache (.schemathesis/) into the cwd.
# A failed case (a 5xx) fails the check at once. Schemathesis itself sometimes dies with a runtime
# error inside Hypothesis's optimiser after every case passed; that says nothing about the server,
# so such a run is repeated with the next seed (three crashes in a row still fail).
for seed in 4 5 6; do
  set +e
  (cd "$st_dir" && timeout 150 "$VENV/bin/st" run "$base/openapi.json" \
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
