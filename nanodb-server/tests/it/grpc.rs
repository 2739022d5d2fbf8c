//! The gRPC frontend end to end with the generated tonic clients: every RPC, every error code,
//! limits, deadlines, load shedding, gzip, concurrent clients, health, reflection, grpc-web, and
//! keys shared with the binary TCP protocol.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use nanodb_protocol::pb::{self, admin_client::AdminClient, kv_client::KvClient};
use nanodb_protocol::{Command, Entry, PutCondition, Reply};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::{TcpClient, any_port, b, config, start};

async fn grpc_server(config: Config) -> (Server, SocketAddr) {
    let server = start(Config { grpc_addr: any_port(), ..config }).await;
    let addr = server.addrs().grpc.expect("grpc on");
    (server, addr)
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

async fn kv(addr: SocketAddr) -> KvClient<Channel> {
    KvClient::new(channel(addr).await)
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest { key: b(key), value: b(value), ..Default::default() }
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest { key: b(key) }
}

/// The stable NanoDB code name a status carries in its metadata.
fn nanodb_code(s: &Status) -> &str {
    s.metadata().get("nanodb-error-code").and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn strings_put_get_delete_incr_expire() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;

    let missing = c.get(get("k")).await.expect("get").into_inner();
    assert_eq!(missing, pb::GetResponse { found: false, value: Bytes::new(), version: 0, ttl_ms: 0 });

    let value = Bytes::from_static(b"\x00\xffbinary\r\n");
    let req = pb::PutRequest { key: b("k"), value: value.clone(), ..Default::default() };
    let p = c.put(req).await.expect("put").into_inner();
    assert!(p.applied && p.version > 0);
    let g = c.get(get("k")).await.expect("get").into_inner();
    assert_eq!(g, pb::GetResponse { found: true, value, version: p.version, ttl_ms: -1 });

    // Conditions: if-absent on a present key does not apply and reports the current version.
    let cond = |condition: pb::PutCondition, expected_version| pb::PutRequest {
        condition: condition as i32,
        expected_version,
        ..put("k", "new")
    };
    let r = c.put(cond(pb::PutCondition::IfAbsent, 0)).await.expect("put").into_inner();
    assert_eq!(r, pb::PutResponse { applied: false, version: p.version });
    let r = c.put(cond(pb::PutCondition::IfVersion, p.version + 100)).await.expect("put").into_inner();
    assert!(!r.applied);
    let r = c.put(cond(pb::PutCondition::IfVersion, p.version)).await.expect("put").into_inner();
    assert!(r.applied && r.version > p.version);
    let r = c.put(cond(pb::PutCondition::IfPresent, 0)).await.expect("put").into_inner();
    assert!(r.applied);
    let r = c.put(pb::PutRequest { key: b("fresh"), ..cond(pb::PutCondition::IfPresent, 0) }).await;
    assert!(!r.expect("put").into_inner().applied);

    // TTLs: put with one, read it back, persist it, expire at once.
    let r = c.put(pb::PutRequest { ttl_ms: 60_000, ..put("t", "v") }).await.expect("put").into_inner();
    assert!(r.applied);
    let ttl = c.get(get("t")).await.expect("get").into_inner().ttl_ms;
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    let e = c
        .expire(pb::ExpireRequest { key: b("t"), ttl_ms: -1, ..Default::default() })
        .await
        .expect("expire")
        .into_inner();
    assert!(e.applied);
    assert_eq!(c.get(get("t")).await.expect("get").into_inner().ttl_ms, -1);
    let e = c
        .expire(pb::ExpireRequest { key: b("t"), ttl_ms: 0, ..Default::default() })
        .await
        .expect("expire")
        .into_inner();
    assert!(e.applied);
    assert!(!c.get(get("t")).await.expect("get").into_inner().found);
    let e = c
        .expire(pb::ExpireRequest { key: b("nope"), ttl_ms: 10, ..Default::default() })
        .await
        .expect("expire")
        .into_inner();
    assert!(!e.applied);

    // Incr creates at 0, adds, and reads back as decimal text.
    let i = c.incr(pb::IncrRequest { key: b("n"), delta: 5 }).await.expect("incr").into_inner();
    assert_eq!(i.value, 5);
    let i = c.incr(pb::IncrRequest { key: b("n"), delta: -7 }).await.expect("incr").into_inner();
    assert_eq!(i.value, -2);
    assert_eq!(c.get(get("n")).await.expect("get").into_inner().value, b("-2"));

    let d = c.delete(pb::DeleteRequest { key: b("k") }).await.expect("delete").into_inner();
    assert!(d.deleted);
    let d = c.delete(pb::DeleteRequest { key: b("k") }).await.expect("delete").into_inner();
    assert!(!d.deleted);
    assert!(!c.get(get("k")).await.expect("get").into_inner().found);
    server.shutdown().await;
}

fn expiry(kind: pb::expiry::Kind) -> Option<pb::Expiry> {
    Some(pb::Expiry { kind: Some(kind) })
}

/// A key's `ttl_ms` as Get reports it.
async fn ttl(c: &mut KvClient<Channel>, key: &str) -> i64 {
    c.get(get(key)).await.expect("get").into_inner().ttl_ms
}

/// Every value of a list.
async fn whole_list(c: &mut KvClient<Channel>, key: &str) -> Vec<Bytes> {
    let r = pb::ListRangeRequest { key: b(key), start: 0, stop: -1 };
    c.list_range(r).await.expect("range").into_inner().values
}

/// Milliseconds since the Unix epoch now.
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
}

