//! Atomic groups across protocols: a gRPC Txn reaches a RESP keyspace subscriber and an SSE
//! watcher whole; readers on every protocol (RESP MGET and MULTI/EXEC, gRPC KV.Txn, REST
//! `POST /v1/txn`, the TCP TXN request) never see part of an MSET or a transaction; WATCH with
//! retries under contention counts exactly; MSET/transfer groups survive `kill -9` whole.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Command, Compare, CompareOp, CompareTarget, Reply, cmd};
use nanodb_server::config::Config;
use nanodb_server::feed::NotifyFlags;
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, config, start};
use crate::watch_http::Sse;

const WAIT: Duration = Duration::from_secs(5);
const KEYS: usize = 10;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn tagged_keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("{{g}}:{i}")).collect()
}

fn grpc_put(key: &str, value: &str) -> pb::Operation {
    pb::Operation {
        op: Some(pb::operation::Op::Put(pb::PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })),
    }
}

fn grpc_get(key: &str) -> pb::Operation {
    pb::Operation { op: Some(pb::operation::Op::Get(pb::GetRequest { key: b(key) })) }
}

#[tokio::test]
async fn a_grpc_txn_is_seen_whole_by_a_resp_subscriber_and_an_sse_watcher() {
    let server = start(Config {
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        notify_keyspace_events: NotifyFlags::parse("KEA").expect("flags"),
        ..config()
    })
    .await;
    let a = server.addrs();
    let base = format!("http://{}", a.http.expect("http"));
    let mut sse = Sse::open(&format!("{base}/v1/watch?prefix=acct:&values=true")).await;
    let redis = redis::Client::open(format!("redis://{}/", a.resp.expect("resp"))).expect("url");
    let mut pubsub = redis.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("__keyspace@0__:acct:*").await.expect("psubscribe");
    let channel = Channel::from_shared(format!("http://{}", a.grpc.expect("grpc"))).expect("uri");
    let mut grpc = KvClient::new(channel.connect().await.expect("grpc connects"));

    // A transfer: only if `acct:a` does not exist yet, create both accounts at once.
    let txn = pb::TxnRequest {
        compares: vec![pb::Compare {
            key: b("acct:a"),
            op: pb::CompareOp::Equal as i32,
            target: Some(pb::compare::Target::Exists(false)),
        }],
        success: vec![grpc_put("acct:a", "60"), grpc_put("acct:b", "40")],
        failure: vec![grpc_get("acct:a")],
    };
    let r = grpc.txn(txn.clone()).await.expect("txn").into_inner();
    assert!(r.succeeded, "{r:?}");
    assert_eq!(r.results.len(), 2);
    // The same transaction again takes the failure branch and answers its read.
    let again = grpc.txn(txn).await.expect("txn").into_inner();
    assert!(!again.succeeded);
    match &again.results[0].result {
        Some(pb::operation_result::Result::Get(g)) => {
            assert!(g.found && g.value == b("60"), "{g:?}")
        }
        other => panic!("{other:?}"),
    }

    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(WAIT, sse.event()).await.expect("in time").data;
        got.insert((
            e["key"].as_str().expect("key").to_owned(),
            e["value"].as_str().expect("value").to_owned(),
        ));
    }
    let want: BTreeSet<_> = [("acct:a", "60"), ("acct:b", "40")].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(got, want, "SSE saw both writes of the transaction");

    let mut messages = pubsub.on_message();
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, messages.next()).await.expect("in time").expect("message");
        got.insert(m.get_channel_name().trim_start_matches("__keyspace@0__:").to_owned());
    }
    assert_eq!(got, ["acct:a".to_string(), "acct:b".to_string()].into(), "RESP keyspace events");
    assert!(server.shutdown().await);
}

/// Whether every value read is the same tag (never part of one group and part of another).
fn whole(values: &[Option<Bytes>]) -> bool {
    values.iter().all(|v| *v == values[0])
}

