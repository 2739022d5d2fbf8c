//! Users, permissions and authentication on every protocol, with real clients: the `redis`
//! crate and raw RESP for Redis's exact texts, the TCP codec, reqwest, the generated tonic
//! client. One users file serves every test:
//!
//! - `admin` may do everything; `alice` reads and writes `app:*` and uses `news:*`; `reader`
//!   only reads `app:*`; `bob` is disabled; `default` is off.
//!
//! Every refusal is checked to have changed nothing (an admin looks afterwards).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::wire::{PROTOCOL_VERSION, Password};
use nanodb_protocol::{ClientCodec, Command, Denied, Error, ErrorCode, Reply, Request, Response, cmd};
use nanodb_server::config::{AuthConfig, Config, ListenAddr};
use nanodb_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tonic::Code;

use crate::harness::{TcpClient, any_port, b, config};

const USERS: &str = "\
# the test users
user default off
user admin on >adminpw allkeys allchannels +@all
user alice on >alicepw ~app:* &news:* +@read +@write +@pubsub
user reader on >readpw %R~app:* +@read

user bob off >bobpw allkeys +@all
";

/// A server with every protocol on and `USERS` as its users file (in `dir`).
async fn server(dir: &Path) -> Server {
    let file = dir.join("users.acl");
    std::fs::write(&file, USERS).expect("users file");
    let auth = AuthConfig { users_file: Some(file), protected_mode: true, ..AuthConfig::default() };
    let config = Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        auth,
        ..config()
    };
    Server::start(config).await.expect("server starts")
}

fn addr(a: Option<SocketAddr>) -> SocketAddr {
    a.expect("listener on")
}

/// A raw RESP connection, for Redis's exact bytes.
struct Raw(TcpStream);

impl Raw {
    async fn connect(server: &Server) -> Self {
        Self(TcpStream::connect(addr(server.addrs().resp)).await.expect("connect"))
    }

    /// Sends one command and reads one single-line reply (status, error or integer).
    async fn line(&mut self, args: &[&str]) -> String {
        self.send(args).await;
        self.read_line().await
    }

    async fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.0.write_all(out.as_bytes()).await.expect("write");
    }

    async fn read_line(&mut self) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), self.0.read(&mut byte))
                .await
                .expect("a reply within 5 s")
                .expect("read");
            if n == 0 {
                break;
            }
            got.push(byte[0]);
        }
        String::from_utf8_lossy(&got).trim_end().to_string()
    }

    /// Whether the server closed the connection (EOF within 5 s).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(tokio::time::timeout(Duration::from_secs(5), self.0.read_to_end(&mut rest)).await, Ok(Ok(_)))
    }
}

async fn redis_as(server: &Server, user: &str, pass: &str) -> redis::aio::MultiplexedConnection {
    let url = format!("redis://{user}:{pass}@{}/", addr(server.addrs().resp));
    redis::Client::open(url).expect("client").get_multiplexed_async_connection().await.expect("connect")
}

async fn tcp_as(server: &Server, user: &str, pass: &str) -> TcpClient {
    let mut c = TcpClient::connect(addr(server.addrs().tcp)).await;
    let id = c.send_request(Request::Auth { user: b(user), password: Password(b(pass)) }).await;
    let (got, reply) = c.next_frame().await.expect("AUTH reply");
    assert_eq!((got, reply), (id, Response::Reply(Reply::Bool(true))), "AUTH {user}");
    c
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn http_base(server: &Server) -> String {
    format!("http://{}", addr(server.addrs().http))
}

async fn grpc(server: &Server) -> KvClient<tonic::transport::Channel> {
    let url = format!("http://{}", addr(server.addrs().grpc));
    KvClient::new(tonic::transport::Channel::from_shared(url).expect("uri").connect().await.expect("connect"))
}

fn with_auth<T>(msg: T, user: &str, pass: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", basic(user, pass).parse().expect("ascii"));
    r
}

fn gput(key: &str) -> pb::PutRequest {
    pb::PutRequest { key: b(key), value: b("v"), ..Default::default() }
}

/// The keys an admin sees, sorted.
async fn keys(server: &Server) -> Vec<String> {
    let mut admin = redis_as(server, "admin", "adminpw").await;
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut admin).await.expect("keys");
    keys.sort();
    keys
}

