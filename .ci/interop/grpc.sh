#!/usr/bin/env bash
# The gRPC frontend from another language: a Python client generated from proto/ with grpcio-tools
# (nothing from NanoDB's Rust code) calls every RPC with asserts, checks gzip, a deadline, the
# standard health service and server reflection, watches and pub/sub, then SIGTERM must exit 0.
. "$(dirname "$0")/../lib.sh"

need_pip grpcio grpcio-tools grpcio-health-checking grpcio-reflection

gen=$(mktemp -d /tmp/nanodb-ci-grpc.XXXXXX); _cleanup_dirs+=("$gen")
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$gen" --grpc_python_out="$gen" \
  proto/nanodb/v1/*.proto || fail "protoc (grpcio-tools) failed"

port=$(free_port)
start_nanodb --grpc-addr "127.0.0.1:$port" --max-value-len 1024
wait_port "$port" || fail "server did not start"

# A second server on the same gRPC port must fail fast, name the flag, and exit 1.
expect_taken_port grpc-addr "$port"

PYTHONPATH="$gen" timeout 120 "$VENV/bin/python" - "127.0.0.1:$port" <<'PY' || fail "python gRPC client"
import sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
from nanodb.v1 import kv_pb2 as kv, kv_pb2_grpc, admin_pb2 as admin, admin_pb2_grpc, watch_pb2 as w
from nanodb.v1 import cluster_pb2, cluster_pb2_grpc

addr = sys.argv[1]
ch = grpc.insecure_channel(addr)
grpc.channel_ready_future(ch).result(timeout=20)
s = kv_pb2_grpc.KVStub(ch)
a = admin_pb2_grpc.AdminStub(ch)

