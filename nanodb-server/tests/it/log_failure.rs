//! A failed log refuses every write, on every protocol, for every write command, and the refused
//! write changes nothing; reads go on. Each protocol's table of writes is checked against what
//! that protocol actually offers (RESP's command table, the gRPC service descriptor, the REST
//! OpenAPI document, the command model's write kinds), so a new write command cannot be left out.

use nanodb_protocol::cmd;
use std::collections::BTreeSet;

use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Class, Command, CommandName, ErrorCode, Expiry, ListEnd, PutCondition, Reply};
use nanodb_server::config::Config;
use nanodb_server::frontend::resp::commands::COMMANDS;
use nanodb_server::persist::FsyncPolicy;
use nanodb_server::server::Server;
use prost::Message;
use tonic::Code;

use crate::harness::{TcpClient, any_port, b, config, put, start};

/// A server with every protocol on and persistence under `everysec`.
async fn server(dir: &std::path::Path) -> Server {
    start(Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        persistence: true,
        data_dir: dir.to_path_buf(),
        fsync: FsyncPolicy::EverySec,
        ..config()
    })
    .await
}

/// Writes a string `s`, a counter `n`, a hash `h` and a list `l`, then makes the log fail under
/// one more write, which must not be acknowledged.
async fn seed_then_fail(server: &Server, c: &mut TcpClient) {
    c.call(put("s", "v")).await.expect("put");
    c.call(Command::Incr(cmd::Incr { key: b("n"), delta: 1 })).await.expect("incr");
    c.call(Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") })).await.expect("hset");
    c.call(Command::ListPush(cmd::ListPush {
        key: b("l"),
        end: ListEnd::Back,
        values: vec![b("a"), b("b")],
    }))
    .await
    .expect("push");
    server.persistence().expect("persistence on").log().fail_next_write();
    let err = c.call(put("during", "v")).await.expect_err("the failing write is not acknowledged");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

/// Every key with its type and version: what a refused write must leave exactly as it was.
fn dump(server: &Server) -> Vec<(Vec<u8>, String, u64)> {
    let mut all = Vec::new();
    for p in 0..nanodb_server::engine::PARTITIONS {
        server.engine().visit_partition(p, |k, slot| {
            all.push((k.to_vec(), format!("{:?}", slot.value()), slot.version()))
        });
    }
    all.sort();
    all
}

/// One command of every write kind of the command model, for the binary TCP protocol.
fn tcp_writes() -> Vec<Command> {
    vec![
        // A transaction whose branch writes, and a script that writes: each commits as one group,
        // the log write refused here.
        Command::Txn(cmd::Txn {
            compares: vec![],
            success: vec![Command::Incr(cmd::Incr { key: b("n"), delta: 1 })],
            failure: vec![],
        }),
        Command::Eval(cmd::Eval {
            script: nanodb_protocol::script::ScriptSource::Text(b("return redis.call('incr', KEYS[1])")),
            keys: vec![b("n")],
            args: vec![],
        }),
        Command::Put(cmd::Put {
            key: b("s"),
            value: b("x"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }),
        Command::GetSet(cmd::GetSet {
            key: b("s"),
            value: b("x"),
            condition: PutCondition::Always,
            expiry: Expiry::Keep,
        }),
        Command::Delete(cmd::Delete { key: b("none") }),
        Command::DeleteIf(cmd::DeleteIf { key: b("s"), version: 1 }),
        Command::Incr(cmd::Incr { key: b("n"), delta: 1 }),
        Command::Expire(cmd::Expire { key: b("s"), expiry: Expiry::from_expire_ttl_ms(1000) }),
        Command::Expire(cmd::Expire { key: b("s"), expiry: Expiry::At(1) }),
        Command::GetDel(cmd::GetDel { key: b("s") }),
        Command::GetEx(cmd::GetEx { key: b("s"), expiry: Expiry::In(1000) }),
        Command::Append(cmd::Append { key: b("s"), value: b("y") }),
        Command::IncrFloat(cmd::IncrFloat { key: b("n"), delta: b("1.5") }),
        Command::MultiPut(cmd::MultiPut {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
            only_if_none_exist: false,
        }),
        Command::Rename(cmd::Rename { from: b("s"), to: b("t") }),
        Command::Flush(cmd::Flush {}),
        Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("w") }),
        Command::HashSetIfAbsent(cmd::HashSetIfAbsent { key: b("h"), field: b("g"), value: b("v") }),
        Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("f") }),
        Command::HashIncr(cmd::HashIncr { key: b("h"), field: b("c"), delta: 1 }),
        Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values: vec![b("z")] }),
        Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Front, count: 1 }),
        Command::ListSet(cmd::ListSet { key: b("l"), index: 0, value: b("w") }),
        Command::ListTrim(cmd::ListTrim { key: b("l"), start: 0, stop: 0 }),
        Command::Batch(cmd::Batch {
            ops: vec![Command::Get(cmd::Get { key: b("s") }), Command::Delete(cmd::Delete { key: b("s") })],
        }),
    ]
}

