//! The REST API over a real socket with a real HTTP client: binary values, byte keys, conditions,
//! TTL, pagination, cross-protocol reads, connection stats and graceful shutdown.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::{Command, Reply};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{TcpClient, any_port, config, start};

async fn http_server() -> (Server, String) {
    let server =
        start(nanodb_server::config::Config { http_addr: any_port(), tcp_addr: any_port(), ..config() })
            .await;
    let base = format!("http://{}", server.addrs().http.expect("http on"));
    (server, base)
}

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

#[tokio::test]
async fn binary_values_round_trip_exactly() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let value: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\r', b'\n', 0]).collect();
    let r = c.put(format!("{base}/v1/kv/bin")).body(value.clone()).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(format!("{base}/v1/kv/bin")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.expect("body").to_vec(), value);
    let r = c.put(format!("{base}/v1/kv/empty")).body(Vec::<u8>::new()).send().await.expect("put empty");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        c.get(format!("{base}/v1/kv/empty"))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn keys_with_slashes_spaces_and_non_ascii_bytes() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    for (segment, key) in [
        ("a%2Fb%2F%2Fc", &b"a/b//c"[..]),
        ("two%20words", b"two words"),
        ("%E2%9C%93ok", "✓ok".as_bytes()),
        ("%FF%FE%00raw", b"\xff\xfe\x00raw"),
        ("%2F", b"/"),
    ] {
        let r = c.put(format!("{base}/v1/kv/{segment}")).body(segment.to_string()).send().await.expect("put");
        assert_eq!(r.status(), StatusCode::CREATED, "{segment}");
        // Written over REST, read back over the binary TCP protocol under the decoded key.
        let Ok(Reply::Value(Some(e))) =
            tcp.call(Command::Get(cmd::Get { key: Bytes::copy_from_slice(key) })).await
        else {
            panic!("{segment}: not found over TCP under {key:?}");
        };
        assert_eq!(e.value, segment.as_bytes());
        let r = c.get(format!("{base}/v1/kv/{segment}")).send().await.expect("get");
        assert_eq!(r.text().await.expect("body"), segment);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn conditions_over_the_wire() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let url = format!("{base}/v1/kv/cas");
    let r = c.put(&url).header("if-none-match", "*").body("1").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let r = c.put(&url).header("if-none-match", "*").body("2").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(json(r).await["error"]["code"], "CONDITION_FAILED");
    let r = c.put(&url).header("if-match", &etag).body("2").send().await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let etag2 = r.headers()["etag"].to_str().expect("etag").to_string();
    let r = c.delete(&url).header("if-match", &etag).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "a stale ETag does not delete");
    let r = c.delete(&url).header("if-match", &etag2).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.get(&url).send().await.expect("get").status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn ttl_is_reported_and_keys_expire() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let url = format!("{base}/v1/kv/short");
    assert_eq!(
        c.put(format!("{url}?ttl_ms=300")).body("v").send().await.expect("put").status(),
        StatusCode::CREATED
    );
    let r = c.get(&url).send().await.expect("get");
    let ttl: i64 = r.headers()["x-ttl-ms"].to_str().expect("ascii").parse().expect("number");
    assert!((0..=300).contains(&ttl), "{ttl}");
    // Poll until the key is gone; a deadline, not a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = c.get(&url).send().await.expect("get").status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(Instant::now() < deadline, "the key did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn pagination_visits_every_key_once() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let mut ops = Vec::new();
    for i in 0..300 {
        ops.push(serde_json::json!({"op": "put", "key": format!("page:{i}"), "value": i.to_string()}));
    }
    ops.push(serde_json::json!({"op": "put", "key": "elsewhere", "value": "x"}));
    let r = c.post(format!("{base}/v1/batch")).json(&ops).send().await.expect("batch");
    assert_eq!(r.status(), StatusCode::OK);
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let r = c
            .get(format!("{base}/v1/kv"))
            .query(&[("prefix", "page:"), ("limit", "7"), ("cursor", &cursor)])
            .send()
            .await
            .expect("scan");
        assert_eq!(r.status(), StatusCode::OK);
        let page = json(r).await;
        for item in page["items"].as_array().expect("items") {
            let key = item["key"].as_str().expect("key").to_string();
            assert_eq!(item["value"].as_str(), key.strip_prefix("page:"));
            assert!(seen.insert(key), "a key came twice");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 300);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_are_counted_and_shutdown_is_graceful() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    assert_eq!(c.get(format!("{base}/readyz")).send().await.expect("readyz").status(), StatusCode::OK);
    let stats = server.stats().clone();
    assert!(stats.connections_total(nanodb_server::stats::Protocol::Http) >= 1);
    let metrics = c.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("nanodb_connections{protocol=\"http\"} 1"), "{metrics}");
    assert!(server.shutdown().await, "drained within the grace period, keep-alive connection included");
    assert!(c.get(format!("{base}/healthz")).send().await.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn scans_tell_hashes_and_lists_from_empty_strings() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let empty = Command::Put(cmd::Put {
        key: Bytes::from_static(b"ty:s"),
        value: Bytes::new(),
        expiry: Expiry::Persist,
        condition: nanodb_protocol::PutCondition::Always,
    });
    tcp.call(empty).await.expect("put");
    let hset = Command::HashSet(cmd::HashSet {
        key: Bytes::from_static(b"ty:h"),
        field: Bytes::from_static(b"f"),
        value: Bytes::from_static(b"v"),
    });
    tcp.call(hset).await.expect("hset");
    let r = c.post(format!("{base}/v1/list/ty:l")).body("x").send().await.expect("push");
    assert_eq!(r.status(), StatusCode::OK);
    let page = json(c.get(format!("{base}/v1/kv?prefix=ty:")).send().await.expect("scan")).await;
    let mut got: Vec<(String, String, String)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let s = |f: &str| i[f].as_str().unwrap_or("<missing>").to_owned();
            (s("key"), s("type"), s("value"))
        })
        .collect();
    got.sort();
    let want = |k: &str, t: &str| (k.to_owned(), t.to_owned(), String::new());
    assert_eq!(got, [want("ty:h", "hash"), want("ty:l", "list"), want("ty:s", "string")]);
    server.shutdown().await;
}

