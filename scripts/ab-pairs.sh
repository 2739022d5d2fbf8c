#!/usr/bin/env bash
# Alternated A/B pairs of redis-benchmark runs, for differences smaller than run-to-run noise:
# each round runs A then B, and the script reports the medians, the mean of the per-round B/A
# ratios and how many rounds B won. Either side is a NanoDB binary or `redis` (redis-server).
#
#   scripts/ab-pairs.sh OLD_BIN NEW_BIN        two NanoDB builds
#   scripts/ab-pairs.sh redis target/release/nanodb-server
#
# Environment: ROUNDS (default 15), TESTS (default "SET:1 GET:1": test:pipeline pairs, run in
# that order; put SET before GET so GETs hit), N1 / N16 (requests per run without / with
# pipelining, default 200000 / 1000000), FSYNC (unset: no persistence on either side;
# everysec|always|no: NanoDB --fsync and Redis appendfsync), A_ENV / B_ENV (extra environment for
# a NanoDB side, e.g. "NANODB_RESP_IDLE_POLL_US=0"), A_FLAGS / B_FLAGS (extra server flags for a
# NanoDB side) and A_PASS / B_PASS (the password redis-benchmark and redis-cli send to that side).
# Authentication on against off, same build:
#   B_FLAGS="--requirepass pw" B_PASS=pw scripts/ab-pairs.sh target/release/nanodb-server target/release/nanodb-server
set -euo pipefail
A=${1:?usage: ab-pairs.sh A B (each a nanodb binary or redis)} B=${2:?second side}
ROUNDS=${ROUNDS:-15} TESTS=${TESTS:-"SET:1 GET:1"} N1=${N1:-200000} N16=${N16:-1000000}
work=$(mktemp -d /tmp/nanodb-ab.XXXXXX); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start() { # SIDE PORT EXTRA_ENV EXTRA_FLAGS PASSWORD
  if [ "$1" = redis ]; then
    local aof=(--appendonly no); [ -n "${FSYNC:-}" ] && aof=(--appendonly yes --appendfsync "$FSYNC" --auto-aof-rewrite-percentage 0)
    redis-server --port "$2" --save '' "${aof[@]}" --dir "$(mktemp -d -p "$work")" >"$work/$2.log" 2>&1 & pids+=($!)
  else
    local keep=(--persistence off); [ -n "${FSYNC:-}" ] && keep=(--fsync "$FSYNC")
    env ${3:-} "$1" --grpc-addr off --http-addr off --tcp-addr off --resp-addr 127.0.0.1:"$2" \
      --data-dir "$work/data-$2" "${keep[@]}" ${4:-} >"$work/$2.log" 2>&1 & pids+=($!)
  fi
  local auth=(); [ -n "${5:-}" ] && auth=(--no-auth-warning -a "$5")
  for _ in $(seq 200); do [ "$(redis-cli -p "$2" "${auth[@]}" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done
  echo "no PONG from $1 on $2" >&2; exit 1
}
pa=$(port); pb=$(port)
start "$A" "$pa" "${A_ENV:-}" "${A_FLAGS:-}" "${A_PASS:-}"; start "$B" "$pb" "${B_ENV:-}" "${B_FLAGS:-}" "${B_PASS:-}"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '%-4s %-3s %11s %11s %9s %9s %9s %9s %9s %9s %9s\n' test P A B "med B/A" "mean B/A" "B wins" "p99 A" "p99 B" "max A" "max B"
for tp in $TESTS; do
  t=${tp%:*} P=${tp#*:}
  for f in a b al bl am bm r; do : >"$work/$f"; done
  for _ in $(seq "$ROUNDS"); do
    for side in a b; do
      p=$([ $side = a ] && echo "$pa" || echo "$pb")
      pass=$([ $side = a ] && echo "${A_PASS:-}" || echo "${B_PASS:-}")
      auth=(); [ -n "$pass" ] && auth=(-a "$pass")
      # --csv columns: test, rps, avg, min, p50, p95, p99, max (ms)
      redis-benchmark -p "$p" "${auth[@]}" -t "${t,,}" -c 50 -n $((P == 1 ? N1 : N16)) -P "$P" -r 100000 -d 64 --csv 2>/dev/null \
        | tr -d '"' | awk -F, -v t="$t" -v l="$work/${side}l" -v m="$work/${side}m" \
          '$1==t {print $2; print $7 >> l; print $8 >> m}' >>"$work/$side"
    done
    paste "$work/a" "$work/b" | tail -1 | awk '{print $2 / $1}' >>"$work/r"
  done
  printf '%-4s %-3s %11.0f %11.0f %9.3f %9.3f %6s/%-2s %9s %9s %9s %9s\n' "$t" "$P" "$(median <"$work/a")" "$(median <"$work/b")" \
    "$(python3 -c "print($(median <"$work/b")/$(median <"$work/a"))")" "$(awk '{s+=$1} END {print s/NR}' "$work/r")" \
    "$(awk '$1>1' "$work/r" | wc -l)" "$ROUNDS" "$(median <"$work/al")ms" "$(median <"$work/bl")ms" \
    "$(median <"$work/am")ms" "$(median <"$work/bm")ms"
done
