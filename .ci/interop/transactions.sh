#!/usr/bin/env bash
# Redis transactions with redis-py, unchanged: pipeline(transaction=True), the WATCH-retry idiom
# under contention (N clients × K increments through WATCH/MULTI/EXEC with retries must end at
# exactly N*K), EXECABORT after a queuing error, a runtime error failing only its command, and a
# WATCHed key changed by another client (or expiring) making EXEC answer a null array.
. "$(dirname "$0")/../lib.sh"

need_pip redis

port=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"

timeout 120 "$VENV/bin/python" - "$port" <<'PY' || fail "redis-py transactions"
import sys, threading, time, redis
port = int(sys.argv[1])
r = redis.Redis(port=port, protocol=2)

# pipeline(transaction=True): MULTI ... EXEC, replies in order, a runtime error fails only its command.
r.set("tx:s", "text")
p = r.pipeline(transaction=True)
p.set("tx:a", 1).incr("tx:a").incr("tx:s").get("tx:a")
out = p.execute(raise_on_error=False)
assert out[0] is True and out[1] == 2 and isinstance(out[2], redis.ResponseError) and out[3] == b"2", out

# A queuing error (unknown command) aborts EXEC with EXECABORT and applies nothing.
p = r.pipeline(transaction=True)
p.set("tx:never", 1).execute_command("NOSUCH", "x")
try:
    p.execute()
    raise AssertionError("EXEC should abort")
except redis.ResponseError as e:
    assert "EXECABORT" in str(e) or "unknown command" in str(e), e
assert r.get("tx:never") is None

# A WATCHed key written by another client: EXEC answers a null array (WatchError in redis-py).
other = redis.Redis(port=port, protocol=2)
with r.pipeline() as p:
    p.watch("tx:w")
    other.set("tx:w", "changed")
    p.multi()
    p.set("tx:w", "mine")
    try:
        p.execute()
        raise AssertionError("EXEC should fail after the WATCHed key changed")
    except redis.WatchError:
        pass
assert r.get("tx:w") == b"changed"

# A WATCHed key that expires before EXEC counts as changed.
r.set("tx:e", "v", px=100)
with r.pipeline() as p:
    p.watch("tx:e")
    deadline = time.time() + 5
    while r.exists("tx:e") and time.time() < deadline:
        time.sleep(0.02)
    p.multi()
    p.set("tx:e2", "x")
    try:
        p.execute()
        raise AssertionError("EXEC should fail after the WATCHed key expired")
    except redis.WatchError:
        pass

# The WATCH-retry idiom under contention: N clients × K increments = exactly N*K.
N, K = 8, 50
r.delete("tx:counter")
retries = [0] * N
errors = []
def worker(i):
    c = redis.Redis(port=port, protocol=2)
    try:
        for _ in range(K):
            while True:
                with c.pipeline() as p:
                    try:
                        p.watch("tx:counter")
                        v = int(p.get("tx:counter") or 0)
                        p.multi()
                        p.set("tx:counter", v + 1)
                        p.execute()
                        break
                    except redis.WatchError:
                        retries[i] += 1
    except Exception as e:
        errors.append(e)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
[t.start() for t in threads]
[t.join(90) for t in threads]
assert not errors, errors
assert int(r.get("tx:counter")) == N * K, (r.get("tx:counter"), N * K)
print(f"WATCH idiom: {N}x{K} increments = {N*K}, {sum(retries)} retries")
PY
echo "transactions: ok"
