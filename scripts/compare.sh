#!/usr/bin/env bash
# Side-by-side measurements of NanoDB against a reference, in one run, alternating A B A B so that
# machine drift hits both. Every figure of the README's "Next to Redis" section comes from here.
# Run after `cargo build --release -p nanodb-server` (from anywhere; it works from the repository root):
#
#   scripts/compare.sh resp     RESP port vs Redis 7: redis-benchmark GET/SET, -P 1 and -P 16
#   scripts/compare.sh resp-tls the same over TLS: NanoDB --tls-cert vs redis-server --tls-port,
#                               redis-benchmark --tls (certificates made here with openssl)
#   scripts/compare.sh http     REST GET vs a no-op axum handler, under wrk
#   scripts/compare.sh grpc     gRPC Get vs a no-op tonic handler, under h2load
#   scripts/compare.sh memory   bytes per key for 1M keys (16 B keys, 64 B values) vs Redis
#   scripts/compare.sh aof      SET with --fsync everysec/always vs Redis appendfsync
#
# The references: Redis 7 and its tools, wrk and h2load are Debian packages, installed with apt-get
# when missing (redis-server, redis-tools, wrk, curl, nghttp2-client). The no-op servers are
# scripts/reference/ (http-noop, grpc-noop: their own Cargo workspace, so the project's builds and
# tests never compile them), built here in release into REFERENCE_TARGET_DIR (default
# target/reference) when the mode needs one.
#
# Environment: NANODB_BIN (default target/release/nanodb-server), NANODB_ARGS (extra server flags),
# ROUNDS (default 3), N1/N16 (resp, resp-tls: requests per redis-benchmark run at -P 1/-P 16,
# default 200000/1000000). Prints a table of medians and the ratio NanoDB / reference.
set -euo pipefail
what=${1:?usage: scripts/compare.sh resp|resp-tls|http|grpc|memory|aof}
case $what in resp|resp-tls|http|grpc|memory|aof) ;; *) echo "unknown mode: $what (resp, resp-tls, http, grpc, memory or aof)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
BIN=${NANODB_BIN:-target/release/nanodb-server}
ROUNDS=${ROUNDS:-3}
REF_TARGET=${REFERENCE_TARGET_DIR:-$PWD/target/reference}
work=$(mktemp -d /tmp/nanodb-compare.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p nanodb-server first" >&2; exit 2; }

need() { local m=(); for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || m+=("$p"); done
  [ ${#m[@]} -eq 0 ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${m[@]}"; } >/dev/null; }
reference() { # build one no-op server of scripts/reference/ and print its path
  CARGO_TARGET_DIR="$REF_TARGET" cargo build -q --release --manifest-path scripts/reference/Cargo.toml -p "$1" >&2
  echo "$REF_TARGET/release/$1"; }
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
up() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on $1" >&2; return 1; }
nanodb() { # FRONTEND-FLAG ADDR [more flags]: every other frontend off
  local flags=(--grpc-addr off --http-addr off --tcp-addr off --resp-addr off)
  for i in "${!flags[@]}"; do [ "${flags[$i]}" = "$1" ] && flags[$((i+1))]=$2; done
  # like for like: the references keep nothing on disk, so neither does NanoDB unless asked (aof)
  local keep=(); [ "$what" != aof ] && "$BIN" --help 2>/dev/null | grep -q -- '--persistence' && keep=(--persistence off)
  "$BIN" "${flags[@]}" --data-dir "$work/data-$RANDOM" "${keep[@]}" "${@:3}" ${NANODB_ARGS:-} >"$work/nanodb.log" 2>&1 &
  pids+=($!); NPID=$!
}
redis() { redis-server --port "$1" --save '' --appendonly no "${@:2}" --dir "$(mktemp -d -p "$work")" >"$work/redis-$1.log" 2>&1 & pids+=($!); RPID=$!; }
TLS=() # redis-cli/redis-benchmark flags for a TLS port (resp-tls)
pong() { for _ in $(seq 1 200); do [ "$(redis-cli "${TLS[@]}" -p "$1" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done
  echo "no PONG from $1" >&2; return 1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { python3 -c "print(f'{$1/max($2,1e-9):.2f}x')"; }
rss() { awk '/VmRSS/{print $2*1024}' /proc/"$1"/status; }

case $what in
resp|resp-tls)
  need redis-server redis-tools
  rp=$(port); np=$(port)
  if [ "$what" = resp-tls ]; then
    need openssl
    redis-benchmark --help 2>&1 | grep -q -- --tls || { echo "this redis-benchmark was built without TLS" >&2; exit 2; }
    # A CA and a certificate for 127.0.0.1, both P-256 (the handshake cost is the same on both sides).
    c=$work/tls
    mkdir -p "$c"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
      -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
      -keyout "$c/server.key" -out "$c/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$c/ext"
    openssl x509 -req -in "$c/server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 2 \
      -extfile "$c/ext" -out "$c/server.crt" 2>/dev/null
    TLS=(--tls --cacert "$c/ca.crt")
    redis-server --port 0 --tls-port "$rp" --tls-cert-file "$c/server.crt" --tls-key-file "$c/server.key" \
      --tls-ca-cert-file "$c/ca.crt" --tls-auth-clients no --save '' --appendonly no \
      --dir "$(mktemp -d -p "$work")" >"$work/redis-$rp.log" 2>&1 & pids+=($!)
    nanodb --resp-addr 127.0.0.1:$np --tls-cert "$c/server.crt" --tls-key "$c/server.key"
  else
    redis "$rp"; nanodb --resp-addr 127.0.0.1:$np
  fi
  pong "$rp"; pong "$np"
  printf '%-8s %-4s %12s %12s %8s %10s %10s\n' test P redis nanodb ratio p99-redis p99-nano
  for t in SET GET; do for P in 1 16; do
    : >"$work/r"; : >"$work/n"; : >"$work/rl"; : >"$work/nl"
    for _ in $(seq "$ROUNDS"); do
      for side in r n; do
        p=$([ $side = r ] && echo "$rp" || echo "$np")
        # --csv columns: test, rps, avg, min, p50, p95, p99, max (ms)
        redis-benchmark "${TLS[@]}" -p "$p" -t "${t,,}" -c 50 -n $((P==1 ? ${N1:-200000} : ${N16:-1000000})) -P "$P" -r 100000 -d 64 --csv 2>/dev/null \
          | tr -d '"' | awk -F, -v t="$t" -v a="$work/$side" -v b="$work/${side}l" '$1==t {print $2 >> a; print $7 >> b}'
      done
    done
    r=$(median <"$work/r"); n=$(median <"$work/n")
    printf '%-8s %-4s %12.0f %12.0f %8s %10s %10s\n' "$t" "$P" "$r" "$n" "$(ratio "$n" "$r")" "$(median <"$work/rl")ms" "$(median <"$work/nl")ms"
  done; done ;;
http)
  need wrk curl
  noop=$(reference http-noop)
  rp=$(port); np=$(port)
  "$noop" 127.0.0.1:$rp >"$work/noop.log" 2>&1 & pids+=($!)
  nanodb --http-addr 127.0.0.1:$np; up "$rp"; up "$np"
  head -c 64 /dev/zero | tr '\0' v | curl -sf -X PUT --data-binary @- "http://127.0.0.1:$np/v1/kv/bench-key" >/dev/null || echo "PUT of bench-key failed" >&2
  : >"$work/r"; : >"$work/n"
  for _ in $(seq "$ROUNDS"); do
    wrk -t1 -c50 -d5s "http://127.0.0.1:$rp/v1/kv/bench-key" | awk '/Requests\/sec/{print $2}' >>"$work/r"
    wrk -t1 -c50 -d5s "http://127.0.0.1:$np/v1/kv/bench-key" | awk '/Requests\/sec/{print $2}' >>"$work/n"
  done
  r=$(median <"$work/r"); n=$(median <"$work/n")
  printf 'HTTP GET wrk -t1 -c50: no-op axum %.0f req/s, NanoDB %.0f req/s, ratio %s\n' "$r" "$n" "$(ratio "$n" "$r")" ;;
grpc)
  need nghttp2-client
  noop=$(reference grpc-noop)
  rp=$(port); np=$(port)
  "$noop" 127.0.0.1:$rp >"$work/noop.log" 2>&1 & pids+=($!)
  nanodb --grpc-addr 127.0.0.1:$np; up "$rp"; up "$np"
  # GetRequest{key: "bench-key"} as one length-prefixed gRPC message
  python3 -c 'import sys;k=b"bench-key";m=b"\x0a"+bytes([len(k)])+k;sys.stdout.buffer.write(b"\x00"+len(m).to_bytes(4,"big")+m)' >"$work/get.bin"
  for m in 1 16; do
    : >"$work/r"; : >"$work/n"
    for _ in $(seq "$ROUNDS"); do
      for side in r n; do
        p=$([ $side = r ] && echo "$rp" || echo "$np")
        h2load -D 5 --warm-up-time=1 -c 50 -m $m -t 1 -d "$work/get.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
          "http://127.0.0.1:$p/nanodb.v1.KV/Get" 2>/dev/null | awk '/^finished in/{gsub(",","");print $4}' >>"$work/$side"
      done
    done
    r=$(median <"$work/r"); n=$(median <"$work/n")
    printf 'gRPC Get h2load -c50 -m%-2s: no-op tonic %.0f req/s, NanoDB %.0f req/s, ratio %s\n' "$m" "$r" "$n" "$(ratio "$n" "$r")"
  done
  echo "(h2load counts HTTP 200s; check the server's own counters for grpc-status errors)" ;;
memory)
  need redis-server redis-tools
  python3 - "$work/load.resp" <<'PY'
import sys, os
with open(sys.argv[1], "wb") as f:
    for i in range(1_000_000):
        k = b"k:%014d" % i; v = os.urandom(32).hex().encode()
        f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
  rp=$(port); np=$(port); redis "$rp"; nanodb --resp-addr 127.0.0.1:$np; pong "$rp"; pong "$np"
  for side in redis nanodb; do
    p=$([ $side = redis ] && echo "$rp" || echo "$np"); pid=$([ $side = redis ] && echo "$RPID" || echo "$NPID")
    before=$(rss "$pid"); redis-cli -p "$p" --pipe <"$work/load.resp" >/dev/null; sleep 1; after=$(rss "$pid")
    n=$(redis-cli -p "$p" dbsize)
    printf '%-7s keys=%s RSS before=%s after=%s bytes/key=%.1f\n' "$side" "$n" "$before" "$after" "$(python3 -c "print(($after-$before)/max($n,1))")"
  done ;;
aof)
  need redis-server redis-tools
  for mode in everysec always; do
    rp=$(port); np=$(port)
    redis "$rp" --appendonly yes --appendfsync $mode --auto-aof-rewrite-percentage 0
    nanodb --resp-addr 127.0.0.1:$np --fsync $mode; pong "$rp"; pong "$np"
    for P in 1 16; do
      : >"$work/r"; : >"$work/n"
      for _ in $(seq "$ROUNDS"); do
        redis-benchmark -p "$rp" -t set -c 50 -n $((P==1 ? 100000 : 500000)) -P $P -r 100000 -d 64 --csv 2>/dev/null | tr -d '"' | awk -F, '$1=="SET"{print $2}' >>"$work/r"
        redis-benchmark -p "$np" -t set -c 50 -n $((P==1 ? 100000 : 500000)) -P $P -r 100000 -d 64 --csv 2>/dev/null | tr -d '"' | awk -F, '$1=="SET"{print $2}' >>"$work/n"
      done
      r=$(median <"$work/r"); n=$(median <"$work/n")
      printf 'SET fsync=%-8s -P %-2s: Redis %.0f, NanoDB %.0f ops/s, ratio %s\n' "$mode" "$P" "$r" "$n" "$(ratio "$n" "$r")"
    done
    kill "$RPID" "$NPID"; wait "$RPID" "$NPID" 2>/dev/null || true
  done ;;
*) echo "unknown: $what" >&2; exit 2 ;;
esac
