#!/usr/bin/env bash
# Three-node NanoDB against three-node etcd on loopback (issue #16's measurement), in one run.
#
#   scripts/bench-cluster.sh [--failover | --all] [--etcd-only | --nanodb-only] [--keep]
#
# Throughput (default): both clusters run at once from fresh temp dirs, every write fsynced (etcd
# fsyncs its WAL on each commit; NanoDB runs with --fsync always; etcd's --unsafe-no-fsync is not
# set), and nano-bench drives each leader with the same load: $CONNS users on $CONNS connections,
# 1 and 16 requests in flight each, SET (etcd KV/Put) and GET (etcd KV/Range, linearizable, as
# NanoDB's default reads), $DURATION per run, the systems alternating within each of $ROUNDS
# rounds so the noise of the machine hits both. Prints medians: ops/s, p99, and NanoDB/etcd.
# NanoDB is driven over gRPC (NANODB_PROTOCOL=tcp|resp to change), etcd over its v3 gRPC API.
#
# Failover (--failover; --all does both): $KILLS times, the leader is killed with SIGKILL and the
# time to the first write acknowledged by a survivor is measured (writes retried every few ms
# against all survivors, no other load); the killed node is restarted from its data dir and the
# cluster settles before the next kill. Prints min/median/max per system.
#
# The NanoDB half is skipped, with a message, when $NANODB_BIN has no --raft-addr. etcd comes
# from Debian's etcd-server and etcd-client packages, installed with apt-get when missing.
#
# Environment: NB (nano-bench, default target/release/nano-bench), NANODB_BIN (default
# target/release/nanodb-server; both built with cargo --release when missing), DURATION (5s),
# WARMUP (1s), ROUNDS (2), CONNS (50), PIPELINES ("1 16"), WORKLOADS ("set get"), KEYSPACE (10000),
# VALUE_SIZE (64), KILLS (10), NANODB_PROTOCOL (grpc), ETCD_ELECTION_MS / NANODB_ELECTION_MS (unset:
# each system's default election timeout; etcd's is 1000 ms), KEEP=1 (keep the temp dirs).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=bench ONLY=both
KEEP=${KEEP:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --failover) MODE=failover ;;
    --all) MODE=all ;;
    --etcd-only) ONLY=etcd ;;
    --nanodb-only) ONLY=nanodb ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-cluster: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} ROUNDS=${ROUNDS:-2} CONNS=${CONNS:-50}
PIPELINES=${PIPELINES:-"1 16"} WORKLOADS=${WORKLOADS:-"set get"} KEYSPACE=${KEYSPACE:-10000}
VALUE_SIZE=${VALUE_SIZE:-64} KILLS=${KILLS:-10} NANODB_PROTOCOL=${NANODB_PROTOCOL:-grpc}
NB=${NB:-target/release/nano-bench} NANODB_BIN=${NANODB_BIN:-target/release/nanodb-server}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench-cluster: $*"; exit 1; }

if [ ! -x "$NB" ] || { [ "$ONLY" != etcd ] && [ ! -x "$NANODB_BIN" ]; }; then
  say "building nano-bench and nanodb-server (release)..."
  cargo build --release -p nano-bench -p nanodb-server
fi

want_etcd=1 want_nanodb=1
[ "$ONLY" = nanodb ] && want_etcd=0
[ "$ONLY" = etcd ] && want_nanodb=0
if [ "$want_nanodb" = 1 ] && ! "$NANODB_BIN" --help 2>/dev/null | grep -- --raft-addr >/dev/null; then
  say "NanoDB part SKIPPED: $NANODB_BIN has no --raft-addr (a build without cluster mode); etcd only."
  want_nanodb=0
fi
if [ "$want_etcd" = 1 ] && ! command -v etcd >/dev/null; then
  say "installing etcd (Debian etcd-server, etcd-client)..."
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if [ "$want_etcd" = 1 ]; then
  command -v etcdctl >/dev/null || die "etcdctl missing (package etcd-client)"
fi
[ "$want_etcd$want_nanodb" != 00 ] || die "nothing to measure"
export ETCDCTL_API=3

