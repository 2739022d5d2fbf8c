#!/usr/bin/env bash
# Security with other people's clients: one server with TLS on all four ports and a users file,
# driven by redis-cli (--tls --cacert --user --pass, REDISCLI_AUTH), redis-py (ssl, username,
# password), curl (--cacert -u, then a bearer token from POST /v1/auth/token) and the Python gRPC
# client generated from proto/ (ssl_channel_credentials, authorization metadata, Auth/Authenticate).
# Each checks the happy path, a missing or wrong credential, and a key outside the user's
# permissions; nothing refused may change the data.
. "$(dirname "$0")/../lib.sh"

need_apt redis-tools curl openssl
need_pip redis grpcio grpcio-tools

work=$(mktemp -d /tmp/nanodb-ci-sec.XXXXXX); _cleanup_dirs+=("$work")
# A CA and a server certificate for 127.0.0.1 and localhost, made here with openssl.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=nanodb-ci-ca" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
cat >"$work/users.acl" <<'ACL'
# admin may do everything; app only its own keys and the news channels.
user admin on >admin-secret allkeys allchannels +@all
user app on >app-secret ~app:* &news:* +@read +@write +@pubsub
user default off
ACL

resp=$(free_port) http=$(free_port) grpc=$(free_port) tcp=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$resp" --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" \
  --tcp-addr "127.0.0.1:$tcp" --tls-cert "$work/server.pem" --tls-key "$work/server.key" \
  --users-file "$work/users.acl"
for p in "$resp" "$http" "$grpc" "$tcp"; do wait_port "$p" || fail "server did not start"; done

# redis-cli over TLS.
rcli() { timeout 10 redis-cli --no-auth-warning --tls --cacert "$work/ca.pem" -p "$resp" "$@" 2>&1; }
expect() { # expect WANT CMD...
  local want=$1; shift
  local got; got=$(rcli "$@") || fail "redis-cli $*: exit $?: $got"
  [ "$got" = "$want" ] || fail "redis-cli $*: expected '$want', got '$got'"
}
expect "OK" --user app --pass app-secret set app:one 1
expect "1" --user app --pass app-secret get app:one
expect "NOAUTH Authentication required." get app:one
got=$(rcli --user app --pass wrong get app:one)
grep -q "WRONGPASS invalid username-password pair or user is disabled." <<<"$got" || fail "wrong password: $got"
got=$(rcli --user app --pass app-secret set other 1)
grep -q "^NOPERM" <<<"$got" || fail "a key outside ~app:*: $got"
got=$(REDISCLI_AUTH=admin-secret rcli --user admin exists other)
[ "$got" = "0" ] || fail "a refused SET wrote the key: $got"
got=$(REDISCLI_AUTH=app-secret rcli --user app acl whoami)
[ "$got" = "app" ] || fail "ACL WHOAMI: $got"
# Plaintext on the TLS port: refused, and the server keeps serving.
got=$(timeout 10 redis-cli -p "$resp" ping 2>&1 || true)
[ "$got" != "PONG" ] || fail "a plaintext client was served on the TLS port"
expect "PONG" --user app --pass app-secret ping
echo "redis-cli over TLS with users: ok"

"$VENV/bin/python" - "$resp" "$work/ca.pem" <<'PY' || fail "redis-py over TLS with users"
import sys, redis
port, ca = int(sys.argv[1]), sys.argv[2]
def client(user, password):
    return redis.Redis(port=port, protocol=2, ssl=True, ssl_ca_certs=ca, username=user, password=password)
app = client("app", "app-secret")
assert app.set("app:py", b"\x00\xff") and app.get("app:py") == b"\x00\xff"
try:
    app.set("elsewhere", 1); raise SystemExit("expected NOPERM")
except redis.exceptions.NoPermissionError:
    pass
try:
    client("app", "nope").ping(); raise SystemExit("expected WRONGPASS")
except redis.exceptions.AuthenticationError:
    pass
admin = client("admin", "admin-secret")
assert admin.exists("elsewhere") == 0
assert admin.acl_whoami() == "admin"
print("redis-py over TLS with users: ok")
PY

