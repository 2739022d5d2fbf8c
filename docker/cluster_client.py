"""Client side of docker/cluster-test.sh, on the host, through the ports the nodes publish on
loopback. Standard library only, except gRPC (grpcio and stubs generated from proto/ by
grpcio-tools, on PYTHONPATH).

  grpc-put PORT KEY VALUE         KV.Put through gRPC; fails unless applied
  grpc-get PORT KEY               KV.Get through gRPC; prints the value (exit 1 when missing)
  writer DIR PORT[,PORT...]       SETs w:N = v:N over RESP, N = 1, 2, ..., round robin over the
                                  ports, 2 s timeout each; appends N to DIR/sent before sending and
                                  to DIR/acked once +OK came back; stops when DIR/stop exists
                                  (or after 300 s)
  count DIR                       how many writes were acknowledged so far
  check DIR HTTP_PORT...          every acknowledged w:N is on every node with its value, and no
                                  w:N is there that was never sent (REST scan, every page)
"""

import json
import os
import socket
import sys
import time
import urllib.parse
import urllib.request


def grpc_stub(port):
    import grpc
    from nanodb.v1 import kv_pb2, kv_pb2_grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    return kv_pb2, kv_pb2_grpc.KVStub(ch)


def resp_set(port, key, value, timeout):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply.startswith(b"+OK")


def writer(out, ports):
    deadline = time.monotonic() + 300
    n = 0
    with open(os.path.join(out, "sent"), "a") as sent, open(os.path.join(out, "acked"), "a") as acked:
        while not os.path.exists(os.path.join(out, "stop")) and time.monotonic() < deadline:
            n += 1
            sent.write(f"{n}\n")
            sent.flush()
            port = ports[n % len(ports)]
            try:
                ok = resp_set(port, b"w:%d" % n, b"v:%d" % n, 2.0)
            except OSError:
                ok = False
            if ok:
                acked.write(f"{n}\n")
                acked.flush()
            else:
                time.sleep(0.05)


def numbers(path):
    try:
        with open(path) as f:
            return {int(line) for line in f if line.strip()}
    except FileNotFoundError:
        return set()


def scan(port, prefix):
    items, cursor = {}, None
    for _ in range(10_000):
        url = f"http://127.0.0.1:{port}/v1/kv?prefix={prefix}&limit=500"
        if cursor:
            url += "&cursor=" + urllib.parse.quote(cursor)
        with urllib.request.urlopen(url, timeout=20) as r:
            page = json.load(r)
        for it in page["items"]:
            items[it["key"]] = it["value"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items
    raise SystemExit("scan: too many pages")


def check(out, ports):
    sent, acked = numbers(os.path.join(out, "sent")), numbers(os.path.join(out, "acked"))
    bad = []
    for port in ports:
        got = scan(port, "w:")
        lost = [n for n in sorted(acked) if got.get(f"w:{n}") != f"v:{n}"]
        if lost:
            bad.append(f"port {port}: {len(lost)} acknowledged writes missing, e.g. w:{lost[0]}")
        stray = [k for k, v in got.items() if not (k[2:].isdigit() and int(k[2:]) in sent and v == f"v:{k[2:]}")]
        if stray:
            bad.append(f"port {port}: {len(stray)} keys never sent, e.g. {stray[0]}")
    if bad:
        raise SystemExit("; ".join(bad))
    print(f"{len(acked)} acknowledged writes (of {len(sent)} sent) on all {len(ports)} nodes, nothing unsent")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "grpc-put":
        kv, stub = grpc_stub(int(args[0]))
        r = stub.Put(kv.PutRequest(key=args[1].encode(), value=args[2].encode()), timeout=10)
        if not r.applied:
            raise SystemExit(f"Put not applied: {r}")
    elif cmd == "grpc-get":
        kv, stub = grpc_stub(int(args[0]))
        r = stub.Get(kv.GetRequest(key=args[1].encode()), timeout=10)
        if not r.found:
            raise SystemExit(1)
        sys.stdout.write(r.value.decode())
    elif cmd == "writer":
        writer(args[0], [int(p) for p in args[1].split(",")])
    elif cmd == "count":
        print(len(numbers(os.path.join(args[0], "acked"))))
    elif cmd == "check":
        check(args[0], [int(p) for p in args[1:]])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
