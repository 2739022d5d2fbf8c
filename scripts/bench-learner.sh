#!/usr/bin/env bash
# A learner catching up from a snapshot, and what it costs the cluster's writes (issue #17's
# measurements), in one run.
#
#   scripts/bench-learner.sh [--catchup-only | --load-only] [--keep]
#
# Part 1, catch-up: a three-node cluster on loopback (--node-id, --raft-addr, --cluster-peers,
# --fsync $FSYNC) is loaded with $N keys (16-byte keys `key:000000000042`, $VALUE_SIZE-byte values:
# nano-bench --populate over the leader's gRPC port), and loaded keys are overwritten until
# the leader has taken a Raft snapshot covering all of them (--raft-snapshot-every $SNAPSHOT_EVERY;
# the log behind a snapshot is purged, so a new member must get the snapshot). A fourth node is
# started empty (--node-id, --raft-addr, no --cluster-peers) and added as a learner with REST
# `POST /v1/cluster/members` on the leader; the time from that request to the learner's
# applied_index (its `GET /v1/cluster`) reaching the leader's commit_index read right after the
# add is the catch-up time. Prints seconds and keys/s, the snapshot's index and how many entries
# came by log after it, and checks that the learner installed a snapshot
# (nanodb_raft_snapshots_installed_total in its /metrics) and holds $N keys.
#
# Part 2, writes during a catch-up: $ROUNDS rounds, each one run without a learner catching up and
# one with (the order alternates between rounds): nano-bench SETs over the keys of part 1 against
# the leader ($PROTOCOL, $CONNS users on $CONNS connections, $PIPELINE in flight each, $WARMUP s
# warm-up then $DURATION s measured). In the "with" run a fresh empty node, under a new id (a
# removed id is never reused), is added as a learner when measuring starts, so it catches up from
# a snapshot of $N keys while the load runs; after the run it is removed (DELETE
# /v1/cluster/members/ID) and its process and data dir are gone before the next run. Prints each
# run, the medians of ops/s and p99 with and without, and the ratio (issue #17 asks >= 0.8x), with
# how long each learner took to hold what the cluster had committed when it was added (when that
# is much shorter than $DURATION, most of the "with" run had a learner only following the log).
#
# Environment: NANODB_BIN (default target/release/nanodb-server), NB (default
# target/release/nano-bench; both built with cargo --release when missing), N (1000000),
# VALUE_SIZE (64), SNAPSHOT_EVERY (default: the server's 100000, or N/40 when N < 400000 so that
# a small N does not need many overwrites to reach a snapshot), FSYNC (always), ROUNDS (3), DURATION (10, seconds), WARMUP (1,
# seconds), CONNS (50), PIPELINE (1), PROTOCOL (tcp; grpc or resp), CATCHUP_TIMEOUT (600, seconds),
# KEEP=1 (keep the temp dir with the nodes' logs). Every wait is bounded; every process and the
# temp dir go on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."

PARTS=both
KEEP=${KEEP:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --catchup-only) PARTS=catchup ;;
    --load-only) PARTS=load ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-learner: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
N=${N:-1000000} VALUE_SIZE=${VALUE_SIZE:-64} FSYNC=${FSYNC:-always} ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10} WARMUP=${WARMUP:-1} CONNS=${CONNS:-50} PIPELINE=${PIPELINE:-1}
PROTOCOL=${PROTOCOL:-tcp} CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-600}
if [ -z "${SNAPSHOT_EVERY:-}" ]; then
  SNAPSHOT_EVERY=100000
  [ "$N" -lt 400000 ] && SNAPSHOT_EVERY=$(( N / 40 > 100 ? N / 40 : 100 ))
fi
NB=${NB:-target/release/nano-bench} NANODB_BIN=${NANODB_BIN:-target/release/nanodb-server}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench-learner: $*"; exit 1; }
for v in N VALUE_SIZE ROUNDS DURATION WARMUP CONNS PIPELINE CATCHUP_TIMEOUT SNAPSHOT_EVERY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
case $PROTOCOL in tcp | grpc | resp) ;; *) die "PROTOCOL must be tcp, grpc or resp" ;; esac