#[tokio::test]
async fn put_and_expire_take_an_expiry_that_overrides_ttl_ms() {
    use pb::expiry::Kind;
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    // in_ms wins over ttl_ms; keep keeps it through the next write (ttl_ms alone would clear it).
    let r = c.put(pb::PutRequest { ttl_ms: 5, expiry: expiry(Kind::InMs(60_000)), ..put("k", "v") }).await;
    assert!(r.expect("put").into_inner().applied);
    let t = ttl(&mut c, "k").await;
    assert!(t > 5_000 && t <= 60_000, "{t}");
    c.put(pb::PutRequest { expiry: expiry(Kind::Keep(true)), ..put("k", "w") }).await.expect("put");
    let t = ttl(&mut c, "k").await;
    assert!(t > 5_000 && t <= 60_000, "keep kept the TTL: {t}");
    // persist wins over a ttl_ms.
    c.put(pb::PutRequest { ttl_ms: 60_000, expiry: expiry(Kind::Persist(true)), ..put("k", "x") })
        .await
        .expect("put");
    assert_eq!(ttl(&mut c, "k").await, -1);
    // at_ms: an absolute deadline.
    let at = unix_ms() + 120_000;
    c.put(pb::PutRequest { expiry: expiry(Kind::AtMs(at)), ..put("a", "v") }).await.expect("put");
    let t = ttl(&mut c, "a").await;
    assert!(t > 60_000 && t <= 120_000, "{t}");

    // Expire: the expiry wins over ttl_ms (-1 would persist); an at_ms in the past removes the key.
    let e = c.expire(pb::ExpireRequest { key: b("k"), ttl_ms: -1, expiry: expiry(Kind::InMs(30_000)) }).await;
    assert!(e.expect("expire").into_inner().applied);
    let t = ttl(&mut c, "k").await;
    assert!(t > 0 && t <= 30_000, "{t}");
    let e = c.expire(pb::ExpireRequest { key: b("k"), ttl_ms: 0, expiry: expiry(Kind::Persist(true)) }).await;
    assert!(e.expect("expire").into_inner().applied, "persist instead of expiring at once");
    assert_eq!(ttl(&mut c, "k").await, -1);
    let e = c.expire(pb::ExpireRequest { key: b("a"), ttl_ms: 60_000, expiry: expiry(Kind::AtMs(1)) }).await;
    assert!(e.expect("expire").into_inner().applied);
    assert!(!c.get(get("a")).await.expect("get").into_inner().found, "a deadline in the past removes");

    // Invalid expiries are INVALID_ARGUMENT and change nothing.
    let bad: [(Option<pb::Expiry>, &str); 4] = [
        (Some(pb::Expiry { kind: None }), "one of persist"),
        (expiry(Kind::Keep(false)), "must be true"),
        (expiry(Kind::InMs(0)), "invalid expire time"),
        (expiry(Kind::AtMs(0)), "invalid expire time"),
    ];
    for (e, why) in bad {
        let err = c.put(pb::PutRequest { expiry: e, ..put("k", "bad") }).await.expect_err("invalid");
        assert_eq!((err.code(), nanodb_code(&err)), (Code::InvalidArgument, "INVALID_ARGUMENT"), "{e:?}");
        assert!(err.message().contains(why), "{e:?}: {}", err.message());
    }
    let err = c
        .expire(pb::ExpireRequest { key: b("k"), ttl_ms: 10, expiry: expiry(Kind::Keep(true)) })
        .await
        .expect_err("an expire cannot keep");
    assert_eq!(err.code(), Code::InvalidArgument);
    let g = c.get(get("k")).await.expect("get").into_inner();
    assert_eq!((g.value, g.ttl_ms), (b("x"), -1), "refused writes changed nothing");
    server.shutdown().await;
}