#[tokio::test]
async fn resp_authentication_speaks_redis_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["PING"]).await, "-NOAUTH Authentication required.");
    assert_eq!(c.line(&["GET", "app:1"]).await, "-NOAUTH Authentication required.");
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.";
    assert_eq!(c.line(&["AUTH", "alice", "nope"]).await, wrong, "wrong password");
    assert_eq!(c.line(&["AUTH", "nobody", "alicepw"]).await, wrong, "unknown user");
    assert_eq!(c.line(&["AUTH", "bob", "bobpw"]).await, wrong, "disabled user");
    assert_eq!(c.line(&["AUTH", "alicepw"]).await, wrong, "default is off");
    assert_eq!(c.line(&["HELLO", "3"]).await, "-NOPROTO sorry, this protocol version is not supported.");
    assert!(c.line(&["HELLO", "2"]).await.starts_with("-NOAUTH HELLO must be called"));
    c.send(&["HELLO", "2", "AUTH", "alice", "alicepw"]).await;
    assert_eq!(c.read_line().await, "*14", "HELLO 2 AUTH answers the server map");
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["AUTH", "alice", "alicepw"]).await, "+OK");
    assert_eq!(c.line(&["SET", "app:1", "v"]).await, "+OK");
    assert_eq!(c.line(&["SET", "other", "v"]).await, "-NOPERM No permissions to access a key");
    assert_eq!(
        c.line(&["CONFIG", "GET", "save"]).await,
        "-NOPERM User alice has no permissions to run the 'config|get' command"
    );
    assert_eq!(
        c.line(&["FLUSHALL"]).await,
        "-NOPERM User alice has no permissions to run the 'flushall' command"
    );
    assert_eq!(c.line(&["PUBLISH", "sport", "x"]).await, "-NOPERM No permissions to access a channel");
    assert_eq!(c.line(&["PUBLISH", "news:1", "x"]).await, ":0");
    c.send(&["ACL", "WHOAMI"]).await;
    assert_eq!((c.read_line().await, c.read_line().await), ("$5".into(), "alice".into()));
    let mut r = Raw::connect(&server).await;
    assert_eq!(r.line(&["AUTH", "reader", "readpw"]).await, "+OK");
    assert_eq!(
        r.line(&["SET", "app:1", "w"]).await,
        "-NOPERM User reader has no permissions to run the 'set' command"
    );
    // The `redis` crate, as clients use it: credentials in the URL.
    let mut alice = redis_as(&server, "alice", "alicepw").await;
    let v: String = redis::cmd("GET").arg("app:1").query_async(&mut alice).await.expect("get");
    assert_eq!(v, "v");
    let refused: redis::RedisResult<String> = redis::cmd("GET").arg("other").query_async(&mut alice).await;
    assert!(refused.expect_err("NOPERM").to_string().contains("No permissions to access a key"));
    let bad =
        redis::Client::open(format!("redis://alice:nope@{}/", addr(server.addrs().resp))).expect("client");
    assert!(bad.get_multiplexed_async_connection().await.is_err(), "wrong password fails to connect");
    assert_eq!(keys(&server).await, ["app:1"]);
}