/// RESP: every command the table flags `write`, with arguments.
const RESP_WRITES: &[&[&str]] = &[
    &["append", "s", "y"],
    &["decr", "n"],
    &["decrby", "n", "2"],
    &["del", "s", "none"],
    &["expire", "s", "100"],
    &["expireat", "s", "1"],
    &["flushall"],
    &["flushdb"],
    &["getdel", "s"],
    &["getex", "s", "EX", "100"],
    &["getset", "s", "x"],
    &["hdel", "h", "f"],
    &["hincrby", "h", "c", "1"],
    &["hmset", "h", "f", "w"],
    &["hset", "h", "f", "w"],
    &["hsetnx", "h", "g", "v"],
    &["incr", "n"],
    &["incrby", "n", "2"],
    &["incrbyfloat", "n", "1.5"],
    &["lpop", "l"],
    &["lpush", "l", "z"],
    &["lset", "l", "0", "w"],
    &["ltrim", "l", "0", "0"],
    &["mset", "a", "1", "b", "2"],
    &["msetnx", "a", "1"],
    &["persist", "none"],
    &["pexpire", "s", "100"],
    &["pexpireat", "s", "1"],
    &["psetex", "s", "100", "x"],
    &["rename", "s", "t"],
    &["rpop", "l"],
    &["rpush", "l", "z"],
    &["set", "s", "x"],
    &["setex", "s", "100", "x"],
    &["setnx", "fresh", "x"],
    &["unlink", "none"],
];

