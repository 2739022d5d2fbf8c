//! Atomic groups across protocols: a gRPC Txn reaches a RESP keyspace subscriber and an SSE
//! watcher whole; readers on every protocol (RESP MGET and MULTI/EXEC, gRPC KV.Txn, REST
//! `POST /v1/txn`, the TCP TXN request) never see part of an MSET or a transaction; WATCH with
//! retries under contention counts exactly; MULTI/EXEC/WATCH answer as Redis 7 does (error
//! texts, WATCH of missing and expiring keys, PUBLISH at EXEC). That groups survive `kill -9`
//! whole is the crash harness's check (`tools/crash-harness`, its group workload).

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

use crate::harness::{TcpClient, any_port, b, config, put, start};
use crate::watch_http::Sse;

const WAIT: Duration = Duration::from_secs(5);
const KEYS: usize = 10;

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

/// Runs `words` on `c`; the raw reply, or the error line as the server sent it.
async fn redis_reply(
    c: &mut redis::aio::MultiplexedConnection,
    words: &[&str],
) -> Result<redis::Value, String> {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query_async::<redis::Value>(c).await.map_err(|err| match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => err.to_string(),
    })
}

/// Runs `words`, which must succeed.
async fn ok(c: &mut redis::aio::MultiplexedConnection, words: &[&str]) -> redis::Value {
    redis_reply(c, words).await.unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// MULTI, `SET x 1`, EXEC on `c`: whether EXEC ran (false: it answered a null array).
async fn exec_ran(c: &mut redis::aio::MultiplexedConnection) -> bool {
    ok(c, &["MULTI"]).await;
    ok(c, &["SET", "x", "1"]).await;
    match ok(c, &["EXEC"]).await {
        redis::Value::Nil => false,
        redis::Value::Array(items) => {
            assert_eq!(items, [redis::Value::Okay]);
            true
        }
        other => panic!("EXEC answered {other:?}"),
    }
}

async fn two_redis_connections(
    server: &nanodb_server::server::Server,
) -> (redis::aio::MultiplexedConnection, redis::aio::MultiplexedConnection) {
    let client =
        redis::Client::open(format!("redis://{}/", server.addrs().resp.expect("resp"))).expect("url");
    // Separate connections: WATCH and MULTI are connection state.
    (
        client.get_multiplexed_async_connection().await.expect("a"),
        client.get_multiplexed_async_connection().await.expect("b"),
    )
}

/// The error texts of misplaced transaction commands are Redis 7's, and only a command refused
/// while queuing aborts EXEC (a nested MULTI or a WATCH inside MULTI does not, as in Redis);
/// EXEC, an aborted EXEC and DISCARD forget the WATCHes, an EXEC without MULTI does not;
/// UNWATCH is queued inside MULTI. (Compared with redis-server 7.0.15.)
#[tokio::test]
async fn misplaced_transaction_commands_answer_as_redis_7() {
    let server = start(Config { resp_addr: any_port(), ..config() }).await;
    let (mut a, mut b) = two_redis_connections(&server).await;
    assert_eq!(redis_reply(&mut a, &["EXEC"]).await, Err("ERR EXEC without MULTI".into()));
    assert_eq!(redis_reply(&mut a, &["DISCARD"]).await, Err("ERR DISCARD without MULTI".into()));
    ok(&mut a, &["MULTI"]).await;
    assert_eq!(redis_reply(&mut a, &["MULTI"]).await, Err("ERR MULTI calls can not be nested".into()));
    assert_eq!(
        redis_reply(&mut a, &["WATCH", "k"]).await,
        Err("ERR WATCH inside MULTI is not allowed".into())
    );
    assert_eq!(ok(&mut a, &["SET", "x", "1"]).await, redis::Value::SimpleString("QUEUED".into()));
    assert_eq!(ok(&mut a, &["EXEC"]).await, redis::Value::Array(vec![redis::Value::Okay]), "not aborted");

    ok(&mut a, &["MULTI"]).await;
    assert!(redis_reply(&mut a, &["NOSUCHCOMMAND"]).await.is_err());
    assert_eq!(
        redis_reply(&mut a, &["EXEC"]).await,
        Err("EXECABORT Transaction discarded because of previous errors.".into())
    );

    // EXEC, an aborted EXEC and DISCARD each forget the WATCHes: a later change does not abort.
    ok(&mut a, &["WATCH", "k"]).await;
    assert!(exec_ran(&mut a).await);
    ok(&mut b, &["SET", "k", "1"]).await;
    assert!(exec_ran(&mut a).await, "EXEC forgot the WATCH");
    ok(&mut a, &["WATCH", "k"]).await;
    ok(&mut a, &["MULTI"]).await;
    assert!(redis_reply(&mut a, &["NOSUCHCOMMAND"]).await.is_err());
    assert!(redis_reply(&mut a, &["EXEC"]).await.is_err());
    ok(&mut b, &["SET", "k", "2"]).await;
    assert!(exec_ran(&mut a).await, "an aborted EXEC forgot the WATCH");
    ok(&mut a, &["WATCH", "k"]).await;
    ok(&mut a, &["MULTI"]).await;
    ok(&mut a, &["DISCARD"]).await;
    ok(&mut b, &["SET", "k", "3"]).await;
    assert!(exec_ran(&mut a).await, "DISCARD forgot the WATCH");
    // An EXEC without MULTI keeps them.
    ok(&mut a, &["WATCH", "k"]).await;
    assert!(redis_reply(&mut a, &["EXEC"]).await.is_err());
    ok(&mut b, &["SET", "k", "4"]).await;
    assert!(!exec_ran(&mut a).await, "an EXEC without MULTI kept the WATCH");
    // UNWATCH inside MULTI is queued, and comes too late to save this EXEC.
    ok(&mut a, &["WATCH", "k"]).await;
    ok(&mut a, &["MULTI"]).await;
    assert_eq!(ok(&mut a, &["UNWATCH"]).await, redis::Value::SimpleString("QUEUED".into()));
    ok(&mut b, &["SET", "k", "5"]).await;
    assert_eq!(ok(&mut a, &["EXEC"]).await, redis::Value::Nil);
    assert!(server.shutdown().await);
}

/// WATCH of a key that does not exist (Redis 7): another client creating it aborts the EXEC even
/// if it deletes it again, or lets it expire, before EXEC; deleting a key that stays missing
/// does not.
#[tokio::test]
async fn watching_a_missing_key_sees_it_created_and_removed() {
    let server = start(Config { resp_addr: any_port(), ..config() }).await;
    let (mut a, mut b) = two_redis_connections(&server).await;
    ok(&mut a, &["WATCH", "ghost"]).await;
    ok(&mut b, &["SET", "ghost", "1"]).await;
    ok(&mut b, &["DEL", "ghost"]).await;
    assert!(!exec_ran(&mut a).await, "created and deleted since WATCH: touched");

    ok(&mut a, &["WATCH", "ghost"]).await;
    ok(&mut b, &["DEL", "ghost"]).await;
    assert!(exec_ran(&mut a).await, "deleting a missing key changes nothing");

    ok(&mut a, &["WATCH", "ghost"]).await;
    ok(&mut b, &["SET", "ghost", "1", "PX", "50"]).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!exec_ran(&mut a).await, "created and expired since WATCH: touched");

    // The same through a transaction and through the binary protocol's delete.
    ok(&mut a, &["WATCH", "ghost2"]).await;
    ok(&mut b, &["MULTI"]).await;
    ok(&mut b, &["SET", "ghost2", "1"]).await;
    ok(&mut b, &["DEL", "ghost2"]).await;
    ok(&mut b, &["EXEC"]).await;
    assert_eq!(ok(&mut b, &["EXISTS", "ghost2"]).await, redis::Value::Int(0));
    assert!(!exec_ran(&mut a).await, "created and deleted by another transaction: touched");
    assert!(server.shutdown().await);
}

