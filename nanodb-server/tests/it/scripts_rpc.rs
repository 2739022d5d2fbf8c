//! Lua scripts over gRPC (`KV.Eval`, the generated tonic client) and REST (`POST /v1/eval`,
//! reqwest): reply conversions, NOSCRIPT then the source, script errors naming the line, an
//! undeclared key refused, a timed-out script leaving nothing written, permissions on the declared
//! keys, and a script's writes seen by a RESP reader.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use nanodb_protocol::pb::{self, ScriptValueKind as K, eval_request::Script, kv_client::KvClient};
use nanodb_server::config::{AuthConfig, Config};
use nanodb_server::server::Server;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{any_port, b, config, start};

async fn server(timeout_ms: u64) -> Server {
    start(Config {
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        script_timeout: Duration::from_millis(timeout_ms),
        script_max_memory: 16 * 1024 * 1024,
        ..config()
    })
    .await
}

async fn grpc(server: &Server) -> KvClient<Channel> {
    let url = format!("http://{}", server.addrs().grpc.expect("grpc on"));
    KvClient::new(Channel::from_shared(url).expect("uri").connect().await.expect("grpc connects"))
}

fn source(text: &str, keys: &[&str], args: &[&str]) -> pb::EvalRequest {
    pb::EvalRequest {
        script: Some(Script::Source(b(text))),
        keys: keys.iter().map(|k| b(k)).collect(),
        args: args.iter().map(|a| b(a)).collect(),
    }
}

fn by_sha(sha: &str, keys: &[&str]) -> pb::EvalRequest {
    pb::EvalRequest {
        script: Some(Script::Sha1(sha.into())),
        keys: keys.iter().map(|k| b(k)).collect(),
        args: vec![],
    }
}

fn value(kind: K) -> pb::ScriptValue {
    pb::ScriptValue { kind: kind as i32, ..Default::default() }
}

fn int(n: i64) -> pb::ScriptValue {
    pb::ScriptValue { integer: n, ..value(K::Integer) }
}

fn bulk(v: &[u8]) -> pb::ScriptValue {
    pb::ScriptValue { bulk: Bytes::copy_from_slice(v), ..value(K::Bulk) }
}

fn text(kind: K, t: &str) -> pb::ScriptValue {
    pb::ScriptValue { text: t.into(), ..value(kind) }
}

fn array(items: Vec<pb::ScriptValue>) -> pb::ScriptValue {
    pb::ScriptValue { items, ..value(K::Array) }
}

async fn grpc_eval(
    kv: &mut KvClient<Channel>,
    req: pb::EvalRequest,
) -> Result<pb::ScriptValue, tonic::Status> {
    kv.eval(req).await.map(|r| r.into_inner().value.expect("a reply carries a value"))
}

async fn grpc_get(kv: &mut KvClient<Channel>, key: &str) -> Option<Bytes> {
    let r = kv.get(pb::GetRequest { key: b(key) }).await.expect("get").into_inner();
    r.found.then_some(r.value)
}