work=$(mktemp -d /tmp/nanodb-bench-cluster.XXXXXX)
declare -A EPID ECLIENT EPEER NPID NGRPC NTCP NRESP NHTTP NRAFT
cleanup() {
  for p in "${EPID[@]}" "${NPID[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# ---- etcd ------------------------------------------------------------------------------------
etcd_cluster=""
etcd_start() { # i
  local i=$1 extra=()
  [ -n "${ETCD_ELECTION_MS:-}" ] && extra+=(--election-timeout "$ETCD_ELECTION_MS")
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${ECLIENT[$i]}" --advertise-client-urls "http://127.0.0.1:${ECLIENT[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EPEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EPEER[$i]}" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --initial-cluster-token "nanodb-bench-$$" \
    --logger zap --log-level warn "${extra[@]}" >>"$work/etcd$i.log" 2>&1 &
  EPID[$i]=$!
}
etcd_endpoints() { local e=() i; for i in 1 2 3; do [ -n "${EPID[$i]:-}" ] && e+=("http://127.0.0.1:${ECLIENT[$i]}"); done; (IFS=,; echo "${e[*]}"); }
# etcd_leader: the index (1-3) of the member that reports itself leader, empty if none.
etcd_leader() {
  etcdctl --endpoints "$(etcd_endpoints)" --command-timeout=1s endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
try: rows = json.load(sys.stdin)
except Exception: sys.exit(0)
for r in rows:
    s = r.get("Status", {})
    if s.get("leader") and s.get("leader") == s.get("header", {}).get("member_id"):
        print(r["Endpoint"].rsplit(":", 1)[1]); break' | while read -r port; do
    for i in 1 2 3; do [ "${ECLIENT[$i]}" = "$port" ] && echo "$i"; done
  done
  return 0
}
# etcd_settle: every running member healthy and a leader elected (30 s at most).
etcd_settle() {
  local deadline=$(( $(date +%s) + 30 ))
  until etcdctl --endpoints "$(etcd_endpoints)" --command-timeout=1s endpoint health >/dev/null 2>&1 && [ -n "$(etcd_leader)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -5 "$work"/etcd*.log >&2; die "etcd did not become healthy"; }
    sleep 0.1
  done
}
etcd_up() {
  local i parts=()
  for i in 1 2 3; do ECLIENT[$i]=$(free_port); EPEER[$i]=$(free_port); parts+=("e$i=http://127.0.0.1:${EPEER[$i]}"); done
  etcd_cluster=$(IFS=,; echo "${parts[*]}")
  for i in 1 2 3; do etcd_start "$i"; done
  etcd_settle
  say "etcd $(etcd --version | head -1 | awk '{print $3}'): 3 members up, leader e$(etcd_leader)"
}

# ---- NanoDB ----------------------------------------------------------------------------------
nanodb_peers=""
nanodb_start() { # i
  local i=$1 extra=()
  [ -n "${NANODB_ELECTION_MS:-}" ] && extra+=(--raft-election-timeout-ms "$NANODB_ELECTION_MS")
  "$NANODB_BIN" --node-id "$i" --raft-addr "127.0.0.1:${NRAFT[$i]}" --cluster-peers "$nanodb_peers" \
    --grpc-addr "127.0.0.1:${NGRPC[$i]}" --http-addr "127.0.0.1:${NHTTP[$i]}" \
    --tcp-addr "127.0.0.1:${NTCP[$i]}" --resp-addr "127.0.0.1:${NRESP[$i]}" \
    --data-dir "$work/nanodb$i" --fsync always "${extra[@]}" >>"$work/nanodb$i.log" 2>&1 &
  NPID[$i]=$!
}
# nanodb_leader: the leader_id a running node reports (GET /v1/cluster), empty if none.
nanodb_leader() {
  local i
  for i in 1 2 3; do
    [ -n "${NPID[$i]:-}" ] || continue
    python3 - "${NHTTP[$i]}" <<'EOF' && return 0
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/cluster", timeout=1) as r:
        leader = json.load(r).get("leader_id")
except Exception:
    sys.exit(1)
if leader is None:
    sys.exit(1)
print(leader)
EOF
  done
  return 0
}
# nanodb_settle: every running node answers /v1/cluster with a leader (30 s at most).
nanodb_settle() {
  local deadline=$(( $(date +%s) + 30 )) i ok
  while :; do
    ok=1
    for i in 1 2 3; do
      [ -n "${NPID[$i]:-}" ] || continue
      python3 -c "
import json, sys, urllib.request
with urllib.request.urlopen('http://127.0.0.1:${NHTTP[$i]}/v1/cluster', timeout=1) as r:
    sys.exit(0 if json.load(r).get('leader_id') is not None else 1)" 2>/dev/null || ok=0
    done
    [ "$ok" = 1 ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { tail -5 "$work"/nanodb*.log >&2; die "NanoDB cluster did not elect a leader"; }
    sleep 0.1
  done
}
nanodb_up() {
  local i parts=()
  for i in 1 2 3; do
    NRAFT[$i]=$(free_port) NGRPC[$i]=$(free_port) NHTTP[$i]=$(free_port) NTCP[$i]=$(free_port) NRESP[$i]=$(free_port)
    parts+=("$i=127.0.0.1:${NRAFT[$i]}")
  done
  nanodb_peers=$(IFS=,; echo "${parts[*]}")
  for i in 1 2 3; do nanodb_start "$i"; done
  nanodb_settle
  say "NanoDB: 3 nodes up, leader $(nanodb_leader)"
}
nanodb_target() { # i
  case $NANODB_PROTOCOL in
    grpc) echo "127.0.0.1:${NGRPC[$1]}" ;; tcp) echo "127.0.0.1:${NTCP[$1]}" ;; resp) echo "127.0.0.1:${NRESP[$1]}" ;;
    *) die "NANODB_PROTOCOL must be grpc, tcp or resp" ;;
  esac
}