#[tokio::test]
async fn a_failed_log_refuses_every_write_on_every_protocol_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    seed_then_fail(&server, &mut tcp).await;
    let before = dump(&server);

    // Binary TCP: one command of every write kind.
    let writes = tcp_writes();
    let kinds: BTreeSet<CommandName> = writes.iter().map(Command::command_name).collect();
    let declared: BTreeSet<CommandName> = CommandName::ALL
        .iter()
        .copied()
        .filter(|n| n.class() == Class::Write || *n == CommandName::Batch)
        .collect();
    assert_eq!(kinds, declared, "tcp_writes() must hold one command of each write kind");
    for cmd in writes {
        assert!(cmd.is_write(), "{cmd:?}");
        let got = tcp.call(cmd.clone()).await;
        match got {
            Err(e) if e.code() == ErrorCode::Unavailable => {}
            // A batch answers per operation: its write must be refused, its read served.
            Ok(Reply::Batch(results)) => {
                assert!(results[0].is_ok(), "the batch's read is served: {results:?}");
                assert!(
                    matches!(&results[1], Err(e) if e.code() == ErrorCode::Unavailable),
                    "the batch's write is refused: {results:?}"
                );
            }
            other => panic!("tcp {cmd:?} answered {other:?}"),
        }
        assert_eq!(dump(&server), before, "tcp {cmd:?} changed the keyspace");
    }

    // RESP: every command its table flags as a write.
    let flagged: BTreeSet<&str> =
        COMMANDS.iter().filter(|s| s.flags.contains(&"write")).map(|s| s.name).collect();
    let tested: BTreeSet<&str> = RESP_WRITES.iter().map(|w| w[0]).collect();
    assert_eq!(tested, flagged, "RESP_WRITES must hold exactly the RESP commands flagged write");
    let addr = server.addrs().resp.expect("resp");
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    for words in RESP_WRITES {
        let mut cmd = redis::cmd(words[0]);
        for w in &words[1..] {
            cmd.arg(*w);
        }
        match cmd.query_async::<redis::Value>(&mut con).await {
            Err(e) => assert!(e.to_string().contains("append-only log failed"), "resp {words:?}: {e}"),
            Ok(v) => panic!("resp {words:?} answered {v:?}"),
        }
        assert_eq!(dump(&server), before, "resp {words:?} changed the keyspace");
    }
    let v: Option<String> = redis::cmd("GET").arg("s").query_async(&mut con).await.expect("reads go on");
    assert_eq!(v.as_deref(), Some("v"));

    // gRPC: every KV method that is not a read.
    let grpc = server.addrs().grpc.expect("grpc");
    let mut kv = KvClient::connect(format!("http://{grpc}")).await.expect("grpc connects");
    let reads = [
        "Get",
        "GetRange",
        "Exists",
        "Ttl",
        "KeyCount",
        "Type",
        "RandomKey",
        "Scan",
        "HashGet",
        "HashGetAll",
        "HashLen",
        "ListRange",
        "ListLen",
        "Watch",
        "Subscribe",
        "Publish",
    ];
    let mut tested = BTreeSet::new();
    macro_rules! refused {
        ($method:literal, $call:expr) => {{
            tested.insert($method);
            match $call.await {
                Err(s) => assert_eq!(s.code(), Code::Unavailable, "grpc {}: {s:?}", $method),
                Ok(r) => {
                    // A batch answers per operation.
                    let text = format!("{:?}", r.into_inner());
                    assert!(text.contains("UNAVAILABLE"), "grpc {} answered {text}", $method);
                }
            }
            assert_eq!(dump(&server), before, "grpc {} changed the keyspace", $method);
        }};
    }
    let key = b;
    refused!("Put", kv.put(pb::PutRequest { key: key("s"), value: key("x"), ..Default::default() }));
    refused!("Delete", kv.delete(pb::DeleteRequest { key: key("none") }));
    refused!("Incr", kv.incr(pb::IncrRequest { key: key("n"), delta: 1 }));
    refused!("Expire", kv.expire(pb::ExpireRequest { key: key("s"), ttl_ms: 100, ..Default::default() }));
    let delete = pb::Operation { op: Some(pb::operation::Op::Delete(pb::DeleteRequest { key: key("s") })) };
    refused!("Batch", kv.batch(pb::BatchRequest { ops: vec![delete] }));
    refused!("HashSet", kv.hash_set(pb::HashSetRequest { key: key("h"), field: key("f"), value: key("w") }));
    refused!("HashDelete", kv.hash_delete(pb::HashDeleteRequest { key: key("h"), field: key("f") }));
    refused!(
        "ListPush",
        kv.list_push(pb::ListPushRequest { key: key("l"), values: vec![key("z")], ..Default::default() })
    );
    refused!("ListPop", kv.list_pop(pb::ListPopRequest { key: key("l"), ..Default::default() }));
    refused!(
        "GetSet",
        kv.get_set(pb::GetSetRequest { key: key("s"), value: key("x"), ..Default::default() })
    );
    refused!("DeleteIf", kv.delete_if(pb::DeleteIfRequest { key: key("s"), version: 1 }));
    refused!("GetDel", kv.get_del(pb::GetDelRequest { key: key("s") }));
    // Even a GetEx that keeps the TTL, which would change nothing, is a write.
    refused!("GetEx", kv.get_ex(pb::GetExRequest { key: key("s"), expiry: None }));
    refused!("Append", kv.append(pb::AppendRequest { key: key("s"), value: key("y") }));
    refused!("IncrFloat", kv.incr_float(pb::IncrFloatRequest { key: key("n"), delta: 1.5 }));
    let pairs = vec![pb::MultiPutPair { key: key("a"), value: key("1") }];
    refused!("MultiPut", kv.multi_put(pb::MultiPutRequest { pairs, if_none_exist: false }));
    refused!("Rename", kv.rename(pb::RenameRequest { from: key("s"), to: key("t") }));
    refused!("Flush", kv.flush(pb::FlushRequest {}));
    let incr =
        pb::Operation { op: Some(pb::operation::Op::Incr(pb::IncrRequest { key: key("n"), delta: 1 })) };
    refused!("Txn", kv.txn(pb::TxnRequest { compares: vec![], success: vec![incr], failure: vec![] }));
    let source = pb::eval_request::Script::Source(key("return redis.call('incr', KEYS[1])"));
    refused!("Eval", kv.eval(pb::EvalRequest { script: Some(source), keys: vec![key("n")], args: vec![] }));
    refused!("HashIncr", kv.hash_incr(pb::HashIncrRequest { key: key("h"), field: key("c"), delta: 1 }));
    refused!(
        "HashSetIfAbsent",
        kv.hash_set_if_absent(pb::HashSetIfAbsentRequest { key: key("h"), field: key("g"), value: key("v") })
    );
    refused!("ListSet", kv.list_set(pb::ListSetRequest { key: key("l"), index: 0, value: key("w") }));
    refused!("ListTrim", kv.list_trim(pb::ListTrimRequest { key: key("l"), start: 0, stop: 0 }));
    // Reads go on.
    assert!(kv.exists(pb::ExistsRequest { key: key("s") }).await.expect("exists").into_inner().exists);
    let count = kv.key_count(pb::KeyCountRequest {}).await.expect("count").into_inner().count;
    assert_eq!(count, before.len() as u64);
    assert_eq!(kv.list_len(pb::ListLenRequest { key: key("l") }).await.expect("llen").into_inner().length, 2);
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor decodes");
    let methods: BTreeSet<String> = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "KV")
        .flat_map(|s| &s.method)
        .map(|m| m.name().to_string())
        .filter(|m| !reads.contains(&m.as_str()))
        .collect();
    let tested: BTreeSet<String> = tested.into_iter().map(String::from).collect();
    assert_eq!(tested, methods, "every KV write method is in this test");

    // REST: every route that is not a GET, except publishing: (method, route, request target,
    // body, headers). Each would write if the log took it; a route may appear more than once when
    // a header picks another command (DeleteIf, HashSetIfAbsent).
    let http = server.addrs().http.expect("http");
    let base = format!("http://{http}");
    let web = reqwest::Client::new();
    type Row =
        (&'static str, &'static str, &'static str, &'static str, &'static [(&'static str, &'static str)]);
    let writes: &[Row] = &[
        ("PUT", "/v1/kv/{key}", "/v1/kv/s", "x", &[]),
        ("DELETE", "/v1/kv/{key}", "/v1/kv/none", "", &[]),
        ("DELETE", "/v1/kv/{key}", "/v1/kv/s", "", &[("if-match", "*")]),
        ("DELETE", "/v1/kv/{key}", "/v1/kv/s", "", &[("if-match", "\"1\"")]),
        ("POST", "/v1/kv", "/v1/kv", r#"{"pairs":[{"key":"a","value":"1"}]}"#, &[]),
        ("POST", "/v1/kv", "/v1/kv", r#"{"pairs":[{"key":"a","value":"1"}]}"#, &[("if-none-match", "*")]),
        ("POST", "/v1/kv/{key}/incr", "/v1/kv/n/incr", "", &[]),
        ("POST", "/v1/kv/{key}/incr-float", "/v1/kv/n/incr-float?by=1.5", "", &[]),
        ("POST", "/v1/kv/{key}/append", "/v1/kv/s/append", "y", &[]),
        ("POST", "/v1/kv/{key}/getset", "/v1/kv/s/getset", "x", &[]),
        ("POST", "/v1/kv/{key}/getdel", "/v1/kv/s/getdel", "", &[]),
        ("POST", "/v1/kv/{key}/getex", "/v1/kv/s/getex", r#"{"ttl_ms":1000}"#, &[]),
        ("POST", "/v1/kv/{key}/expire", "/v1/kv/s/expire", r#"{"ttl_ms":1000}"#, &[]),
        ("POST", "/v1/kv/{key}/expire", "/v1/kv/s/expire", r#"{"at_ms":1}"#, &[]),
        ("POST", "/v1/kv/{key}/rename", "/v1/kv/s/rename?to=t", "", &[]),
        ("DELETE", "/v1/keyspace", "/v1/keyspace", "", &[]),
        ("PUT", "/v1/hash/{key}/{field}", "/v1/hash/h/f", "x", &[]),
        ("PUT", "/v1/hash/{key}/{field}", "/v1/hash/h/g", "x", &[("if-none-match", "*")]),
        ("DELETE", "/v1/hash/{key}/{field}", "/v1/hash/h/f", "", &[]),
        ("POST", "/v1/hash/{key}/{field}/incr", "/v1/hash/h/c/incr", "", &[]),
        ("POST", "/v1/list/{key}", "/v1/list/l", "x", &[]),
        ("POST", "/v1/list/{key}/pop", "/v1/list/l/pop", "", &[]),
        ("PUT", "/v1/list/{key}/{index}", "/v1/list/l/0", "x", &[]),
        ("POST", "/v1/list/{key}/trim", "/v1/list/l/trim?start=0&stop=0", "", &[]),
        (
            "POST",
            "/v1/txn",
            "/v1/txn",
            r#"{"success":[{"op":"incr","key":"n"}]}"#,
            &[("content-type", "application/json")],
        ),
        (
            "POST",
            "/v1/eval",
            "/v1/eval",
            r#"{"source":"return redis.call('incr', KEYS[1])","keys":["n"]}"#,
            &[("content-type", "application/json")],
        ),
    ];
    for (method, _, path, body, headers) in writes {
        let mut req = web.request(method.parse().expect("method"), format!("{base}{path}")).body(*body);
        for (name, value) in *headers {
            req = req.header(*name, *value);
        }
        let r = req.send().await.expect("http answers");
        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "{method} {path} {headers:?}");
        let body: serde_json::Value = r.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{method} {path}: {body}");
        assert_eq!(dump(&server), before, "http {method} {path} changed the keyspace");
    }
    // A batch: its read is served, each of its writes (one of every write kind) refused.
    let batch = serde_json::json!([
        {"op": "get", "key": "s"},
        {"op": "put", "key": "s", "value": "x"},
        {"op": "get_set", "key": "s", "value": "x"},
        {"op": "delete", "key": "s"},
        {"op": "delete_if", "key": "s", "version": 1},
        {"op": "incr", "key": "n"},
        {"op": "incr_float", "key": "n", "by": 1.5},
        {"op": "append", "key": "s", "value": "y"},
        {"op": "expire", "key": "s", "ttl_ms": 1000},
        {"op": "get_del", "key": "s"},
        {"op": "get_ex", "key": "s", "persist": true},
        {"op": "multi_put", "pairs": [{"key": "a", "value": "1"}]},
        {"op": "rename", "key": "s", "to": "t"},
        {"op": "flush"},
        {"op": "hash_set", "key": "h", "field": "f", "value": "w"},
        {"op": "hash_set_if_absent", "key": "h", "field": "g", "value": "w"},
        {"op": "hash_delete", "key": "h", "field": "f"},
        {"op": "hash_incr", "key": "h", "field": "c"},
        {"op": "list_push", "key": "l", "values": ["z"]},
        {"op": "list_pop", "key": "l"},
        {"op": "list_set", "key": "l", "index": 0, "value": "w"},
        {"op": "list_trim", "key": "l", "start": 0, "stop": 0},
    ]);
    let r = web.post(format!("{base}/v1/batch")).json(&batch).send().await.expect("batch answers");
    let results: Vec<serde_json::Value> = r.json().await.expect("batch results");
    assert_eq!(results[0]["ok"]["value"], "v", "the batch's read is served: {results:?}");
    for (op, result) in batch.as_array().expect("ops").iter().zip(&results).skip(1) {
        assert_eq!(result["error"]["code"], "UNAVAILABLE", "the batch's {op} is refused: {result}");
    }
    assert_eq!(results.len(), 22);
    assert_eq!(dump(&server), before, "the REST batch changed the keyspace");
    let doc: serde_json::Value =
        web.get(format!("{base}/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let m = method.to_uppercase();
            // Publishing, issuing tokens and cluster membership changes (a single node answers
            // those 404, not in cluster mode) touch no key: not writes.
            if m != "GET"
                && !path.starts_with("/v1/publish/")
                && path != "/v1/auth/token"
                && !path.starts_with("/v1/cluster/")
            {
                routes.insert((m, path.clone()));
            }
        }
    }
    let mut tested: BTreeSet<(String, String)> =
        writes.iter().map(|(m, p, ..)| (m.to_string(), p.to_string())).collect();
    tested.insert(("POST".into(), "/v1/batch".into()));
    assert_eq!(tested, routes, "every REST write route is in this test");
    server.shutdown().await;
}
