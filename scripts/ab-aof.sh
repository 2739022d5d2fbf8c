#!/usr/bin/env bash
# A/B: redis-benchmark SET (-P 1 and -P 16) against two NanoDB binaries with persistence on under
# one fsync policy, alternated in one run, medians of ROUNDS (default 5) runs of 100k / 500k
# requests, with p99 and max latency (an fsync stall shows in max, not p99). A preset of
# scripts/ab-pairs.sh. Usage: scripts/ab-aof.sh OLD_BIN NEW_BIN [everysec|always|no]  (PS="1 16")
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: scripts/ab-aof.sh OLD_BIN NEW_BIN [everysec|always|no]" >&2; exit 2; }
tests=""; for P in ${PS:-1 16}; do tests+="SET:$P "; done
FSYNC=${3:-everysec} ROUNDS=${ROUNDS:-5} TESTS=$tests N1=100000 N16=500000 \
  exec "$(dirname "$0")/ab-pairs.sh" "$1" "$2"