systems=()
[ "$want_etcd" = 1 ] && { etcd_up; systems+=(etcd); }
[ "$want_nanodb" = 1 ] && { nanodb_up; systems+=(nanodb); }

# ---- throughput ------------------------------------------------------------------------------
declare -A populated
bench_one() { # system workload pipeline round
  local sys=$1 wl=$2 p=$3 round=$4 proto target leader extra=()
  if [ "$sys" = etcd ]; then
    leader=$(etcd_leader); proto=etcd; target="127.0.0.1:${ECLIENT[$leader]}"
  else
    leader=$(nanodb_leader); proto=$NANODB_PROTOCOL; target=$(nanodb_target "$leader")
  fi
  if [ "$wl" = get ] && [ -z "${populated[$sys]:-}" ]; then extra+=(--populate); populated[$sys]=1; fi
  "$NB" --protocol "$proto" --target "$target" --workload "$wl" --concurrency "$CONNS" --connections "$CONNS" \
    --pipeline "$p" --duration "$DURATION" --warmup "$WARMUP" --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE" \
    --no-progress --json "$work/run.json" "${extra[@]}" >"$work/run.out" 2>&1 || { cat "$work/run.out" >&2; die "nano-bench failed ($sys $wl)"; }
  python3 - "$work/run.json" "$sys" "$wl" "$p" "$round" >>"$work/results" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], round(d["ops_per_sec"]), d["latency_us"]["p99"], d["errors"])
EOF
  tail -1 "$work/results" | awk '{printf "  round %s  %-6s %-3s x%-2s  %8s ops/s  p99 %7s us  errors %s\n", $4, $1, $2, $3, $5, $6, $7}' >&2
}

