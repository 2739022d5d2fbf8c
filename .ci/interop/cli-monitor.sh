#!/usr/bin/env bash
# nanodb-cli monitor end to end in a real terminal (tmux): it shows the server's traffic, switches
# panes on Tab, degrades to a summary at 20x5, says DISCONNECTED when the server stops and
# recovers when it is back on the same ports, and quits on q with exit 0.
. "$(dirname "$0")/../lib.sh"
need_apt tmux
CLI=${NANODB_CLI_BIN:-target/debug/nanodb-cli}
[ -x "$CLI" ] || fail "no $CLI (cargo build -p nanodb-cli)"

tcp=$(free_port)
grpc=$(free_port)
start_nanodb --tcp-addr "127.0.0.1:$tcp" --grpc-addr "127.0.0.1:$grpc"
wait_port "$tcp" && wait_port "$grpc" || fail "server did not start"

sock=nanodb-monitor-$$
tmux_() { tmux -L "$sock" "$@"; }
_cleanup_tmux() { tmux -L "$sock" kill-server 2>/dev/null || true; }
trap '_cleanup_tmux; _cleanup' EXIT
screen() { tmux_ capture-pane -p -t mon; }
# wait_screen PATTERN [SECONDS]: until the pane shows PATTERN (grep -E).
wait_screen() {
  local deadline=$(( $(date +%s) + ${2:-20} ))
  until screen | grep -Eq -- "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || { screen >&2; fail "the monitor never showed /$1/"; }
    sleep 0.1
  done
}

tmux_ new-session -d -s mon -x 120 -y 40 \
  "$CLI -p $tcp --grpc-port $grpc monitor --interval 0.5; echo monitor-exit=\$?; sleep 60"
wait_screen "nanodb monitor  127.0.0.1:$grpc"
# Traffic shows as a rate on the tcp sparkline and as latency percentiles.
seq 1 20000 | sed 's/.*/put key:& value-&/' | "$CLI" -p "$tcp" --pipe >/dev/null
wait_screen 'tcp +[0-9]+ ops/s'
wait_screen 'tcp +[0-9.]+(µs|ms)'
tmux_ send-keys -t mon Tab
wait_screen 'keys +20000'
wait_screen 'fsync +everysec'
tmux_ send-keys -t mon Tab
wait_screen 'single node: not in a cluster'
tmux_ send-keys -t mon p
wait_screen 'PAUSED'
tmux_ send-keys -t mon p
# A tiny terminal: a summary, not a crash.
tmux_ resize-window -t mon -x 20 -y 5
wait_screen 'too small'
tmux_ resize-window -t mon -x 120 -y 40
wait_screen 'nanodb monitor'
# The server goes away, then comes back on the same ports.
kill "$NANODB_PID"
wait "$NANODB_PID" 2>/dev/null || true
wait_screen 'DISCONNECTED'
start_nanodb --tcp-addr "127.0.0.1:$tcp" --grpc-addr "127.0.0.1:$grpc"
wait_port "$grpc" || fail "server did not restart"
deadline=$(( $(date +%s) + 20 ))
while screen | grep -q DISCONNECTED; do
  [ "$(date +%s)" -lt "$deadline" ] || { screen >&2; fail "the monitor did not reconnect"; }
  sleep 0.1
done
tmux_ send-keys -t mon q
wait_screen 'monitor-exit=0'
screen | grep -q panicked && fail "the monitor panicked"
echo "cli monitor under tmux: ok"
