#!/usr/bin/env bash
# docker/healthcheck.sh, the image's HEALTHCHECK, run here against the real server (CI cannot pull
# images): healthy while /readyz answers 200, unhealthy when something else answers, when REST is
# off and once the server is gone.
. "$(dirname "$0")/../lib.sh"
check=docker/healthcheck.sh

http=$(free_port)
tcp=$(free_port)
start_nanodb --http-addr "127.0.0.1:$http" --tcp-addr "127.0.0.1:$tcp"
wait_port "$http" || fail "server did not start"

NANODB_HTTP_ADDR="127.0.0.1:$http" bash "$check" || fail "healthcheck: a ready server is unhealthy"
# The image's wildcard address is checked on loopback.
NANODB_HTTP_ADDR="0.0.0.0:$http" bash "$check" || fail "healthcheck: 0.0.0.0 is not checked on loopback"
NANODB_HTTP_ADDR="127.0.0.1:1" NANODB_HEALTHCHECK_ADDR="127.0.0.1:$http" bash "$check" \
  || fail "healthcheck: NANODB_HEALTHCHECK_ADDR is not used"
# Something that answers HTTP but not 200 (the binary TCP port answers HTTP clients with a 400).
out=$(NANODB_HTTP_ADDR="127.0.0.1:$tcp" bash "$check" 2>&1) && fail "healthcheck: a 400 passed"
grep -q 'answered: HTTP/1.1 400' <<<"$out" || fail "healthcheck: unclear failure: $out"
NANODB_HTTP_ADDR=off bash "$check" 2>/dev/null && fail "healthcheck: REST off passed"

kill "$NANODB_PID"
wait "$NANODB_PID" 2>/dev/null || true
NANODB_HTTP_ADDR="127.0.0.1:$http" bash "$check" 2>/dev/null && fail "healthcheck: a stopped server passed"
echo "docker healthcheck: ok"