if [ ! -x "$NB" ] || [ ! -x "$NANODB_BIN" ]; then
  say "building nano-bench and nanodb-server (release)..."
  cargo build --release -p nano-bench -p nanodb-server
fi
"$NANODB_BIN" --help 2>/dev/null | grep -- --raft-addr >/dev/null ||
  die "$NANODB_BIN has no --raft-addr (a build without cluster mode)"

work=$(mktemp -d /tmp/nanodb-bench-learner.XXXXXX)
declare -A PID GRPC HTTP TCP RESP RAFT
cleanup() {
  local p
  for p in "${PID[@]}" "${BG[@]}"; do if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; fi; done
  # and any other child still running (a process substitution's poller, a nano-bench), so that
  # `wait` cannot block on one after an interrupt
  for p in $(pgrep -P $$ 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
BG=()
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# The HTTP calls and the waits, in one helper (every loop bounded by its deadline).
cat >"$work/c.py" <<'EOF'
import json, re, sys, time, urllib.request

def call(port, path, method="GET", body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw and r.headers.get("content-type", "").startswith("application/json") else raw.decode()

def status(port):
    return call(port, "/v1/cluster", timeout=2)

def metric(port, name):
    text = call(port, "/metrics", timeout=2)
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "leader":  # leader: PORT... -> the leader's id once every node names the same one
    deadline = time.monotonic() + float(args[0])
    while time.monotonic() < deadline:
        try:
            ids = {status(p).get("leader_id") for p in args[1:]}
            if len(ids) == 1 and None not in ids:
                print(ids.pop()); sys.exit(0)
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit("no leader that every node agrees on")
elif cmd == "ready":  # ready: TIMEOUT PORT -> /readyz answers 200
    deadline = time.monotonic() + float(args[0])
    while time.monotonic() < deadline:
        try:
            call(args[1], "/readyz", timeout=1); sys.exit(0)
        except Exception:
            time.sleep(0.05)
    sys.exit(f"port {args[1]}: not ready")
elif cmd == "commit":  # commit: PORT -> the node's commit_index
    print(status(args[0])["commit_index"])
elif cmd == "synced":  # synced: TIMEOUT PORT... -> every node applied the same index as committed
    deadline = time.monotonic() + float(args[0])
    while time.monotonic() < deadline:
        try:
            st = [status(p) for p in args[1:]]
            if len({s["applied_index"] for s in st}) == 1 and st[0]["applied_index"] >= st[0]["commit_index"]:
                print(st[0]["applied_index"]); sys.exit(0)
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit("the nodes did not converge")
elif cmd == "add":
    # add: LEADER_HTTP ID RAFT_ADDR LEARNER_HTTP TIMEOUT -> adds the learner, then waits until its
    # applied_index reaches the leader's commit_index read right after the add; prints
    # "seconds target_index applied_index snapshots_installed" (seconds "-" on timeout).
    leader, nid, raft, learner, timeout = args[0], int(args[1]), args[2], args[3], float(args[4])
    t0 = time.monotonic()
    answer = call(leader, "/v1/cluster/members", "POST", {"id": nid, "raft_addr": raft}, timeout=30)
    if nid not in answer.get("learners", []):
        sys.exit(f"adding node {nid}: unexpected answer {answer}")
    target = status(leader)["commit_index"]
    applied, took = 0, "-"
    while time.monotonic() - t0 < timeout:
        try:
            st = status(learner)
            applied = st["applied_index"]
            if st.get("role") == "learner" and applied >= target:
                took = f"{time.monotonic() - t0:.3f}"; break
        except Exception:
            pass
        time.sleep(0.02)
    try:
        snaps = metric(learner, "nanodb_raft_snapshots_installed_total")
    except Exception:
        snaps = -1
    print(took, target, applied, int(snaps))
elif cmd == "remove":  # remove: LEADER_HTTP ID
    answer = call(args[0], f"/v1/cluster/members/{args[1]}", "DELETE", timeout=30)
    if int(args[1]) not in answer.get("removed_ids", []):
        sys.exit(f"removing node {args[1]}: unexpected answer {answer}")
elif cmd == "keys":  # keys: PORT -> the node's key count (GET /v1/stats)
    st = call(args[0], "/v1/stats", timeout=5)
    print(st.get("keys", st.get("key_count", "?")))
EOF
py() { python3 "$work/c.py" "$@"; }

# ---- nodes -----------------------------------------------------------------------------------
peers=""
node_ports() { # i
  RAFT[$1]=$(free_port) GRPC[$1]=$(free_port) HTTP[$1]=$(free_port) TCP[$1]=$(free_port) RESP[$1]=$(free_port)
}
node_start() { # i [extra flags...]: a node with its own data dir and log under $work
  local i=$1; shift
  "$NANODB_BIN" --node-id "$i" --raft-addr "127.0.0.1:${RAFT[$i]}" \
    --grpc-addr "127.0.0.1:${GRPC[$i]}" --http-addr "127.0.0.1:${HTTP[$i]}" \
    --tcp-addr "127.0.0.1:${TCP[$i]}" --resp-addr "127.0.0.1:${RESP[$i]}" \
    --data-dir "$work/node$i" --fsync "$FSYNC" --raft-snapshot-every "$SNAPSHOT_EVERY" "$@" \
    >>"$work/node$i.log" 2>&1 &
  PID[$i]=$!
}
node_stop() { # i: kill -9 and forget the node, its data dir included
  local i=$1
  if [ -n "${PID[$i]:-}" ]; then kill -9 "${PID[$i]}" 2>/dev/null || true; wait "${PID[$i]}" 2>/dev/null || true; fi
  unset "PID[$i]"
  rm -rf "$work/node$i"
}
tails() { local f; for f in "$work"/node*.log; do say "== $f"; tail -5 "$f" >&2; done; }

parts=()
for i in 1 2 3; do node_ports "$i"; parts+=("$i=127.0.0.1:${RAFT[$i]}"); done
peers=$(IFS=,; echo "${parts[*]}")
for i in 1 2 3; do node_start "$i" --cluster-peers "$peers"; done
leader=$(py leader 60 "${HTTP[1]}" "${HTTP[2]}" "${HTTP[3]}") || { tails; die "the cluster elected no leader within 60 s"; }
say "cluster: 3 nodes up (--fsync $FSYNC, --raft-snapshot-every $SNAPSHOT_EVERY), leader $leader"
next_id=4

target_of() { # i: the node's address for $PROTOCOL
  case $PROTOCOL in tcp) echo "127.0.0.1:${TCP[$1]}" ;; grpc) echo "127.0.0.1:${GRPC[$1]}" ;; resp) echo "127.0.0.1:${RESP[$1]}" ;; esac
}

