#!/usr/bin/env bash
# Lua scripts (#18) with Redis's own client tools: redis-py's register_script (EVALSHA, falling
# back to EVAL on NOSCRIPT), SCRIPT LOAD/EXISTS/FLUSH, errors as redis-py raises them, sandbox
# escapes refused with the server unharmed, a stopped script writing nothing, and redis-cli's
# --eval form.
. "$(dirname "$0")/../lib.sh"

need_apt redis-tools
need_pip redis

port=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$port" --script-timeout-ms 500
wait_port "$port" || fail "server did not start"

"$VENV/bin/python" - "$port" <<'PY' || fail "redis-py scripts scenario"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), protocol=2)
r.script_flush()
incr = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
assert incr(keys=["py:c"], args=[5]) == 5          # EVALSHA -> NOSCRIPT -> EVAL
assert incr(keys=["py:c"], args=[2]) == 7          # EVALSHA hits the cache
assert r.script_exists(incr.sha) == [True]
sha = r.script_load("return {KEYS[1], ARGV[1], 3.7, false, {ok='s'}}")
assert r.evalsha(sha, 1, "k", "a") == [b"k", b"a", 3, None, b"s"], r.evalsha(sha, 1, "k", "a")
assert r.eval("return redis.status_reply('FINE')", 0) == b"FINE"
try:
    r.evalsha("0" * 40, 0)
    raise AssertionError("NOSCRIPT expected")
except redis.exceptions.NoScriptError:
    pass
for script in ["return os.execute('true')", "return io.open('/etc/passwd')", "return require('os')",
               "return assert(load(string.dump(function() return 1 end)))()",
               "setmetatable(_G, {})", "rawset(_G, 'x', 1)", "while true do end",
               "return string.rep('x', 2^30)", "local function f() return 1 + f() end return f()"]:
    try:
        r.eval("redis.call('set', KEYS[1], 'written') " + script, 1, "py:escape")
        raise AssertionError("refused expected: " + script)
    except redis.exceptions.ResponseError:
        pass
    assert r.ping() and r.exists("py:escape") == 0, script
try:
    r.eval("return redis.call('set', 'undeclared', 1)", 0)
    raise AssertionError("undeclared key expected to fail")
except redis.exceptions.ResponseError as e:
    assert "not declared" in str(e), e
r.script_flush()
assert r.script_exists(incr.sha) == [False]
print("redis-py scripts: ok")
PY

got=$(timeout 10 redis-cli -p "$port" eval "return redis.call('incr', KEYS[1])" 1 cli:n) || fail "redis-cli eval"
[ "$got" = "1" ] || fail "redis-cli eval: $got"
echo "scripts: ok"