/// WATCH and expiry (Redis 7.0): a key that expires after WATCH aborts the EXEC; a key already
/// expired when WATCHed does not, whether or not it has been reclaimed since, unless it is
/// written again.
#[tokio::test]
async fn watch_and_expiry_follow_redis_7() {
    let server = start(Config { resp_addr: any_port(), ..config() }).await;
    let (mut a, mut b) = two_redis_connections(&server).await;
    ok(&mut b, &["SET", "e", "1", "PX", "80"]).await;
    ok(&mut a, &["WATCH", "e"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!exec_ran(&mut a).await, "expired after WATCH: touched");

    ok(&mut b, &["SET", "f", "1", "PX", "30"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok(&mut a, &["WATCH", "f"]).await;
    assert!(exec_ran(&mut a).await, "already expired at WATCH: not touched");
    ok(&mut b, &["SET", "g", "1", "PX", "30"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok(&mut a, &["WATCH", "g"]).await;
    assert_eq!(ok(&mut b, &["GET", "g"]).await, redis::Value::Nil, "the read reclaims it");
    assert!(exec_ran(&mut a).await, "already expired at WATCH, reclaimed since: not touched");
    ok(&mut b, &["SET", "h", "1", "PX", "30"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok(&mut a, &["WATCH", "h"]).await;
    ok(&mut b, &["SET", "h", "2"]).await;
    assert!(!exec_ran(&mut a).await, "already expired at WATCH, written since: touched");
    assert!(server.shutdown().await);
}

/// PUBLISH inside MULTI is queued: nothing is delivered before EXEC, and the message goes out
/// after the transaction's writes are applied, so a subscriber hears the writes' keyspace events
/// first (as from redis-server 7 for `MULTI, SET k, PUBLISH, EXEC`) and reads them on receipt;
/// PUBLISH answers its receivers.
#[tokio::test]
async fn a_publish_inside_multi_is_delivered_at_exec_after_the_writes() {
    let server = start(Config {
        resp_addr: any_port(),
        notify_keyspace_events: NotifyFlags::parse("KEA").expect("flags"),
        ..config()
    })
    .await;
    let (mut a, mut b) = two_redis_connections(&server).await;
    let client =
        redis::Client::open(format!("redis://{}/", server.addrs().resp.expect("resp"))).expect("url");
    let mut sub = client.get_async_pubsub().await.expect("pubsub");
    sub.subscribe("news").await.expect("subscribe");
    sub.subscribe("__keyspace@0__:pub:k").await.expect("subscribe");
    let mut messages = sub.on_message();

    ok(&mut a, &["MULTI"]).await;
    ok(&mut a, &["SET", "pub:k", "v"]).await;
    assert_eq!(ok(&mut a, &["PUBLISH", "news", "done"]).await, redis::Value::SimpleString("QUEUED".into()));
    let early = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
    assert!(early.is_err(), "a queued PUBLISH delivered nothing before EXEC");
    assert_eq!(
        ok(&mut a, &["EXEC"]).await,
        redis::Value::Array(vec![redis::Value::Okay, redis::Value::Int(1)]),
        "PUBLISH answers its receivers"
    );
    let mut next = async || {
        let m = tokio::time::timeout(WAIT, messages.next()).await.expect("in time").expect("a message");
        (m.get_channel_name().to_string(), m.get_payload::<String>().expect("payload"))
    };
    assert_eq!(next().await, ("__keyspace@0__:pub:k".into(), "set".into()), "the write's event first");
    assert_eq!(next().await, ("news".into(), "done".into()));
    let v: Option<String> = redis::cmd("GET").arg("pub:k").query_async(&mut b).await.expect("get");
    assert_eq!(v.as_deref(), Some("v"));
    drop(messages);
    assert!(server.shutdown().await);
}