# newest_snapshot DIR: the index of the newest complete snapshot (its .meta and .snap), 0 if none.
newest_snapshot() {
  local f best=0 idx
  for f in "$1"/raft/snapshots/snapshot-*.meta; do
    [ -e "$f" ] || continue
    idx=${f##*/snapshot-}; idx=$((10#${idx%.meta}))
    [ -e "${f%.meta}.snap" ] && [ "$idx" -gt "$best" ] && best=$idx
  done
  echo "$best"
}

# start_learner: a fresh empty node under the next id never used, serving REST only; sets $lid.
start_learner() {
  lid=$next_id; next_id=$((next_id + 1))
  node_ports "$lid"
  "$NANODB_BIN" --node-id "$lid" --raft-addr "127.0.0.1:${RAFT[$lid]}" --http-addr "127.0.0.1:${HTTP[$lid]}" \
    --grpc-addr off --tcp-addr off --resp-addr off --data-dir "$work/node$lid" --fsync "$FSYNC" \
    --raft-snapshot-every "$SNAPSHOT_EVERY" >>"$work/node$lid.log" 2>&1 &
  PID[$lid]=$!
  py ready 30 "${HTTP[$lid]}" || { tails; die "node $lid did not start"; }
}

# ---- part 1: load, snapshot, catch-up --------------------------------------------------------
# Loaded over gRPC: nano-bench --populate keeps 64 writes in flight per connection, and in cluster
# mode the TCP and RESP frontends get through such pipelined writes about 20 times slower than
# gRPC's concurrent streams do (measured on this branch: 5,000 keys in ~18 s over TCP or RESP,
# ~1 s over gRPC), which would make loading 1M keys take most of an hour.
say "loading $N keys (16-byte keys, $VALUE_SIZE-byte values) through the leader's gRPC port..."
t0=$(date +%s.%N)
"$NB" --protocol grpc --target "$(PROTOCOL=grpc target_of "$leader")" --workload set --populate --requests 1 \
  --concurrency "$CONNS" --keyspace "$N" --value-size "$VALUE_SIZE" --no-progress >"$work/populate.out" 2>&1 ||
  { cat "$work/populate.out" >&2; tails; die "loading failed"; }
t1=$(date +%s.%N)
commit=$(py synced 120 "${HTTP[1]}" "${HTTP[2]}" "${HTTP[3]}") || { tails; die "the nodes did not apply the load within 120 s"; }
say "loaded in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; commit index $commit"

# The leader snapshots every $SNAPSHOT_EVERY log entries on its own, and an entry can carry
# several writes (the leader batches concurrent ones), so the last snapshot can stop well short of
# the load. Overwrite loaded keys (nano-bench SETs over the same keyspace: the key count stays $N)
# until a snapshot at or past the load's last entry exists, then wait until no newer one is being
# written (2 s unchanged): the learner then gets every loaded key from the snapshot.
loaded=$commit deadline=$(( $(date +%s) + 900 )) snap=0
while [ "$(newest_snapshot "$work/node$leader")" -lt "$loaded" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { tails; die "the leader took no snapshot past index $loaded within 900 s (lower SNAPSHOT_EVERY)"; }
  "$NB" --protocol grpc --target "$(PROTOCOL=grpc target_of "$leader")" --workload set --keyspace "$N" \
    --value-size "$VALUE_SIZE" --concurrency "$CONNS" --duration 1s --no-progress >"$work/filler.out" 2>&1 ||
    { cat "$work/filler.out" >&2; die "overwriting keys until a snapshot failed"; }
done
deadline=$(( $(date +%s) + 120 )) stable_since=$(date +%s)
while :; do
  s=$(newest_snapshot "$work/node$leader")
  if [ "$s" != "$snap" ]; then snap=$s; stable_since=$(date +%s); fi
  [ $(( $(date +%s) - stable_since )) -ge 2 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || die "the leader kept taking snapshots for 120 s"
  sleep 0.2
done
commit=$(py synced 120 "${HTTP[1]}" "${HTTP[2]}" "${HTTP[3]}") || { tails; die "the nodes did not converge within 120 s"; }
say "leader's snapshot at index $snap ($(du -h "$work/node$leader/raft/snapshots/$(printf "snapshot-%020d.snap" "$snap")" | cut -f1)); $((commit - snap)) entries after it in the log (overwrites of loaded keys)"

if [ "$PARTS" != load ]; then
  start_learner
  read -r took target applied snaps < <(py add "${HTTP[$leader]}" "$lid" "127.0.0.1:${RAFT[$lid]}" "${HTTP[$lid]}" "$CATCHUP_TIMEOUT") ||
    { tails; die "adding the learner failed"; }
  [ "$took" != - ] || { tails; die "learner $lid did not catch up within $CATCHUP_TIMEOUT s (applied $applied of $target)"; }
  [ "$snaps" -ge 1 ] || die "learner $lid caught up without installing a snapshot (by log only): the measurement is not what issue #17 asks"
  keys=$(py keys "${HTTP[$lid]}")
  [ "$keys" = "$N" ] || die "learner $lid caught up but holds $keys keys, not $N"
  say ""
  echo "catch-up: a new learner held all $N keys (index $target, snapshot at $snap + $((target - snap)) entries by log) $took s after POST /v1/cluster/members: $(python3 -c "print(f'{$N / $took:,.0f}')") keys/s (learner's key count: $keys, snapshots installed: $snaps)"
  py remove "${HTTP[$leader]}" "$lid" || die "removing learner $lid failed"
  node_stop "$lid"
fi

# ---- part 2: writes with and without a learner catching up -----------------------------------
run_load() { # kind round: one nano-bench SET run against the leader; appends to $work/results
  local kind=$1 round=$2 nbpid addpid took="" target applied snaps
  leader=$(py leader 30 "${HTTP[1]}" "${HTTP[2]}" "${HTTP[3]}") || { tails; die "no leader"; }
  [ "$kind" = with ] && start_learner
  "$NB" --protocol "$PROTOCOL" --target "$(target_of "$leader")" --workload set --keyspace "$N" \
    --value-size "$VALUE_SIZE" --concurrency "$CONNS" --connections "$CONNS" --pipeline "$PIPELINE" \
    --duration "${DURATION}s" --warmup "${WARMUP}s" --no-progress --json "$work/run.json" >"$work/run.out" 2>&1 &
  nbpid=$!; BG+=("$nbpid")
  if [ "$kind" = with ]; then
    sleep "$WARMUP"
    py add "${HTTP[$leader]}" "$lid" "127.0.0.1:${RAFT[$lid]}" "${HTTP[$lid]}" "$((DURATION + 60))" >"$work/add.out" 2>&1 &
    addpid=$!; BG+=("$addpid")
  fi
  wait "$nbpid" || { cat "$work/run.out" >&2; tails; die "nano-bench failed ($kind, round $round)"; }
  if [ "$kind" = with ]; then
    wait "$addpid" || { cat "$work/add.out" >&2; tails; die "adding learner $lid failed"; }
    read -r took target applied snaps <"$work/add.out"
    py remove "${HTTP[$leader]}" "$lid" || die "removing learner $lid failed"
    node_stop "$lid"
  fi
  python3 - "$work/run.json" "$kind" "$round" "${took:--}" "${snaps:--}" >>"$work/results" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], round(d["ops_per_sec"]), d["latency_us"]["p99"], d["errors"], sys.argv[4], sys.argv[5])
EOF
  tail -1 "$work/results" | awk '{printf "  round %s  %-7s %8s ops/s  p99 %7s us  errors %s", $2, $1, $3, $4, $5;
    if ($1 == "with") printf "  learner caught up after %s s (snapshots installed: %s)", $6, $7; printf "\n"}' >&2
}