#[tokio::test]
async fn readers_on_every_protocol_never_see_part_of_a_group() {
    let server = start(Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        ..config()
    })
    .await;
    let a = server.addrs();
    let keys = tagged_keys();
    let redis = redis::Client::open(format!("redis://{}/", a.resp.expect("resp"))).expect("url");
    let channel = Channel::from_shared(format!("http://{}", a.grpc.expect("grpc"))).expect("uri");
    let grpc = KvClient::new(channel.connect().await.expect("grpc connects"));
    let stop = Arc::new(AtomicBool::new(false));

    // Writers: RESP MSET and gRPC Txn, each replacing all ten keys with one new tag.
    let mut writers = Vec::new();
    {
        let (keys, stop, redis) = (keys.clone(), stop.clone(), redis.clone());
        writers.push(tokio::spawn(async move {
            let mut c = redis.get_multiplexed_async_connection().await.expect("resp");
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut mset = redis::cmd("MSET");
                for k in &keys {
                    mset.arg(k).arg(format!("resp-{n}"));
                }
                let () = mset.query_async(&mut c).await.expect("mset");
            }
        }));
    }
    {
        let (keys, stop, mut grpc) = (keys.clone(), stop.clone(), grpc.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let success = keys.iter().map(|k| grpc_put(k, &format!("grpc-{n}"))).collect();
                grpc.txn(pb::TxnRequest { compares: vec![], success, failure: vec![] }).await.expect("txn");
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut reads = [0usize; 5];
    let mut resp = redis.get_multiplexed_async_connection().await.expect("resp");
    let mut grpc_reader = grpc.clone();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/txn", a.http.expect("http"));
    let mut tcp = TcpClient::connect(a.tcp.expect("tcp")).await;
    while Instant::now() < deadline || reads.iter().any(|n| *n < 20) {
        // RESP MGET.
        let v: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut resp).await.expect("mget");
        let v: Vec<Option<Bytes>> = v.into_iter().map(|x| x.map(Bytes::from)).collect();
        assert!(whole(&v), "RESP MGET saw a partial group: {v:?}");
        reads[0] += 1;
        // RESP MULTI/GET.../EXEC.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in &keys {
            pipe.cmd("GET").arg(k);
        }
        let v: Vec<Option<Vec<u8>>> = pipe.query_async(&mut resp).await.expect("exec");
        let v: Vec<Option<Bytes>> = v.into_iter().map(|x| x.map(Bytes::from)).collect();
        assert!(whole(&v), "RESP EXEC saw a partial group: {v:?}");
        reads[1] += 1;
        // gRPC KV.Txn of gets.
        let success = keys.iter().map(|k| grpc_get(k)).collect();
        let r = grpc_reader
            .txn(pb::TxnRequest { compares: vec![], success, failure: vec![] })
            .await
            .expect("txn");
        let v: Vec<Option<Bytes>> = r
            .into_inner()
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::operation_result::Result::Get(g)) => g.found.then_some(g.value),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(whole(&v), "gRPC Txn saw a partial group: {v:?}");
        reads[2] += 1;
        // REST POST /v1/txn of gets.
        let ops: Vec<serde_json::Value> =
            keys.iter().map(|k| serde_json::json!({"op": "get", "key": k})).collect();
        let r = http.post(&url).json(&serde_json::json!({"success": ops})).send().await.expect("post");
        assert!(r.status().is_success(), "{}", r.status());
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["succeeded"], true);
        let v: Vec<Option<Bytes>> =
            body["results"].as_array().expect("results").iter().map(|r| r["value"].as_str().map(b)).collect();
        assert_eq!(v.len(), KEYS, "{body}");
        assert!(whole(&v), "REST txn saw a partial group: {v:?}");
        reads[3] += 1;
        // TCP TXN of gets.
        let success = keys.iter().map(|k| Command::Get(cmd::Get { key: b(k) })).collect();
        let Ok(Reply::Txn(t)) =
            tcp.call(Command::Txn(cmd::Txn { compares: vec![], success, failure: vec![] })).await
        else {
            panic!("tcp txn")
        };
        let v: Vec<Option<Bytes>> = t
            .results
            .into_iter()
            .map(|r| match r {
                Ok(Reply::Value(e)) => e.map(|e| e.value),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(whole(&v), "TCP TXN saw a partial group: {v:?}");
        reads[4] += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(server.shutdown().await);
}

/// N clients each add 1 to a counter K times through WATCH/GET/MULTI/SET/EXEC, retrying when
/// EXEC answers null: the counter ends at exactly N*K.
#[tokio::test]
async fn the_watch_idiom_under_contention_counts_exactly() {
    const N: usize = 4;
    const K: usize = 25;
    let server = start(Config { resp_addr: any_port(), ..config() }).await;
    let url = format!("redis://{}/", server.addrs().resp.expect("resp"));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // One connection per client: WATCH is connection state.
            let mut c =
                redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("c");
            let mut retries = 0;
            for _ in 0..K {
                loop {
                    let () = redis::cmd("WATCH").arg("counter").query_async(&mut c).await.expect("watch");
                    let v: Option<i64> =
                        redis::cmd("GET").arg("counter").query_async(&mut c).await.expect("get");
                    let mut pipe = redis::pipe();
                    pipe.atomic().cmd("SET").arg("counter").arg(v.unwrap_or(0) + 1).ignore();
                    let r: Option<()> = pipe.query_async(&mut c).await.expect("exec");
                    if r.is_some() {
                        break;
                    }
                    retries += 1;
                }
            }
            retries
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("in time").expect("client");
    }
    let mut c = redis::Client::open(url).expect("url").get_multiplexed_async_connection().await.expect("c");
    let total: i64 = redis::cmd("GET").arg("counter").query_async(&mut c).await.expect("get");
    assert_eq!(total, (N * K) as i64);
    assert!(server.shutdown().await);
}

