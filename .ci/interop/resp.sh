#!/usr/bin/env bash
# The RESP2 frontend with Redis's own tools: a redis-cli session with asserts on its output, a
# redis-py scenario, pub/sub with redis-cli and redis-py (including keyspace notifications), and
# redis-benchmark over the commands the issue lists (no errors, every test reports a rate).
. "$(dirname "$0")/../lib.sh"

need_apt redis-tools
need_pip redis

port=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"

cli() { timeout 10 redis-cli -p "$port" "$@"; }
expect() { # expect WANT CMD...: runs redis-cli CMD and compares its output to WANT
  local want=$1; shift
  local got; got=$(cli "$@" 2>&1) || fail "redis-cli $*: exit $?"
  [ "$got" = "$want" ] || fail "redis-cli $*: expected '$want', got '$got'"
}

# redis-cli session.
expect "PONG" ping
expect "OK" set greeting "hello world"
expect "hello world" get greeting
expect "OK" set counter 10 EX 100
expect "11" incr counter
expect "100" ttl counter
expect "3" rpush list a b c
expect $'a\nb\nc' lrange list 0 -1
expect "2" hset user name ada lang rust
expect "ada" hget user name
expect "hash" type user
expect "WRONGTYPE Operation against a key holding the wrong kind of value" get user
expect "ERR unknown command 'nosuch', with args beginning with: 'x' " nosuch x
expect "4" dbsize
cli info keyspace | grep -q '^db0:keys=4,expires=1' || fail "INFO keyspace: $(cli info keyspace)"
cli info server | grep -q '^redis_version:' || fail "INFO server has no redis_version"
# A piped session: several commands, one connection, answered in order.
got=$(printf 'SET a 1\nINCRBY a 41\nGET a\nDEL a\n' | cli)
[ "$got" = $'OK\n42\n42\n1' ] || fail "piped session: $got"
echo "redis-cli: ok"

# redis-py scenario.
"$VENV/bin/python" - "$port" <<'PY' || fail "redis-py scenario"
import sys, redis
# redis-py 8 asks for RESP3 by default and does not fall back on NOPROTO: ask for RESP2.
r = redis.Redis(port=int(sys.argv[1]), protocol=2)
assert r.ping()
assert r.set("py:k", b"\x00\xffbin") and r.get("py:k") == b"\x00\xffbin"
assert r.set("py:k", "x", nx=True) is None
assert r.set("py:n", 5, ex=60) and 59 <= r.ttl("py:n") <= 60
assert r.incrby("py:n", 3) == 8 and r.incrbyfloat("py:n", 0.5) == 8.5
assert r.mset({"py:a": 1, "py:b": 2}) and r.mget("py:a", "py:b", "py:zz") == [b"1", b"2", None]
assert r.msetnx({"py:a": 9, "py:c": 3}) is False
assert r.hset("py:h", mapping={"f1": "v1", "f2": "v2"}) == 2
assert r.hgetall("py:h") == {b"f1": b"v1", b"f2": b"v2"} and r.hlen("py:h") == 2
assert r.hincrby("py:h", "n", 4) == 4
assert r.rpush("py:l", *range(10)) == 10 and r.llen("py:l") == 10
assert r.lrange("py:l", 0, 2) == [b"0", b"1", b"2"] and r.lpop("py:l", 2) == [b"0", b"1"]
assert r.ltrim("py:l", 0, 2) and r.lrange("py:l", 0, -1) == [b"2", b"3", b"4"]
assert sorted(r.scan_iter(match="py:*", count=2)) == sorted(r.keys("py:*"))
assert r.type("py:h") == b"hash" and r.exists("py:a", "py:zz") == 1
assert r.rename("py:a", "py:a2") and r.get("py:a2") == b"1"
try:
    r.lpush("py:h", "x"); raise SystemExit("expected WRONGTYPE")
except redis.ResponseError as e:
    assert str(e).startswith("WRONGTYPE"), e
p = r.pipeline(transaction=False)
for i in range(1000):
    p.set(f"py:p{i}", i)
    p.get(f"py:p{i}")
out = p.execute()
assert out[1::2] == [str(i).encode() for i in range(1000)]
info = r.info()
assert "redis_version" in info and "db0" in info, info.keys()
assert r.client_setname("py") and r.client_getname() == "py"
assert r.flushdb() and r.dbsize() == 0
print("redis-py: ok")
PY