#[tokio::test]
async fn scan_pages_visit_every_key_once() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    for i in 0..25 {
        c.put(put(&format!("scan:{i:02}"), &i.to_string())).await.expect("put");
    }
    c.put(put("other", "x")).await.expect("put");
    let mut seen = Vec::new();
    let mut cursor = Bytes::new();
    loop {
        let page = c
            .scan(pb::ScanRequest { prefix: b("scan:"), limit: 7, cursor })
            .await
            .expect("scan")
            .into_inner();
        assert!(page.entries.len() <= 7);
        for e in page.entries {
            assert!(e.version > 0 && e.ttl_ms == -1);
            let i: u32 = std::str::from_utf8(&e.key[5..]).expect("utf8").parse().expect("number");
            assert_eq!(e.value, b(&i.to_string()));
            seen.push(e.key);
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    seen.sort();
    let expected: Vec<Bytes> = (0..25).map(|i| b(&format!("scan:{i:02}"))).collect();
    assert_eq!(seen, expected);
    server.shutdown().await;
}

#[tokio::test]
async fn batch_applies_in_order_with_one_result_each() {
    use pb::operation::Op;
    use pb::operation_result::Result as R;
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    let op = |op| pb::Operation { op: Some(op) };
    let ops = vec![
        op(Op::Put(put("b", "1"))),
        op(Op::Incr(pb::IncrRequest { key: b("b"), delta: 2 })),
        op(Op::Get(get("b"))),
        op(Op::Expire(pb::ExpireRequest { key: b("b"), ttl_ms: 60_000, ..Default::default() })),
        op(Op::Put(put("s", "text"))),
        op(Op::Incr(pb::IncrRequest { key: b("s"), delta: 1 })),
        op(Op::Delete(pb::DeleteRequest { key: b("b") })),
        op(Op::Get(get("b"))),
    ];
    let results: Vec<_> = c
        .batch(pb::BatchRequest { ops })
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.result.expect("a result"))
        .collect();
    assert_eq!(results.len(), 8);
    assert!(matches!(&results[0], R::Put(p) if p.applied));
    assert_eq!(results[1], R::Incr(pb::IncrResponse { value: 3 }));
    assert!(matches!(&results[2], R::Get(g) if g.found && g.value == b("3")));
    assert_eq!(results[3], R::Expire(pb::ExpireResponse { applied: true }));
    assert!(matches!(&results[5], R::Error(e) if e.code == "NOT_AN_INTEGER"), "{:?}", results[5]);
    assert_eq!(results[6], R::Delete(pb::DeleteResponse { deleted: true }));
    assert!(matches!(&results[7], R::Get(g) if !g.found));

    // A batch with an empty operation is refused whole, before anything runs.
    let ops = vec![op(Op::Put(put("never", "x"))), pb::Operation { op: None }];
    let err = c.batch(pb::BatchRequest { ops }).await.expect_err("empty op");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!c.get(get("never")).await.expect("get").into_inner().found);
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_carries_every_kind_of_data_command() {
    use pb::expiry::Kind;
    use pb::operation::Op;
    use pb::operation_result::Result as R;
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    let op = |op| pb::Operation { op: Some(op) };
    let pair = |k: &str, v: &str| pb::MultiPutPair { key: b(k), value: b(v) };
    let ops = vec![
        op(Op::MultiPut(pb::MultiPutRequest {
            pairs: vec![pair("a", "1"), pair("b", "2")],
            if_none_exist: false,
        })),
        op(Op::GetSet(pb::GetSetRequest { key: b("a"), value: b("one"), ..Default::default() })),
        op(Op::Append(pb::AppendRequest { key: b("a"), value: b("!") })),
        op(Op::Exists(pb::ExistsRequest { key: b("a") })),
        op(Op::GetEx(pb::GetExRequest { key: b("a"), expiry: expiry(Kind::InMs(60_000)) })),
        op(Op::Ttl(pb::TtlRequest { key: b("a") })),
        op(Op::Rename(pb::RenameRequest { from: b("a"), to: b("c") })),
        op(Op::Rename(pb::RenameRequest { from: b("a"), to: b("d") })),
        op(Op::Type(pb::TypeRequest { key: b("c") })),
        op(Op::IncrFloat(pb::IncrFloatRequest { key: b("b"), delta: 0.5 })),
        op(Op::HashIncr(pb::HashIncrRequest { key: b("h"), field: b("n"), delta: 3 })),
        op(Op::HashSetIfAbsent(pb::HashSetIfAbsentRequest { key: b("h"), field: b("n"), value: b("x") })),
        op(Op::HashLen(pb::HashLenRequest { key: b("h") })),
        op(Op::ListPush(pb::ListPushRequest { key: b("l"), end: 1, values: vec![b("x"), b("y"), b("z")] })),
        op(Op::ListSet(pb::ListSetRequest { key: b("l"), index: 1, value: b("Y") })),
        op(Op::ListTrim(pb::ListTrimRequest { key: b("l"), start: 1, stop: -1 })),
        op(Op::ListLen(pb::ListLenRequest { key: b("l") })),
        op(Op::KeyCount(pb::KeyCountRequest {})),
        op(Op::GetDel(pb::GetDelRequest { key: b("b") })),
        op(Op::DeleteIf(pb::DeleteIfRequest { key: b("c"), version: 1 })),
        op(Op::RandomKey(pb::RandomKeyRequest {})),
        op(Op::Get(get("c"))),
        op(Op::Flush(pb::FlushRequest {})),
        op(Op::KeyCount(pb::KeyCountRequest {})),
    ];
    let n = ops.len();
    let results: Vec<R> = c
        .batch(pb::BatchRequest { ops })
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.result.expect("a result"))
        .collect();
    assert_eq!(results.len(), n);
    assert_eq!(results[0], R::MultiPut(pb::MultiPutResponse { applied: true }));
    assert!(matches!(&results[1], R::GetSet(g) if g.found && g.value == b("1")), "{:?}", results[1]);
    assert_eq!(results[2], R::Append(pb::AppendResponse { length: 4 }));
    assert_eq!(results[3], R::Exists(pb::ExistsResponse { exists: true }));
    assert!(matches!(&results[4], R::GetEx(g) if g.value == b("one!") && g.ttl_ms > 0), "{:?}", results[4]);
    assert!(matches!(&results[5], R::Ttl(t) if t.found && t.ttl_ms > 0), "{:?}", results[5]);
    assert_eq!(results[6], R::Rename(pb::RenameResponse {}));
    assert!(matches!(&results[7], R::Error(e) if e.code == "NOT_FOUND"), "{:?}", results[7]);
    assert_eq!(results[8], R::Type(pb::TypeResponse { found: true, r#type: pb::KeyType::String as i32 }));
    assert_eq!(results[9], R::IncrFloat(pb::IncrFloatResponse { value: b("2.5") }));
    assert_eq!(results[10], R::HashIncr(pb::HashIncrResponse { value: 3 }));
    assert_eq!(results[11], R::HashSetIfAbsent(pb::HashSetIfAbsentResponse { created: false }));
    assert_eq!(results[12], R::HashLen(pb::HashLenResponse { length: 1 }));
    assert_eq!(results[13], R::ListPush(pb::ListPushResponse { length: 3 }));
    assert_eq!(results[14], R::ListSet(pb::ListSetResponse {}));
    assert_eq!(results[15], R::ListTrim(pb::ListTrimResponse {}));
    assert_eq!(results[16], R::ListLen(pb::ListLenResponse { length: 2 }));
    assert_eq!(results[17], R::KeyCount(pb::KeyCountResponse { count: 4 }), "b, c, h and l");
    assert!(matches!(&results[18], R::GetDel(g) if g.found && g.value == b("2.5")), "{:?}", results[18]);
    assert_eq!(results[19], R::DeleteIf(pb::DeleteIfResponse { deleted: false }), "a stale version");
    assert!(
        matches!(&results[20], R::RandomKey(r) if r.found && [b("c"), b("h"), b("l")].contains(&r.key)),
        "{:?}",
        results[20]
    );
    assert!(matches!(&results[21], R::Get(g) if g.found && g.value == b("one!")), "{:?}", results[21]);
    assert_eq!(results[22], R::Flush(pb::FlushResponse { removed: 3 }));
    assert_eq!(results[23], R::KeyCount(pb::KeyCountResponse { count: 0 }));

    // Errors stay per operation, in the stable form, and the batch goes on.
    let ops = vec![
        op(Op::HashSet(pb::HashSetRequest { key: b("h"), field: b("f"), value: b("v") })),
        op(Op::ListLen(pb::ListLenRequest { key: b("h") })),
        op(Op::ListSet(pb::ListSetRequest { key: b("none"), index: 0, value: b("v") })),
        op(Op::Scan(pb::ScanRequest::default())),
    ];
    let results: Vec<R> = c
        .batch(pb::BatchRequest { ops })
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .flat_map(|r| r.result)
        .collect();
    assert!(matches!(&results[1], R::Error(e) if e.code == "WRONGTYPE"), "{:?}", results[1]);
    assert!(matches!(&results[2], R::Error(e) if e.code == "NOT_FOUND"), "{:?}", results[2]);
    assert!(
        matches!(&results[3], R::Scan(s) if s.entries.len() == 1 && s.entries[0].key == b("h")),
        "{:?}",
        results[3]
    );
    // An invalid expiry in one operation refuses the batch whole, before anything runs.
    let ops = vec![
        op(Op::Put(put("never", "x"))),
        op(Op::GetEx(pb::GetExRequest { key: b("h"), expiry: Some(pb::Expiry { kind: None }) })),
    ];
    let e = c.batch(pb::BatchRequest { ops }).await.expect_err("invalid expiry");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(!c.exists(pb::ExistsRequest { key: b("never") }).await.expect("exists").into_inner().exists);
    server.shutdown().await;
}

#[tokio::test]
async fn hashes_and_lists() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    let hset = |f: &str, v: &str| pb::HashSetRequest { key: b("h"), field: b(f), value: b(v) };
    assert!(c.hash_set(hset("a", "1")).await.expect("hset").into_inner().created);
    assert!(!c.hash_set(hset("a", "2")).await.expect("hset").into_inner().created);
    assert!(c.hash_set(hset("b", "3")).await.expect("hset").into_inner().created);
    let g = c.hash_get(pb::HashGetRequest { key: b("h"), field: b("a") }).await.expect("hget").into_inner();
    assert_eq!(g, pb::HashGetResponse { found: true, value: b("2") });
    let g = c.hash_get(pb::HashGetRequest { key: b("h"), field: b("z") }).await.expect("hget").into_inner();
    assert!(!g.found);
    let mut all =
        c.hash_get_all(pb::HashGetAllRequest { key: b("h") }).await.expect("hgetall").into_inner().fields;
    all.sort_by(|x, y| x.field.cmp(&y.field));
    assert_eq!(
        all,
        vec![pb::HashField { field: b("a"), value: b("2") }, pb::HashField { field: b("b"), value: b("3") }]
    );
    let d = c.hash_delete(pb::HashDeleteRequest { key: b("h"), field: b("a") }).await.expect("hdel");
    assert!(d.into_inner().deleted);
    let d = c.hash_delete(pb::HashDeleteRequest { key: b("h"), field: b("a") }).await.expect("hdel");
    assert!(!d.into_inner().deleted);

    let push = |end: pb::ListEnd, vs: &[&str]| pb::ListPushRequest {
        key: b("l"),
        end: end as i32,
        values: vs.iter().map(|v| b(v)).collect(),
    };
    let n = c.list_push(push(pb::ListEnd::Back, &["b", "c"])).await.expect("push").into_inner();
    assert_eq!(n.length, 2);
    let n = c.list_push(push(pb::ListEnd::Front, &["a"])).await.expect("push").into_inner();
    assert_eq!(n.length, 3);
    let r = c.list_range(pb::ListRangeRequest { key: b("l"), start: 0, stop: -1 }).await.expect("range");
    assert_eq!(r.into_inner().values, vec![b("a"), b("b"), b("c")]);
    let pop = |end: pb::ListEnd, count| pb::ListPopRequest { key: b("l"), end: end as i32, count };
    assert_eq!(c.list_pop(pop(pb::ListEnd::Back, 0)).await.expect("pop").into_inner().values, vec![b("c")]);
    assert_eq!(
        c.list_pop(pop(pb::ListEnd::Front, 5)).await.expect("pop").into_inner().values,
        vec![b("a"), b("b")]
    );
    assert!(c.list_pop(pop(pb::ListEnd::Front, 1)).await.expect("pop").into_inner().values.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn strings_get_set_get_del_get_ex_append_incr_float() {
    use pb::expiry::Kind;
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    let get_set = |k: &str, v: &str| pb::GetSetRequest { key: b(k), value: b(v), ..Default::default() };

    // GetSet answers what was there before: nothing, then the first value with its version.
    let r = c.get_set(get_set("k", "one")).await.expect("getset").into_inner();
    assert_eq!(r, pb::GetSetResponse { found: false, value: Bytes::new(), version: 0, ttl_ms: 0 });
    let v1 = c.get(get("k")).await.expect("get").into_inner().version;
    let r = c
        .get_set(pb::GetSetRequest { expiry: expiry(Kind::InMs(60_000)), ..get_set("k", "two") })
        .await
        .expect("getset")
        .into_inner();
    assert_eq!(r, pb::GetSetResponse { found: true, value: b("one"), version: v1, ttl_ms: -1 });
    let t = ttl(&mut c, "k").await;
    assert!(t > 0 && t <= 60_000, "the expiry applied: {t}");
    // A condition that does not hold writes nothing but still answers the value.
    let r = c
        .get_set(pb::GetSetRequest { condition: pb::PutCondition::IfAbsent as i32, ..get_set("k", "three") })
        .await
        .expect("getset")
        .into_inner();
    assert!(r.found && r.value == b("two") && r.ttl_ms > 0, "{r:?}");
    assert_eq!(c.get(get("k")).await.expect("get").into_inner().value, b("two"));
    // Without an expiry GetSet clears the TTL, as a plain Put does.
    c.get_set(get_set("k", "four")).await.expect("getset");
    assert_eq!(ttl(&mut c, "k").await, -1);

    // GetEx: no expiry is a plain read; one changes the TTL (and the version); persist clears it.
    let before = c.get(get("k")).await.expect("get").into_inner();
    let r = c.get_ex(pb::GetExRequest { key: b("k"), expiry: None }).await.expect("getex").into_inner();
    assert_eq!(r, pb::GetExResponse { found: true, value: b("four"), version: before.version, ttl_ms: -1 });
    let r = c
        .get_ex(pb::GetExRequest { key: b("k"), expiry: expiry(Kind::InMs(30_000)) })
        .await
        .expect("getex")
        .into_inner();
    assert!(r.found && r.value == b("four") && r.version > before.version, "{r:?}");
    assert!(r.ttl_ms > 0 && r.ttl_ms <= 30_000, "{r:?}");
    let r = c.get_ex(pb::GetExRequest { key: b("k"), expiry: expiry(Kind::Persist(true)) }).await;
    assert_eq!(r.expect("getex").into_inner().ttl_ms, -1);
    let r = c.get_ex(pb::GetExRequest { key: b("none"), expiry: None }).await.expect("getex").into_inner();
    assert!(!r.found);
    // A deadline already past answers the value and removes the key.
    let r = c.get_ex(pb::GetExRequest { key: b("k"), expiry: expiry(Kind::AtMs(1)) }).await;
    assert!(r.expect("getex").into_inner().found);
    assert!(!c.get(get("k")).await.expect("get").into_inner().found);
    let e = c.get_ex(pb::GetExRequest { key: b("k"), expiry: expiry(Kind::InMs(0)) }).await;
    assert_eq!(e.expect_err("in_ms 0").code(), Code::InvalidArgument);

    // GetDel answers the value and removes the key.
    let p = c.put(put("d", "gone")).await.expect("put").into_inner();
    let r = c.get_del(pb::GetDelRequest { key: b("d") }).await.expect("getdel").into_inner();
    assert_eq!(r, pb::GetDelResponse { found: true, value: b("gone"), version: p.version, ttl_ms: -1 });
    assert!(!c.get_del(pb::GetDelRequest { key: b("d") }).await.expect("getdel").into_inner().found);
    assert!(!c.get(get("d")).await.expect("get").into_inner().found);

    // Append creates, then extends.
    let append = |v: &str| pb::AppendRequest { key: b("a"), value: b(v) };
    assert_eq!(c.append(append("abc")).await.expect("append").into_inner().length, 3);
    assert_eq!(c.append(append("\x00de")).await.expect("append").into_inner().length, 6);
    assert_eq!(c.get(get("a")).await.expect("get").into_inner().value, b("abc\x00de"));

    // IncrFloat: a missing key counts as 0; the answer is the stored text.
    let incr = |k: &str, delta| pb::IncrFloatRequest { key: b(k), delta };
    assert_eq!(c.incr_float(incr("f", 10.5)).await.expect("incrfloat").into_inner().value, b("10.5"));
    assert_eq!(c.incr_float(incr("f", 0.1)).await.expect("incrfloat").into_inner().value, b("10.6"));
    assert_eq!(c.incr_float(incr("f", -0.6)).await.expect("incrfloat").into_inner().value, b("10"));
    assert_eq!(c.get(get("f")).await.expect("get").into_inner().value, b("10"));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = c.incr_float(incr("f", bad)).await.expect_err("not finite");
        assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "INVALID_ARGUMENT"), "{bad}");
    }
    let e = c.incr_float(incr("a", 1.0)).await.expect_err("not a number");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    c.incr_float(incr("f", f64::MAX)).await.expect("a finite sum");
    let e = c.incr_float(incr("f", f64::MAX)).await.expect_err("the sum overflows to infinity");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn keys_exists_ttl_type_count_random_multi_put_rename_delete_if_flush() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;

    // An empty keyspace.
    assert_eq!(c.key_count(pb::KeyCountRequest {}).await.expect("count").into_inner().count, 0);
    let r = c.random_key(pb::RandomKeyRequest {}).await.expect("randomkey").into_inner();
    assert_eq!(r, pb::RandomKeyResponse { found: false, key: Bytes::new() });
    assert!(!c.exists(pb::ExistsRequest { key: b("s") }).await.expect("exists").into_inner().exists);
    let t = c.ttl(pb::TtlRequest { key: b("s") }).await.expect("ttl").into_inner();
    assert_eq!(t, pb::TtlResponse { found: false, ttl_ms: 0 });
    let t = c.r#type(pb::TypeRequest { key: b("s") }).await.expect("type").into_inner();
    assert_eq!((t.found, t.r#type()), (false, pb::KeyType::Unspecified));

    // MultiPut writes every pair; with if_none_exist, nothing when one exists.
    let pair = |k: &str, v: &str| pb::MultiPutPair { key: b(k), value: b(v) };
    let mp = pb::MultiPutRequest {
        pairs: vec![pair("s", "1"), pair("t", "2"), pair("s", "3")],
        if_none_exist: false,
    };
    assert!(c.multi_put(mp).await.expect("mset").into_inner().applied);
    assert_eq!(c.get(get("s")).await.expect("get").into_inner().value, b("3"), "the last pair wins");
    let mp = pb::MultiPutRequest { pairs: vec![pair("new", "x"), pair("t", "y")], if_none_exist: true };
    assert!(!c.multi_put(mp).await.expect("msetnx").into_inner().applied);
    assert!(!c.exists(pb::ExistsRequest { key: b("new") }).await.expect("exists").into_inner().exists);
    assert_eq!(c.get(get("t")).await.expect("get").into_inner().value, b("2"));
    let e = c.multi_put(pb::MultiPutRequest::default()).await.expect_err("no pairs");
    assert_eq!(e.code(), Code::InvalidArgument);

    c.hash_set(pb::HashSetRequest { key: b("h"), field: b("f"), value: b("v") }).await.expect("hset");
    let push = pb::ListPushRequest { key: b("l"), end: pb::ListEnd::Back as i32, values: vec![b("x")] };
    c.list_push(push).await.expect("push");
    for (k, want) in [("s", pb::KeyType::String), ("h", pb::KeyType::Hash), ("l", pb::KeyType::List)] {
        let t = c.r#type(pb::TypeRequest { key: b(k) }).await.expect("type").into_inner();
        assert_eq!((t.found, t.r#type()), (true, want), "{k}");
        assert!(c.exists(pb::ExistsRequest { key: b(k) }).await.expect("exists").into_inner().exists, "{k}");
    }
    assert_eq!(c.key_count(pb::KeyCountRequest {}).await.expect("count").into_inner().count, 4);
    let r = c.random_key(pb::RandomKeyRequest {}).await.expect("randomkey").into_inner();
    assert!(r.found && [b("s"), b("t"), b("h"), b("l")].contains(&r.key), "{r:?}");

    // Ttl: -1 without expiry, the remaining time with one.
    assert_eq!(c.ttl(pb::TtlRequest { key: b("h") }).await.expect("ttl").into_inner().ttl_ms, -1);
    c.expire(pb::ExpireRequest { key: b("t"), ttl_ms: 60_000, ..Default::default() }).await.expect("expire");
    let t = c.ttl(pb::TtlRequest { key: b("t") }).await.expect("ttl").into_inner();
    assert!(t.found && t.ttl_ms > 0 && t.ttl_ms <= 60_000, "{t:?}");

    // Rename moves the value and the TTL, replacing the destination; a missing source is NOT_FOUND.
    c.rename(pb::RenameRequest { from: b("t"), to: b("s") }).await.expect("rename");
    assert!(!c.exists(pb::ExistsRequest { key: b("t") }).await.expect("exists").into_inner().exists);
    let g = c.get(get("s")).await.expect("get").into_inner();
    assert!(g.value == b("2") && g.ttl_ms > 0, "{g:?}");
    let e = c.rename(pb::RenameRequest { from: b("t"), to: b("u") }).await.expect_err("missing source");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::NotFound, "NOT_FOUND"));
    assert!(!c.exists(pb::ExistsRequest { key: b("u") }).await.expect("exists").into_inner().exists);
    let e = c.rename(pb::RenameRequest { from: b("s"), to: Bytes::new() }).await.expect_err("empty key");
    assert_eq!(e.code(), Code::InvalidArgument);

    // DeleteIf removes only at the expected version.
    let v = c.get(get("s")).await.expect("get").into_inner().version;
    let d = c.delete_if(pb::DeleteIfRequest { key: b("s"), version: v + 1 }).await.expect("delete_if");
    assert!(!d.into_inner().deleted);
    assert!(c.exists(pb::ExistsRequest { key: b("s") }).await.expect("exists").into_inner().exists);
    let d = c.delete_if(pb::DeleteIfRequest { key: b("s"), version: v }).await.expect("delete_if");
    assert!(d.into_inner().deleted);
    let d = c.delete_if(pb::DeleteIfRequest { key: b("s"), version: v }).await.expect("delete_if");
    assert!(!d.into_inner().deleted, "already gone");

    // Flush removes every key and says how many.
    assert_eq!(c.flush(pb::FlushRequest {}).await.expect("flush").into_inner().removed, 2);
    assert_eq!(c.key_count(pb::KeyCountRequest {}).await.expect("count").into_inner().count, 0);
    assert_eq!(server.engine().key_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn hash_incr_set_if_absent_len_and_list_len_set_trim() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    let hincr = |f: &str, delta| pb::HashIncrRequest { key: b("h"), field: b(f), delta };
    assert_eq!(c.hash_incr(hincr("n", 5)).await.expect("hincr").into_inner().value, 5);
    assert_eq!(c.hash_incr(hincr("n", -7)).await.expect("hincr").into_inner().value, -2);
    let hsetnx = |f: &str, v: &str| pb::HashSetIfAbsentRequest { key: b("h"), field: b(f), value: b(v) };
    assert!(c.hash_set_if_absent(hsetnx("s", "one")).await.expect("hsetnx").into_inner().created);
    assert!(!c.hash_set_if_absent(hsetnx("s", "two")).await.expect("hsetnx").into_inner().created);
    let g = c.hash_get(pb::HashGetRequest { key: b("h"), field: b("s") }).await.expect("hget").into_inner();
    assert_eq!(g.value, b("one"), "an existing field is left alone");
    let e = c.hash_incr(hincr("s", 1)).await.expect_err("not an integer");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "NOT_AN_INTEGER"));
    let e = c.hash_incr(hincr("n", i64::MIN)).await.expect_err("-2 + i64::MIN overflows");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::OutOfRange, "OVERFLOW"));
    let len = |k: &str| pb::HashLenRequest { key: b(k) };
    assert_eq!(c.hash_len(len("h")).await.expect("hlen").into_inner().length, 2);
    assert_eq!(c.hash_len(len("none")).await.expect("hlen").into_inner().length, 0);

    let push = pb::ListPushRequest {
        key: b("l"),
        end: pb::ListEnd::Back as i32,
        values: ["a", "b", "c", "d"].iter().map(|v| b(v)).collect(),
    };
    c.list_push(push).await.expect("push");
    let llen = |k: &str| pb::ListLenRequest { key: b(k) };
    assert_eq!(c.list_len(llen("l")).await.expect("llen").into_inner().length, 4);
    assert_eq!(c.list_len(llen("none")).await.expect("llen").into_inner().length, 0);
    let lset = |k: &str, index, v: &str| pb::ListSetRequest { key: b(k), index, value: b(v) };
    c.list_set(lset("l", -1, "D")).await.expect("lset");
    c.list_set(lset("l", 0, "A")).await.expect("lset");
    assert_eq!(whole_list(&mut c, "l").await, [b("A"), b("b"), b("c"), b("D")]);
    let e = c.list_set(lset("l", 4, "x")).await.expect_err("out of range");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "INVALID_ARGUMENT"));
    let e = c.list_set(lset("none", 0, "x")).await.expect_err("missing list");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::NotFound, "NOT_FOUND"));
    let trim = |start, stop| pb::ListTrimRequest { key: b("l"), start, stop };
    c.list_trim(trim(1, -2)).await.expect("ltrim");
    assert_eq!(whole_list(&mut c, "l").await, [b("b"), b("c")]);
    // An empty range removes the list.
    c.list_trim(trim(5, 10)).await.expect("ltrim");
    assert_eq!(c.list_len(llen("l")).await.expect("llen").into_inner().length, 0);
    assert!(!c.exists(pb::ExistsRequest { key: b("l") }).await.expect("exists").into_inner().exists);

    // Every command of the wrong type is FAILED_PRECONDITION / WRONGTYPE, and changes nothing.
    c.put(put("s", "text")).await.expect("put");
    let push = pb::ListPushRequest { key: b("l"), end: 0, values: vec![b("x")] };
    c.list_push(push).await.expect("push");
    let wrong: Vec<Status> = vec![
        c.hash_len(len("s")).await.expect_err("hlen of a string"),
        c.hash_incr(pb::HashIncrRequest { key: b("l"), field: b("f"), delta: 1 }).await.expect_err("hincr"),
        c.hash_set_if_absent(pb::HashSetIfAbsentRequest { key: b("s"), field: b("f"), value: b("v") })
            .await
            .expect_err("hsetnx of a string"),
        c.list_len(llen("h")).await.expect_err("llen of a hash"),
        c.list_set(lset("h", 0, "x")).await.expect_err("lset of a hash"),
        c.list_trim(pb::ListTrimRequest { key: b("s"), start: 0, stop: 0 }).await.expect_err("ltrim"),
        c.get_del(pb::GetDelRequest { key: b("h") }).await.expect_err("getdel of a hash"),
        c.get_ex(pb::GetExRequest { key: b("l"), expiry: None }).await.expect_err("getex of a list"),
        c.get_set(pb::GetSetRequest { key: b("h"), value: b("v"), ..Default::default() })
            .await
            .expect_err("getset of a hash"),
        c.append(pb::AppendRequest { key: b("l"), value: b("v") }).await.expect_err("append to a list"),
        c.incr_float(pb::IncrFloatRequest { key: b("h"), delta: 1.0 }).await.expect_err("incrfloat"),
    ];
    for e in wrong {
        assert_eq!((e.code(), nanodb_code(&e)), (Code::FailedPrecondition, "WRONGTYPE"), "{e:?}");
    }
    assert_eq!(c.hash_len(len("h")).await.expect("hlen").into_inner().length, 2);
    assert_eq!(c.list_len(llen("l")).await.expect("llen").into_inner().length, 1);
    assert_eq!(c.get(get("s")).await.expect("get").into_inner().value, b("text"));
    server.shutdown().await;
}