/// The longest request target hyper (and the `http` crate's `Uri`) accept: 65,534 bytes.
const MAX_URI: usize = 65_534;

/// One HTTP/1.1 request written by hand (reqwest refuses URLs this long before sending them):
/// the status and the body of the answer.
async fn raw_request(addr: std::net::SocketAddr, method: &str, target: &str, body: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: nanodb\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body.as_bytes()).await.expect("write body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .expect("read");
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let status = std::str::from_utf8(&answer[9..12]).ok().and_then(|s| s.parse().ok()).expect("a status");
    (status, answer[end + 4..].to_vec())
}

#[tokio::test]
async fn the_longest_key_in_a_url_and_the_longest_key_through_batch() {
    let (server, base) = http_server().await;
    let addr = server.addrs().http.expect("http on");
    let c = reqwest::Client::new();
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let max_key_len = config().limits.max_key_len;
    assert_eq!(max_key_len, 65_536, "the documented default");

    // The longest key a URL can carry: the request target is at most 65,534 bytes.
    let longest = "k".repeat(MAX_URI - "/v1/kv/".len());
    let (status, _) = raw_request(addr, "PUT", &format!("/v1/kv/{longest}"), "fits").await;
    assert_eq!(status, 201);
    let (status, body) = raw_request(addr, "GET", &format!("/v1/kv/{longest}"), "").await;
    assert_eq!((status, &body[..]), (200, &b"fits"[..]));

    // One byte more, or the longest key the server accepts, is refused by hyper's request-line
    // parser before any handler runs: 414 with an empty body (hyper writes that answer itself).
    for len in [longest.len() + 1, max_key_len] {
        let (status, body) = raw_request(addr, "GET", &format!("/v1/kv/{}", "k".repeat(len)), "").await;
        assert_eq!((status, body.len()), (414, 0), "{len}-byte key");
    }
    let r = c.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), StatusCode::OK, "the server is fine");

    // The longest key works through a body-carrying route, /v1/batch, and over other protocols.
    let key = "b".repeat(max_key_len);
    let ops = serde_json::json!([{"op": "put", "key": key, "value": "long"}, {"op": "get", "key": key}]);
    let res = json(c.post(format!("{base}/v1/batch")).json(&ops).send().await.expect("batch")).await;
    assert_eq!(res[0]["ok"]["applied"], true, "{}", res[0]);
    assert_eq!(res[1]["ok"]["value"], "long");
    let Ok(Reply::Value(Some(e))) = tcp.call(Command::Get(cmd::Get { key: Bytes::from(key.clone()) })).await
    else {
        panic!("the batch-written key is readable over TCP");
    };
    assert_eq!(e.value, "long");
    // One byte over the key limit refuses the whole batch: 413, the JSON KEY_TOO_LARGE error.
    let ops = serde_json::json!([{"op": "put", "key": "b".repeat(max_key_len + 1), "value": "v"}]);
    let r = c.post(format!("{base}/v1/batch")).json(&ops).send().await.expect("batch");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(r).await["error"]["code"], "KEY_TOO_LARGE");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_get_a_json_503_and_the_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(Config { http_addr: any_port(), max_connections: 1, ..config() }).await;
    let addr = server.addrs().http.expect("http on");
    // The first connection holds the only place while it stays open.
    let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    first.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // A second one is refused in HTTP, with the JSON error body, and closed.
    let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer))
        .await
        .expect("the refusal is quick")
        .expect("reads");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":\"TOO_MANY_CONNECTIONS\"") && text.ends_with("}\n"), "{text}");
    // Once the first closes, its place is free again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reqwest::get(format!("http://{addr}/healthz")).await;
        if matches!(&r, Ok(r) if r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never reused: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await;
}