#[tokio::test]
async fn a_write_outside_the_users_keys_is_refused_on_every_protocol_and_applies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    // RESP: single and multi-key commands, each refused whole.
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["AUTH", "alice", "alicepw"]).await, "+OK");
    assert_eq!(c.line(&["SET", "app:keep", "1"]).await, "+OK");
    let key = "-NOPERM No permissions to access a key";
    assert_eq!(c.line(&["SET", "other", "v"]).await, key);
    assert_eq!(c.line(&["MSET", "app:2", "x", "other", "y"]).await, key);
    assert_eq!(c.line(&["RENAME", "app:keep", "other"]).await, key);
    assert_eq!(c.line(&["DEL", "app:keep", "other"]).await, key, "DEL checks every key before any");
    // TCP: a command, and a batch with one forbidden operation.
    let mut t = tcp_as(&server, "alice", "alicepw").await;
    let put = |k: &str| {
        Command::Put(cmd::Put {
            key: b(k),
            value: b("v"),
            expiry: Default::default(),
            condition: Default::default(),
        })
    };
    assert_eq!(
        t.call(put("other")).await,
        Err(Error::Remote { code: ErrorCode::NoPerm, message: "No permissions to access a key".into() })
    );
    let batch = Command::Batch(cmd::Batch { ops: vec![put("app:3"), put("other")] });
    assert!(matches!(t.call(batch).await, Err(Error::Remote { code: ErrorCode::NoPerm, .. })));
    // HTTP: a route and a batch.
    let h = reqwest::Client::new();
    let base = http_base(&server);
    let r = h
        .put(format!("{base}/v1/kv/other"))
        .header("authorization", basic("alice", "alicepw"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "NOPERM");
    let ops = serde_json::json!([{"op": "put", "key": "app:4", "value": "v"}, {"op": "put", "key": "other", "value": "v"}]);
    let r = h
        .post(format!("{base}/v1/batch"))
        .header("authorization", basic("alice", "alicepw"))
        .json(&ops)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 403);
    // gRPC: an RPC and a batch.
    let mut g = grpc(&server).await;
    let e = g.put(with_auth(gput("other"), "alice", "alicepw")).await.expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let op = |k: &str| pb::Operation { op: Some(pb::operation::Op::Put(gput(k))) };
    let e = g
        .batch(with_auth(pb::BatchRequest { ops: vec![op("app:5"), op("other")] }, "alice", "alicepw"))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(g.put(with_auth(gput("app:6"), "alice", "alicepw")).await.is_ok(), "its own keys are fine");
    assert_eq!(keys(&server).await, ["app:6", "app:keep"], "nothing refused was applied");
}

#[tokio::test]
async fn scans_and_watches_beyond_the_users_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["AUTH", "alice", "alicepw"]).await, "+OK");
    let key = "-NOPERM No permissions to access a key";
    assert_eq!(c.line(&["SCAN", "0"]).await, key, "SCAN without MATCH could deliver any key");
    assert_eq!(c.line(&["KEYS", "*"]).await, key);
    assert_eq!(c.line(&["DBSIZE"]).await, key, "counting every key needs allkeys");
    c.send(&["KEYS", "app:*"]).await;
    assert_eq!(c.read_line().await, "*0");
    let mut t = tcp_as(&server, "alice", "alicepw").await;
    let scan = |p: &str| Command::Scan(cmd::Scan { prefix: b(p), limit: 0, cursor: Bytes::new() });
    assert!(matches!(t.call(scan("ap")).await, Err(Error::Remote { code: ErrorCode::NoPerm, .. })));
    assert!(t.call(scan("app:")).await.is_ok());
    let watch = |p: &str| {
        Request::Subscription(nanodb_protocol::Subscription::Watch {
            key: b(p),
            prefix: true,
            with_values: false,
        })
    };
    let id = t.send_request(watch("")).await;
    assert!(
        matches!(t.next_frame().await, Some((got, Response::Error(Error::Remote { code: ErrorCode::NoPerm, .. }))) if got == id)
    );
    let id = t.send_request(watch("app:")).await;
    assert_eq!(t.next_frame().await, Some((id, Response::Reply(Reply::Int(1)))));
    let mut g = grpc(&server).await;
    let w = pb::WatchRequest { key: b("ap"), prefix: true, ..Default::default() };
    let e = g.watch(with_auth(w, "alice", "alicepw")).await.expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/watch?prefix=", http_base(&server)))
        .header("authorization", basic("alice", "alicepw"))
        .send()
        .await
        .expect("watch");
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn websockets_authenticate_at_the_upgrade_and_check_each_topic() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let url = format!("ws://{}/v1/ws", addr(server.addrs().http));
    let refused = tokio_tungstenite::connect_async(url.clone()).await.expect_err("no credentials");
    assert!(refused.to_string().contains("401"), "{refused}");
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("authorization", HeaderValue::from_str(&basic("alice", "alicepw")).expect("ascii"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("authenticated upgrade");
    let mut ask = async |msg: serde_json::Value| -> serde_json::Value {
        ws.send(Message::text(msg.to_string())).await.expect("send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer");
            if let Message::Text(t) = m.expect("open").expect("no error") {
                return serde_json::from_str(t.as_str()).expect("JSON");
            }
        }
    };
    let a = ask(serde_json::json!({"op": "watch", "prefix": "other"})).await;
    assert_eq!(a["error"]["code"], "NOPERM", "{a}");
    let a = ask(serde_json::json!({"op": "subscribe", "channel": "sport"})).await;
    assert_eq!(a["error"]["code"], "NOPERM", "{a}");
    let a = ask(serde_json::json!({"op": "watch", "prefix": "app:"})).await;
    assert_eq!(a["type"], "ack", "{a}");
    let a = ask(serde_json::json!({"op": "publish", "channel": "sport", "message": "x"})).await;
    assert_eq!(a["error"]["code"], "NOPERM", "{a}");
}

