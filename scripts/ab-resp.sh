#!/usr/bin/env bash
# A/B: redis-benchmark SET and GET (-P 1 and -P 16) against two NanoDB binaries without
# persistence, alternated in one run, medians of ROUNDS (default 5) runs of 100k / 500k requests.
# A preset of scripts/ab-pairs.sh, which reports the same rows (plus per-pair ratios and wins).
# Usage: scripts/ab-resp.sh OLD_BIN NEW_BIN
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: scripts/ab-resp.sh OLD_BIN NEW_BIN" >&2; exit 2; }
unset FSYNC
ROUNDS=${ROUNDS:-5} TESTS="SET:1 SET:16 GET:1 GET:16" N1=100000 N16=500000 \
  exec "$(dirname "$0")/ab-pairs.sh" "$1" "$2"
