//! One keyspace behind every protocol: a key written over any of TCP, gRPC, REST and RESP reads
//! back byte for byte, with the same version, over every other one.

use bytes::Bytes;
use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Command, PutCondition, Reply};
use nanodb_server::config::Config;
use redis::AsyncCommands;

use crate::harness::{TcpClient, any_port, config, start};

/// Percent-encodes every byte that is not unreserved, so any key fits one path segment.
fn path_segment(key: &[u8]) -> String {
    key.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn every_protocol_reads_what_every_other_wrote() {
    let server = start(Config {
        tcp_addr: any_port(),
        grpc_addr: any_port(),
        http_addr: any_port(),
        resp_addr: any_port(),
        ..config()
    })
    .await;
    let addrs = server.addrs();
    let mut tcp = TcpClient::connect(addrs.tcp.expect("tcp")).await;
    let mut grpc = KvClient::connect(format!("http://{}", addrs.grpc.expect("grpc"))).await.expect("grpc");
    let http = reqwest::Client::new();
    let http_base = format!("http://{}/v1/kv/", addrs.http.expect("http"));
    let redis = redis::Client::open(format!("redis://{}/", addrs.resp.expect("resp"))).expect("redis");
    let mut resp = redis.get_multiplexed_async_connection().await.expect("resp");

    for writer in ["tcp", "grpc", "http", "resp"] {
        let key = Bytes::from(format!("cross/{writer} key \u{e9}").into_bytes());
        let value = Bytes::from([b"\x00\xff\r\n".as_slice(), writer.as_bytes()].concat());
        match writer {
            "tcp" => {
                let put = Command::Put(cmd::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expiry: Expiry::Persist,
                    condition: PutCondition::Always,
                });
                tcp.call(put).await.expect("tcp put");
            }
            "grpc" => {
                let put = pb::PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                grpc.put(put).await.expect("grpc put");
            }
            "http" => {
                let r =
                    http.put(format!("{http_base}{}", path_segment(&key))).body(value.to_vec()).send().await;
                assert!(r.expect("http put").status().is_success());
            }
            _ => {
                let () = resp.set(key.to_vec(), value.to_vec()).await.expect("resp set");
            }
        }

        let Ok(Reply::Value(Some(entry))) = tcp.call(Command::Get(cmd::Get { key: key.clone() })).await
        else {
            panic!("{writer} -> tcp: missing")
        };
        assert_eq!(entry.value, value, "{writer} -> tcp");
        let g = grpc.get(pb::GetRequest { key: key.clone() }).await.expect("grpc get").into_inner();
        assert!(g.found, "{writer} -> grpc");
        assert_eq!((g.value, g.version), (value.clone(), entry.version), "{writer} -> grpc");
        let r = http.get(format!("{http_base}{}", path_segment(&key))).send().await.expect("http get");
        let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(etag, Some(format!("\"{}\"", entry.version)), "{writer} -> http version");
        assert_eq!(r.bytes().await.expect("body"), value, "{writer} -> http");
        let v: Vec<u8> = resp.get(key.to_vec()).await.expect("resp get");
        assert_eq!(v, value.to_vec(), "{writer} -> resp");
    }

    // Types cross too: a RESP counter, hash and list seen through the other protocols.
    let n: i64 = resp.incr("cross:n", 41).await.expect("incr");
    assert_eq!(n, 41);
    let g = grpc.incr(pb::IncrRequest { key: Bytes::from("cross:n"), delta: 1 }).await.expect("incr");
    assert_eq!(g.into_inner().value, 42);
    let () = resp.hset("cross:h", "f", "v").await.expect("hset");
    let h = grpc
        .hash_get(pb::HashGetRequest { key: Bytes::from("cross:h"), field: Bytes::from("f") })
        .await
        .expect("hget")
        .into_inner();
    assert_eq!(h.value, Bytes::from("v"));
    let err = grpc.get(pb::GetRequest { key: Bytes::from("cross:h") }).await.expect_err("wrong type");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let r = http.get(format!("{http_base}cross%3Ah")).send().await.expect("http get");
    assert_eq!(r.status(), 409, "WRONGTYPE is 409 over REST too");
    server.shutdown().await;
}
