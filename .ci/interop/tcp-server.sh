#!/usr/bin/env bash
# The server binary as a user runs it: TCP on, others off, a taken port is a one-line error with
# exit code 1, and SIGTERM exits 0.
. "$(dirname "$0")/../lib.sh"

port=$(free_port)
start_nanodb --tcp-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"

# A second server on the same port must fail fast, name the flag, and exit 1.
set +e
out=$("$NANODB_BIN" --grpc-addr off --http-addr off --resp-addr off --tcp-addr "127.0.0.1:$port" \
  --data-dir "$(mktemp -d)" 2>&1 >/dev/null)
code=$?
set -e
[ "$code" -eq 1 ] || fail "taken port: expected exit 1, got $code"
echo "$out" | grep -q -- '--tcp-addr' || fail "taken port: error does not name the flag: $out"
[ "$(echo "$out" | grep -c 'nanodb-server:')" -eq 1 ] || fail "taken port: expected one error line: $out"

# A HELLO, a PUT and a GET from a client written from PROTOCOL.md alone (python, no NanoDB code).
python3 - "$port" <<'PY' || fail "python client"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def frame(kind, rid, body):
    return struct.pack(">IBI", 5 + len(body), kind, rid) + body
def read_frame():
    hdr = b""
    while len(hdr) < 4: hdr += s.recv(4 - len(hdr))
    (n,) = struct.unpack(">I", hdr)
    rest = b""
    while len(rest) < n: rest += s.recv(n - len(rest))
    return rest[0], struct.unpack(">I", rest[1:5])[0], rest[5:]
def b(x): return struct.pack(">I", len(x)) + x
s.sendall(frame(0x01, 1, b"NANO" + struct.pack(">H", 1)))
kind, rid, body = read_frame(); assert (kind, rid) == (0x8F, 1), (kind, rid)
s.sendall(frame(0x11, 2, b(b"ci-key") + b(b"\x00\xffvalue") + struct.pack(">QBQ", 0, 0, 0))
        + frame(0x10, 3, b(b"ci-key")))
kind, rid, body = read_frame(); assert (kind, rid, body[0]) == (0x83, 2, 1), (kind, rid, body)
kind, rid, body = read_frame(); assert (kind, rid) == (0x82, 3), (kind, rid)
assert body[0] == 1 and body[5:12] == b"\x00\xffvalue", body
print("python client: ok")
PY

kill -TERM "$NANODB_PID"
deadline=$(( $(date +%s) + 10 ))
while kill -0 "$NANODB_PID" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no exit within 10 s of SIGTERM"
  sleep 0.05
done
wait "$NANODB_PID" && code=0 || code=$?
[ "$code" -eq 0 ] || fail "SIGTERM: expected exit 0, got $code"
echo "tcp-server: ok"
