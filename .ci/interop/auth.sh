#!/usr/bin/env bash
# Users and permissions as clients meet them: redis-cli with --user/--pass and REDISCLI_AUTH,
# redis-py with a username and password, curl -u, against a server with a users file; refusals
# in each protocol's words; protected mode refusing 0.0.0.0 in one line. (TLS joins in #15's TLS
# part.)
. "$(dirname "$0")/../lib.sh"

need_apt redis-tools curl
need_pip redis

users=$(mktemp /tmp/nanodb-users.XXXXXX); _cleanup_dirs+=("$users")
cat >"$users" <<'ACL'
user admin on >adminpw allkeys allchannels +@all
user alice on >alicepw ~app:* &news:* +@read +@write +@pubsub
ACL

resp=$(free_port)
http=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$resp" --http-addr "127.0.0.1:$http" --users-file "$users"
wait_port "$resp" || fail "server did not start"
wait_port "$http" || fail "REST did not start"

cli() { timeout 10 redis-cli --no-auth-warning -p "$resp" "$@" 2>&1; }
expect() { local want=$1; shift; local got; got=$(cli "$@"); [ "$got" = "$want" ] || fail "redis-cli $*: expected '$want', got '$got'"; }

expect "NOAUTH Authentication required." get app:1
expect "OK" --user alice --pass alicepw set app:1 hello
expect "hello" --user alice --pass alicepw get app:1
expect "NOPERM No permissions to access a key" --user alice --pass alicepw set other x
got=$(REDISCLI_AUTH=adminpw timeout 10 redis-cli -p "$resp" --user admin acl whoami 2>&1)
[ "$got" = "admin" ] || fail "REDISCLI_AUTH: $got"
got=$(cli --user alice --pass nope ping)
grep -q "WRONGPASS invalid username-password pair or user is disabled." <<<"$got" || fail "wrong password: $got"

"$VENV/bin/python" - "$resp" <<'PY' || fail "redis-py with a username and password"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), username="alice", password="alicepw", protocol=2)
assert r.get("app:1") == b"hello"
try:
    r.set("other", "x")
    raise SystemExit("a forbidden key was written")
except redis.exceptions.NoPermissionError as e:
    assert "No permissions to access a key" in str(e), e
try:
    redis.Redis(port=int(sys.argv[1]), username="alice", password="nope", protocol=2).ping()
    raise SystemExit("a wrong password was accepted")
except redis.exceptions.AuthenticationError:
    pass
PY

base="http://127.0.0.1:$http"
[ "$(curl -s -u alice:alicepw "$base/v1/kv/app:1")" = "hello" ] || fail "curl -u"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/kv/app:1")
[ "$code" = 401 ] || fail "no credentials: $code"
curl -s -D - -o /dev/null "$base/v1/kv/app:1" | grep -qi '^www-authenticate: Basic realm="nanodb"' || fail "no challenge"
code=$(curl -s -o /dev/null -w '%{http_code}' -u alice:alicepw -X PUT --data x "$base/v1/kv/other")
[ "$code" = 403 ] || fail "forbidden key: $code"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz")" = 200 ] || fail "healthz is not open"

# Protected mode: 0.0.0.0 without a password or users file refuses to start, in one line.
set +e
out=$(timeout 10 "$NANODB_BIN" --grpc-addr off --http-addr off --tcp-addr off --resp-addr 0.0.0.0:0 --persistence off 2>&1 >/dev/null)
code=$?
set -e
[ "$code" -eq 1 ] || fail "protected mode: expected exit 1, got $code: $out"
for word in --requirepass --users-file "--protected-mode no"; do
  grep -q -- "$word" <<<"$out" || fail "protected mode: '$word' not in: $out"
done
echo "auth: ok"
