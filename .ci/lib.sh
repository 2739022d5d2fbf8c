# Helpers for .ci/interop/*.sh. Source it: `. "$(dirname "$0")/../lib.sh"`.
# Every check starts its own server on free loopback ports, waits for readiness with a probe (never
# a fixed sleep), and stops it on exit.
set -euo pipefail

NANODB_BIN=${NANODB_BIN:-target/debug/nanodb-server}
VENV=${VENV:-/tmp/nanodb-ci-venv}
_cleanup_pids=()
_cleanup_dirs=()
_cleanup() {
  for p in "${_cleanup_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${_cleanup_dirs[@]}"; do rm -rf "$d"; done
}
trap _cleanup EXIT

# need_apt PKG...: installs missing Debian packages (apt-get update once per CI run).
need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -e /tmp/nanodb-ci-apt-updated ]; then apt-get update -qq >/dev/null && touch /tmp/nanodb-ci-apt-updated; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# need_pip PKG...: installs Python packages into the CI virtualenv ($VENV), creating it first.
need_pip() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$@"
}

# free_port: prints a free loopback port.
free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS]: returns once something accepts on 127.0.0.1:PORT, fails after SECONDS.
wait_port() {
  local deadline=$(( $(date +%s) + ${2:-20} ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "nothing listens on 127.0.0.1:$1" >&2; return 1; }
    sleep 0.05
  done
}

# start_nanodb FLAGS...: starts the server with every listener off except those in FLAGS (e.g.
# --resp-addr 127.0.0.1:$port) and a fresh data dir; sets NANODB_PID and NANODB_LOG.
start_nanodb() {
  local dir; dir=$(mktemp -d /tmp/nanodb-ci.XXXXXX); _cleanup_dirs+=("$dir")
  NANODB_LOG="$dir/server.log"
  "$NANODB_BIN" --grpc-addr off --http-addr off --tcp-addr off --resp-addr off \
    --data-dir "$dir/data" "$@" >"$NANODB_LOG" 2>&1 &
  NANODB_PID=$!
  _cleanup_pids+=("$NANODB_PID")
}

# expect_taken_port FLAG PORT: a second server asked to listen on a port already taken must fail
# fast with one error line naming FLAG, and exit 1.
expect_taken_port() {
  local flag=$1 port=$2 dir out code
  dir=$(mktemp -d /tmp/nanodb-ci.XXXXXX); _cleanup_dirs+=("$dir")
  local flags=(--grpc-addr off --http-addr off --tcp-addr off --resp-addr off)
  set +e
  out=$(timeout 10 "$NANODB_BIN" "${flags[@]}" "--$flag" "127.0.0.1:$port" --data-dir "$dir/data" 2>&1 >/dev/null)
  code=$?
  set -e
  [ "$code" -eq 1 ] || fail "taken port: expected exit 1, got $code"
  echo "$out" | grep -q -- "--$flag" || fail "taken port: error does not name the flag: $out"
  [ "$(echo "$out" | grep -c 'nanodb-server:')" -eq 1 ] || fail "taken port: expected one error line: $out"
}

# fail MESSAGE: prints the server log and fails the check.
fail() {
  echo "FAIL: $*" >&2
  [ -n "${NANODB_LOG:-}" ] && { echo "--- server log" >&2; tail -50 "$NANODB_LOG" >&2; }
  exit 1
}
