#!/usr/bin/env bash
# TLS on every frontend with other languages' clients: one server with --tls-cert on all four
# ports and an openssl-made CA; redis-cli --tls and redis-py (ssl) on RESP, curl --cacert on REST
# (HTTP/1.1 and HTTP/2), the Python gRPC client with ssl_channel_credentials, a plaintext client
# told to use TLS, client certificates required (a client without one refused), and SIGHUP
# rotating the certificate while the server runs.
. "$(dirname "$0")/../lib.sh"

need_apt redis-tools openssl curl
need_pip redis grpcio grpcio-tools

certs=$(mktemp -d /tmp/nanodb-ci-tls.XXXXXX); _cleanup_dirs+=("$certs")
issue() { # issue NAME EXT: a P-256 key and a certificate for it signed by the CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$certs/$1.key" -out "$certs/$1.csr" 2>/dev/null || fail "openssl req $1"
  printf '%s\n' "$2" >"$certs/$1.ext"
  openssl x509 -req -in "$certs/$1.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
    -days 2 -extfile "$certs/$1.ext" -out "$certs/$1.crt" 2>/dev/null || fail "openssl x509 $1"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=ci-ca \
  -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null || fail "openssl CA"
issue server 'subjectAltName=DNS:localhost,IP:127.0.0.1'
issue client 'extendedKeyUsage=clientAuth'

resp=$(free_port); http=$(free_port); grpc=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$resp" --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" \
  --tls-cert "$certs/server.crt" --tls-key "$certs/server.key"
for p in "$resp" "$http" "$grpc"; do wait_port "$p" || fail "server did not start"; done

# RESP: redis-cli and redis-py over TLS; a plaintext redis-cli is told to use TLS.
got=$(timeout 10 redis-cli --tls --cacert "$certs/ca.crt" -h localhost -p "$resp" set greeting hello) || fail "redis-cli --tls"
[ "$got" = OK ] || fail "redis-cli --tls SET: $got"
got=$(timeout 10 redis-cli -p "$resp" get greeting 2>&1 || true)
echo "$got" | grep -q "speaks TLS only" || fail "plaintext redis-cli on the TLS port: $got"
timeout 30 "$VENV/bin/python" - "$resp" "$certs/ca.crt" <<'PY' || fail "redis-py over TLS"
import sys, redis
r = redis.Redis(host="localhost", port=int(sys.argv[1]), ssl=True, ssl_ca_certs=sys.argv[2])
assert r.get("greeting") == b"hello", r.get("greeting")
assert r.incr("n") == 1
PY

# REST: curl over HTTP/1.1 and HTTP/2.
got=$(curl -sf --cacert "$certs/ca.crt" --http1.1 "https://localhost:$http/v1/kv/greeting") || fail "curl https"
[ "$got" = hello ] || fail "curl --http1.1: $got"
ver=$(curl -sf --cacert "$certs/ca.crt" -o /dev/null -w '%{http_version}' "https://localhost:$http/healthz") || fail "curl h2"
[ "$ver" = 2 ] || fail "curl did not negotiate HTTP/2 (ALPN): $ver"

# gRPC: the generated Python client with TLS credentials.
gen=$(mktemp -d /tmp/nanodb-ci-grpc.XXXXXX); _cleanup_dirs+=("$gen")
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$gen" --grpc_python_out="$gen" \
  proto/nanodb/v1/*.proto || fail "protoc (grpcio-tools) failed"
PYTHONPATH="$gen" timeout 60 "$VENV/bin/python" - "$grpc" "$certs/ca.crt" <<'PY' || fail "python gRPC over TLS"
import sys, grpc
from nanodb.v1 import kv_pb2, kv_pb2_grpc
creds = grpc.ssl_channel_credentials(open(sys.argv[2], "rb").read())
with grpc.secure_channel(f"localhost:{sys.argv[1]}", creds) as ch:
    kv = kv_pb2_grpc.KVStub(ch)
    got = kv.Get(kv_pb2.GetRequest(key=b"greeting"), timeout=10)
    assert got.found and got.value == b"hello", got
PY

# SIGHUP: rotate the certificate; a new connection gets the new one.
before=$(openssl s_client -connect "127.0.0.1:$resp" -CAfile "$certs/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint)
issue server 'subjectAltName=DNS:localhost,IP:127.0.0.1'
kill -HUP "$NANODB_PID"
deadline=$(( $(date +%s) + 20 ))
until grep -q "TLS certificate and key reloaded" "$NANODB_LOG"; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no reload logged after SIGHUP"
  sleep 0.05
done
after=$(openssl s_client -connect "127.0.0.1:$resp" -CAfile "$certs/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint)
[ -n "$after" ] && [ "$before" != "$after" ] || fail "the certificate did not change after SIGHUP ($before / $after)"
kill -TERM "$NANODB_PID"; wait "$NANODB_PID" || fail "exit status after SIGTERM"

# Client certificates required: without one redis-cli is refused, with one it is served.
resp=$(free_port)
start_nanodb --resp-addr "127.0.0.1:$resp" --tls-cert "$certs/server.crt" --tls-key "$certs/server.key" \
  --tls-ca "$certs/ca.crt" --tls-auth-clients yes
wait_port "$resp" || fail "server did not start"
if timeout 10 redis-cli --tls --cacert "$certs/ca.crt" -h localhost -p "$resp" ping 2>/dev/null | grep -q PONG; then
  fail "served a client without a certificate"
fi
got=$(timeout 10 redis-cli --tls --cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key" \
  -h localhost -p "$resp" ping) || fail "redis-cli with a client certificate"
[ "$got" = PONG ] || fail "with a client certificate: $got"
echo "tls: ok"