#[tokio::test]
async fn admin_ping_and_stats() {
    let (server, addr) = grpc_server(Config { tcp_addr: any_port(), ..config() }).await;
    let mut admin = AdminClient::new(channel(addr).await);
    admin.ping(pb::PingRequest {}).await.expect("ping");
    let mut c = kv(addr).await;
    c.put(put("a", "1")).await.expect("put");
    c.put(put("b", "2")).await.expect("put");
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    tcp.call(Command::Get(cmd::Get { key: b("a") })).await.expect("tcp get");

    let s = admin.stats(pb::StatsRequest {}).await.expect("stats").into_inner();
    assert_eq!(s.keys, 2);
    assert!(s.memory_bytes > 0);
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    let ops = |name: &str| s.protocols.iter().find(|p| p.protocol == name).map(|p| p.ops);
    assert_eq!(ops("grpc"), Some(3), "ping and two puts: {:?}", s.protocols);
    assert_eq!(ops("tcp"), Some(1));
    assert_eq!(ops("http"), Some(0));
    assert_eq!(ops("resp"), Some(0));
    server.shutdown().await;
}

/// The fields `nanodb-cli monitor` shows: per-protocol errors, open connections and a latency
/// histogram that counts every operation; the log's policy and fsync age; no cluster on a single
/// node.
#[tokio::test]
async fn admin_stats_report_what_the_monitor_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config {
        tcp_addr: any_port(),
        persistence: true,
        data_dir: dir.path().to_path_buf(),
        fsync: nanodb_server::persist::FsyncPolicy::Always,
        ..config()
    };
    let (server, addr) = grpc_server(cfg).await;
    let mut admin = AdminClient::new(channel(addr).await);
    let before = admin.stats(pb::StatsRequest {}).await.expect("stats").into_inner();
    let log = before.log.clone().expect("persistence on: log stats");
    assert_eq!((log.fsync.as_str(), log.snapshot_age_ms), ("always", -1));
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    for i in 0..10 {
        tcp.call(Command::Put(cmd::Put {
            key: b(&format!("k{i}")),
            value: b("v"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }))
        .await
        .expect("tcp put");
    }
    tcp.call(Command::Incr(cmd::Incr { key: b("k0"), delta: 1 })).await.expect_err("not an integer");

    let s = admin.stats(pb::StatsRequest {}).await.expect("stats").into_inner();
    let p = s.protocols.iter().find(|p| p.protocol == "tcp").expect("tcp");
    assert_eq!((p.ops, p.errors, p.connections), (11, 1, 1), "{p:?}");
    assert_eq!(p.latency_buckets.len(), s.latency_bounds_us.len() + 1);
    assert_eq!(p.latency_buckets.iter().sum::<u64>(), 11, "every operation in the histogram");
    let log = s.log.expect("log stats");
    assert!(log.bytes_since_snapshot > 0);
    assert!((0..60_000).contains(&log.last_fsync_age_ms), "fsynced just now: {log:?}");
    let feed = s.feed.expect("feed");
    assert_eq!((feed.queued, feed.queue_len_limit), (0, 4096));
    assert!(s.cluster.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn errors_map_to_grpc_codes_with_clear_messages() {
    let mut cfg = config();
    cfg.limits.max_key_len = 8;
    cfg.limits.max_value_len = 32;
    cfg.limits.max_batch_len = 2;
    let (server, addr) = grpc_server(cfg).await;
    let mut c = kv(addr).await;

    let e = c.get(get("")).await.expect_err("empty key");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "INVALID_ARGUMENT"));
    assert!(e.message().contains("key must not be empty"), "{}", e.message());

    let e = c.get(get("123456789")).await.expect_err("long key");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "KEY_TOO_LARGE"));
    assert!(e.message().contains("9 bytes") && e.message().contains("max_key_len"), "{}", e.message());

    let e = c.put(put("k", &"v".repeat(33))).await.expect_err("long value");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "VALUE_TOO_LARGE"));
    assert!(e.message().contains("32") && e.message().contains("max_value_len"), "{}", e.message());
    assert!(!c.get(get("k")).await.expect("get").into_inner().found, "a refused put changes nothing");

    let e = c.scan(pb::ScanRequest { limit: 1_000_000, ..Default::default() }).await.expect_err("page");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "LIMIT_EXCEEDED"));
    assert!(e.message().contains("max_scan_page"), "{}", e.message());

    let op = pb::Operation { op: Some(pb::operation::Op::Get(get("k"))) };
    let e = c.batch(pb::BatchRequest { ops: vec![op; 3] }).await.expect_err("long batch");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "LIMIT_EXCEEDED"));
    assert!(e.message().contains("max_batch_len"), "{}", e.message());

    let bad = pb::PutRequest { condition: 42, ..put("k", "v") };
    let e = c.put(bad).await.expect_err("unknown condition");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("42"), "{}", e.message());
    let bad = pb::ListPushRequest { key: b("l"), end: 7, values: vec![b("x")] };
    assert_eq!(c.list_push(bad).await.expect_err("unknown end").code(), Code::InvalidArgument);

    c.hash_set(pb::HashSetRequest { key: b("h"), field: b("f"), value: b("v") }).await.expect("hset");
    let e = c.get(get("h")).await.expect_err("get of a hash");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::FailedPrecondition, "WRONGTYPE"));
    let e = c.incr(pb::IncrRequest { key: b("h"), delta: 1 }).await.expect_err("incr of a hash");
    assert_eq!(e.code(), Code::FailedPrecondition);

    c.put(put("s", "text")).await.expect("put");
    let e = c.incr(pb::IncrRequest { key: b("s"), delta: 1 }).await.expect_err("not an integer");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::InvalidArgument, "NOT_AN_INTEGER"));

    c.put(put("max", &i64::MAX.to_string())).await.expect("put");
    let e = c.incr(pb::IncrRequest { key: b("max"), delta: 1 }).await.expect_err("overflow");
    assert_eq!((e.code(), nanodb_code(&e)), (Code::OutOfRange, "OVERFLOW"));

    // Above the gRPC message limit (derived from the key and value limits), tonic refuses the
    // message itself before decoding it.
    let e = c.put(put("k", &"v".repeat(256 * 1024))).await.expect_err("huge message");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");

    let stats = server.stats();
    assert!(stats.errors(nanodb_server::stats::Protocol::Grpc) >= 10, "failed requests are counted");
    server.shutdown().await;
}

