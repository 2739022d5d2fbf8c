#!/usr/bin/env bash
# Builds the server image here (docker/build-image.sh: debootstrap base + host binary, nothing
# pulled), runs it with a named volume and every port published on loopback, and checks it from
# the host as a user would: a write and a read over each protocol (redis-cli on RESP, curl on
# REST, nanodb-cli on the binary TCP port, the standard gRPC health check plus Admin.Stats over
# gRPC), that it runs as the non-root user and turns healthy; then restarts the container and
# checks every write survived; then removes the container, the volume and nothing else.
#
# Every wait has a deadline; CI runs the whole script under `timeout` (.ci/interop/docker.sh).
#
#   NANODB_BIN       the server binary for the image (see build-image.sh)
#   NANODB_CLI_BIN   nanodb-cli on the host (default target/debug/nanodb-cli, else release)
#   VENV             a Python virtualenv with grpcio-health-checking (made if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

cli=${NANODB_CLI_BIN:-}
if [ -z "$cli" ]; then
  for b in target/debug/nanodb-cli target/release/nanodb-cli; do [ -x "$b" ] && { cli=$b; break; }; done
fi
[ -n "$cli" ] && [ -x "$cli" ] || { echo "smoke-test: build nanodb-cli first (cargo build -p nanodb-cli)" >&2; exit 1; }
command -v redis-cli >/dev/null && command -v curl >/dev/null \
  || { echo "smoke-test: needs redis-cli and curl (apt-get install redis-tools curl)" >&2; exit 1; }
venv=${VENV:-/tmp/nanodb-ci-venv}
if ! "$venv/bin/python" -c 'import grpc_health.v1' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-health-checking
fi

image=$(docker/build-image.sh)
name=nanodb-smoke-$$
volume=nanodb-smoke-data-$$
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  echo "--- container log" >&2
  docker logs --tail 40 "$name" >&2 2>&1 || true
  exit 1
}

docker volume create "$volume" >/dev/null
# fsync always: what was acknowledged is on the volume when the container is restarted. The health
# check runs every second here (10 s in the image) so that the test does not wait for it.
docker run -d --name "$name" -v "$volume:/data" -e NANODB_FSYNC=always \
  -p 127.0.0.1::7070 -p 127.0.0.1::50051 -p 127.0.0.1::8080 -p 127.0.0.1::6379 \
  --health-interval 1s --health-start-period 30s "$image" >/dev/null

ports() {
  tcp=$(docker port "$name" 7070/tcp | head -1); tcp=${tcp##*:}
  grpc=$(docker port "$name" 50051/tcp | head -1); grpc=${grpc##*:}
  http=$(docker port "$name" 8080/tcp | head -1); http=${http##*:}
  resp=$(docker port "$name" 6379/tcp | head -1); resp=${resp##*:}
}
wait_healthy() {
  local deadline=$(( $(date +%s) + 60 )) status
  while :; do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$name" 2>/dev/null || echo gone)
    [ "$status" = healthy ] && break
    [ "$status" = gone ] && fail "the container stopped"
    [ "$(date +%s)" -lt "$deadline" ] || fail "not healthy within 60 s (status: $status)"
    sleep 0.2
  done
  ports
}
health() {
  "$venv/bin/python" - "$grpc" <<'PY'
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}")
grpc.channel_ready_future(ch).result(timeout=10)
status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
assert status == health_pb2.HealthCheckResponse.SERVING, status
print("grpc health: SERVING")
PY
}
# read_all: every key written so far, each read over a protocol other than the one that wrote it.
read_all() {
  [ "$(redis-cli -p "$resp" --raw GET tcp-key)" = tcp-value ] || fail "RESP GET of the TCP write"
  [ "$(curl -fsS "http://127.0.0.1:$http/v1/kv/resp-key")" = resp-value ] || fail "REST GET of the RESP write"
  [ "$("$cli" -p "$tcp" get http-key)" = http-value ] || fail "TCP GET of the REST write"
  [ "$("$cli" -p "$tcp" get bin-key | od -An -tx1 | tr -d ' \n')" = 00ff0a0a ] || fail "binary value"
  [ "$("$cli" -p "$tcp" --grpc-port "$grpc" -o json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"])')" = 4 ] \
    || fail "gRPC Admin.Stats does not count 4 keys"
  health || fail "gRPC health check"
}

wait_healthy
echo "smoke-test: $image up, ports tcp $tcp grpc $grpc http $http resp $resp"
[ "$(docker exec "$name" id -u)" = 10001 ] || fail "the server does not run as the nanodb user (uid 10001)"
[ "$(redis-cli -p "$resp" SET resp-key resp-value)" = OK ] || fail "RESP SET"
curl -fsS -X PUT --data-binary http-value "http://127.0.0.1:$http/v1/kv/http-key" >/dev/null || fail "REST PUT"
"$cli" -p "$tcp" put tcp-key tcp-value >/dev/null || fail "TCP put"
printf '\x00\xff\n' | "$cli" -p "$tcp" put bin-key - >/dev/null || fail "TCP put of a binary value"
read_all
echo "smoke-test: every protocol answers; restarting the container"

docker restart -t 20 "$name" >/dev/null
wait_healthy
read_all
echo "smoke-test: the data survived the restart (volume $volume); ok"