def code_of(call, *args, **kw):
    try:
        call(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("expected an error")

# Strings
r = s.Get(kv.GetRequest(key=b"k"))
assert (r.found, r.value, r.version) == (False, b"", 0), r
p = s.Put(kv.PutRequest(key=b"k", value=b"\x00\xffbin"))
assert p.applied and p.version > 0, p
r = s.Get(kv.GetRequest(key=b"k"))
assert (r.found, r.value, r.version, r.ttl_ms) == (True, b"\x00\xffbin", p.version, -1), r
q = s.Put(kv.PutRequest(key=b"k", value=b"x", condition=kv.PUT_CONDITION_IF_ABSENT))
assert (q.applied, q.version) == (False, p.version), q
q = s.Put(kv.PutRequest(key=b"k", value=b"y", condition=kv.PUT_CONDITION_IF_VERSION, expected_version=p.version))
assert q.applied and q.version > p.version, q
assert s.Put(kv.PutRequest(key=b"k", value=b"z", condition=kv.PUT_CONDITION_IF_PRESENT)).applied
assert s.Put(kv.PutRequest(key=b"t", value=b"v", ttl_ms=60000)).applied
assert 0 < s.Get(kv.GetRequest(key=b"t")).ttl_ms <= 60000
assert s.Expire(kv.ExpireRequest(key=b"t", ttl_ms=-1)).applied
assert s.Get(kv.GetRequest(key=b"t")).ttl_ms == -1
assert s.Incr(kv.IncrRequest(key=b"n", delta=40)).value == 40
assert s.Incr(kv.IncrRequest(key=b"n", delta=2)).value == 42
assert s.Get(kv.GetRequest(key=b"n")).value == b"42"
assert s.Delete(kv.DeleteRequest(key=b"t")).deleted
assert not s.Delete(kv.DeleteRequest(key=b"t")).deleted

# Scan, following cursors to the end
for i in range(12):
    s.Put(kv.PutRequest(key=b"scan:%02d" % i, value=b"%d" % i))
seen, cursor = [], b""
while True:
    page = s.Scan(kv.ScanRequest(prefix=b"scan:", limit=5, cursor=cursor))
    assert len(page.entries) <= 5
    seen += [e.key for e in page.entries]
    if not page.next_cursor:
        break
    cursor = page.next_cursor
assert sorted(seen) == [b"scan:%02d" % i for i in range(12)], seen

# Batch
ops = [kv.Operation(put=kv.PutRequest(key=b"b", value=b"1")),
       kv.Operation(incr=kv.IncrRequest(key=b"b", delta=1)),
       kv.Operation(get=kv.GetRequest(key=b"b")),
       kv.Operation(expire=kv.ExpireRequest(key=b"b", ttl_ms=60000)),
       kv.Operation(incr=kv.IncrRequest(key=b"k", delta=1)),
       kv.Operation(delete=kv.DeleteRequest(key=b"b"))]
res = s.Batch(kv.BatchRequest(ops=ops)).results
assert [r.WhichOneof("result") for r in res] == ["put", "incr", "get", "expire", "error", "delete"], res
assert res[1].incr.value == 2 and res[2].get.value == b"2" and res[3].expire.applied and res[5].delete.deleted
assert res[4].error.code == "NOT_AN_INTEGER", res[4]

# Hashes and lists
assert s.HashSet(kv.HashSetRequest(key=b"h", field=b"f", value=b"1")).created
assert not s.HashSet(kv.HashSetRequest(key=b"h", field=b"f", value=b"2")).created
hg = s.HashGet(kv.HashGetRequest(key=b"h", field=b"f"))
assert (hg.found, hg.value) == (True, b"2")
assert [(f.field, f.value) for f in s.HashGetAll(kv.HashGetAllRequest(key=b"h")).fields] == [(b"f", b"2")]
assert s.HashDelete(kv.HashDeleteRequest(key=b"h", field=b"f")).deleted
assert s.ListPush(kv.ListPushRequest(key=b"l", end=kv.LIST_END_BACK, values=[b"a", b"b", b"c"])).length == 3
assert list(s.ListRange(kv.ListRangeRequest(key=b"l", start=0, stop=-1)).values) == [b"a", b"b", b"c"]
assert list(s.ListPop(kv.ListPopRequest(key=b"l", end=kv.LIST_END_FRONT, count=2)).values) == [b"a", b"b"]

# Every other data command, one call each (the RPCs #14 added; GetRange the one added as its proof)
old = s.GetSet(kv.GetSetRequest(key=b"gs", value=b"one"))
assert not old.found, old
old = s.GetSet(kv.GetSetRequest(key=b"gs", value=b"two", expiry=kv.Expiry(in_ms=60000)))
assert (old.found, old.value) == (True, b"one"), old
assert 0 < s.Ttl(kv.TtlRequest(key=b"gs")).ttl_ms <= 60000
ex = s.GetEx(kv.GetExRequest(key=b"gs", expiry=kv.Expiry(persist=True)))
assert (ex.found, ex.value, ex.ttl_ms) == (True, b"two", -1), ex
assert s.Exists(kv.ExistsRequest(key=b"gs")).exists and not s.Exists(kv.ExistsRequest(key=b"nope")).exists
assert s.Append(kv.AppendRequest(key=b"gs", value=b"!")).length == 4
assert s.GetRange(kv.GetRangeRequest(key=b"gs", start=-2, end=-1)).value == b"o!"
assert s.IncrFloat(kv.IncrFloatRequest(key=b"f", delta=1.5)).value == b"1.5"
assert s.MultiPut(kv.MultiPutRequest(pairs=[kv.MultiPutPair(key=b"m1", value=b"1"), kv.MultiPutPair(key=b"m2", value=b"2")])).applied
assert not s.MultiPut(kv.MultiPutRequest(pairs=[kv.MultiPutPair(key=b"m1", value=b"9")], if_none_exist=True)).applied
s.Rename(kv.RenameRequest(**{"from": b"m1", "to": b"m3"}))
assert s.Get(kv.GetRequest(key=b"m3")).value == b"1" and not s.Get(kv.GetRequest(key=b"m1")).found
t = s.Type(kv.TypeRequest(key=b"l"))
assert (t.found, t.type) == (True, kv.KEY_TYPE_LIST), t
gd = s.GetDel(kv.GetDelRequest(key=b"m3"))
assert (gd.found, gd.value) == (True, b"1") and not s.Exists(kv.ExistsRequest(key=b"m3")).exists
v = s.Put(kv.PutRequest(key=b"di", value=b"v")).version
assert not s.DeleteIf(kv.DeleteIfRequest(key=b"di", version=v + 1000)).deleted
assert s.DeleteIf(kv.DeleteIfRequest(key=b"di", version=v)).deleted
assert s.HashIncr(kv.HashIncrRequest(key=b"hc", field=b"n", delta=5)).value == 5
assert s.HashSetIfAbsent(kv.HashSetIfAbsentRequest(key=b"hc", field=b"g", value=b"x")).created
assert not s.HashSetIfAbsent(kv.HashSetIfAbsentRequest(key=b"hc", field=b"g", value=b"y")).created
assert s.HashLen(kv.HashLenRequest(key=b"hc")).length == 2
s.ListPush(kv.ListPushRequest(key=b"l2", end=kv.LIST_END_BACK, values=[b"a", b"b", b"c"]))
s.ListSet(kv.ListSetRequest(key=b"l2", index=0, value=b"A"))
s.ListTrim(kv.ListTrimRequest(key=b"l2", start=0, stop=1))
assert s.ListLen(kv.ListLenRequest(key=b"l2")).length == 2
assert list(s.ListRange(kv.ListRangeRequest(key=b"l2", start=0, stop=-1)).values) == [b"A", b"b"]
assert s.KeyCount(kv.KeyCountRequest()).count > 5
assert s.RandomKey(kv.RandomKeyRequest()).found

# Errors: the gRPC code and a message naming the limit
c, d = code_of(s.Get, kv.GetRequest(key=b""))
assert c == grpc.StatusCode.INVALID_ARGUMENT, (c, d)
c, d = code_of(s.Put, kv.PutRequest(key=b"big", value=b"v" * 2000))
assert c == grpc.StatusCode.INVALID_ARGUMENT and "max_value_len" in d and "1024" in d, (c, d)
s.HashSet(kv.HashSetRequest(key=b"h2", field=b"f", value=b"v"))
c, d = code_of(s.Get, kv.GetRequest(key=b"h2"))
assert c == grpc.StatusCode.FAILED_PRECONDITION, (c, d)
c, d = code_of(s.Incr, kv.IncrRequest(key=b"k", delta=1))
assert c == grpc.StatusCode.INVALID_ARGUMENT, (c, d)
s.Put(kv.PutRequest(key=b"max", value=b"9223372036854775807"))
c, d = code_of(s.Incr, kv.IncrRequest(key=b"max", delta=1))
assert c == grpc.StatusCode.OUT_OF_RANGE, (c, d)

# gzip both ways, and a deadline
gz = kv_pb2_grpc.KVStub(grpc.insecure_channel(addr, compression=grpc.Compression.Gzip))
assert gz.Put(kv.PutRequest(key=b"gz", value=b"z" * 1000)).applied
assert gz.Get(kv.GetRequest(key=b"gz"), timeout=5).value == b"z" * 1000

# Watch: the stream is registered once its headers arrive; a later Put is its first event.
events = s.Watch(w.WatchRequest(key=b"wk:", prefix=True, include_values=True), timeout=30)
events.initial_metadata()
p = s.Put(kv.PutRequest(key=b"wk:1", value=b"seen"))
e = next(events)
assert (e.type, e.key, e.value, e.has_value, e.version, e.op) == (w.WATCH_EVENT_TYPE_PUT, b"wk:1", b"seen", True, p.version, "set"), e
s.Delete(kv.DeleteRequest(key=b"wk:1"))
assert next(events).type == w.WATCH_EVENT_TYPE_DELETE
events.cancel()
# Publish / Subscribe
msgs = s.Subscribe(w.SubscribeRequest(channels=[b"news"], patterns=[b"n*"]), timeout=30)
msgs.initial_metadata()
assert s.Publish(w.PublishRequest(channel=b"news", message=b"hi")).receivers == 2
got = sorted((m.channel, m.message, m.pattern) for m in (next(msgs), next(msgs)))
assert got == [(b"news", b"hi", b""), (b"news", b"hi", b"n*")], got
msgs.cancel()
assert code_of(s.Watch(w.WatchRequest(key=b"")).__next__)[0] == grpc.StatusCode.INVALID_ARGUMENT

# Admin
a.Ping(admin.PingRequest())
st = a.Stats(admin.StatsRequest())
assert st.keys > 0 and st.memory_bytes > 0 and st.version, st
ops_by = {p.protocol: p.ops for p in st.protocols}
assert ops_by["grpc"] > 30 and set(ops_by) == {"grpc", "http", "tcp", "resp"}, ops_by

# Health
h = health_pb2_grpc.HealthStub(ch)
# Cluster: a single node is not in cluster mode, and says so
code, details = code_of(cluster_pb2_grpc.ClusterStub(ch).Status, cluster_pb2.ClusterStatusRequest())
assert code == grpc.StatusCode.FAILED_PRECONDITION and "cluster mode" in details, (code, details)

for svc in ["", "nanodb.v1.KV", "nanodb.v1.Admin", "nanodb.v1.Auth", "nanodb.v1.Cluster"]:
    assert h.Check(health_pb2.HealthCheckRequest(service=svc)).status == health_pb2.HealthCheckResponse.SERVING, svc

# Reflection: list the services, then describe KV from the server's descriptors alone
r = reflection_pb2_grpc.ServerReflectionStub(ch)
resp = next(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
names = {svc.name for svc in resp.list_services_response.service}
assert {"nanodb.v1.KV", "nanodb.v1.Admin", "nanodb.v1.Auth", "nanodb.v1.Cluster", "grpc.health.v1.Health"} <= names, names
pool = DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
assert {m.name for m in pool.FindServiceByName("nanodb.v1.Cluster").methods} == {"Status", "AddLearner", "PromoteLearner", "RemoveMember"}
assert {m.name for m in pool.FindServiceByName("nanodb.v1.Auth").methods} == {"Authenticate"}
methods = {m.name for m in pool.FindServiceByName("nanodb.v1.KV").methods}
assert {"Get", "Put", "Delete", "Incr", "Expire", "Scan", "Batch", "HashSet", "HashGet", "HashDelete",
        "HashGetAll", "ListPush", "ListPop", "ListRange", "Watch", "Publish", "Subscribe", "GetSet",
        "DeleteIf", "Exists", "Ttl", "KeyCount", "GetDel", "GetEx", "Append", "IncrFloat", "MultiPut",
        "Rename", "Type", "Flush", "RandomKey", "HashIncr", "HashSetIfAbsent", "HashLen", "ListLen",
        "ListSet", "ListTrim", "GetRange", "Txn", "Eval"} == methods, methods
# A Lua script: its reply is a tree of ScriptValue; an unknown SHA-1 is NOT_FOUND (NOSCRIPT)
e = s.Eval(kv.EvalRequest(source=b"return {redis.call('incr', KEYS[1]), ARGV[1], {ok='OK'}}", keys=[b"script:n"], args=[b"a"]))
assert e.value.kind == kv.SCRIPT_VALUE_KIND_ARRAY, e
assert [i.kind for i in e.value.items] == [kv.SCRIPT_VALUE_KIND_INTEGER, kv.SCRIPT_VALUE_KIND_BULK, kv.SCRIPT_VALUE_KIND_STATUS], e
assert e.value.items[1].bulk == b"a" and e.value.items[2].text == "OK", e
try:
    s.Eval(kv.EvalRequest(sha1="0" * 40))
    raise AssertionError("an unknown sha1 ran")
except grpc.RpcError as err:
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details().startswith("NOSCRIPT"), err
# Flush last: it empties what the checks above read
assert s.Flush(kv.FlushRequest()).removed > 0
assert s.KeyCount(kv.KeyCountRequest()).count == 0
print("python gRPC client: ok (%d services, %d KV methods)" % (len(names), len(methods)))
PY

kill -TERM "$NANODB_PID"
deadline=$(( $(date +%s) + 10 ))
while kill -0 "$NANODB_PID" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no exit within 10 s of SIGTERM"
  sleep 0.05
done
wait "$NANODB_PID" && code=0 || code=$?
[ "$code" -eq 0 ] || fail "SIGTERM: expected exit 0, got $code"
echo "grpc: ok"
