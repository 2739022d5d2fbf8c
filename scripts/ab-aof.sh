#!/usr/bin/env bash
# A/B: redis-benchmark SET (-P 1 and -P 16) against two NanoDB binaries with persistence on, under
# one fsync policy, alternated in one run, medians of ROUNDS (throughput, p99 and max latency).
# Usage: scripts/ab-aof.sh OLD_BIN NEW_BIN [everysec|always|no]   (ROUNDS=5, PS="1 16")
set -euo pipefail
A=${1:?old binary} B=${2:?new binary} MODE=${3:-everysec} ROUNDS=${ROUNDS:-5} PS=${PS:-1 16}
work=$(mktemp -d /tmp/nanodb-ab.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start() { "$1" --grpc-addr off --http-addr off --tcp-addr off --resp-addr 127.0.0.1:"$2" --data-dir "$work/data-$2" \
    --fsync "$MODE" >"$work/$2.log" 2>&1 & pids+=($!)
  for _ in $(seq 200); do [ "$(redis-cli -p "$2" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done; exit 1; }
pa=$(port); pb=$(port); start "$A" "$pa"; start "$B" "$pb"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '%-13s %-3s %10s %10s %7s %9s %9s %9s %9s\n' test P old new new/old p99-old p99-new max-old max-new
for P in $PS; do
  : >"$work/a"; : >"$work/b"; : >"$work/al"; : >"$work/bl"; : >"$work/am"; : >"$work/bm"
  for _ in $(seq "$ROUNDS"); do for side in a b; do p=$([ $side = a ] && echo "$pa" || echo "$pb")
    redis-benchmark -p "$p" -t set -c 50 -n $((P==1 ? 100000 : 500000)) -P "$P" -r 100000 -d 64 --csv 2>/dev/null \
      | tr -d '"' | awk -F, -v a="$work/$side" -v l="$work/${side}l" -v m="$work/${side}m" \
        '$1=="SET"{print $2 >> a; print $7 >> l; print $8 >> m}'; done; done
  a=$(median <"$work/a"); b=$(median <"$work/b")
  printf '%-13s %-3s %10.0f %10.0f %7s %8sms %8sms %8sms %8sms\n' "SET $MODE" "$P" "$a" "$b" "$(python3 -c "print(f'{$b/$a:.2f}x')")" \
    "$(median <"$work/al")" "$(median <"$work/bl")" "$(median <"$work/am")" "$(median <"$work/bm")"
done