#[tokio::test]
async fn grpc_eval_converts_replies_and_commits_writes() {
    let server = server(5_000).await;
    let mut kv = grpc(&server).await;
    let r = grpc_eval(
        &mut kv,
        source(
            "redis.call('set', KEYS[1], ARGV[1]) \
             return {redis.call('incr', KEYS[2]), redis.call('get', KEYS[1]), redis.call('get', KEYS[3]), \
             redis.call('set', KEYS[1], ARGV[1]), {err = 'E inner'}, {1, {2}}, 3.7, true}",
            &["s", "n", "missing"],
            &["\u{0}\u{7f}bin"],
        ),
    )
    .await
    .expect("eval");
    assert_eq!(
        r,
        array(vec![
            int(1),
            bulk(b"\x00\x7fbin"),
            value(K::Nil),
            text(K::Status, "OK"),
            text(K::Error, "E inner"),
            array(vec![int(1), array(vec![int(2)])]),
            int(3),
            int(1),
        ])
    );
    assert_eq!(grpc_eval(&mut kv, source("return nil", &[], &[])).await.expect("nil"), value(K::Nil));
    assert_eq!(
        grpc_eval(&mut kv, source("return redis.status_reply('FINE')", &[], &[])).await.expect("status"),
        text(K::Status, "FINE")
    );
    // A non-UTF-8 argument travels as bytes both ways.
    let req = pb::EvalRequest {
        script: Some(Script::Source(b("return ARGV[1]"))),
        keys: vec![],
        args: vec![Bytes::from_static(b"\xff\xfe")],
    };
    assert_eq!(grpc_eval(&mut kv, req).await.expect("bytes"), bulk(b"\xff\xfe"));
    // A top-level error reply is the script's error.
    let e = grpc_eval(&mut kv, source("return redis.error_reply('MYERR went wrong')", &[], &[]))
        .await
        .expect_err("an error reply");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("MYERR went wrong"), "{e:?}");
    assert_eq!(grpc_get(&mut kv, "s").await, Some(Bytes::from_static(b"\x00\x7fbin")));
    assert_eq!(grpc_get(&mut kv, "n").await, Some(b("1")));
    let e = kv.eval(pb::EvalRequest::default()).await.expect_err("no script");
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn grpc_noscript_then_the_source_then_the_sha_and_errors_name_the_line() {
    let server = server(5_000).await;
    let mut kv = grpc(&server).await;
    let body = "return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha = nanodb_server::scripting::sha1_hex(body.as_bytes());
    let e = grpc_eval(&mut kv, by_sha(&sha, &["c"])).await.expect_err("not cached yet");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "NOSCRIPT No matching script. Please use EVAL.");
    // The client's fallback: the source, which caches it.
    assert_eq!(grpc_eval(&mut kv, source(body, &["c"], &["5"])).await.expect("eval"), int(5));
    let mut again = by_sha(&sha.to_uppercase(), &["c"]);
    again.args = vec![b("2")];
    assert_eq!(grpc_eval(&mut kv, again).await.expect("evalsha"), int(7));
    // A script loaded over RESP is in the same cache.
    let addr = server.addrs().resp.expect("resp on");
    let mut con = redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let loaded: String =
        redis::cmd("SCRIPT").arg("LOAD").arg("return 'loaded'").query_async(&mut con).await.expect("load");
    assert_eq!(grpc_eval(&mut kv, by_sha(&loaded, &[])).await.expect("evalsha"), bulk(b"loaded"));
    let e = grpc_eval(&mut kv, by_sha("not-a-sha", &[])).await.expect_err("bad sha");
    assert_eq!(e.code(), Code::NotFound);

    let e = grpc_eval(&mut kv, source("local x = 1\nreturn x.y", &[], &[])).await.expect_err("runtime error");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("ERR user_script:2: attempt to index local 'x'"), "{e:?}");
    let e = grpc_eval(&mut kv, source("return +", &[], &[])).await.expect_err("compile error");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("ERR Error compiling script"), "{e:?}");
}

#[tokio::test]
async fn grpc_undeclared_keys_and_timeouts_leave_nothing_written() {
    let server = server(300).await;
    let mut kv = grpc(&server).await;
    let e = grpc_eval(
        &mut kv,
        source("redis.call('set', KEYS[1], 'x') return redis.call('set', 'other', 'y')", &["mine"], &[]),
    )
    .await
    .expect_err("undeclared");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("'other' was not declared"), "{e:?}");
    let e = grpc_eval(&mut kv, source("redis.call('set', KEYS[1], 'x') while true do end", &["mine"], &[]))
        .await
        .expect_err("timed out");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().starts_with("BUSY") && e.message().contains("nothing it wrote was kept"), "{e:?}");
    let count = kv.key_count(pb::KeyCountRequest {}).await.expect("count").into_inner().count;
    assert_eq!(count, 0, "neither script kept a write");
    assert_eq!(grpc_get(&mut kv, "other").await, None);
}

#[tokio::test]
async fn a_grpc_script_is_seen_whole_by_a_resp_reader() {
    let server = server(5_000).await;
    let mut kv = grpc(&server).await;
    let addr = server.addrs().resp.expect("resp on");
    let mut con = redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = "for i, k in ipairs(KEYS) do redis.call('set', k, ARGV[1]) end return #KEYS";
    let keys = ["{t}a", "{t}b", "{t}c"];
    // A RESP reader polling MGET while gRPC scripts write all three keys never sees them differ.
    let reader = {
        let mut con = con.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            for _ in 0..200 {
                let v: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut con).await.expect("mget");
                assert!(v.iter().all(|x| *x == v[0]), "a partial script: {v:?}");
                seen += usize::from(v[0].is_some());
            }
            seen
        })
    };
    for n in 0..50 {
        let r = grpc_eval(&mut kv, source(script, &keys, &[&n.to_string()])).await.expect("eval");
        assert_eq!(r, int(3));
    }
    reader.await.expect("reader");
    let v: Vec<String> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await.expect("mget");
    assert_eq!(v, vec!["49"; 3]);
}

fn http(server: &Server) -> String {
    format!("http://{}/v1/eval", server.addrs().http.expect("http on"))
}

async fn post(web: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = web.post(url).json(&body).send().await.expect("http answers");
    (r.status().as_u16(), r.json().await.expect("JSON body"))
}