/// The commands REST gained, over a real socket with a real client, checked from the binary
/// protocol: a rename whose target reqwest form-encodes, an expire that really expires, HSETNX,
/// list set and trim, multi-put, and the keyspace routes.
#[tokio::test]
async fn every_data_command_over_the_wire_agrees_with_tcp() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let mut tcp_get = async |key: &'static [u8]| match tcp
        .call(Command::Get(cmd::Get { key: Bytes::from_static(key) }))
        .await
    {
        Ok(Reply::Value(v)) => v.map(|e| e.value),
        other => panic!("tcp get answered {other:?}"),
    };

    // POST /v1/kv, then a rename to a key with a space, a plus and a slash: reqwest's query
    // encoder writes the space as `+` and the plus as `%2B`, which the server reads back.
    let pairs = serde_json::json!({"pairs": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]});
    let r = c.post(format!("{base}/v1/kv")).json(&pairs).send().await.expect("multi-put");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r =
        c.post(format!("{base}/v1/kv/a/rename")).query(&[("to", "x y+z/1")]).send().await.expect("rename");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tcp_get(b"x y+z/1").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(tcp_get(b"a").await, None);
    let r = c.post(format!("{base}/v1/kv/a/rename?to=c")).send().await.expect("rename");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await["error"]["code"], "NOT_FOUND");

    // getset, append, incr-float: what TCP then reads.
    let r = c.post(format!("{base}/v1/kv/b/getset")).body("two").send().await.expect("getset");
    assert_eq!((r.status(), r.bytes().await.expect("body")), (StatusCode::OK, Bytes::from_static(b"2")));
    let r = c.post(format!("{base}/v1/kv/b/append")).body("!").send().await.expect("append");
    assert_eq!(json(r).await, serde_json::json!({"length": 4}));
    assert_eq!(tcp_get(b"b").await.as_deref(), Some(&b"two!"[..]));
    let r = c.post(format!("{base}/v1/kv/f/incr-float?by=2.25")).send().await.expect("incr-float");
    assert_eq!(json(r).await, serde_json::json!({"value": "2.25"}));
    assert_eq!(tcp_get(b"f").await.as_deref(), Some(&b"2.25"[..]));

    // expire with a real clock: the TTL is reported, then the key is gone (polled to a deadline).
    let r = c.post(format!("{base}/v1/kv/b/expire")).body(r#"{"ttl_ms": 300}"#).send().await.expect("expire");
    assert_eq!(json(r).await, serde_json::json!({"applied": true}));
    let ttl = json(c.get(format!("{base}/v1/kv/b/ttl")).send().await.expect("ttl")).await["ttl_ms"].as_i64();
    assert!(ttl.is_some_and(|t| (0..=300).contains(&t)), "{ttl:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while c
        .get(format!("{base}/v1/kv/b/exists"))
        .send()
        .await
        .expect("exists")
        .json::<Value>()
        .await
        .expect("json")
        != serde_json::json!({"exists": false})
    {
        assert!(Instant::now() < deadline, "the key did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.get(format!("{base}/v1/kv/b/ttl")).send().await.expect("ttl");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .post(format!("{base}/v1/kv/f/expire"))
        .body(r#"{"ttl_ms": 1, "persist": true}"#)
        .send()
        .await
        .expect("expire");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(r).await["error"]["code"], "INVALID_ARGUMENT");

    // Hash: HSETNX with If-None-Match, an increment, the length.
    let field = |f: &str| format!("{base}/v1/hash/h/{f}");
    let r = c.put(field("f")).header("if-none-match", "*").body("v").send().await.expect("hsetnx");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.put(field("f")).header("if-none-match", "*").body("w").send().await.expect("hsetnx");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = c.post(format!("{}/incr", field("n"))).query(&[("by", "-4")]).send().await.expect("hincr");
    assert_eq!(json(r).await, serde_json::json!({"value": -4}));
    let r = c.get(format!("{base}/v1/hash/h?len=true")).send().await.expect("hlen");
    assert_eq!(json(r).await, serde_json::json!({"length": 2}));
    let got = tcp.call(Command::HashGet(cmd::HashGet {
        key: Bytes::from_static(b"h"),
        field: Bytes::from_static(b"f"),
    }));
    assert_eq!(got.await.ok(), Some(Reply::Bytes(Some(Bytes::from_static(b"v")))), "the 412 wrote nothing");
    let r = c.post(format!("{base}/v1/kv/h/getdel")).send().await.expect("getdel");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(json(r).await["error"]["code"], "WRONGTYPE");

    // List: set, trim, length.
    for v in ["a", "b", "c"] {
        c.post(format!("{base}/v1/list/l")).body(v).send().await.expect("push");
    }
    let r = c.put(format!("{base}/v1/list/l/-1")).body("C").send().await.expect("lset");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.post(format!("{base}/v1/list/l/trim?start=1&stop=2")).send().await.expect("ltrim");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got =
        tcp.call(Command::ListRange(cmd::ListRange { key: Bytes::from_static(b"l"), start: 0, stop: -1 }));
    assert_eq!(got.await.ok(), Some(Reply::List(vec![Bytes::from_static(b"b"), Bytes::from_static(b"C")])));
    let r = c.get(format!("{base}/v1/list/l?len=true")).send().await.expect("llen");
    assert_eq!(json(r).await, serde_json::json!({"length": 2}));

    // Keyspace: count, type of a random key, flush.
    let count = json(c.get(format!("{base}/v1/keyspace/count")).send().await.expect("count")).await;
    assert_eq!(count, serde_json::json!({"value": 4}), "x y+z/1, f, h, l");
    let random = json(c.get(format!("{base}/v1/keyspace/random")).send().await.expect("random")).await;
    assert!(["x y+z/1", "f", "h", "l"].contains(&random["key"].as_str().unwrap_or_default()), "{random}");
    let r = c.delete(format!("{base}/v1/keyspace")).send().await.expect("flush");
    assert_eq!(json(r).await, serde_json::json!({"value": 4}));
    let Ok(Reply::Int(0)) = tcp.call(Command::KeyCount(cmd::KeyCount {})).await else {
        panic!("the flush emptied the keyspace");
    };
    server.shutdown().await;
}

#[tokio::test]
async fn get_range_answers_the_raw_bytes_of_a_range() {
    let (server, base) = http_server().await;
    let c = reqwest::Client::new();
    c.put(format!("{base}/v1/kv/s")).body("This is a string").send().await.expect("put");
    let r = c.get(format!("{base}/v1/kv/s/range?start=-6&end=-1")).send().await.expect("range");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body"), "string");
    let r = c.get(format!("{base}/v1/kv/nope/range?start=0&end=-1")).send().await.expect("range");
    assert_eq!((r.status(), r.bytes().await.expect("body").len()), (StatusCode::OK, 0));
    let r = c.get(format!("{base}/v1/kv/s/range?start=x&end=1")).send().await.expect("range");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(json(r).await["error"]["code"].is_string());
    server.shutdown().await;
}