if [ "$PARTS" != catchup ]; then
  say ""
  say "writes: SET over $PROTOCOL to the leader, $CONNS users, $PIPELINE in flight each, ${WARMUP} s warm-up + ${DURATION} s, $ROUNDS rounds; 'with' = a fresh learner added when measuring starts"
  : >"$work/results"
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order=(without with); else order=(with without); fi
    for kind in "${order[@]}"; do run_load "$kind" "$round"; done
  done
  python3 - "$work/results" "$DURATION" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {"without": [], "with": []}
for kind, _r, ops, p99, _e, took, _s in rows:
    by[kind].append((int(ops), int(p99), took))
med = lambda k, i: statistics.median(x[i] for x in by[k])
wo, wi = med("without", 0), med("with", 0)
print()
print(f"writes without a learner catching up: {wo:,.0f} ops/s (p99 {med('without', 1) / 1000:.2f} ms)")
print(f"writes while a learner catches up:    {wi:,.0f} ops/s (p99 {med('with', 1) / 1000:.2f} ms)")
print(f"ratio with/without: {wi / wo:.2f}x (issue #17 asks >= 0.8x; medians over {len(by['with'])} rounds)")
tooks = [x[2] for x in by["with"]]
print("learner catch-up under load (s): " + ", ".join(tooks)
      + f"  (the measured run lasts {sys.argv[2]} s)")
EOF
fi