# Pub/sub with redis-cli: SUBSCRIBE in the background receives a PUBLISH from another redis-cli.
# Readiness is PUBSUB NUMSUB seeing the subscriber, then the message appearing in its output.
wait_for() { # wait_for WHAT CMD...: polls CMD until it succeeds, for at most 10 s
  local what=$1; shift
  local deadline=$(( $(date +%s) + 10 ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.05
  done
}
sub_out=$(mktemp /tmp/nanodb-ci-sub.XXXXXX); _cleanup_dirs+=("$sub_out")
timeout 20 redis-cli -p "$port" subscribe ch >"$sub_out" 2>&1 &
sub_pid=$!; _cleanup_pids+=("$sub_pid")
numsub_is() { [ "$(cli pubsub numsub "$1" | tail -1)" = "$2" ]; }
wait_for "redis-cli SUBSCRIBE to register" numsub_is ch 1
expect "1" publish ch "hello from cli"
wait_for "the published message" grep -q "hello from cli" "$sub_out"
kill "$sub_pid" 2>/dev/null || true
wait "$sub_pid" 2>/dev/null || true
got=$(cat "$sub_out")
[ "$got" = $'subscribe\nch\n1\nmessage\nch\nhello from cli' ] || fail "redis-cli SUBSCRIBE output: $got"
wait_for "the subscriber to go away" numsub_is ch 0
echo "redis-cli pub/sub: ok"

# Pub/sub with redis-py: confirmations, PUBLISH receiver counts, PUBSUB, subscribed-mode PING,
# and a keyspace notification after CONFIG SET notify-keyspace-events.
"$VENV/bin/python" - "$port" <<'PY' || fail "redis-py pub/sub scenario"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), protocol=2)
p = r.pubsub()
p.subscribe("news")
p.psubscribe("n*")
m = p.get_message(timeout=5)
assert m == {"type": "subscribe", "pattern": None, "channel": b"news", "data": 1}, m
m = p.get_message(timeout=5)
assert m == {"type": "psubscribe", "pattern": None, "channel": b"n*", "data": 2}, m
assert r.publish("news", "hi") == 2 and r.publish("nope", "x") == 1 and r.publish("other", "x") == 0
got = [p.get_message(timeout=5) for _ in range(3)]
assert {"type": "message", "pattern": None, "channel": b"news", "data": b"hi"} in got, got
assert {"type": "pmessage", "pattern": b"n*", "channel": b"news", "data": b"hi"} in got, got
assert got[2] == {"type": "pmessage", "pattern": b"n*", "channel": b"nope", "data": b"x"}, got
assert r.pubsub_channels() == [b"news"] and r.pubsub_numsub("news", "zz") == [(b"news", 1), (b"zz", 0)]
assert r.pubsub_numpat() == 1
p.ping()
m = p.get_message(timeout=5)
assert m == {"type": "pong", "pattern": None, "channel": None, "data": b""}, m
p.unsubscribe(); p.punsubscribe()
assert p.get_message(timeout=5)["type"] == "unsubscribe" and p.get_message(timeout=5)["type"] == "punsubscribe"
p.close()

assert r.config_set("notify-keyspace-events", "KEA")
conf = {k if isinstance(k, str) else k.decode(): v if isinstance(v, str) else v.decode()
        for k, v in r.config_get("notify-keyspace-events").items()}
assert conf == {"notify-keyspace-events": "AKE"}, conf
k = r.pubsub(ignore_subscribe_messages=True)
k.psubscribe("__keyspace@0__:py:*")
assert k.get_message(timeout=5) is None  # the confirmation, skipped
r.set("py:ks", "1")
m = k.get_message(timeout=5)
assert m == {"type": "pmessage", "pattern": b"__keyspace@0__:py:*", "channel": b"__keyspace@0__:py:ks", "data": b"set"}, m
r.delete("py:ks")
m = k.get_message(timeout=5)
assert m["channel"] == b"__keyspace@0__:py:ks" and m["data"] == b"del", m
k.close()
assert r.config_set("notify-keyspace-events", "")
print("redis-py pub/sub: ok")
PY

# redis-benchmark: every test must print a rate and nothing may say ERR.
out=$(timeout 150 redis-benchmark -p "$port" -t ping,set,get,incr,lpush,rpush,lpop,rpop,hset,mset,lrange \
  -n 20000 -q 2>&1 | tr '\r' '\n') || fail "redis-benchmark failed: $out"
echo "$out" | grep 'requests per second'
if echo "$out" | grep -qiE 'ERR|error'; then fail "redis-benchmark reported errors: $out"; fi
for t in PING_INLINE PING_MBULK SET GET INCR LPUSH RPUSH LPOP RPOP HSET LRANGE_100 LRANGE_300 LRANGE_500 LRANGE_600 MSET; do
  echo "$out" | grep -qE "^ *$t.*requests per second" || fail "redis-benchmark printed no rate for $t: $out"
done
echo "resp: ok"