#[tokio::test]
async fn pubsub_needs_the_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["AUTH", "alice", "alicepw"]).await, "+OK");
    let channel = "-NOPERM No permissions to access a channel";
    assert_eq!(c.line(&["SUBSCRIBE", "news:1", "sport"]).await, channel, "refused whole");
    assert_eq!(c.line(&["PSUBSCRIBE", "*"]).await, channel);
    c.send(&["SUBSCRIBE", "news:1"]).await;
    assert_eq!(c.read_line().await, "*3", "a permitted channel subscribes");
    let h = reqwest::Client::new();
    let r = h
        .post(format!("{}/v1/publish/sport", http_base(&server)))
        .header("authorization", basic("alice", "alicepw"))
        .body("x")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 403);
    let mut g = grpc(&server).await;
    let s = pb::SubscribeRequest { channels: vec![b("sport")], ..Default::default() };
    assert_eq!(
        g.subscribe(with_auth(s, "alice", "alicepw")).await.expect_err("refused").code(),
        Code::PermissionDenied
    );
    let mut t = tcp_as(&server, "alice", "alicepw").await;
    let publish = Command::Publish(cmd::Publish { channel: b("sport"), message: b("x") });
    assert!(matches!(t.call(publish).await, Err(Error::Remote { code: ErrorCode::NoPerm, .. })));
}

#[tokio::test]
async fn acl_setuser_applies_to_live_connections_and_save_load_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut alice = Raw::connect(&server).await;
    assert_eq!(alice.line(&["AUTH", "alice", "alicepw"]).await, "+OK");
    assert_eq!(alice.line(&["SET", "app:1", "v"]).await, "+OK");
    let mut t = tcp_as(&server, "alice", "alicepw").await;
    let mut admin = Raw::connect(&server).await;
    assert_eq!(admin.line(&["AUTH", "admin", "adminpw"]).await, "+OK");
    assert_eq!(admin.line(&["ACL", "SETUSER", "alice", "-@write"]).await, "+OK");
    assert_eq!(
        alice.line(&["SET", "app:1", "w"]).await,
        "-NOPERM User alice has no permissions to run the 'set' command"
    );
    let del = Command::Delete(cmd::Delete { key: b("app:1") });
    assert!(matches!(t.call(del).await, Err(Error::Remote { code: ErrorCode::NoPerm, .. })), "live TCP too");
    assert!(
        admin
            .line(&["ACL", "SETUSER", "alice", "bogus"])
            .await
            .starts_with("-ERR Error in ACL SETUSER modifier 'bogus'")
    );
    // A password change ends the old password everywhere, cached HTTP credentials included.
    let h = reqwest::Client::new();
    let get = |user: &str, pass: &str| {
        h.get(format!("{}/v1/kv/app:1", http_base(&server))).header("authorization", basic(user, pass)).send()
    };
    assert_eq!(get("alice", "alicepw").await.expect("get").status(), 200);
    assert_eq!(admin.line(&["ACL", "SETUSER", "alice", "resetpass", ">newpw"]).await, "+OK");
    let r = get("alice", "alicepw").await.expect("get");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"nanodb\", Bearer realm=\"nanodb\"");
    assert_eq!(get("alice", "newpw").await.expect("get").status(), 200);
    // SAVE writes the file (digests, not passwords); LOAD brings it back over later changes.
    assert_eq!(admin.line(&["ACL", "SETUSER", "carol", "on", ">carolpw", "~c:*", "+@read"]).await, "+OK");
    assert_eq!(admin.line(&["ACL", "SAVE"]).await, "+OK");
    let text = std::fs::read_to_string(dir.path().join("users.acl")).expect("users file");
    assert!(text.contains("user carol on #") && !text.contains("carolpw"), "{text}");
    assert_eq!(admin.line(&["ACL", "DELUSER", "carol"]).await, ":1");
    assert_eq!(
        Raw::connect(&server).await.line(&["AUTH", "carol", "carolpw"]).await,
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(admin.line(&["ACL", "LOAD"]).await, "+OK");
    assert_eq!(Raw::connect(&server).await.line(&["AUTH", "carol", "carolpw"]).await, "+OK");
    std::fs::write(dir.path().join("users.acl"), "user admin on >adminpw allkeys +@all\nuser x frob\n")
        .expect("write");
    let e = admin.line(&["ACL", "LOAD"]).await;
    assert!(e.starts_with("-ERR") && e.contains("users.acl:2:"), "{e}");
    assert_eq!(
        Raw::connect(&server).await.line(&["AUTH", "carol", "carolpw"]).await,
        "+OK",
        "a failed LOAD changes nothing"
    );
    assert_eq!(
        alice.line(&["ACL", "LIST"]).await,
        "-NOPERM User alice has no permissions to run the 'acl|list' command"
    );
    // The listing commands, through the `redis` crate.
    let mut a = redis_as(&server, "admin", "adminpw").await;
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query_async(&mut a).await.expect("acl list");
    assert!(
        list.iter().any(|l| l.starts_with("user admin on #") && l.ends_with("~* allchannels +@all")),
        "{list:?}"
    );
    assert!(list.iter().any(|l| l.starts_with("user default off")), "{list:?}");
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query_async(&mut a).await.expect("acl users");
    assert_eq!(
        users,
        ["admin", "alice", "bob", "carol", "default", "reader"],
        "the failed LOAD kept them all"
    );
    let got: Vec<redis::Value> =
        redis::cmd("ACL").arg("GETUSER").arg("admin").query_async(&mut a).await.expect("getuser");
    assert_eq!(got.len(), 12, "flags, passwords, commands, keys, channels, selectors");
    let none: redis::Value =
        redis::cmd("ACL").arg("GETUSER").arg("nobody").query_async(&mut a).await.expect("getuser");
    assert_eq!(none, redis::Value::Nil);
    let cats: Vec<String> = redis::cmd("ACL").arg("CAT").query_async(&mut a).await.expect("acl cat");
    assert_eq!(cats, ["read", "write", "admin", "pubsub", "connection"]);
    let writes: Vec<String> =
        redis::cmd("ACL").arg("CAT").arg("write").query_async(&mut a).await.expect("acl cat write");
    assert!(writes.contains(&"set".to_string()) && !writes.contains(&"get".to_string()), "{writes:?}");
    let e: redis::RedisResult<i64> =
        redis::cmd("ACL").arg("DELUSER").arg("default").query_async(&mut a).await;
    assert!(e.expect_err("refused").to_string().contains("The 'default' user cannot be removed"));
}

