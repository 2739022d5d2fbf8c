#!/usr/bin/env bash
# Measures NanoDB with nano-bench, with Redis 7 in the same run as the reference row, and rewrites
# the README's "## Benchmarks" section (between the bench markers) and docs/bench/latency.svg.
# Re-runnable by anyone from the repository root:
#
#   scripts/bench-readme.sh
#
# Environment: DURATION (default 5s), WARMUP (1s), CONCURRENCY (50), PIPELINE (1), KEYSPACE
# (100000), VALUE_SIZE (64), NANODB_ARGS (extra server flags), SKIP_BUILD=1 to use existing
# release binaries. Frontends that do not listen are listed as not measured, never invented.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} CONCURRENCY=${CONCURRENCY:-50} PIPELINE=${PIPELINE:-1}
KEYSPACE=${KEYSPACE:-100000} VALUE_SIZE=${VALUE_SIZE:-64}
SERVER=target/release/nanodb-server BENCH=target/release/nano-bench
work=$(mktemp -d /tmp/nanodb-bench-readme.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

need() { local m=(); for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || m+=("$p"); done
  [ ${#m[@]} -eq 0 ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${m[@]}"; } >/dev/null; }
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { for _ in $(seq 1 "${2:-100}"); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

need redis-server redis-tools
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p nanodb-server -p nano-bench

# NanoDB with every frontend on a free port; Redis 7 beside it, nothing kept on disk by either
gp=$(port) hp=$(port) tp=$(port) np=$(port) rp=$(port)
keep=(); "$SERVER" --help 2>/dev/null | grep -q -- '--persistence' && keep=(--persistence off)
"$SERVER" --grpc-addr "127.0.0.1:$gp" --http-addr "127.0.0.1:$hp" --tcp-addr "127.0.0.1:$tp" \
  --resp-addr "127.0.0.1:$np" --data-dir "$work/data" "${keep[@]}" ${NANODB_ARGS:-} >"$work/nanodb.log" 2>&1 &
pids+=($!)
redis-server --port "$rp" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
listening "$tp" || { echo "nanodb-server did not start:" >&2; cat "$work/nanodb.log" >&2; exit 1; }
listening "$rp" || { echo "redis-server did not start" >&2; exit 1; }

# name protocol port: every measured target
targets=("NanoDB tcp|tcp|$tp" "NanoDB grpc|grpc|$gp" "NanoDB http|http|$hp" "NanoDB resp|resp|$np" "Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/')|resp|$rp")
common=(--no-progress --concurrency "$CONCURRENCY" --pipeline "$PIPELINE" --duration "$DURATION" --warmup "$WARMUP"
  --keyspace "$KEYSPACE" --value-size "$VALUE_SIZE")
commands=() skipped=() runs=()
i=0
for t in "${targets[@]}"; do
  IFS='|' read -r name proto p <<<"$t"
  if ! listening "$p" 20; then skipped+=("$name"); continue; fi
  for wl in get set; do
    i=$((i + 1)); out="$work/run-$i-$proto-$wl.json"
    extra=(); [ "$wl" = get ] && extra=(--populate)
    cmd=("$BENCH" --target "127.0.0.1:PORT" --protocol "$proto" --workload "$wl" "${common[@]}" "${extra[@]}")
    commands+=("${cmd[*]/#target\/release\//}")
    echo "measuring $name $wl" >&2
    "$BENCH" --target "127.0.0.1:$p" --protocol "$proto" --workload "$wl" "${common[@]}" "${extra[@]}" \
      --label "$name $wl" --json "$out" >"$work/run-$i.txt" 2>&1 || { cat "$work/run-$i.txt" >&2; }
    [ -s "$out" ] && runs+=("$out")
  done
done

mkdir -p docs/bench
gets=(); for r in "${runs[@]}"; do case $r in *-get.json) gets+=(--json "$r") ;; esac; done
"$BENCH" plot "${gets[@]}" --out docs/bench/latency.svg \
  --title "GET latency by percentile, $CONCURRENCY connections, pipeline $PIPELINE" >/dev/null

section="$work/section.md"
python3 - "$section" "$CONCURRENCY" "$PIPELINE" "$DURATION" "$WARMUP" "$KEYSPACE" "$VALUE_SIZE" "${#skipped[@]}" "${skipped[@]}" -- "${runs[@]}" -- "${commands[@]}" <<'PY'
import json, os, platform, subprocess, sys, datetime
out, conc, pipe, dur, warm, keys, vsize, nskip, *rest = sys.argv[1:]
nskip = int(nskip); skipped = rest[:nskip]; rest = rest[nskip + 1:]
sep = rest.index("--"); runs = rest[:sep]; commands = rest[sep + 1:]
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
mem = sh("awk '/MemTotal/{printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
def ms(us): return f"{us/1000:.3f}"
rows = []
for r in runs:
    j = json.load(open(r)); l = j["latency_us"]
    name = j["label"].rsplit(" ", 1)[0]
    rows.append(f"| {name} | {j['workload'].upper()} | {j['ops_per_sec']:,.0f} | {ms(l['p50'])} | {ms(l['p99'])} | {ms(l['p999'])} | {j['errors']} |")
lines = [
    "## Benchmarks",
    "",
    f"Produced by `scripts/bench-readme.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
    "rerun it to refresh this section (it rewrites everything between the bench markers). "
    "Client and servers share the machine, so absolute figures say little; compare rows of one run.",
    "",
    f"Machine: {sh('nproc')} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}; "
    f"Redis {sh('redis-server --version').split('v=')[-1].split()[0]} (Debian package) as the reference.",
    "",
    f"Load: nano-bench, {conc} connections (one virtual user each), pipeline {pipe}, {dur} measured after a "
    f"{warm} warm-up, {keys} keys (uniform), {vsize}-byte values; GET runs write the keyspace first (`--populate`). "
    "Latency in ms, from nano-bench's merged HDR histograms.",
    "",
    "| target | op | ops/s | p50 | p99 | p99.9 | errors |",
    "|---|---|---:|---:|---:|---:|---:|",
    *rows,
    "",
]
if skipped:
    lines += [f"Not measured (frontend not listening in this build): {', '.join(skipped)}.", ""]
lines += [
    "![GET latency by percentile](docs/bench/latency.svg)",
    "",
    "Commands (`PORT` is the target's port):",
    "",
    "```sh",
    *commands,
    "```",
]
open(out, "w").write("\n".join(lines) + "\n")
PY

python3 - README.md "$section" <<'PY'
import sys
readme, section = sys.argv[1], open(sys.argv[2]).read()
start, end = "<!-- bench:start (generated by scripts/bench-readme.sh) -->", "<!-- bench:end -->"
text = open(readme).read()
block = f"{start}\n{section}{end}"
if start in text and end in text:
    a = text.index(start); b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(readme, "w").write(text)
PY
echo "README.md: Benchmarks section rewritten; docs/bench/latency.svg drawn" >&2
