#!/usr/bin/env bash
# The server binary as a user runs it: TCP on, others off, a taken port is a one-line error with
# exit code 1, a client written from PROTOCOL.md alone can PUT, GET and WATCH, and SIGTERM exits 0.
. "$(dirname "$0")/../lib.sh"

port=$(free_port)
start_nanodb --tcp-addr "127.0.0.1:$port"
wait_port "$port" || fail "server did not start"

# A second server on the same port must fail fast, name the flag, and exit 1.
expect_taken_port tcp-addr "$port"

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

# WATCH from the same PROTOCOL.md alone: connection A watches a key with values, connection B
# PUTs it, A receives the pushed EVENT (kind 0x90, id 0). Every read is bounded by a timeout.
python3 - "$port" <<'PY' || fail "python watch client"
import socket, struct, sys
port = int(sys.argv[1])
def frame(kind, rid, body):
    return struct.pack(">IBI", 5 + len(body), kind, rid) + body
def b(x): return struct.pack(">I", len(x)) + x
def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk: raise EOFError("server closed the connection")
        out += chunk
    return out
def read_frame(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    rest = recv_exact(s, n)
    return rest[0], struct.unpack(">I", rest[1:5])[0], rest[5:]
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(frame(0x01, 1, b"NANO" + struct.pack(">H", 1)))
    kind, rid, _ = read_frame(s); assert (kind, rid) == (0x8F, 1), (kind, rid)
    return s
a, w = connect(), connect()
a.sendall(frame(0x71, 2, b(b"ci-watched") + bytes([0, 1])))  # WATCH key, not prefix, with values
kind, rid, body = read_frame(a); assert (kind, rid, body) == (0x85, 2, struct.pack(">q", 1)), (kind, rid, body)
w.sendall(frame(0x11, 7, b(b"ci-watched") + b(b"new value") + struct.pack(">QBQ", 0, 0, 0)))
kind, rid, body = read_frame(w); assert (kind, rid, body[0]) == (0x83, 7, 1), (kind, rid, body)
(version,) = struct.unpack(">Q", body[1:9])
kind, rid, body = read_frame(a)
assert (kind, rid) == (0x90, 0), (kind, rid)
etype, = struct.unpack(">B", body[:1]); o = 1
(n,) = struct.unpack(">I", body[o:o + 4]); op = body[o + 4:o + 4 + n]; o += 4 + n
(n,) = struct.unpack(">I", body[o:o + 4]); key = body[o + 4:o + 4 + n]; o += 4 + n
(ver,) = struct.unpack(">Q", body[o:o + 8]); o += 8
has_value = body[o]; o += 1
(n,) = struct.unpack(">I", body[o:o + 4]); value = body[o + 4:o + 4 + n]; o += 4 + n
assert (etype, op, key, ver, has_value, value, o) == (1, b"set", b"ci-watched", version, 1, b"new value", len(body)), body
print("python watch client: ok")
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