# curl over TLS: Basic, then a token.
base="https://127.0.0.1:$http"
c() { timeout 10 curl -sS --cacert "$work/ca.pem" "$@"; }
code=$(c -o /dev/null -w '%{http_code}' -u app:app-secret -X PUT --data-binary v "$base/v1/kv/app:http")
[ "$code" = 201 ] || [ "$code" = 200 ] || fail "curl PUT as app: $code"
[ "$(c -u app:app-secret "$base/v1/kv/app:http")" = v ] || fail "curl GET as app"
out=$(c -i "$base/v1/kv/app:http" | tr -d '\r')
grep -q '^HTTP/[0-9.]* 401' <<<"$out" || fail "no credentials: $out"
grep -qi '^www-authenticate: ' <<<"$out" || fail "a 401 without WWW-Authenticate: $out"
code=$(c -o /dev/null -w '%{http_code}' -u app:wrong "$base/v1/kv/app:http")
[ "$code" = 401 ] || fail "wrong password: $code"
code=$(c -o /dev/null -w '%{http_code}' -u app:app-secret -X PUT --data-binary v "$base/v1/kv/other")
[ "$code" = 403 ] || fail "a key outside ~app:*: $code"
code=$(c -o /dev/null -w '%{http_code}' "$base/healthz")
[ "$code" = 200 ] || fail "/healthz must stay open: $code"
token=$(c -u app:app-secret -X POST "$base/v1/auth/token" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])') \
  || fail "POST /v1/auth/token"
[ "$(c -H "Authorization: Bearer $token" "$base/v1/kv/app:http")" = v ] || fail "GET with a bearer token"
code=$(c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token}x" "$base/v1/kv/app:http")
[ "$code" = 401 ] || fail "an altered token: $code"
code=$(c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/metrics")
[ "$code" = 200 ] || fail "/metrics with a bearer token: $code"
echo "curl over TLS with users and tokens: ok"

# The generated Python gRPC client over TLS.
gen=$(mktemp -d /tmp/nanodb-ci-grpc.XXXXXX); _cleanup_dirs+=("$gen")
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$gen" --grpc_python_out="$gen" \
  proto/nanodb/v1/*.proto || fail "protoc (grpcio-tools) failed"
PYTHONPATH="$gen" timeout 60 "$VENV/bin/python" - "127.0.0.1:$grpc" "$work/ca.pem" <<'PY' || fail "python gRPC client over TLS"
import base64, sys
import grpc
from nanodb.v1 import kv_pb2 as kv, kv_pb2_grpc, auth_pb2, auth_pb2_grpc, cluster_pb2, cluster_pb2_grpc
addr, ca = sys.argv[1], open(sys.argv[2], "rb").read()
ch = grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca))
grpc.channel_ready_future(ch).result(timeout=20)
s = kv_pb2_grpc.KVStub(ch)
basic = [("authorization", "Basic " + base64.b64encode(b"app:app-secret").decode())]
assert s.Put(kv.PutRequest(key=b"app:grpc", value=b"g"), metadata=basic).applied
assert s.Get(kv.GetRequest(key=b"app:grpc"), metadata=basic).value == b"g"
def code_of(call, *args, **kw):
    try:
        call(*args, **kw)
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError("expected an error")
assert code_of(s.Get, kv.GetRequest(key=b"app:grpc")) == grpc.StatusCode.UNAUTHENTICATED
assert code_of(s.Put, kv.PutRequest(key=b"other", value=b"x"), metadata=basic) == grpc.StatusCode.PERMISSION_DENIED
token = auth_pb2_grpc.AuthStub(ch).Authenticate(auth_pb2.AuthenticateRequest(user="app", password="app-secret")).token
assert token
bearer = [("authorization", "Bearer " + token)]
assert s.Get(kv.GetRequest(key=b"app:grpc"), metadata=bearer).value == b"g"
assert code_of(auth_pb2_grpc.AuthStub(ch).Authenticate, auth_pb2.AuthenticateRequest(user="app", password="no")) == grpc.StatusCode.UNAUTHENTICATED
# Cluster/Status is not open like health: no credentials, UNAUTHENTICATED; a user reaches it (a
# single node then says it is not in cluster mode).
status = cluster_pb2_grpc.ClusterStub(ch).Status
assert code_of(status, cluster_pb2.ClusterStatusRequest()) == grpc.StatusCode.UNAUTHENTICATED
assert code_of(status, cluster_pb2.ClusterStatusRequest(), metadata=bearer) == grpc.StatusCode.FAILED_PRECONDITION
print("python gRPC over TLS with users and tokens: ok")
PY

# Protected mode: no users, a non-loopback address: one line naming the ways out, exit 1.
set +e
out=$(timeout 10 "$NANODB_BIN" --grpc-addr off --http-addr off --tcp-addr off --resp-addr 0.0.0.0:0 \
  --data-dir "$work/pm" 2>&1 >/dev/null)
code=$?
set -e
[ "$code" -ne 0 ] || fail "protected mode: a server with no users started on 0.0.0.0"
for flag in --requirepass --users-file "--protected-mode no"; do
  grep -q -- "$flag" <<<"$out" || fail "protected mode: the refusal does not name $flag: $out"
done
echo "security: ok"