#[tokio::test]
async fn unauthenticated_clients_are_limited_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    // RESP: 11 arguments or a 16 KiB + 1 bulk before AUTH close the connection, as Redis does.
    let mut c = Raw::connect(&server).await;
    let many: Vec<&str> = std::iter::repeat_n("x", 11).collect();
    c.send(&many).await;
    assert_eq!(c.read_line().await, "-ERR Protocol error: unauthenticated multibulk length");
    assert!(c.closed().await);
    let mut c = Raw::connect(&server).await;
    c.0.write_all(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n").await.expect("write");
    assert_eq!(c.read_line().await, "-ERR Protocol error: unauthenticated bulk length");
    assert!(c.closed().await);
    let mut c = Raw::connect(&server).await;
    assert_eq!(c.line(&["AUTH", "admin", "adminpw"]).await, "+OK");
    let mut mset = vec!["MSET"];
    mset.extend(std::iter::repeat_n("k", 12));
    assert_eq!(c.line(&mset).await, "+OK", "after AUTH the configured limits apply");
    // TCP: NOAUTH keeps the connection; a frame over 64 KiB before AUTH closes it.
    let mut t = TcpClient::connect(addr(server.addrs().tcp)).await;
    let get = Command::Get(cmd::Get { key: b("k") });
    assert_eq!(
        t.call(get.clone()).await,
        Err(Error::Remote { code: ErrorCode::NoAuth, message: "Authentication required.".into() })
    );
    let id = t.send_request(Request::Auth { user: b("admin"), password: Password(b("bad")) }).await;
    assert!(
        matches!(t.next_frame().await, Some((got, Response::Error(Error::Remote { code: ErrorCode::WrongPass, .. }))) if got == id)
    );
    assert!(t.call(get).await.is_err(), "still open, still anonymous");
    let stream = TcpStream::connect(addr(server.addrs().tcp)).await.expect("connect");
    let mut raw = Framed::new(stream, ClientCodec::default());
    raw.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.expect("hello");
    assert!(matches!(raw.next().await, Some(Ok((0, Response::Hello { .. })))));
    let big = Command::Put(cmd::Put {
        key: b("k"),
        value: Bytes::from(vec![b'x'; 70_000]),
        expiry: Default::default(),
        condition: Default::default(),
    });
    raw.send((1, big)).await.expect("send");
    let (_, reply) = raw.next().await.expect("an error frame").expect("decodes");
    assert!(
        matches!(reply, Response::Error(Error::Remote { code: ErrorCode::FrameTooLarge, .. })),
        "{reply:?}"
    );
    assert!(raw.next().await.is_none_or(|r| r.is_err()), "then closed");
    // HTTP: 401 with the challenge and the JSON body; probes stay open.
    let h = reqwest::Client::new();
    let base = http_base(&server);
    let r = h.get(format!("{base}/v1/kv/k")).send().await.expect("get");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"nanodb\", Bearer realm=\"nanodb\"");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "NOAUTH");
    let r = h
        .put(format!("{base}/v1/kv/k"))
        .header("authorization", basic("admin", "nope"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 401);
    assert_eq!(h.get(format!("{base}/healthz")).send().await.expect("healthz").status(), 200);
    assert_eq!(h.get(format!("{base}/readyz")).send().await.expect("readyz").status(), 200);
    // gRPC: UNAUTHENTICATED; health stays open.
    let mut g = grpc(&server).await;
    assert_eq!(
        g.get(pb::GetRequest { key: b("k") }).await.expect_err("no credentials").code(),
        Code::Unauthenticated
    );
    let e = g.get(with_auth(pb::GetRequest { key: b("k") }, "admin", "nope")).await.expect_err("wrong");
    assert_eq!(e.code(), Code::Unauthenticated);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", addr(server.addrs().grpc)))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok());
    // Every failure was counted, per protocol.
    let metrics = h
        .get(format!("{base}/metrics"))
        .header("authorization", basic("admin", "adminpw"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for p in ["tcp", "http", "grpc"] {
        let line = format!("nanodb_auth_failures_total{{protocol=\"{p}\"}} ");
        let n: u64 =
            metrics.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(n >= 1, "{p}: {metrics}");
    }
}

#[tokio::test]
async fn protected_mode_and_bad_users_files_refuse_to_start() {
    let open = |auth: AuthConfig| Config { resp_addr: ListenAddr::On("0.0.0.0:0".into()), auth, ..config() };
    let e = Server::start(open(AuthConfig { protected_mode: true, ..AuthConfig::default() }))
        .await
        .expect_err("refused");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    for flag in ["--requirepass", "--users-file", "--protected-mode no", "0.0.0.0"] {
        assert!(msg.contains(flag), "{flag} in {msg}");
    }
    let s = Server::start(open(AuthConfig { protected_mode: false, ..AuthConfig::default() }))
        .await
        .expect("--protected-mode no");
    s.shutdown().await;
    let pass = AuthConfig { requirepass: Some("pw".into()), protected_mode: true, ..AuthConfig::default() };
    let s = Server::start(open(pass)).await.expect("a password opens it");
    let mut c = Raw(TcpStream::connect(("127.0.0.1", addr(s.addrs().resp).port())).await.expect("connect"));
    assert_eq!(c.line(&["GET", "k"]).await, "-NOAUTH Authentication required.");
    assert_eq!(c.line(&["AUTH", "pw"]).await, "+OK", "--requirepass is default's password");
    s.shutdown().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("users.acl");
    std::fs::write(&file, "user a on\n\nuser b on >x ~k:* +@nope\n").expect("write");
    let bad = AuthConfig { users_file: Some(file.clone()), protected_mode: true, ..AuthConfig::default() };
    let e =
        Server::start(Config { resp_addr: any_port(), auth: bad, ..config() }).await.expect_err("refused");
    assert!(e.to_string().starts_with(&format!("{}:3: ", file.display())), "{e}");
}

#[test]
fn the_denials_read_as_redis_writes_them() {
    let d = Denied::Command { user: "alice".into(), command: "set".into() };
    assert_eq!(Error::NoPerm(d).to_string(), "User alice has no permissions to run the 'set' command");
}
