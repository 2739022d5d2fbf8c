//! Router tests: every route and every error, through the full layer stack, with `oneshot`.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use nanodb_protocol::cmd;
use nanodb_protocol::{Command, Limits, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::config::Config;

fn context(config: Config) -> Context {
    Context::for_tests(config)
}

fn app() -> (Router, Context) {
    let ctx = context(Config::all_off());
    (router(ctx.clone()), ctx)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error with this status and code.
    fn error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        let j = self.json();
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(j["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(body.into()).expect("request")).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    Resp { status, headers, body }
}

async fn get(app: &Router, uri: &str) -> Resp {
    call(app, Method::GET, uri, &[], Body::empty()).await
}

async fn put(app: &Router, uri: &str, body: &'static [u8]) -> Resp {
    call(app, Method::PUT, uri, &[], Bytes::from_static(body)).await
}

#[tokio::test]
async fn put_get_head_delete_round_trip_raw_bytes() {
    let (app, ctx) = app();
    let value: &'static [u8] = b"\x00\xffbinary\r\n\x00";
    let r = put(&app, "/v1/kv/k", value).await;
    assert_eq!(r.status, StatusCode::CREATED, "first write creates");
    let v1 = r.json()["version"].as_u64().expect("version");
    assert_eq!(r.headers[header::ETAG], format!("\"{v1}\"").as_str());

    let r = get(&app, "/v1/kv/k").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], value, "byte for byte");
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(r.headers[header::ETAG], format!("\"{v1}\"").as_str());
    assert!(r.headers.get(TTL_HEADER).is_none(), "no TTL header without a TTL");

    let r = call(&app, Method::HEAD, "/v1/kv/k", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(r.headers[header::ETAG], format!("\"{v1}\"").as_str());

    let r = put(&app, "/v1/kv/k", b"v2").await;
    assert_eq!(r.status, StatusCode::OK, "second write replaces");
    assert!(r.json()["version"].as_u64().expect("version") > v1);

    let r = call(&app, Method::DELETE, "/v1/kv/k", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    call(&app, Method::DELETE, "/v1/kv/k", &[], Body::empty())
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get(&app, "/v1/kv/k").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(ctx.stats.ops(Protocol::Http), 7, "every engine operation is recorded once");
    assert_eq!(ctx.stats.errors(Protocol::Http), 0, "a missing key is an answer, not an error");
}

#[tokio::test]
async fn get_as_json_encodes_text_and_binary() {
    let (app, _) = app();
    put(&app, "/v1/kv/t?ttl_ms=60000", b"hello").await;
    put(&app, "/v1/kv/%FFb", b"\x00\xff").await;
    let accept = [("accept", "application/json")];
    let j = call(&app, Method::GET, "/v1/kv/t", &accept, Body::empty()).await.json();
    assert_eq!(
        (j["key"].as_str(), j["value"].as_str(), j["encoding"].as_str()),
        (Some("t"), Some("hello"), Some("utf8"))
    );
    let ttl = j["ttl_ms"].as_i64().expect("ttl");
    assert!(ttl > 0 && ttl <= 60_000, "{j}");
    assert!(j["version"].as_u64().is_some());
    let j = call(&app, Method::GET, "/v1/kv/%FFb", &accept, Body::empty()).await.json();
    assert_eq!((j["value"].as_str(), j["encoding"].as_str()), (Some("AP8="), Some("base64")));
    assert_eq!((j["key"].as_str(), j["key_encoding"].as_str()), (Some("/2I="), Some("base64")));
    assert!(j["ttl_ms"].is_null());
    call(&app, Method::GET, "/v1/kv/nope", &accept, Body::empty())
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn ttl_header_and_bad_query_parameters() {
    let (app, _) = app();
    assert_eq!(put(&app, "/v1/kv/t?ttl_ms=60000", b"v").await.status, StatusCode::CREATED);
    let r = get(&app, "/v1/kv/t").await;
    let ttl: i64 = r.headers[TTL_HEADER].to_str().expect("ascii").parse().expect("number");
    assert!(ttl > 0 && ttl <= 60_000);
    put(&app, "/v1/kv/t?ttl_ms=soon", b"v").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/kv/t?ttl_ms=-5", b"v").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert_eq!(put(&app, "/v1/kv/t", b"v").await.status, StatusCode::OK);
    assert!(
        get(&app, "/v1/kv/t").await.headers.get(TTL_HEADER).is_none(),
        "a PUT without ttl_ms clears the TTL"
    );
}

#[tokio::test]
async fn keys_are_bytes_from_one_percent_decoded_segment() {
    let (app, ctx) = app();
    for (path, key) in [
        ("/v1/kv/a%2Fb%2Fc", &b"a/b/c"[..]),
        ("/v1/kv/with%20space", b"with space"),
        ("/v1/kv/caf%C3%A9", "café".as_bytes()),
        ("/v1/kv/%FF%00%01", b"\xff\x00\x01"),
        ("/v1/kv/incr", b"incr"),
    ] {
        assert_eq!(put(&app, path, b"v").await.status, StatusCode::CREATED, "{path}");
        let got =
            ctx.engine.execute(Command::Get(cmd::Get { key: Bytes::copy_from_slice(key) })).expect("get");
        assert!(matches!(got, Reply::Value(Some(_))), "{path} stored under the decoded key");
        assert_eq!(&get(&app, path).await.body[..], b"v");
    }
    get(&app, "/v1/kv/a/b/c").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn conditional_put_and_delete() {
    let (app, _) = app();
    let inm = [("if-none-match", "*")];
    let r = call(&app, Method::PUT, "/v1/kv/c", &inm, "a").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let v = r.json()["version"].as_u64().expect("version");
    call(&app, Method::PUT, "/v1/kv/c", &inm, "b")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");

    let stale = [("if-match", "\"999999\"")];
    call(&app, Method::PUT, "/v1/kv/c", &stale, "b")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    let tag = format!("\"{v}\"");
    let r = call(&app, Method::PUT, "/v1/kv/c", &[("if-match", &tag)], "b").await;
    assert_eq!(r.status, StatusCode::OK);
    let v2 = r.json()["version"].as_u64().expect("version");
    call(&app, Method::PUT, "/v1/kv/c", &[("if-match", &tag)], "x")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    assert_eq!(&get(&app, "/v1/kv/c").await.body[..], b"b", "failed conditions change nothing");

    let any = [("if-match", "*")];
    assert_eq!(call(&app, Method::PUT, "/v1/kv/c", &any, "c").await.status, StatusCode::OK);
    call(&app, Method::PUT, "/v1/kv/missing", &any, "c")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    assert_eq!(get(&app, "/v1/kv/missing").await.status, StatusCode::NOT_FOUND);

    call(&app, Method::PUT, "/v1/kv/c", &[("if-match", "W/\"1\"")], "c")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    call(&app, Method::PUT, "/v1/kv/c", &[("if-none-match", "\"1\"")], "c")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    call(&app, Method::PUT, "/v1/kv/c", &[("if-match", "*"), ("if-none-match", "*")], "c")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");

    // DELETE honours If-Match atomically (Command::DeleteIf).
    let v3 = get(&app, "/v1/kv/c").await.headers[header::ETAG].to_str().expect("etag").to_string();
    assert_ne!(v3, format!("\"{v2}\""));
    call(&app, Method::DELETE, "/v1/kv/c", &[("if-match", &format!("\"{v2}\""))], Body::empty())
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    assert_eq!(
        call(&app, Method::DELETE, "/v1/kv/c", &[("if-match", &v3)], Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    call(&app, Method::DELETE, "/v1/kv/c", &any, Body::empty())
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    call(&app, Method::DELETE, "/v1/kv/c", &inm, Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn limits_are_413_json() {
    let limits = Limits { max_key_len: 8, max_value_len: 16, ..Limits::default() };
    let ctx = context(Config { limits, ..Config::all_off() });
    let app = router(ctx);
    put(&app, "/v1/kv/k", &[b'x'; 17]).await.error(StatusCode::PAYLOAD_TOO_LARGE, "VALUE_TOO_LARGE");
    let huge = Bytes::from(vec![b'x'; 4 << 20]);
    call(&app, Method::PUT, "/v1/kv/k", &[], huge)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "VALUE_TOO_LARGE");
    put(&app, "/v1/kv/ninechars", b"v").await.error(StatusCode::PAYLOAD_TOO_LARGE, "KEY_TOO_LARGE");
    assert_eq!(put(&app, "/v1/kv/k", &[b'x'; 16]).await.status, StatusCode::CREATED, "at the limit is fine");
}

#[tokio::test]
async fn incr_and_type_errors() {
    let (app, _) = app();
    let r = call(&app, Method::POST, "/v1/kv/n/incr?by=5", &[], Body::empty()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"value": 5})));
    let r = call(&app, Method::POST, "/v1/kv/n/incr", &[], Body::empty()).await;
    assert_eq!(r.json(), json!({"value": 6}), "by defaults to 1");
    call(&app, Method::POST, "/v1/kv/n/incr?by=x", &[], Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let max = format!("/v1/kv/n/incr?by={}", i64::MAX);
    call(&app, Method::POST, &max, &[], Body::empty()).await.error(StatusCode::CONFLICT, "OVERFLOW");
    put(&app, "/v1/kv/s", b"text").await;
    call(&app, Method::POST, "/v1/kv/s/incr", &[], Body::empty())
        .await
        .error(StatusCode::CONFLICT, "NOT_AN_INTEGER");
    put(&app, "/v1/hash/h/f", b"v").await;
    call(&app, Method::POST, "/v1/kv/h/incr", &[], Body::empty())
        .await
        .error(StatusCode::CONFLICT, "WRONGTYPE");
    get(&app, "/v1/kv/h").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn scan_pages_visit_every_key_once() {
    let (app, _) = app();
    for i in 0..25 {
        put(&app, &format!("/v1/kv/p:{i:02}"), b"v").await;
    }
    put(&app, "/v1/kv/other", b"v").await;
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let j = get(&app, &format!("/v1/kv?prefix=p:&limit=10&cursor={cursor}")).await.json();
        pages += 1;
        for item in j["items"].as_array().expect("items") {
            assert_eq!(item["value"], "v");
            assert!(seen.insert(item["key"].as_str().expect("key").to_string()), "visited twice: {item}");
        }
        match j["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(pages < 20, "scan does not end");
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.iter().all(|k| k.starts_with("p:")));
    let j = get(&app, "/v1/kv?keys_only=true&limit=100").await.json();
    let items = j["items"].as_array().expect("items");
    assert_eq!(items.len(), 26);
    assert!(items.iter().all(|i| i.get("value").is_none() && i["version"].is_u64()));
    assert!(j["next_cursor"].is_null());
    get(&app, "/v1/kv?cursor=%21%21").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    get(&app, "/v1/kv?limit=99999999").await.error(StatusCode::BAD_REQUEST, "LIMIT_EXCEEDED");
    get(&app, "/v1/kv?limit=-1").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn batch_applies_in_order_with_one_result_each() {
    let (app, _) = app();
    let ops = json!([
        {"op": "put", "key": "a", "value": "1"},
        {"op": "get", "key": "a"},
        {"op": "incr", "key": "a", "by": 2},
        {"op": "put", "key": "/w==", "value": "AP8=", "encoding": "base64"},
        {"op": "get", "key": "/w==", "encoding": "base64"},
        {"op": "put", "key": "a", "value": "x", "if_absent": true},
        {"op": "exists", "key": "a"},
        {"op": "get", "key": "missing"},
        {"op": "incr", "key": "b64"},
        {"op": "put", "key": "b64", "value": "text"},
        {"op": "incr", "key": "b64"},
        {"op": "delete", "key": "a"},
    ]);
    let r = call(&app, Method::POST, "/v1/batch", &[], ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let res = r.json();
    let res = res.as_array().expect("array");
    assert_eq!(res.len(), 12);
    assert_eq!(res[0]["ok"]["applied"], true);
    assert_eq!(res[1]["ok"]["value"], "1");
    assert_eq!(res[2]["ok"], json!({"value": 3}), "incr answers as its route does");
    assert_eq!((&res[4]["ok"]["value"], &res[4]["ok"]["encoding"]), (&json!("AP8="), &json!("base64")));
    assert_eq!(res[5]["ok"]["applied"], false);
    assert_eq!(res[6]["ok"], json!({"exists": true}));
    assert!(res[7]["ok"].is_null());
    assert_eq!(res[10]["error"]["code"], "NOT_AN_INTEGER", "one failure does not stop the batch");
    assert_eq!(res[11]["ok"], true);

    call(&app, Method::POST, "/v1/batch", &[], "[{").await.error(StatusCode::BAD_REQUEST, "MALFORMED");
    call(&app, Method::POST, "/v1/batch", &[], r#"[{"op":"fly","key":"a"}]"#)
        .await
        .error(StatusCode::BAD_REQUEST, "MALFORMED");
    call(&app, Method::POST, "/v1/batch", &[], r#"[{"op":"get","key":"!","encoding":"base64"}]"#)
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    call(&app, Method::POST, "/v1/batch", &[], r#"[{"op":"get","key":""}]"#)
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let long = serde_json::to_string(&vec![json!({"op": "get", "key": "a"}); 1025]).expect("json");
    call(&app, Method::POST, "/v1/batch", &[], long).await.error(StatusCode::BAD_REQUEST, "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn hash_routes() {
    let (app, _) = app();
    let r = put(&app, "/v1/hash/h/f%2F1", b"\x00v").await;
    assert_eq!((r.status, r.json()), (StatusCode::CREATED, json!({"created": true})));
    let r = put(&app, "/v1/hash/h/f%2F1", b"\x00w").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"created": false})));
    put(&app, "/v1/hash/h/g", b"text").await;
    let r = get(&app, "/v1/hash/h/f%2F1").await;
    assert_eq!(&r.body[..], b"\x00w");
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
    let j = get(&app, "/v1/hash/h").await.json();
    let mut fields: Vec<_> = j["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or("").to_string())
        .collect();
    fields.sort();
    assert_eq!(fields, ["f/1", "g"]);
    get(&app, "/v1/hash/h/nope").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get(&app, "/v1/hash/nope").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        call(&app, Method::DELETE, "/v1/hash/h/g", &[], Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    call(&app, Method::DELETE, "/v1/hash/h/g", &[], Body::empty())
        .await
        .error(StatusCode::NOT_FOUND, "NOT_FOUND");
    put(&app, "/v1/kv/s", b"v").await;
    put(&app, "/v1/hash/s/f", b"v").await.error(StatusCode::CONFLICT, "WRONGTYPE");
    get(&app, "/v1/hash/s").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn list_routes() {
    let (app, _) = app();
    for (q, v) in [("", "b"), ("?end=back", "c"), ("?end=front", "a")] {
        let r = call(&app, Method::POST, &format!("/v1/list/l{q}"), &[], v).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let j = get(&app, "/v1/list/l").await.json();
    let values: Vec<_> = j["values"].as_array().expect("values").iter().map(|v| v["value"].clone()).collect();
    assert_eq!(values, [json!("a"), json!("b"), json!("c")]);
    let j = get(&app, "/v1/list/l?start=1&stop=1").await.json();
    assert_eq!(j["values"][0]["value"], "b");
    let j = call(&app, Method::POST, "/v1/list/l/pop?end=front&count=2", &[], Body::empty()).await.json();
    assert_eq!(j["values"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["values"][0]["value"], "a");
    let j = call(&app, Method::POST, "/v1/list/l/pop", &[], Body::empty()).await.json();
    assert_eq!(j["values"][0]["value"], "c");
    let j = get(&app, "/v1/list/l").await.json();
    assert_eq!(j["values"], json!([]), "a missing list reads as empty");
    call(&app, Method::POST, "/v1/list/l?end=middle", &[], "x")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/kv/s", b"v").await;
    call(&app, Method::POST, "/v1/list/s", &[], "x").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn health_readiness_stats_metrics_openapi() {
    let (app, ctx) = app();
    assert_eq!(get(&app, "/healthz").await.json(), json!({"status": "ok"}));
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);
    put(&app, "/v1/kv/a", b"v").await;
    get(&app, "/v1/kv/a").await;

    let j = get(&app, "/v1/stats").await.json();
    assert_eq!(j["keys"], 1);
    assert!(j["memory_bytes"].as_u64().is_some_and(|m| m > 0));
    assert!(j["uptime_s"].is_u64());
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    let http =
        j["protocols"].as_array().expect("protocols").iter().find(|p| p["protocol"] == "http").cloned();
    assert_eq!(http.map(|p| p["ops"].clone()), Some(json!(2)));

    let r = get(&app, "/metrics").await;
    assert!(
        r.headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body.to_vec()).expect("utf8");
    for line in [
        "# TYPE nanodb_request_duration_seconds histogram",
        "nanodb_request_duration_seconds_bucket{protocol=\"http\",op=\"get\",le=\"+Inf\"} 1",
        "nanodb_request_duration_seconds_count{protocol=\"http\",op=\"put\"} 1",
        "nanodb_requests_total{protocol=\"http\"} 2",
        "nanodb_errors_total{protocol=\"http\"} 0",
        "nanodb_keys 1",
        "nanodb_connections{protocol=\"http\"} 0",
        "nanodb_feed_subscribers 0",
        "nanodb_feed_lagged_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("nanodb_request_duration_seconds_sum{protocol=\"http\",op=\"get\"} "));
    assert!(text.contains("nanodb_resident_memory_bytes "));
    assert!(text.contains("le=\"0.00001\""), "buckets are in seconds");

    let j = get(&app, "/openapi.json").await.json();
    assert!(j["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/kv/{key}",
        "/v1/kv/{key}/incr",
        "/v1/kv",
        "/v1/batch",
        "/v1/hash/{key}/{field}",
        "/v1/list/{key}/pop",
        "/metrics",
        "/v1/watch",
        "/v1/subscribe/{channel}",
        "/v1/publish/{channel}",
        "/v1/ws",
    ] {
        assert!(j["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(j["paths"]["/v1/kv/{key}"].get("put").is_some());
    for sse in ["/v1/watch", "/v1/subscribe/{channel}"] {
        let content = &j["paths"][sse]["get"]["responses"]["200"]["content"];
        assert!(
            content.get("text/event-stream").is_some(),
            "{sse} is documented as an event stream: {content}"
        );
    }
    let mut refs = Vec::new();
    collect_refs(&j, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
        assert!(j["components"]["schemas"].get(name).is_some(), "unresolvable {r} in the OpenAPI document");
    }

    ctx.shutdown.cancel();
    get(&app, "/readyz").await.error(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN");
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK, "still alive while draining");
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_root_is_an_index_of_routes_the_openapi_document_has() {
    let (app, _) = app();
    let r = get(&app, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let index = r.json();
    assert_eq!(index["name"], "NanoDB");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    let links = index["links"].as_object().expect("links");
    for name in ["openapi", "metrics", "healthz", "readyz", "kv"] {
        assert!(links.contains_key(name), "{name} missing from {index}");
    }
    let openapi = get(&app, "/openapi.json").await.json();
    assert!(openapi["paths"].get("/").is_some(), "the index is documented");
    for (name, path) in links {
        let path = path.as_str().expect("a path");
        assert!(openapi["paths"].get(path).is_some(), "{name}: {path} is not a route");
        // Plain GETs answer at once (event streams and the WebSocket need more than a GET).
        let plain_get =
            openapi["paths"][path].get("get").is_some() && !["/v1/watch", "/v1/ws"].contains(&path);
        if !path.contains('{') && plain_get {
            assert_eq!(get(&app, path).await.status, StatusCode::OK, "GET {path}");
        }
    }
    // Only GET: other methods on / and unknown routes keep the JSON errors.
    call(&app, Method::POST, "/", &[], Body::empty())
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
    get(&app, "/index.html").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let (app, _) = app();
    get(&app, "/nope").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get(&app, "/v1/kv/").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = call(&app, Method::POST, "/v1/kv/k", &[], Body::empty()).await;
    r.error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
    call(&app, Method::DELETE, "/v1/batch", &[], Body::empty())
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    // A limit of 0 sheds everything: the answer must be an immediate JSON 503 BUSY.
    let app = router(context(Config { max_in_flight: 0, ..Config::all_off() }));
    get(&app, "/healthz").await.error(StatusCode::SERVICE_UNAVAILABLE, "BUSY");
    // With room for one, a request stuck reading its body holds the only slot.
    let ctx = context(Config { max_in_flight: 1, ..Config::all_off() });
    let app = router(ctx);
    let stuck = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
    let req = Request::put("/v1/kv/k").body(stuck).expect("request");
    let held = tokio::spawn(app.clone().oneshot(req));
    tokio::task::yield_now().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = get(&app, "/healthz").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            r.error(StatusCode::SERVICE_UNAVAILABLE, "BUSY");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stuck request never took the slot");
        tokio::task::yield_now().await;
    }
    held.abort();
    let _ = held.await;
    assert_eq!(
        get(&app, "/healthz").await.status,
        StatusCode::OK,
        "the slot is given back when the request ends"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_past_the_deadline_get_503_timeout() {
    let config = Config { request_timeout: std::time::Duration::from_millis(50), ..Config::all_off() };
    let app = router(context(config));
    let stuck = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
    let resp = app
        .clone()
        .oneshot(Request::put("/v1/kv/k").body(stuck).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let j: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(j["error"]["code"], "TIMEOUT");
    assert_eq!(
        get(&app, "/v1/kv/k").await.status,
        StatusCode::NOT_FOUND,
        "the timed-out write changed nothing"
    );
}

#[tokio::test]
async fn json_is_compressed_when_asked_and_values_never_are() {
    let (app, _) = app();
    let big: &'static [u8] = &[b'a'; 4096];
    put(&app, "/v1/kv/big", big).await;
    let gz = [("accept-encoding", "gzip"), ("accept", "application/json")];
    let r = call(&app, Method::GET, "/v1/kv/big", &gz, Body::empty()).await;
    assert_eq!(r.headers[header::CONTENT_ENCODING], "gzip");
    let r = call(&app, Method::GET, "/v1/kv/big", &[("accept-encoding", "gzip")], Body::empty()).await;
    assert!(r.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(&r.body[..], big);
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let (app, _) = app();
    let pre = [("origin", "https://app.example"), ("access-control-request-method", "PUT")];
    let r = call(&app, Method::OPTIONS, "/v1/kv/k", &pre, Body::empty()).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let ctx = context(Config { cors_origins: vec!["https://app.example".into()], ..Config::all_off() });
    let app = router(ctx);
    let r = call(&app, Method::OPTIONS, "/v1/kv/k", &pre, Body::empty()).await;
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
    let r = call(&app, Method::GET, "/healthz", &[("origin", "https://evil.example")], Body::empty()).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn every_json_response_ends_with_a_newline() {
    let limits = Limits { max_value_len: 16, ..Limits::default() };
    let app = router(context(Config { limits, ..Config::all_off() }));
    let empty = || Body::empty();
    let batch = r#"[{"op":"incr","key":"n"}]"#;
    let cases: Vec<(Method, &str, Body)> = vec![
        (Method::PUT, "/v1/kv/k", Body::from("v")),
        (Method::POST, "/v1/kv/n/incr", empty()),
        (Method::GET, "/v1/kv?limit=5", empty()),
        (Method::POST, "/v1/batch", Body::from(batch)),
        (Method::PUT, "/v1/hash/h/f", Body::from("v")),
        (Method::GET, "/v1/hash/h", empty()),
        (Method::POST, "/v1/list/l", Body::from("v")),
        (Method::GET, "/v1/list/l", empty()),
        (Method::POST, "/v1/list/l/pop", empty()),
        (Method::POST, "/v1/publish/c", Body::from("m")),
        (Method::GET, "/v1/kv/k/exists", empty()),
        (Method::GET, "/v1/kv/k/ttl", empty()),
        (Method::GET, "/v1/kv/k/type", empty()),
        (Method::POST, "/v1/kv/k/expire", Body::from(r#"{"persist":true}"#)),
        (Method::POST, "/v1/kv/k/append", Body::from("v")),
        (Method::POST, "/v1/kv/f/incr-float?by=1", empty()),
        (Method::GET, "/v1/keyspace/count", empty()),
        (Method::GET, "/v1/keyspace/random", empty()),
        (Method::POST, "/v1/hash/h/f2/incr", empty()),
        (Method::GET, "/v1/hash/h?len=true", empty()),
        (Method::GET, "/v1/list/l?len=true", empty()),
        (Method::GET, "/healthz", empty()),
        (Method::GET, "/readyz", empty()),
        (Method::GET, "/v1/stats", empty()),
        (Method::GET, "/openapi.json", empty()),
        // Errors: engine, extractor, body limit, routing.
        (Method::GET, "/v1/kv/missing", empty()),
        (Method::PUT, "/v1/kv/k?ttl_ms=x", Body::from("v")),
        (Method::PUT, "/v1/kv/k", Body::from("x".repeat(17))),
        (Method::POST, "/v1/batch", Body::from("[{")),
        (Method::GET, "/v1/watch", empty()),
        (Method::GET, "/v1/ws", empty()),
        (Method::GET, "/nope", empty()),
        (Method::POST, "/v1/kv/k", empty()),
        (Method::GET, "/v1/kv/missing/ttl", empty()),
        (Method::POST, "/v1/kv/k/expire", Body::from("{}")),
        (Method::POST, "/v1/kv/k/rename", empty()),
        (Method::PUT, "/v1/list/l/x", Body::from("v")),
        (Method::POST, "/v1/kv", Body::from("[]")),
        (Method::DELETE, "/v1/keyspace", empty()),
        (Method::GET, "/v1/keyspace/random", empty()),
    ];
    for (method, uri, body) in cases {
        let r = call(&app, method.clone(), uri, &[], body).await;
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json", "{method} {uri}");
        assert!(r.body.ends_with(b"\n"), "{method} {uri}: {:?}", r.body);
        assert_eq!(r.body.iter().filter(|&&b| b == b'\n').count(), 1, "{method} {uri}: one line");
        r.json();
    }
    // With Accept: application/json, a value is JSON too.
    let r = call(&app, Method::GET, "/v1/kv/k", &[("accept", "application/json")], Body::empty()).await;
    assert!(r.body.ends_with(b"}\n"), "{:?}", r.body);
    // Shed and timed-out requests are answered by the guard layer.
    let busy = router(context(Config { max_in_flight: 0, ..Config::all_off() }));
    assert!(get(&busy, "/v1/stats").await.body.ends_with(b"}\n"));
}

#[tokio::test]
async fn scan_items_say_their_type() {
    let (app, _) = app();
    put(&app, "/v1/kv/t:empty", b"").await;
    put(&app, "/v1/hash/t:h/f", b"v").await;
    call(&app, Method::POST, "/v1/list/t:l", &[], "x").await;
    call(&app, Method::POST, "/v1/kv/t:n/incr", &[], Body::empty()).await;
    let items = |j: Value| {
        let mut items: Vec<Value> = j["items"].as_array().expect("items").clone();
        items.sort_by_key(|i| i["key"].as_str().unwrap_or_default().to_owned());
        items
    };
    let got: Vec<_> = items(get(&app, "/v1/kv?prefix=t:").await.json())
        .iter()
        .map(|i| (i["key"].clone(), i["type"].clone(), i["value"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("t:empty"), json!("string"), json!("")),
            (json!("t:h"), json!("hash"), json!("")),
            (json!("t:l"), json!("list"), json!("")),
            (json!("t:n"), json!("string"), json!("1")),
        ],
        "an empty string, a hash and a list are told apart by their type"
    );
    let types: Vec<_> = items(get(&app, "/v1/kv?prefix=t:&keys_only=true").await.json())
        .iter()
        .map(|i| i["type"].clone())
        .collect();
    assert_eq!(types, [json!("string"), json!("hash"), json!("list"), json!("string")], "keys_only too");
    let doc = get(&app, "/openapi.json").await.json();
    let schema = &doc["components"]["schemas"]["ScanItem"];
    assert!(schema["required"].as_array().is_some_and(|r| r.contains(&json!("type"))), "{schema}");
}

/// The README's statuses for limits: 413 for a key, value or body over its size, 400
/// `LIMIT_EXCEEDED` for a count over its limit, and a batch refused whole.
#[tokio::test]
async fn documented_limits_answer_their_documented_status() {
    let limits =
        Limits { max_key_len: 8, max_value_len: 16, max_batch_len: 2, max_scan_page: 5, ..Limits::default() };
    let app = router(context(Config { limits, ..Config::all_off() }));
    let v17 = "x".repeat(17);
    let over_body = Bytes::from(vec![b'x'; 2 * 16 + JSON_BODY_SLACK + 1]);
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    for (method, uri, body, status, code) in [
        (Method::PUT, "/v1/kv/k", Body::from(v17.clone()), too_large, "VALUE_TOO_LARGE"),
        (Method::PUT, "/v1/kv/ninechars", Body::from("v"), too_large, "KEY_TOO_LARGE"),
        (Method::PUT, "/v1/kv/k", Body::from(over_body.clone()), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/batch", Body::from(over_body), too_large, "VALUE_TOO_LARGE"),
        (Method::PUT, "/v1/hash/h/f", Body::from(v17.clone()), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/list/l", Body::from(v17.clone()), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/publish/c", Body::from(v17.clone()), too_large, "VALUE_TOO_LARGE"),
        (
            Method::POST,
            "/v1/batch",
            Body::from(
                json!([{"op": "put", "key": "a", "value": "1"}, {"op": "put", "key": "b", "value": v17}])
                    .to_string(),
            ),
            too_large,
            "VALUE_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/batch",
            Body::from(
                json!([{"op": "put", "key": "a", "value": "1"}, {"op": "get", "key": "ninechars"}])
                    .to_string(),
            ),
            too_large,
            "KEY_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/batch",
            Body::from(serde_json::to_string(&vec![json!({"op": "get", "key": "a"}); 3]).expect("json")),
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
        ),
        (Method::GET, "/v1/kv?limit=6", Body::empty(), StatusCode::BAD_REQUEST, "LIMIT_EXCEEDED"),
    ] {
        let r = call(&app, method.clone(), uri, &[], body).await;
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (status, Some(code)), "{method} {uri}");
    }
    get(&app, "/v1/kv/a").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

async fn post(app: &Router, uri: &str, body: impl Into<Body>) -> Resp {
    call(app, Method::POST, uri, &[], body).await
}

#[tokio::test]
async fn exists_ttl_type_expire_and_rename_take_a_key_of_any_type() {
    let (app, ctx) = app();
    put(&app, "/v1/kv/s", b"v").await;
    put(&app, "/v1/hash/h/f", b"v").await;
    assert_eq!(get(&app, "/v1/kv/s/exists").await.json(), json!({"exists": true}));
    assert_eq!(get(&app, "/v1/kv/h/exists").await.json(), json!({"exists": true}), "any type");
    let r = get(&app, "/v1/kv/nope/exists").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"exists": false})), "an answer, not a 404");

    assert_eq!(get(&app, "/v1/kv/s/type").await.json(), json!({"type": "string"}));
    assert_eq!(get(&app, "/v1/kv/h/type").await.json(), json!({"type": "hash"}));
    get(&app, "/v1/kv/nope/type").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");

    assert_eq!(get(&app, "/v1/kv/s/ttl").await.json(), json!({"ttl_ms": null}), "no TTL is null");
    get(&app, "/v1/kv/nope/ttl").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = post(&app, "/v1/kv/h/expire", r#"{"ttl_ms": 60000}"#).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"applied": true})));
    let ttl = get(&app, "/v1/kv/h/ttl").await.json()["ttl_ms"].as_i64().expect("a TTL");
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    assert_eq!(post(&app, "/v1/kv/h/expire", r#"{"persist": true}"#).await.json(), json!({"applied": true}));
    assert_eq!(get(&app, "/v1/kv/h/ttl").await.json(), json!({"ttl_ms": null}));
    let r = post(&app, "/v1/kv/h/expire", r#"{"persist": true}"#).await;
    assert_eq!(r.json(), json!({"applied": false}), "persisting a key without TTL changes nothing");
    assert_eq!(post(&app, "/v1/kv/nope/expire", r#"{"ttl_ms": 5}"#).await.json(), json!({"applied": false}));
    // Not exactly one TTL, a zero TTL, and bodies that are not the expire body: 400.
    for (body, code) in [
        (r#"{"ttl_ms": 5, "at_ms": 5}"#, "INVALID_ARGUMENT"),
        (r#"{"ttl_ms": 5, "persist": true}"#, "INVALID_ARGUMENT"),
        ("{}", "INVALID_ARGUMENT"),
        (r#"{"persist": false}"#, "INVALID_ARGUMENT"),
        (r#"{"ttl_ms": 0}"#, "INVALID_ARGUMENT"),
        (r#"{"ttl_ms": -5}"#, "MALFORMED"),
        (r#"{"ttl": 5}"#, "MALFORMED"),
        ("", "MALFORMED"),
        ("soon", "MALFORMED"),
    ] {
        let r = post(&app, "/v1/kv/s/expire", body).await;
        r.error(StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(get(&app, "/v1/kv/s/ttl").await.json(), json!({"ttl_ms": null}), "bad bodies change nothing");
    // A deadline already past removes the key.
    assert_eq!(post(&app, "/v1/kv/s/expire", r#"{"at_ms": 1}"#).await.json(), json!({"applied": true}));
    get(&app, "/v1/kv/s").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");

    // Rename: any type, TTL kept, `to` any bytes (`+` a space, `%XX` a byte).
    post(&app, "/v1/kv/h/expire", r#"{"ttl_ms": 60000}"#).await;
    let r = post(&app, "/v1/kv/h/rename?to=new+h%2F%FF", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert!(r.body.is_empty());
    let moved = ctx.engine.execute(Command::HashGet(cmd::HashGet {
        key: Bytes::from_static(b"new h/\xff"),
        field: Bytes::from_static(b"f"),
    }));
    assert_eq!(moved.ok(), Some(Reply::Bytes(Some(Bytes::from_static(b"v")))));
    assert!(get(&app, "/v1/kv/new%20h%2F%FF/ttl").await.json()["ttl_ms"].as_i64().is_some(), "TTL moves");
    assert_eq!(get(&app, "/v1/kv/h/exists").await.json(), json!({"exists": false}));
    post(&app, "/v1/kv/h/rename?to=x", Body::empty()).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    post(&app, "/v1/kv/new%20h%2F%FF/rename", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    post(&app, "/v1/kv/new%20h%2F%FF/rename?to=", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    // GET-only and POST-only suffixes answer other methods with the JSON 405.
    post(&app, "/v1/kv/x/ttl", Body::empty()).await.error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
    get(&app, "/v1/kv/x/expire").await.error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn getset_getdel_getex_answer_the_value_like_get() {
    let (app, _) = app();
    // getset on a missing key writes it and has nothing to answer: 204.
    let r = post(&app, "/v1/kv/k/getset?ttl_ms=60000", "one").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::NO_CONTENT, 0));
    let v1 = get(&app, "/v1/kv/k").await.headers[header::ETAG].clone();
    // On an existing key: the previous value, raw, with its ETag and TTL.
    let r = post(&app, "/v1/kv/k/getset?keep_ttl=true", "two").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"one"[..]));
    assert_eq!(r.headers[header::ETAG], v1);
    assert!(r.headers.get(TTL_HEADER).is_some());
    assert_eq!(&get(&app, "/v1/kv/k").await.body[..], b"two");
    assert!(get(&app, "/v1/kv/k").await.headers.get(TTL_HEADER).is_some(), "keep_ttl kept it");
    let accept = [("accept", "application/json")];
    let r = call(&app, Method::POST, "/v1/kv/k/getset", &accept, "three").await;
    assert_eq!((r.json()["key"].clone(), r.json()["value"].clone()), (json!("k"), json!("two")));
    assert!(get(&app, "/v1/kv/k").await.headers.get(TTL_HEADER).is_none(), "no ttl_ms clears the TTL");
    // Conditions as on PUT; a failed one writes nothing.
    call(&app, Method::POST, "/v1/kv/k/getset", &[("if-none-match", "*")], "x")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    call(&app, Method::POST, "/v1/kv/k/getset", &[("if-match", "\"1\"")], "x")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    call(&app, Method::POST, "/v1/kv/missing/getset", &[("if-match", "*")], "x")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    assert_eq!(&get(&app, "/v1/kv/k").await.body[..], b"three");
    get(&app, "/v1/kv/missing").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let tag = get(&app, "/v1/kv/k").await.headers[header::ETAG].to_str().expect("ascii").to_string();
    let r = call(&app, Method::POST, "/v1/kv/k/getset", &[("if-match", &tag)], "four").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"three"[..]));
    post(&app, "/v1/kv/k/getset?ttl_ms=5&keep_ttl=true", "x")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/hash/h/f", b"v").await;
    post(&app, "/v1/kv/h/getset", "x").await.error(StatusCode::CONFLICT, "WRONGTYPE");
    assert_eq!(get(&app, "/v1/kv/h/type").await.json(), json!({"type": "hash"}), "nothing written");

    // getex: the value, with the TTL it now has.
    let r = call(&app, Method::POST, "/v1/kv/k/getex", &accept, r#"{"ttl_ms": 60000}"#).await;
    let j = r.json();
    assert_eq!(j["value"], "four");
    assert!(j["ttl_ms"].as_i64().is_some_and(|t| t > 0 && t <= 60_000), "{j}");
    let r = post(&app, "/v1/kv/k/getex", r#"{"persist": true}"#).await;
    assert_eq!(&r.body[..], b"four");
    assert!(r.headers.get(TTL_HEADER).is_none());
    post(&app, "/v1/kv/k/getex", "{}").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    post(&app, "/v1/kv/k/getex", r#"{"at_ms": 0}"#).await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    post(&app, "/v1/kv/nope/getex", r#"{"persist": true}"#).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    post(&app, "/v1/kv/h/getex", r#"{"persist": true}"#).await.error(StatusCode::CONFLICT, "WRONGTYPE");

    // getdel: the value, then nothing.
    let r = call(&app, Method::POST, "/v1/kv/k/getdel", &accept, Body::empty()).await;
    assert_eq!(r.json()["value"], "four");
    post(&app, "/v1/kv/k/getdel", Body::empty()).await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get(&app, "/v1/kv/k").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    post(&app, "/v1/kv/h/getdel", Body::empty()).await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn append_and_incr_float() {
    let limits = Limits { max_value_len: 8, ..Limits::default() };
    let app = router(context(Config { limits, ..Config::all_off() }));
    let r = post(&app, "/v1/kv/a/append", "abc").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"length": 3})), "a missing key counts as empty");
    assert_eq!(post(&app, "/v1/kv/a/append", "\x00\u{ff}").await.json(), json!({"length": 6}));
    post(&app, "/v1/kv/a/append", "xyz").await.error(StatusCode::PAYLOAD_TOO_LARGE, "VALUE_TOO_LARGE");
    assert_eq!(get(&app, "/v1/kv/a").await.body.len(), 6, "the refused append changed nothing");

    let r = post(&app, "/v1/kv/f/incr-float?by=1.5", Body::empty()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"value": "1.5"})));
    assert_eq!(
        post(&app, "/v1/kv/f/incr-float?by=-3e0", Body::empty()).await.json(),
        json!({"value": "-1.5"})
    );
    assert_eq!(&get(&app, "/v1/kv/f").await.body[..], b"-1.5", "the answer is the stored text");
    for bad in ["?by=abc", "?by=inf", "?by=", ""] {
        post(&app, &format!("/v1/kv/f/incr-float{bad}"), Body::empty())
            .await
            .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    }
    post(&app, "/v1/kv/a/incr-float?by=1", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/hash/h/f", b"v").await;
    post(&app, "/v1/kv/h/incr-float?by=1", Body::empty()).await.error(StatusCode::CONFLICT, "WRONGTYPE");
    post(&app, "/v1/kv/h/append", "x").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn multi_put_and_the_keyspace_routes() {
    let limits = Limits { max_key_len: 8, max_batch_len: 3, ..Limits::default() };
    let app = router(context(Config { limits, ..Config::all_off() }));
    get(&app, "/v1/keyspace/random").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(get(&app, "/v1/keyspace/count").await.json(), json!({"value": 0}));
    let pairs = json!({"pairs": [
        {"key": "a", "value": "1"},
        {"key": "/w==", "value": "AP8=", "encoding": "base64"},
        {"key": "a", "value": "2"},
    ]});
    let r = post(&app, "/v1/kv", pairs.to_string()).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::NO_CONTENT, 0), "{:?}", r.body);
    assert_eq!(&get(&app, "/v1/kv/a").await.body[..], b"2", "a repeated key ends with its last value");
    assert_eq!(&get(&app, "/v1/kv/%FF").await.body[..], b"\x00\xff");
    // MSETNX: If-None-Match: * writes nothing when any key exists.
    let one_new = json!({"pairs": [{"key": "fresh", "value": "1"}, {"key": "a", "value": "3"}]}).to_string();
    call(&app, Method::POST, "/v1/kv", &[("if-none-match", "*")], one_new)
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    get(&app, "/v1/kv/fresh").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let all_new = json!({"pairs": [{"key": "fresh", "value": "1"}]}).to_string();
    let r = call(&app, Method::POST, "/v1/kv", &[("if-none-match", "*")], all_new.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    call(&app, Method::POST, "/v1/kv", &[("if-match", "*")], all_new)
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    for (body, status, code) in [
        (json!({"pairs": []}), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (
            json!({"pairs": vec![json!({"key": "a", "value": "1"}); 4]}),
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
        ),
        (
            json!({"pairs": [{"key": "a", "value": "9"}, {"key": "ninechars", "value": "1"}]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "KEY_TOO_LARGE",
        ),
        (
            json!({"pairs": [{"key": "a", "value": "!", "encoding": "base64"}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (json!([{"key": "a", "value": "1"}]), StatusCode::BAD_REQUEST, "MALFORMED"),
    ] {
        post(&app, "/v1/kv", body.to_string()).await.error(status, code);
    }
    assert_eq!(&get(&app, "/v1/kv/a").await.body[..], b"2", "refused multi-puts write nothing");

    assert_eq!(get(&app, "/v1/keyspace/count").await.json(), json!({"value": 3}));
    let r = get(&app, "/v1/keyspace/random").await.json();
    let key = (r["key"].as_str(), r["key_encoding"].as_str());
    assert!(
        matches!(key, (Some("a" | "fresh"), Some("utf8")) | (Some("/w=="), Some("base64"))),
        "one of the keys, its bytes encoded: {r}"
    );
    let r = call(&app, Method::DELETE, "/v1/keyspace", &[], Body::empty()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"value": 3})));
    assert_eq!(get(&app, "/v1/keyspace/count").await.json(), json!({"value": 0}));
    get(&app, "/v1/keyspace/random").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get(&app, "/v1/keyspace").await.error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn hash_increments_only_new_fields_and_lengths_never_shadow_a_field() {
    let (app, _) = app();
    // Fields named like the words routes use are fields.
    for field in ["len", "incr"] {
        let r = put(&app, &format!("/v1/hash/h/{field}"), b"7").await;
        assert_eq!(r.status, StatusCode::CREATED, "{field}");
        assert_eq!(&get(&app, &format!("/v1/hash/h/{field}")).await.body[..], b"7");
    }
    let r = post(&app, "/v1/hash/h/len/incr?by=3", Body::empty()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"value": 10})));
    assert_eq!(post(&app, "/v1/hash/h/new/incr", Body::empty()).await.json(), json!({"value": 1}));
    assert_eq!(get(&app, "/v1/hash/h?len=true").await.json(), json!({"length": 3}));
    assert_eq!(get(&app, "/v1/hash/nope?len=true").await.json(), json!({"length": 0}), "missing: 0");
    assert!(get(&app, "/v1/hash/h?len=false").await.json()["fields"].is_array());
    get(&app, "/v1/hash/h?len=maybe").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/hash/h/s", b"text").await;
    post(&app, "/v1/hash/h/s/incr", Body::empty()).await.error(StatusCode::CONFLICT, "NOT_AN_INTEGER");
    post(&app, "/v1/hash/h/s/incr?by=x", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");

    // HSETNX: If-None-Match: * sets only a new field; If-Match has no meaning on a field.
    let inm = [("if-none-match", "*")];
    let r = call(&app, Method::PUT, "/v1/hash/h/once", &inm, "a").await;
    assert_eq!((r.status, r.json()), (StatusCode::CREATED, json!({"created": true})));
    call(&app, Method::PUT, "/v1/hash/h/once", &inm, "b")
        .await
        .error(StatusCode::PRECONDITION_FAILED, "CONDITION_FAILED");
    assert_eq!(&get(&app, "/v1/hash/h/once").await.body[..], b"a");
    call(&app, Method::PUT, "/v1/hash/h/once", &[("if-match", "*")], "b")
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");

    put(&app, "/v1/kv/s", b"v").await;
    call(&app, Method::PUT, "/v1/hash/s/f", &inm, "a").await.error(StatusCode::CONFLICT, "WRONGTYPE");
    post(&app, "/v1/hash/s/f/incr", Body::empty()).await.error(StatusCode::CONFLICT, "WRONGTYPE");
    get(&app, "/v1/hash/s?len=true").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

#[tokio::test]
async fn list_set_trim_and_len() {
    let (app, _) = app();
    for v in ["a", "b", "c", "d"] {
        post(&app, "/v1/list/l", v).await;
    }
    assert_eq!(get(&app, "/v1/list/l?len=true").await.json(), json!({"length": 4}));
    assert_eq!(get(&app, "/v1/list/nope?len=true").await.json(), json!({"length": 0}));
    let r = put(&app, "/v1/list/l/1", b"B").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::NO_CONTENT, 0));
    assert_eq!(
        put(&app, "/v1/list/l/-1", b"D").await.status,
        StatusCode::NO_CONTENT,
        "negative from the end"
    );
    let values = |j: Value| {
        j["values"].as_array().expect("values").iter().map(|v| v["value"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        values(get(&app, "/v1/list/l").await.json()),
        [json!("a"), json!("B"), json!("c"), json!("D")]
    );
    put(&app, "/v1/list/l/4", b"x").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/list/l/one", b"x").await.error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    put(&app, "/v1/list/nope/0", b"x").await.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // The words after a list's key are not indexes: other methods there are 405, not a set.
    put(&app, "/v1/list/l/pop", b"x").await.error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT");

    let r = post(&app, "/v1/list/l/trim?start=1&stop=-2", Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(values(get(&app, "/v1/list/l").await.json()), [json!("B"), json!("c")]);
    post(&app, "/v1/list/l/trim?start=1", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    post(&app, "/v1/list/l/trim?start=a&stop=1", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert_eq!(
        post(&app, "/v1/list/l/trim?start=5&stop=9", Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(&app, "/v1/kv/l/exists").await.json(),
        json!({"exists": false}),
        "an empty range removes it"
    );

    put(&app, "/v1/kv/s", b"v").await;
    put(&app, "/v1/list/s/0", b"x").await.error(StatusCode::CONFLICT, "WRONGTYPE");
    post(&app, "/v1/list/s/trim?start=0&stop=0", Body::empty())
        .await
        .error(StatusCode::CONFLICT, "WRONGTYPE");
    get(&app, "/v1/list/s?len=true").await.error(StatusCode::CONFLICT, "WRONGTYPE");
}

/// One operation of every data command, by its command-model name.
#[tokio::test]
async fn a_batch_takes_every_data_command_and_encodes_every_result() {
    let (app, _) = app();
    let ops = json!([
        {"op": "put", "key": "s", "value": "1"},                         // 0
        {"op": "get_set", "key": "s", "value": "2", "keep_ttl": true},  // 1
        {"op": "get_set", "key": "g", "value": "x", "if_absent": true}, // 2
        {"op": "exists", "key": "g"},                                   // 3
        {"op": "incr", "key": "s", "by": 2},                            // 4
        {"op": "incr_float", "key": "s", "by": 0.5},                    // 5
        {"op": "incr_float", "key": "s", "by": "1e1"},                  // 6
        {"op": "append", "key": "g", "value": "y"},                     // 7
        {"op": "ttl", "key": "g"},                                      // 8
        {"op": "expire", "key": "g", "ttl_ms": 60000},                  // 9
        {"op": "ttl", "key": "nope"},                                   // 10
        {"op": "type", "key": "g"},                                     // 11
        {"op": "type", "key": "nope"},                                  // 12
        {"op": "get_ex", "key": "g", "persist": true},                  // 13
        {"op": "get_del", "key": "g"},                                  // 14
        {"op": "get", "key": "g"},                                      // 15
        {"op": "multi_put", "pairs": [{"key": "m1", "value": "1"}, {"key": "/w==", "value": "AP8=", "encoding": "base64"}]}, // 16
        {"op": "multi_put", "pairs": [{"key": "m1", "value": "9"}], "if_absent": true}, // 17
        {"op": "rename", "key": "m1", "to": "m2"},                      // 18
        {"op": "rename", "key": "m1", "to": "m2"},                      // 19
        {"op": "scan", "prefix": "m"},                                  // 20
        {"op": "key_count"},                                            // 21
        {"op": "random_key"},                                           // 22
        {"op": "hash_set", "key": "h", "field": "f", "value": "v"},     // 23
        {"op": "hash_set_if_absent", "key": "h", "field": "f", "value": "w"}, // 24
        {"op": "hash_get", "key": "h", "field": "f"},                   // 25
        {"op": "hash_get", "key": "h", "field": "nope"},                // 26
        {"op": "hash_incr", "key": "h", "field": "n", "by": 5},         // 27
        {"op": "hash_len", "key": "h"},                                 // 28
        {"op": "hash_get_all", "key": "h"},                             // 29
        {"op": "hash_get_all", "key": "nope"},                          // 30
        {"op": "hash_delete", "key": "h", "field": "n"},                // 31
        {"op": "list_push", "key": "l", "values": ["a", "b", "c"]},     // 32
        {"op": "list_set", "key": "l", "index": 0, "value": "A"},       // 33
        {"op": "list_trim", "key": "l", "start": 0, "stop": 1},         // 34
        {"op": "list_len", "key": "l"},                                 // 35
        {"op": "list_range", "key": "l"},                               // 36
        {"op": "list_pop", "key": "l", "end": "front"},                 // 37
        {"op": "delete_if", "key": "m2", "version": 1},                 // 38
        {"op": "delete", "key": "m2"},                                  // 39
        {"op": "list_set", "key": "h", "index": 0, "value": "x"},       // 40
        {"op": "flush"},                                                // 41
        {"op": "key_count"},                                            // 42
        {"op": "random_key"},                                           // 43
        {"op": "put", "key": "r", "value": "This is a string"},         // 44
        {"op": "get_range", "key": "r", "start": -6, "end": -1},        // 45
        {"op": "delete", "key": "r"},                                   // 46
    ]);
    // Every data command is in this batch (Ping is liveness, Publish a channel, Batch the batch,
    // and neither a transaction nor a script is nested in a batch).
    let names: std::collections::BTreeSet<&str> =
        ops.as_array().expect("ops").iter().filter_map(|o| o["op"].as_str()).collect();
    let data: std::collections::BTreeSet<&str> = nanodb_protocol::CommandName::ALL
        .iter()
        .filter(|c| matches!(c.class(), nanodb_protocol::Class::Read | nanodb_protocol::Class::Write))
        .filter(|c| !matches!(c, nanodb_protocol::CommandName::Txn | nanodb_protocol::CommandName::Eval))
        .map(|c| c.as_str())
        .collect();
    assert_eq!(names, data, "one op per data command, named as the command");

    let r = post(&app, "/v1/batch", ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let res = r.json();
    let ok = |i: usize| res[i]["ok"].clone();
    assert_eq!(res.as_array().map(Vec::len), Some(47));
    assert_eq!(ok(0)["applied"], true);
    assert_eq!(
        (ok(1)["key"].clone(), ok(1)["value"].clone()),
        (json!("s"), json!("1")),
        "getset: the previous entry"
    );
    assert_eq!(ok(2), Value::Null, "nothing before");
    assert_eq!(ok(3), json!({"exists": true}));
    assert_eq!(ok(4), json!({"value": 4}));
    assert_eq!(ok(5), json!({"value": "4.5"}));
    assert_eq!(ok(6), json!({"value": "14.5"}), "decimal text or a JSON number");
    assert_eq!(ok(7), json!({"length": 2}));
    assert_eq!(ok(8), json!({"ttl_ms": null}), "no TTL");
    assert_eq!(ok(9), json!({"applied": true}));
    assert_eq!(ok(10), Value::Null, "a missing key");
    assert_eq!(ok(11), json!({"type": "string"}));
    assert_eq!(ok(12), Value::Null);
    assert_eq!((ok(13)["value"].clone(), ok(13)["ttl_ms"].clone()), (json!("xy"), Value::Null));
    assert_eq!(ok(14)["value"], "xy");
    assert_eq!(ok(15), Value::Null);
    assert_eq!((ok(16), ok(17)), (json!(true), json!(false)));
    assert_eq!(ok(18), json!(true));
    assert_eq!(res[19]["error"]["code"], "NOT_FOUND");
    let scanned: Vec<_> =
        ok(20)["items"].as_array().expect("items").iter().map(|i| i["key"].clone()).collect();
    assert_eq!(scanned, [json!("m2")]);
    assert!(ok(20)["next_cursor"].is_null());
    assert_eq!(ok(21), json!({"value": 3}));
    assert!(ok(22)["key"].is_string() && ok(22)["key_encoding"].is_string(), "{}", ok(22));
    assert_eq!((ok(23), ok(24)), (json!({"created": true}), json!({"created": false})));
    assert_eq!(ok(25), json!({"value": "v", "encoding": "utf8"}));
    assert_eq!(ok(26), Value::Null);
    assert_eq!((ok(27), ok(28)), (json!({"value": 5}), json!({"length": 2})));
    assert_eq!(ok(29)["fields"].as_array().map(Vec::len), Some(2));
    assert_eq!(ok(30), Value::Null, "a missing hash, as the route's 404");
    assert_eq!(ok(31), json!(true));
    assert_eq!(
        (ok(32), ok(33), ok(34), ok(35)),
        (json!({"length": 3}), json!(true), json!(true), json!({"length": 2}))
    );
    assert_eq!(
        ok(36),
        json!({"values": [{"value": "A", "encoding": "utf8"}, {"value": "b", "encoding": "utf8"}]})
    );
    assert_eq!(ok(37), json!({"values": [{"value": "A", "encoding": "utf8"}]}));
    assert_eq!((ok(38), ok(39)), (json!(false), json!(true)), "delete_if needs the version");
    assert_eq!(res[40]["error"]["code"], "WRONGTYPE");
    assert_eq!((ok(41), ok(42), ok(43)), (json!({"value": 4}), json!({"value": 0}), Value::Null));
    assert_eq!(ok(45), json!({"value": "string", "encoding": "utf8"}));

    // Bad operations refuse the whole batch before anything runs.
    for bad in [
        json!([{"op": "expire", "key": "a"}]),
        json!([{"op": "expire", "key": "a", "ttl_ms": 1, "persist": true}]),
        json!([{"op": "get_set", "key": "a", "value": "v", "ttl_ms": 1, "keep_ttl": true}]),
        json!([{"op": "incr_float", "key": "a", "by": "x"}]),
        json!([{"op": "list_push", "key": "l", "values": []}]),
        json!([{"op": "scan", "cursor": "!!"}]),
        json!([{"op": "rename", "key": "a", "to": ""}]),
    ] {
        let r = post(&app, "/v1/batch", bad.to_string()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    for bad in [
        json!([{"op": "ping"}]),
        json!([{"op": "publish", "channel": "c", "message": "m"}]),
        json!([{"op": "key_count", "key": "a"}]),
    ] {
        post(&app, "/v1/batch", bad.to_string()).await.error(StatusCode::BAD_REQUEST, "MALFORMED");
    }
    assert_eq!(
        get(&app, "/v1/keyspace/count").await.json(),
        json!({"value": 0}),
        "refused batches ran nothing"
    );
}

/// Over-limit keys, values and counts on the new routes: 413 for sizes, 400 for counts, checked
/// before anything is written.
#[tokio::test]
async fn new_routes_answer_limits_with_their_documented_status() {
    let limits = Limits { max_key_len: 8, max_value_len: 16, max_batch_len: 2, ..Limits::default() };
    let app = router(context(Config { limits, ..Config::all_off() }));
    post(&app, "/v1/list/l", "v").await;
    let v17 = || Body::from("x".repeat(17));
    let huge = || Body::from(vec![b'x'; 2 * 16 + JSON_BODY_SLACK + 1]);
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    for (method, uri, body, status, code) in [
        (Method::POST, "/v1/kv/k/append", v17(), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/kv/k/append", huge(), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/kv/k/getset", v17(), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/kv/ninechars/getset", Body::from("v"), too_large, "KEY_TOO_LARGE"),
        (Method::POST, "/v1/kv/ninechars/getdel", Body::empty(), too_large, "KEY_TOO_LARGE"),
        (Method::GET, "/v1/kv/ninechars/ttl", Body::empty(), too_large, "KEY_TOO_LARGE"),
        (Method::POST, "/v1/kv/k/rename?to=ninechars", Body::empty(), too_large, "KEY_TOO_LARGE"),
        (Method::POST, "/v1/kv/k/expire", huge(), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/hash/h/ninechars/incr", Body::empty(), too_large, "KEY_TOO_LARGE"),
        (Method::PUT, "/v1/list/l/0", v17(), too_large, "VALUE_TOO_LARGE"),
        (Method::POST, "/v1/kv", huge(), too_large, "VALUE_TOO_LARGE"),
        (
            Method::POST,
            "/v1/kv",
            Body::from(json!({"pairs": [{"key": "a", "value": "x".repeat(17)}]}).to_string()),
            too_large,
            "VALUE_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/kv",
            Body::from(json!({"pairs": vec![json!({"key": "a", "value": "1"}); 3]}).to_string()),
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
        ),
        (
            Method::POST,
            "/v1/batch",
            Body::from(json!([{"op": "list_push", "key": "l", "values": ["a", "b", "c"]}]).to_string()),
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
        ),
        (
            Method::POST,
            "/v1/batch",
            Body::from(
                json!([{"op": "multi_put", "pairs": vec![json!({"key": "a", "value": "1"}); 3]}]).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
        ),
        (
            Method::POST,
            "/v1/batch",
            Body::from(
                json!([{"op": "hash_set", "key": "h", "field": "ninechars", "value": "v"}]).to_string(),
            ),
            too_large,
            "KEY_TOO_LARGE",
        ),
    ] {
        let r = call(&app, method.clone(), uri, &[], body).await;
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (status, Some(code)), "{method} {uri}");
    }
    assert_eq!(get(&app, "/v1/keyspace/count").await.json(), json!({"value": 1}), "only the list");
}

/// Past `--max-memory` under `noeviction` a write is 507 OUT_OF_MEMORY; reads and deletes still
/// work, and `/v1/stats` shows the figures.
#[tokio::test]
async fn writes_past_max_memory_are_507_and_stats_show_the_memory() {
    let (app, ctx) = app();
    for i in 0..20 {
        assert!(put(&app, &format!("/v1/kv/k{i}"), b"0123456789").await.status.is_success());
    }
    let used = ctx.engine.used_memory();
    ctx.engine.set_memory_limit(used / 2, crate::engine::Policy::NoEviction).expect("a single node");
    put(&app, "/v1/kv/more", b"x").await.error(StatusCode::INSUFFICIENT_STORAGE, "OUT_OF_MEMORY");
    assert_eq!(get(&app, "/v1/kv/k0").await.status, StatusCode::OK);
    assert!(call(&app, Method::DELETE, "/v1/kv/k0", &[], Body::empty()).await.status.is_success());
    let stats = get(&app, "/v1/stats").await.json();
    assert_eq!(stats["max_memory_bytes"], used / 2);
    assert_eq!(stats["maxmemory_policy"], "noeviction");
    assert!(stats["used_memory_bytes"].as_u64().is_some_and(|u| u > used / 2), "{stats}");
    assert_eq!(stats["evicted_keys"], 0);
}