#[tokio::test]
async fn rest_eval_converts_replies_and_reports_errors() {
    let server = server(300).await;
    let web = reqwest::Client::new();
    let url = http(&server);
    let (status, body) = post(
        &web,
        &url,
        json!({
            "source": "redis.call('set', KEYS[1], ARGV[1]) \
                return {redis.call('incr', KEYS[2]), redis.call('get', KEYS[1]), false, {ok = 'OK'}, {err = 'E x'}, ARGV[2]}",
            "keys": ["s", "n"],
            "args": ["v", "w"],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"value": {"kind": "array", "items": [
            {"kind": "integer", "integer": 1},
            {"kind": "bulk", "value": "v", "encoding": "utf8"},
            {"kind": "nil"},
            {"kind": "status", "text": "OK"},
            {"kind": "error", "text": "E x"},
            {"kind": "bulk", "value": "w", "encoding": "utf8"},
        ]}})
    );
    // Binary-safe: base64 in (keys, args, source), base64 out when the bytes are not UTF-8.
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let (status, body) = post(
        &web,
        &url,
        json!({"source": b64(b"return ARGV[1]"), "args": [b64(b"\xff\x00")], "encoding": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"value": {"kind": "bulk", "value": b64(b"\xff\x00"), "encoding": "base64"}}));

    // NOSCRIPT is 404; the source caches the script; then its sha1 runs it.
    let text = "return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha = nanodb_server::scripting::sha1_hex(text.as_bytes());
    let (status, body) = post(&web, &url, json!({"sha1": sha, "keys": ["c"], "args": ["2"]})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["message"], "NOSCRIPT No matching script. Please use EVAL.");
    let (status, _) = post(&web, &url, json!({"source": text, "keys": ["c"], "args": ["2"]})).await;
    assert_eq!(status, 200);
    let (status, body) = post(&web, &url, json!({"sha1": sha, "keys": ["c"], "args": ["3"]})).await;
    assert_eq!((status, body), (200, json!({"value": {"kind": "integer", "integer": 5}})));

    // Errors: both or neither source, a script error naming the line, an undeclared key, a timeout.
    let (status, body) = post(&web, &url, json!({"source": "return 1", "sha1": sha})).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("INVALID_ARGUMENT")), "{body}");
    let (status, body) = post(&web, &url, json!({"keys": ["a"]})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&web, &url, json!({"source": "local x = 1\nreturn x.y"})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("ERR user_script:2: attempt to index local 'x'"), "{body}");
    let (status, body) = post(
        &web,
        &url,
        json!({"source": "redis.call('set', KEYS[1], 'x') return redis.call('get', 'other')", "keys": ["u"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().expect("message").contains("'other' was not declared"),
        "{body}"
    );
    let (status, body) = post(
        &web,
        &url,
        json!({"source": "redis.call('set', KEYS[1], 'x') while true do end", "keys": ["u"]}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").starts_with("BUSY"), "{body}");
    let base = url.trim_end_matches("/v1/eval");
    let r = web.get(format!("{base}/v1/kv/u")).send().await.expect("get");
    assert_eq!(r.status(), 404, "neither failed script wrote u");
}

const USERS: &str = "\
user default off
user alice on >alicepw ~app:* +@read +@write
user reader on >readpw %R~app:* +@read
";

#[tokio::test]
async fn a_script_needs_the_permissions_of_the_keys_it_declares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("users.acl");
    std::fs::write(&file, USERS).expect("users file");
    let server = start(Config {
        http_addr: any_port(),
        grpc_addr: any_port(),
        auth: AuthConfig { users_file: Some(file), protected_mode: true, ..AuthConfig::default() },
        ..config()
    })
    .await;
    let mut kv = grpc(&server).await;
    let basic = |u: &str, p: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    };
    let call = |req: pb::EvalRequest, user: &str, pass: &str| {
        let mut r = tonic::Request::new(req);
        r.metadata_mut().insert("authorization", basic(user, pass).parse().expect("ascii"));
        r
    };
    let set = "return redis.call('set', KEYS[1], 'x')";
    let ok = kv.eval(call(source(set, &["app:1"], &[]), "alice", "alicepw")).await.expect("alice's key");
    assert_eq!(ok.into_inner().value, Some(text(K::Status, "OK")));
    let e =
        kv.eval(call(source(set, &["other"], &[]), "alice", "alicepw")).await.expect_err("not alice's key");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e =
        kv.eval(call(source("return 1", &["app:1"], &[]), "reader", "readpw")).await.expect_err("read only");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = kv.eval(source("return 1", &[], &[])).await.expect_err("no credentials");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let web = reqwest::Client::new();
    let r = web
        .post(http(&server))
        .header("authorization", basic("alice", "alicepw"))
        .json(&json!({"source": set, "keys": ["other"]}))
        .send()
        .await
        .expect("http answers");
    assert_eq!(r.status(), 403);
    let r = web
        .post(http(&server))
        .header("authorization", basic("alice", "alicepw"))
        .json(&json!({"source": "return redis.call('get', KEYS[1])", "keys": ["app:1"]}))
        .send()
        .await
        .expect("http answers");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({"value": {"kind": "bulk", "value": "x", "encoding": "utf8"}}));
}