if [ "$MODE" != failover ]; then
  say "throughput: $CONNS connections, pipelines ($PIPELINES), workloads ($WORKLOADS), $DURATION each after $WARMUP, $ROUNDS rounds; NanoDB over $NANODB_PROTOCOL, etcd over gRPC; both at their leader"
  : >"$work/results"
  for round in $(seq "$ROUNDS"); do
    order=("${systems[@]}")
    if [ $((round % 2)) = 0 ] && [ ${#systems[@]} = 2 ]; then order=("${systems[1]}" "${systems[0]}"); fi
    for wl in $WORKLOADS; do
      for p in $PIPELINES; do
        for sys in "${order[@]}"; do bench_one "$sys" "$wl" "$p" "$round"; done
      done
    done
  done
  python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
res = {}
for sys_, wl, p, _round, ops, p99, _err in rows:
    res.setdefault((wl, int(p)), {}).setdefault(sys_, []).append((int(ops), int(p99)))
med = lambda xs, i: statistics.median(x[i] for x in xs)
print()
print(f"{'op':<5} {'in flight':>9} | {'etcd ops/s':>11} {'p99 ms':>8} | {'NanoDB ops/s':>12} {'p99 ms':>8} | {'ops ratio':>9} {'p99 ratio':>9}")
for (wl, p), by in sorted(res.items()):
    e, n = by.get("etcd"), by.get("nanodb")
    eo = f"{med(e,0):>11.0f} {med(e,1)/1000:>8.2f}" if e else f"{'-':>11} {'-':>8}"
    no = f"{med(n,0):>12.0f} {med(n,1)/1000:>8.2f}" if n else f"{'-':>12} {'-':>8}"
    ratio = f"{med(n,0)/med(e,0):>8.2f}x {med(n,1)/max(med(e,1),1):>8.2f}x" if e and n else f"{'-':>9} {'-':>9}"
    op = {"set": "SET", "get": "GET"}.get(wl, wl)
    print(f"{op:<5} {p:>9} | {eo} | {no} | {ratio}")
print("(medians over rounds; ops ratio = NanoDB/etcd, higher is better; p99 ratio = NanoDB/etcd, lower is better)")
EOF
fi

# ---- failover --------------------------------------------------------------------------------
# first_ack SYSTEM PID ENDPOINT...: kills PID with SIGKILL, then retries a write against the
# endpoints (round robin, 200 ms timeout each) until one is acknowledged; prints the milliseconds.
cat >"$work/first_ack.py" <<'EOF'
import base64, json, os, signal, socket, sys, time, urllib.request
system, pid, endpoints = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
key = f"failover:{time.time_ns()}".encode()

def etcd_put(ep):  # etcd's v3 JSON gateway: POST /v3/kv/put
    body = json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(b"x").decode()}).encode()
    req = urllib.request.Request(f"http://{ep}/v3/kv/put", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=0.2) as r:
        return r.status == 200 and "header" in json.load(r)

def resp_set(ep):  # NanoDB's RESP port: SET must answer +OK
    host, port = ep.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=0.2) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nx\r\n" % (len(key), key))
        return s.recv(64).startswith(b"+OK")

put = etcd_put if system == "etcd" else resp_set
start = time.monotonic()
os.kill(pid, signal.SIGKILL)
i = 0
while time.monotonic() - start < 60:
    try:
        if put(endpoints[i % len(endpoints)]):
            print(f"{(time.monotonic() - start) * 1000:.0f}")
            sys.exit(0)
    except Exception:
        pass
    i += 1
    time.sleep(0.005)
sys.exit("no write acknowledged within 60 s")
EOF

failover() { # system
  local sys=$1 k leader pid eps=() ms i
  : >"$work/failover-$sys"
  for k in $(seq "$KILLS"); do
    if [ "$sys" = etcd ]; then leader=$(etcd_leader); pid=${EPID[$leader]}; else leader=$(nanodb_leader); pid=${NPID[$leader]}; fi
    [ -n "$leader" ] && [ -n "$pid" ] || die "$sys: no leader to kill"
    eps=()
    for i in 1 2 3; do
      [ "$i" = "$leader" ] && continue
      if [ "$sys" = etcd ]; then eps+=("127.0.0.1:${ECLIENT[$i]}"); else eps+=("127.0.0.1:${NRESP[$i]}"); fi
    done
    ms=$(python3 "$work/first_ack.py" "$sys" "$pid" "${eps[@]}") || die "$sys: $ms"
    wait "$pid" 2>/dev/null || true
    if [ "$sys" = etcd ]; then EPID[$leader]=""; else NPID[$leader]=""; fi
    echo "$ms" >>"$work/failover-$sys"
    say "  $sys kill $k: leader $leader killed, first acknowledged write after $ms ms"
    if [ "$sys" = etcd ]; then etcd_start "$leader"; etcd_settle; else nanodb_start "$leader"; nanodb_settle; fi
  done
  python3 - "$work/failover-$sys" "$sys" <<'EOF'
import statistics, sys
ms = sorted(int(l) for l in open(sys.argv[1]) if l.strip())
name = {"etcd": "etcd", "nanodb": "NanoDB"}[sys.argv[2]]
print(f"{name:<7} failover over {len(ms)} leader kills: min {ms[0]} ms, median {statistics.median(ms):.0f} ms, max {ms[-1]} ms")
EOF
}

if [ "$MODE" != bench ]; then
  say "failover: $KILLS leader kills per system (kill -9, then the first write a survivor acknowledges)"
  say "  election timeouts: etcd ${ETCD_ELECTION_MS:-1000 (default)} ms, NanoDB ${NANODB_ELECTION_MS:-1000 (default)} ms"
  for sys in "${systems[@]}"; do failover "$sys"; done
fi