#[tokio::test]
async fn gzip_requests_and_responses() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let value = Bytes::from("compressible ".repeat(10_000));
    let p = c.put(pb::PutRequest { key: b("z"), value: value.clone(), ..Default::default() }).await;
    assert!(p.expect("gzip put").into_inner().applied);
    let g = c.get(get("z")).await.expect("gzip get");
    assert_eq!(g.metadata().get("grpc-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
    assert_eq!(g.into_inner().value, value);
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_clients_see_one_keyspace() {
    let (server, addr) = grpc_server(config()).await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            tokio::spawn(async move {
                let mut c = kv(addr).await;
                for i in 0..50 {
                    c.incr(pb::IncrRequest { key: b("counter"), delta: 1 }).await.expect("incr");
                    c.put(put(&format!("t{t}:{i}"), "v")).await.expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let mut c = kv(addr).await;
    assert_eq!(c.get(get("counter")).await.expect("get").into_inner().value, b("400"));
    assert_eq!(server.engine().key_count(), 401);
    server.shutdown().await;
}

#[tokio::test]
async fn keys_are_shared_with_the_tcp_protocol() {
    let (server, addr) = grpc_server(Config { tcp_addr: any_port(), ..config() }).await;
    let mut c = kv(addr).await;
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    assert_eq!(tcp.max_frame_len as usize, server_config_frame_len(), "HELLO advertises the frame limit");

    let p = c.put(put("from-grpc", "g")).await.expect("put").into_inner();
    let got = tcp.call(Command::Get(cmd::Get { key: b("from-grpc") })).await;
    assert_eq!(got, Ok(Reply::Value(Some(Entry { value: b("g"), version: p.version, ttl_ms: -1 }))));

    let put_tcp = Command::Put(cmd::Put {
        key: b("from-tcp"),
        value: b("t"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    let Ok(Reply::Put { applied: true, version }) = tcp.call(put_tcp).await else { panic!("tcp put") };
    let g = c.get(get("from-tcp")).await.expect("get").into_inner();
    assert_eq!(g, pb::GetResponse { found: true, value: b("t"), version, ttl_ms: -1 });
    server.shutdown().await;
}

fn server_config_frame_len() -> usize {
    config().max_frame_len
}

/// Starts a unary call whose request message never arrives: the call holds its place (and its
/// concurrency permit) until the deadline or the connection ends.
async fn stalled_get(
    channel: Channel,
    timeout: Option<Duration>,
) -> Result<tonic::Response<pb::GetResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(futures::stream::pending::<pb::GetRequest>());
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/nanodb.v1.KV/Get");
    grpc.client_streaming(request, path, tonic_prost::ProstCodec::default()).await
}

#[tokio::test]
async fn client_deadlines_are_honoured() {
    let cfg = Config { request_timeout: Duration::from_secs(60), ..config() };
    let (server, addr) = grpc_server(cfg).await;
    let started = Instant::now();
    let e = stalled_get(channel(addr).await, Some(Duration::from_millis(200))).await.expect_err("deadline");
    // tonic reports an expired server-side deadline as CANCELLED; a client enforcing its own sees
    // DEADLINE_EXCEEDED. Either way it is the client's 200 ms, not the server's 60 s cap.
    assert!(matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "the grpc-timeout header was ignored");
    server.shutdown().await;
}

#[tokio::test]
async fn request_timeout_caps_requests_without_a_deadline() {
    let cfg = Config { request_timeout: Duration::from_millis(200), ..config() };
    let (server, addr) = grpc_server(cfg).await;
    let e = stalled_get(channel(addr).await, None).await.expect_err("server-side cap");
    assert!(matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded), "{e:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn overload_is_shed_at_once_not_queued() {
    // max_connections bounds connections, max_in_flight requests in flight: one of each here.
    let cfg =
        Config { max_connections: 1, max_in_flight: 1, request_timeout: Duration::from_secs(60), ..config() };
    let (server, addr) = grpc_server(cfg).await;
    let ch = channel(addr).await;
    let mut stalled = tokio::spawn(stalled_get(ch.clone(), None));
    let mut c = KvClient::new(ch.clone());
    // The stalled call takes the only permit as soon as it reaches the server; poll until the
    // next call is refused, which shows it was shed rather than queued behind the stalled one.
    // The stalled call may itself arrive while a probe holds the permit and be shed: then it is
    // sent again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shed = loop {
        if stalled.is_finished() {
            let early = (&mut stalled).await.expect("stalled task");
            assert!(matches!(&early, Err(e) if e.code() == Code::ResourceExhausted), "{early:?}");
            stalled = tokio::spawn(stalled_get(ch.clone(), None));
        }
        match c.get(get("k")).await {
            Err(e) if e.code() == Code::ResourceExhausted => break e,
            Ok(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        }
    };
    assert_eq!(nanodb_code(&shed), "BUSY");
    stalled.abort();
    drop(c);
    server.shutdown().await;
}

#[tokio::test]
async fn health_serves_then_reports_not_serving_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (server, addr) = grpc_server(config()).await;
    let mut h = HealthClient::new(channel(addr).await);
    for service in ["", "nanodb.v1.KV", "nanodb.v1.Admin"] {
        let r = h.check(HealthCheckRequest { service: service.into() }).await.expect("check").into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch =
        h.watch(HealthCheckRequest { service: "nanodb.v1.KV".into() }).await.expect("watch").into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let token = server.shutdown_token();
    let shutdown = tokio::spawn(server.shutdown());
    token.cancelled().await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("in time");
    assert_eq!(next.expect("a status").expect("ok").status, ServingStatus::NotServing as i32);
    drop((watch, h));
    assert!(shutdown.await.expect("shutdown task"), "drained within the grace period");
    // After shutdown nothing listens: a new call is told UNAVAILABLE.
    let lazy = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
    let e = KvClient::new(lazy).get(get("k")).await.expect_err("the listener is closed");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[tokio::test]
async fn reflection_lists_services_v1_and_v1alpha() {
    let (server, addr) = grpc_server(config()).await;
    let ch = channel(addr).await;

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(ch.clone());
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([req])).await.expect("reflection v1").into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.expect("a response").expect("ok").message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["nanodb.v1.KV", "nanodb.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // `describe`: the file defining the KV service, with its documentation.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("nanodb.v1.KV".into())),
    };
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([req])).await.expect("reflection v1").into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.expect("a response").expect("ok").message_response
    else {
        panic!("expected a file descriptor")
    };
    assert!(!files.file_descriptor_proto.is_empty());

    use tonic_reflection::pb::v1alpha as alpha;
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let mut responses =
        client.server_reflection_info(tokio_stream::iter([req])).await.expect("v1alpha").into_inner();
    let msg = responses.next().await.expect("a response").expect("ok").message_response;
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = msg else {
        panic!("expected a service list")
    };
    assert!(list.service.iter().any(|s| s.name == "nanodb.v1.KV"));
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_web_over_http1_on_the_same_port() {
    let (server, addr) = grpc_server(config()).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Admin/Ping with an empty message: a 5-byte gRPC frame (no compression, length 0).
    let body = [0u8, 0, 0, 0, 0];
    let head = format!(
        "POST /nanodb.v1.Admin/Ping HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(&body).await.expect("write body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/grpc-web"), "{text}");
    assert!(text.contains("grpc-status:0"), "the trailers frame carries OK: {text}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let cfg = Config { max_connections: 1, ..config() };
    let (server, addr) = grpc_server(cfg).await;
    let mut first = kv(addr).await;
    first.put(put("k", "v")).await.expect("first connection works");
    let second = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await;
    let refused = match second {
        Err(_) => true,
        Ok(ch) => KvClient::new(ch).get(get("k")).await.is_err(),
    };
    assert!(refused, "a second connection over max_connections must not be served");
    assert!(first.get(get("k")).await.expect("first still works").into_inner().found);
    server.shutdown().await;
}

#[tokio::test]
async fn scan_entries_say_their_type() {
    let (server, addr) = grpc_server(config()).await;
    let mut c = kv(addr).await;
    c.put(put("t:empty", "")).await.expect("put");
    c.incr(pb::IncrRequest { key: b("t:n"), delta: 2 }).await.expect("incr");
    c.hash_set(pb::HashSetRequest { key: b("t:h"), field: b("f"), value: b("v") }).await.expect("hset");
    let push = pb::ListPushRequest { key: b("t:l"), end: pb::ListEnd::Back as i32, values: vec![b("x")] };
    c.list_push(push).await.expect("push");
    let page =
        c.scan(pb::ScanRequest { prefix: b("t:"), ..Default::default() }).await.expect("scan").into_inner();
    let mut got: Vec<_> = page.entries.iter().map(|e| (e.key.clone(), e.r#type(), e.value.clone())).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            (b("t:empty"), pb::KeyType::String, Bytes::new()),
            (b("t:h"), pb::KeyType::Hash, Bytes::new()),
            (b("t:l"), pb::KeyType::List, Bytes::new()),
            (b("t:n"), pb::KeyType::String, b("2")),
        ],
        "an empty string, a hash and a list are told apart by their type"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn get_range_reads_a_range_of_a_string() {
    let (server, addr) = grpc_server(config()).await;
    let mut kv = kv(addr).await;
    kv.put(pb::PutRequest { key: b("s"), value: b("This is a string"), ..Default::default() })
        .await
        .expect("put");
    let range = |start, end| pb::GetRangeRequest { key: b("s"), start, end };
    assert_eq!(kv.get_range(range(-6, -1)).await.expect("range").into_inner().value, b("string"));
    assert_eq!(kv.get_range(range(0, 3)).await.expect("range").into_inner().value, b("This"));
    let missing = pb::GetRangeRequest { key: b("nope"), start: 0, end: -1 };
    assert_eq!(kv.get_range(missing).await.expect("range").into_inner().value, Bytes::new());
    kv.hash_set(pb::HashSetRequest { key: b("h"), field: b("f"), value: b("v") }).await.expect("hset");
    let err =
        kv.get_range(pb::GetRangeRequest { key: b("h"), start: 0, end: 1 }).await.expect_err("wrong type");
    assert_eq!(nanodb_code(&err), "WRONGTYPE");
    server.shutdown().await;
}
