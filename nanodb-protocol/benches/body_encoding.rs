//! Body encoding, measured: the hand-packed layout of `wire` against protobuf bodies (prost, the
//! same messages as the gRPC API) for the two hottest requests, PUT and GET, and the GET reply.
//!
//! Both sides do the same work a server and client do per request: write the frame header, encode
//! the body, then decode the body back into the protocol-neutral `Command`/`Reply` (for protobuf,
//! `decode` plus the conversion a frontend would do).
//!
//! Run: `cargo bench -p nanodb-protocol --bench body_encoding`. Prints ns per encode+decode round
//! trip for each; PROTOCOL.md quotes the result. A plain timing loop (not criterion) keeps the build
//! light; it runs each case several times and reports the best, which is stable enough for a 2x call.
use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use nanodb_protocol::FrameCodec;
use nanodb_protocol::command::{Command, Entry, PutCondition, Reply};
use nanodb_protocol::pb;
use nanodb_protocol::wire::{self, Request, Response};
use prost::Message;

const ITERS: u32 = 1_000_000;

fn best_ns(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ITERS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(ITERS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let key = Bytes::from_static(b"user:0000001234");
    let value = Bytes::from(vec![b'v'; 64]);
    let mut buf = BytesMut::with_capacity(256);

    let put = Request::Command(Command::Put(cmd::Put {
        key: key.clone(),
        value: value.clone(),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    }));
    let packed_put = best_ns(|| {
        buf.clear();
        wire::encode_request(1, black_box(&put), &mut buf).expect("encodes");
        let body = buf.split().freeze().slice(9..);
        black_box(wire::decode_request(wire::kind::PUT, body).ok());
    });
    let pb_put_msg = pb::PutRequest {
        key: key.clone(),
        value: value.clone(),
        ttl_ms: 0,
        condition: 0,
        expected_version: 0,
        expiry: None,
    };
    let proto_put = best_ns(|| {
        buf.clear();
        let start = FrameCodec::begin(&mut buf, wire::kind::PUT, 1);
        black_box(&pb_put_msg).encode(&mut buf).ok();
        FrameCodec::finish(&mut buf, start);
        let body = buf.split().freeze().slice(9..);
        let cmd = pb::PutRequest::decode(body).ok().map(|m| {
            Command::Put(cmd::Put {
                key: m.key,
                value: m.value,
                expiry: Expiry::from_put_ttl_ms(m.ttl_ms),
                condition: PutCondition::Always,
            })
        });
        black_box(cmd);
    });

    let get = Request::Command(Command::Get(cmd::Get { key: key.clone() }));
    let packed_get = best_ns(|| {
        buf.clear();
        wire::encode_request(1, black_box(&get), &mut buf).expect("encodes");
        let body = buf.split().freeze().slice(9..);
        black_box(wire::decode_request(wire::kind::GET, body).ok());
    });
    let pb_get_msg = pb::GetRequest { key: key.clone() };
    let proto_get = best_ns(|| {
        buf.clear();
        let start = FrameCodec::begin(&mut buf, wire::kind::GET, 1);
        black_box(&pb_get_msg).encode(&mut buf).ok();
        FrameCodec::finish(&mut buf, start);
        let body = buf.split().freeze().slice(9..);
        black_box(pb::GetRequest::decode(body).ok().map(|m| Command::Get(cmd::Get { key: m.key })));
    });

    let reply = Response::Reply(Reply::Value(Some(Entry { value: value.clone(), version: 42, ttl_ms: -1 })));
    let packed_reply = best_ns(|| {
        buf.clear();
        wire::encode_response(1, black_box(&reply), &mut buf);
        let body = buf.split().freeze().slice(9..);
        black_box(wire::decode_response(wire::kind::R_VALUE, body).ok());
    });
    let pb_reply_msg = pb::GetResponse { found: true, value: value.clone(), version: 42, ttl_ms: -1 };
    let proto_reply = best_ns(|| {
        buf.clear();
        let start = FrameCodec::begin(&mut buf, wire::kind::R_VALUE, 1);
        black_box(&pb_reply_msg).encode(&mut buf).ok();
        FrameCodec::finish(&mut buf, start);
        let body = buf.split().freeze().slice(9..);
        let reply = pb::GetResponse::decode(body).ok().map(|m| {
            Reply::Value(m.found.then_some(Entry { value: m.value, version: m.version, ttl_ms: m.ttl_ms }))
        });
        black_box(reply);
    });

    println!("{:<22} {:>12} {:>12} {:>8}", "case (15 B key, 64 B)", "packed ns", "protobuf ns", "ratio");
    for (name, p, q) in [
        ("PUT request", packed_put, proto_put),
        ("GET request", packed_get, proto_get),
        ("GET reply (found)", packed_reply, proto_reply),
    ] {
        println!("{name:<22} {p:>12.1} {q:>12.1} {:>7.2}x", q / p);
    }
}
