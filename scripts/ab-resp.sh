#!/usr/bin/env bash
# A/B: redis-benchmark SET and GET (-P 1 and -P 16) against two NanoDB binaries, alternated in one
# run, medians of ROUNDS. Usage: scripts/ab-resp.sh OLD_BIN NEW_BIN
set -euo pipefail
A=${1:?old binary} B=${2:?new binary} ROUNDS=${ROUNDS:-5}
work=$(mktemp -d /tmp/nanodb-ab.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start() { "$1" --grpc-addr off --http-addr off --tcp-addr off --resp-addr 127.0.0.1:"$2" --persistence off >"$work/$2.log" 2>&1 & pids+=($!)
  for _ in $(seq 200); do [ "$(redis-cli -p "$2" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done; exit 1; }
pa=$(port); pb=$(port); start "$A" "$pa"; start "$B" "$pb"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '%-4s %-3s %12s %12s %7s\n' test P old new new/old
for t in SET GET; do for P in 1 16; do
  : >"$work/a"; : >"$work/b"
  for _ in $(seq "$ROUNDS"); do for side in a b; do p=$([ $side = a ] && echo "$pa" || echo "$pb")
    redis-benchmark -p "$p" -t "${t,,}" -c 50 -n $((P==1 ? 100000 : 500000)) -P "$P" -r 100000 -d 64 --csv 2>/dev/null \
      | tr -d '"' | awk -F, -v t="$t" '$1==t{print $2}' >>"$work/$side"; done; done
  a=$(median <"$work/a"); b=$(median <"$work/b")
  printf '%-4s %-3s %12.0f %12.0f %7s\n' "$t" "$P" "$a" "$b" "$(python3 -c "print(f'{$b/$a:.2f}x')")"
done; done
