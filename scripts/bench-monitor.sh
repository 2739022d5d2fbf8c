#!/usr/bin/env bash
# The monitor's cost on the server: the same nano-bench load over the binary TCP protocol with
# `nanodb-cli monitor` attached (in a detached tmux terminal, polling Admin.Stats every second) and
# without, alternated rounds on one server. Prints each run's ops/s, the medians and the ratio
# attached / detached (1.0: no cost).
#
#   scripts/bench-monitor.sh
#
# Environment: ROUNDS (default 7), NANODB, CLI, NB (release binaries by default), ARGS (the load,
# default SETs (puts) of 64-byte values, 50 users, 4 s after a 1 s warm-up).
set -euo pipefail
ROUNDS=${ROUNDS:-7}
NANODB=${NANODB:-target/release/nanodb-server} CLI=${CLI:-target/release/nanodb-cli} NB=${NB:-target/release/nano-bench}
ARGS=${ARGS:-"--workload set --concurrency 50 --duration 4s --warmup 1s --value-size 64"}
work=$(mktemp -d /tmp/nanodb-bench-monitor.XXXXXX); pid=; sock=nanodb-bench-monitor-$$
trap 'tmux -L "$sock" kill-server 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
tcp=$(port) grpc=$(port)
"$NANODB" --http-addr off --resp-addr off --tcp-addr 127.0.0.1:"$tcp" --grpc-addr 127.0.0.1:"$grpc" \
  --persistence off >"$work/server.log" 2>&1 & pid=$!
for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$grpc") 2>/dev/null && break; sleep 0.05; done
: >"$work/on"; : >"$work/off"
for round in $(seq "$ROUNDS"); do
  for side in off on; do
    if [ "$side" = on ]; then
      tmux -L "$sock" new-session -d -s mon -x 120 -y 40 "$CLI -p $tcp --grpc-port $grpc monitor"
      for _ in $(seq 100); do tmux -L "$sock" capture-pane -p -t mon | grep -q ' ops/s' && break; sleep 0.05; done
    fi
    # shellcheck disable=SC2086
    "$NB" --protocol tcp --target 127.0.0.1:"$tcp" $ARGS --json "$work/run.json" >/dev/null
    ops=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$work/run.json")
    echo "$ops" >>"$work/$side"
    [ "$side" = on ] && tmux -L "$sock" kill-server
    echo "round $round: monitor $side: $ops ops/s"
  done
done
on=$(median <"$work/on"); off=$(median <"$work/off")
printf 'median ops/s: without monitor %s, with monitor %s; ratio with/without %.3f\n' "$off" "$on" "$(echo "$on / $off" | bc -l)"