/// A compare that does not hold runs the failure branch; an operation failing at run time fails
/// alone; an operation over the whole keyspace is refused before anything runs.
#[tokio::test]
async fn tcp_txn_branches_and_errors() {
    let server = start(Config { tcp_addr: any_port(), ..config() }).await;
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    let put = |k: &str, v: &str| {
        Command::Put(cmd::Put {
            key: b(k),
            value: b(v),
            expiry: nanodb_protocol::Expiry::Persist,
            condition: nanodb_protocol::PutCondition::Always,
        })
    };
    tcp.call(put("s", "text")).await.expect("put");
    let txn = |version| {
        Command::Txn(cmd::Txn {
            compares: vec![Compare {
                key: b("s"),
                op: CompareOp::Equal,
                target: CompareTarget::Version(version),
            }],
            success: vec![Command::Incr(cmd::Incr { key: b("s"), delta: 1 }), put("t", "yes")],
            failure: vec![put("t", "no")],
        })
    };
    let Ok(Reply::Txn(t)) = tcp.call(txn(999_999)).await else { panic!() };
    assert!(!t.succeeded);
    let Ok(Reply::Value(Some(e))) = tcp.call(Command::Get(cmd::Get { key: b("s") })).await else { panic!() };
    let Ok(Reply::Txn(t)) = tcp.call(txn(e.version)).await else { panic!() };
    assert!(t.succeeded);
    assert!(t.results[0].is_err(), "INCR of text fails alone");
    assert!(matches!(t.results[1], Ok(Reply::Put { applied: true, .. })));
    let scan = Command::Txn(cmd::Txn {
        compares: vec![],
        success: vec![put("u", "1"), Command::KeyCount(cmd::KeyCount {})],
        failure: vec![],
    });
    assert!(tcp.call(scan).await.is_err(), "a keyspace-wide operation is refused");
    assert!(matches!(tcp.call(Command::Get(cmd::Get { key: b("u") })).await, Ok(Reply::Value(None))));
    assert!(server.shutdown().await);
}
