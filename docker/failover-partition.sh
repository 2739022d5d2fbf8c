#!/usr/bin/env bash
# Failover under a partition of the leader (issue #17, "Measured"), over $TRIALS trials on the
# three-node cluster in containers (docker/compose.cluster.yaml, built and run as by
# docker/cluster-test.sh: no registry needed):
#
#   each trial cuts the leader's container off the Raft network (`docker network disconnect`; its
#   clients could still reach it), then retries a write (RESP SET, 1 s timeout, 4 clients on each
#   of the two other nodes) until one is acknowledged, and records the time from the cut to that
#   acknowledgement; then reconnects the old leader and waits until it follows the new one with
#   everything applied, before the next trial.
#
# Prints each trial, then min, median and worst. The clock starts when `docker network
# disconnect` returns (the cut is in effect); the command's own time is printed beside each trial.
# No other load runs. Measure on a quiet machine: the figure is the election timeout's spread plus
# scheduling noise.
#
#   TRIALS                              trials (default 10)
#   NANODB_RAFT_ELECTION_TIMEOUT_MS     the nodes' election timeout (default 1000)
#   NANODB_BIN                          the server binary for the image (see build-image.sh)
set -euo pipefail
# shellcheck disable=SC2034 # read by cluster-lib.sh (the compose project name)
CLUSTER_NAME=failover
. "$(dirname "$0")/cluster-lib.sh"
trials=${TRIALS:-10}
[ "$trials" -ge 1 ] 2>/dev/null || { echo "failover-partition: TRIALS must be a number >= 1" >&2; exit 2; }

work=$(mktemp -d /tmp/nanodb-failover.XXXXXX)
CLUSTER_TMP+=("$work")
cat >"$work/cut.py" <<'EOF'
# cut.py NETWORK CONTAINER PORT...: disconnects CONTAINER from NETWORK, then writes through the
# RESP ports until one acknowledges; prints "ms_to_ack disconnect_ms".
import socket, subprocess, sys, threading, time
network, container, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
done = threading.Event()
acked = []

def client(port, i):
    key = b"failover-probe:%d" % i
    while not done.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.settimeout(1.0)
                s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nx\r\n" % (len(key), key))
                if s.recv(64).startswith(b"+OK"):
                    acked.append(time.monotonic())
                    done.set()
                    return
        except OSError:
            pass
        time.sleep(0.005)

t = time.monotonic()
subprocess.run(["docker", "network", "disconnect", network, container], check=True, timeout=60)
cut = time.monotonic()
threads = [threading.Thread(target=client, args=(p, i), daemon=True) for i, p in enumerate(ports * 4)]
for th in threads:
    th.start()
if not done.wait(60):
    sys.exit("no write acknowledged within 60 s of the cut")
print(f"{(min(acked) - cut) * 1000:.0f} {(cut - t) * 1000:.0f}")
EOF

cluster_up
echo "failover-partition: cluster up (project $PROJECT), election timeout ${NANODB_RAFT_ELECTION_TIMEOUT_MS:-1000} ms, $trials trials"
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1'))"; }
: >"$work/ms"
for trial in $(seq "$trials"); do
  old=$(leader) || die "no leader before trial $trial"
  c=$(ccontainer "$old")
  aliases=$(docker inspect -f "{{json (index .NetworkSettings.Networks \"$RAFT_NET\").Aliases}}" "$c")
  ports=()
  for n in 1 2 3; do [ "$n" = "$old" ] || ports+=("$(cport "$n" 6379)"); done
  read -r ms took < <(python3 "$work/cut.py" "$RAFT_NET" "$c" "${ports[@]}") || die "trial $trial: $ms"
  [ -n "${took:-}" ] || die "trial $trial: no write acknowledged after cutting node $old off"
  echo "$ms" >>"$work/ms"
  # Reconnect under the same names (node$old is what --cluster-peers uses).
  args=()
  for a in $(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1]) or []))' "$aliases"); do
    args+=(--alias "$a")
  done
  docker network connect "${args[@]}" "$RAFT_NET" "$c" || die "reconnecting node $old"
  # The old leader follows the new one with everything applied before the next trial.
  deadline=$(( $(date +%s) + 60 ))
  while :; do
    new=$(leader) || die "no leader after healing trial $trial"
    want=$(status "$new" | field commit_index)
    s=$(status "$old")
    if [ "$new" != "$old" ] && [ "$(field role <<<"$s")" = follower ] \
      && [ "$(field applied_index <<<"$s")" -ge "$want" ]; then
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "node $old did not catch up within 60 s of the heal"
    sleep 0.1
  done
  echo "  trial $trial: leader $old cut off -> node $new leads, first write acknowledged after $ms ms (disconnect took $took ms)"
done
python3 - "$work/ms" <<'EOF'
import statistics, sys
ms = sorted(int(l) for l in open(sys.argv[1]) if l.strip())
print(f"failover under a partition of the leader, {len(ms)} trials: min {ms[0]} ms, median {statistics.median(ms):.0f} ms, worst {ms[-1]} ms")
EOF
