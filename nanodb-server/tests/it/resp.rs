//! The Redis protocol (RESP2) end to end: the `redis` crate as the client for every command, reply
//! types, errors, a 10,000-command pipeline, binary values, TTLs, WRONGTYPE, and visibility across
//! protocols; raw sockets for exact bytes (error texts, inline commands, protocol errors, limits).

use nanodb_protocol::cmd;
use std::time::Duration;

use bytes::Bytes;
use nanodb_protocol::{Command, Entry, Reply};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TcpClient, any_port, config, start};

async fn resp_server() -> Server {
    start(Config { resp_addr: any_port(), tcp_addr: any_port(), ..config() }).await
}

async fn connect(server: &Server) -> MultiplexedConnection {
    let addr = server.addrs().resp.expect("resp on");
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    client.get_multiplexed_async_connection().await.expect("connect")
}

/// Runs a command given as words; the raw reply.
async fn q(con: &mut MultiplexedConnection, words: &[&str]) -> Value {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query_async(con).await.unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

/// Runs a command that must fail; the error's text.
async fn e(con: &mut MultiplexedConnection, words: &[&str]) -> String {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    match cmd.query_async::<Value>(con).await {
        Ok(v) => panic!("{words:?} should fail, got {v:?}"),
        // The error line as the server sent it: its code, a space, the detail.
        Err(err) => match (err.code(), err.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => err.to_string(),
        },
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn arr(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| bulk(s)).collect())
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

/// Sends raw bytes and reads until `expect` bytes arrived (or the peer closed); the bytes read.
async fn raw(stream: &mut TcpStream, send: &[u8], expect: usize) -> Vec<u8> {
    stream.write_all(send).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < expect {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn connection_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["PING"]).await, Value::SimpleString("PONG".into()));
    assert_eq!(q(&mut c, &["ping", "hi"]).await, bulk("hi"));
    assert_eq!(q(&mut c, &["ECHO", "x y"]).await, bulk("x y"));
    assert_eq!(q(&mut c, &["SELECT", "0"]).await, Value::Okay);
    assert_eq!(e(&mut c, &["SELECT", "1"]).await, "ERR DB index is out of range");
    let Value::Array(hello) = q(&mut c, &["HELLO", "2"]).await else { panic!("hello is an array") };
    assert_eq!(hello[0], bulk("server"));
    assert_eq!(hello[5], int(2), "proto 2");
    assert!(e(&mut c, &["HELLO", "3"]).await.starts_with("NOPROTO"));
    assert_eq!(q(&mut c, &["CLIENT", "SETNAME", "tester"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["CLIENT", "GETNAME"]).await, bulk("tester"));
    let Value::Int(id) = q(&mut c, &["CLIENT", "ID"]).await else { panic!("id is an int") };
    assert!(id > 0);
    assert_eq!(q(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "it"]).await, Value::Okay);
    let Value::BulkString(info) = q(&mut c, &["CLIENT", "INFO"]).await else { panic!("bulk") };
    assert!(String::from_utf8_lossy(&info).contains(&format!("id={id} ")));
    let Value::BulkString(list) = q(&mut c, &["CLIENT", "LIST"]).await else { panic!("bulk") };
    assert!(String::from_utf8_lossy(&list).contains("name=tester"));
    assert_eq!(q(&mut c, &["RESET"]).await, Value::SimpleString("RESET".into()));
    assert_eq!(q(&mut c, &["CLIENT", "GETNAME"]).await, Value::Nil);
    server.shutdown().await;
}

#[tokio::test]
async fn string_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["SET", "k", "v1"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["GET", "k"]).await, bulk("v1"));
    assert_eq!(q(&mut c, &["GET", "missing"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SET", "k", "v2", "NX"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SET", "new", "v", "XX"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SET", "k", "v2", "XX", "GET"]).await, bulk("v1"));
    assert_eq!(q(&mut c, &["SET", "k", "v3", "EX", "100"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["SET", "k", "v4", "KEEPTTL"]).await, Value::Okay);
    let Value::Int(ttl) = q(&mut c, &["TTL", "k"]).await else { panic!("int") };
    assert!((99..=100).contains(&ttl), "KEEPTTL kept {ttl}");
    assert_eq!(q(&mut c, &["SET", "k", "v5"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["TTL", "k"]).await, int(-1), "a plain SET clears the TTL");
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    let at = (now_ms + 50_000).to_string();
    assert_eq!(q(&mut c, &["SET", "k", "v6", "PXAT", &at]).await, Value::Okay);
    let Value::Int(pttl) = q(&mut c, &["PTTL", "k"]).await else { panic!("int") };
    assert!((40_000..=51_000).contains(&pttl), "{pttl}");
    assert_eq!(q(&mut c, &["SET", "gone", "x", "PXAT", "1000"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["EXISTS", "gone"]).await, int(0), "a past PXAT expires at once");
    assert_eq!(e(&mut c, &["SET", "k", "v", "EX", "0"]).await, "ERR invalid expire time in 'set' command");
    assert_eq!(e(&mut c, &["SET", "k", "v", "EX", "x"]).await, "ERR value is not an integer or out of range");
    assert_eq!(e(&mut c, &["SET", "k", "v", "NX", "XX"]).await, "ERR syntax error");
    assert_eq!(q(&mut c, &["GETDEL", "k"]).await, bulk("v6"));
    assert_eq!(q(&mut c, &["GETDEL", "k"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SET", "g", "1"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["GETEX", "g", "EX", "30"]).await, bulk("1"));
    assert_eq!(q(&mut c, &["TTL", "g"]).await, int(30));
    assert_eq!(q(&mut c, &["GETEX", "g", "PERSIST"]).await, bulk("1"));
    assert_eq!(q(&mut c, &["TTL", "g"]).await, int(-1));
    assert_eq!(q(&mut c, &["GETSET", "g", "2"]).await, bulk("1"));
    assert_eq!(q(&mut c, &["GETSET", "fresh", "2"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SETNX", "g", "3"]).await, int(0));
    assert_eq!(q(&mut c, &["SETNX", "nx", "3"]).await, int(1));
    assert_eq!(q(&mut c, &["SETEX", "se", "10", "v"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["TTL", "se"]).await, int(10));
    assert_eq!(q(&mut c, &["PSETEX", "pse", "10000", "v"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["TTL", "pse"]).await, int(10));
    assert_eq!(q(&mut c, &["MSET", "a", "1", "b", "2"]).await, Value::Okay);
    assert_eq!(
        q(&mut c, &["MGET", "a", "b", "nope"]).await,
        Value::Array(vec![bulk("1"), bulk("2"), Value::Nil])
    );
    assert_eq!(q(&mut c, &["MSETNX", "a", "9", "c", "3"]).await, int(0));
    assert_eq!(q(&mut c, &["EXISTS", "c"]).await, int(0), "MSETNX wrote nothing");
    assert_eq!(q(&mut c, &["MSETNX", "c", "3", "d", "4"]).await, int(1));
    assert_eq!(q(&mut c, &["APPEND", "c", "45"]).await, int(3));
    assert_eq!(q(&mut c, &["APPEND", "ap", "x"]).await, int(1));
    assert_eq!(q(&mut c, &["STRLEN", "c"]).await, int(3));
    assert_eq!(q(&mut c, &["STRLEN", "none"]).await, int(0));
    assert_eq!(q(&mut c, &["INCR", "n"]).await, int(1));
    assert_eq!(q(&mut c, &["INCRBY", "n", "10"]).await, int(11));
    assert_eq!(q(&mut c, &["DECR", "n"]).await, int(10));
    assert_eq!(q(&mut c, &["DECRBY", "n", "4"]).await, int(6));
    assert_eq!(q(&mut c, &["GET", "n"]).await, bulk("6"));
    assert_eq!(q(&mut c, &["INCRBYFLOAT", "n", "0.5"]).await, bulk("6.5"));
    assert_eq!(q(&mut c, &["INCRBYFLOAT", "n", "-1.5"]).await, bulk("5"));
    assert_eq!(e(&mut c, &["INCRBYFLOAT", "n", "abc"]).await, "ERR value is not a valid float");
    assert_eq!(q(&mut c, &["INCR", "a2"]).await, int(1), "a missing key counts as 0");
    assert_eq!(q(&mut c, &["SET", "s", "abc"]).await, Value::Okay);
    assert_eq!(e(&mut c, &["INCR", "s"]).await, "ERR value is not an integer or out of range");
    assert_eq!(q(&mut c, &["SET", "max", &i64::MAX.to_string()]).await, Value::Okay);
    assert_eq!(e(&mut c, &["INCR", "max"]).await, "ERR increment or decrement would overflow");
    server.shutdown().await;
}

#[tokio::test]
async fn key_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    for k in ["user:1", "user:2", "user:3", "other"] {
        assert_eq!(q(&mut c, &["SET", k, "v"]).await, Value::Okay);
    }
    assert_eq!(q(&mut c, &["HSET", "user:h", "f", "v"]).await, int(1));
    assert_eq!(q(&mut c, &["DBSIZE"]).await, int(5));
    assert_eq!(q(&mut c, &["EXISTS", "user:1", "user:2", "nope", "user:1"]).await, int(3));
    assert_eq!(q(&mut c, &["TYPE", "user:1"]).await, Value::SimpleString("string".into()));
    assert_eq!(q(&mut c, &["TYPE", "user:h"]).await, Value::SimpleString("hash".into()));
    assert_eq!(q(&mut c, &["TYPE", "nope"]).await, Value::SimpleString("none".into()));
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("user:[12]").query_async(&mut c).await.expect("keys");
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.expect("keys");
    assert_eq!(all.len(), 5);
    // SCAN to completion with a small COUNT, by hand and through the crate's iterator.
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("scan");
        seen.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    seen.sort();
    assert_eq!(seen, ["user:1", "user:2", "user:3", "user:h"]);
    let (_, hashes): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(100)
        .arg("TYPE")
        .arg("hash")
        .query_async(&mut c)
        .await
        .expect("scan");
    assert_eq!(hashes, ["user:h"]);
    assert_eq!(e(&mut c, &["SCAN", "12345"]).await, "ERR invalid cursor");
    assert_eq!(q(&mut c, &["EXPIRE", "user:1", "100"]).await, int(1));
    assert_eq!(q(&mut c, &["TTL", "user:1"]).await, int(100));
    assert_eq!(q(&mut c, &["PEXPIRE", "user:1", "5000"]).await, int(1));
    assert_eq!(q(&mut c, &["TTL", "user:1"]).await, int(5));
    assert_eq!(q(&mut c, &["PERSIST", "user:1"]).await, int(1));
    assert_eq!(q(&mut c, &["PERSIST", "user:1"]).await, int(0));
    assert_eq!(q(&mut c, &["TTL", "nope"]).await, int(-2));
    assert_eq!(q(&mut c, &["PTTL", "user:1"]).await, int(-1));
    let later =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 60)
            .to_string();
    assert_eq!(q(&mut c, &["EXPIREAT", "user:2", &later]).await, int(1));
    let Value::Int(t) = q(&mut c, &["TTL", "user:2"]).await else { panic!("int") };
    assert!((58..=61).contains(&t), "{t}");
    assert_eq!(q(&mut c, &["PEXPIREAT", "user:2", "1"]).await, int(1));
    assert_eq!(q(&mut c, &["EXISTS", "user:2"]).await, int(0), "a past deadline deletes");
    assert_eq!(q(&mut c, &["EXPIRE", "user:3", "-1"]).await, int(1));
    assert_eq!(q(&mut c, &["EXISTS", "user:3"]).await, int(0), "a negative TTL deletes");
    assert_eq!(q(&mut c, &["EXPIRE", "nope", "10"]).await, int(0));
    assert_eq!(q(&mut c, &["RENAME", "user:1", "renamed"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["GET", "renamed"]).await, bulk("v"));
    assert_eq!(q(&mut c, &["EXISTS", "user:1"]).await, int(0));
    assert_eq!(e(&mut c, &["RENAME", "nope", "x"]).await, "ERR no such key");
    let Value::BulkString(k) = q(&mut c, &["RANDOMKEY"]).await else { panic!("a key") };
    assert_eq!(q(&mut c, &["EXISTS", std::str::from_utf8(&k).expect("utf8")]).await, int(1));
    assert_eq!(q(&mut c, &["DEL", "renamed", "other", "nope"]).await, int(2));
    assert_eq!(q(&mut c, &["UNLINK", "user:h"]).await, int(1));
    assert_eq!(q(&mut c, &["SET", "x", "1"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["FLUSHDB"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["DBSIZE"]).await, int(0));
    assert_eq!(q(&mut c, &["RANDOMKEY"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["SET", "x", "1"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["FLUSHALL", "ASYNC"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["KEYS", "*"]).await, Value::Array(vec![]));
    server.shutdown().await;
}

#[tokio::test]
async fn hash_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["HSET", "h", "a", "1", "b", "2"]).await, int(2));
    assert_eq!(q(&mut c, &["HSET", "h", "a", "10", "c", "3"]).await, int(1));
    assert_eq!(q(&mut c, &["HMSET", "h", "d", "4"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["HGET", "h", "a"]).await, bulk("10"));
    assert_eq!(q(&mut c, &["HGET", "h", "zz"]).await, Value::Nil);
    assert_eq!(
        q(&mut c, &["HMGET", "h", "a", "zz", "b"]).await,
        Value::Array(vec![bulk("10"), Value::Nil, bulk("2")])
    );
    assert_eq!(q(&mut c, &["HLEN", "h"]).await, int(4));
    assert_eq!(q(&mut c, &["HEXISTS", "h", "a"]).await, int(1));
    assert_eq!(q(&mut c, &["HEXISTS", "h", "zz"]).await, int(0));
    assert_eq!(q(&mut c, &["HINCRBY", "h", "a", "5"]).await, int(15));
    assert_eq!(q(&mut c, &["HINCRBY", "h", "new", "-2"]).await, int(-2));
    assert_eq!(q(&mut c, &["HSETNX", "h", "a", "x"]).await, int(0));
    assert_eq!(q(&mut c, &["HSETNX", "h", "e", "5"]).await, int(1));
    let mut all: Vec<(String, String)> =
        redis::cmd("HGETALL").arg("h").query_async(&mut c).await.expect("hgetall");
    all.sort();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], ("a".to_string(), "15".to_string()));
    let mut keys: Vec<String> = redis::cmd("HKEYS").arg("h").query_async(&mut c).await.expect("hkeys");
    keys.sort();
    assert_eq!(keys, ["a", "b", "c", "d", "e", "new"]);
    let vals: Vec<String> = redis::cmd("HVALS").arg("h").query_async(&mut c).await.expect("hvals");
    assert_eq!(vals.len(), 6);
    assert_eq!(q(&mut c, &["HDEL", "h", "a", "b", "zz"]).await, int(2));
    assert_eq!(q(&mut c, &["HGETALL", "missing"]).await, Value::Array(vec![]));
    assert_eq!(q(&mut c, &["HLEN", "missing"]).await, int(0));
    assert_eq!(e(&mut c, &["HSET", "h", "a"]).await, "ERR wrong number of arguments for 'hset' command");
    server.shutdown().await;
}

#[tokio::test]
async fn list_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["RPUSH", "l", "a", "b", "c"]).await, int(3));
    assert_eq!(q(&mut c, &["LPUSH", "l", "z", "y"]).await, int(5));
    assert_eq!(q(&mut c, &["LRANGE", "l", "0", "-1"]).await, arr(&["y", "z", "a", "b", "c"]));
    assert_eq!(q(&mut c, &["LLEN", "l"]).await, int(5));
    assert_eq!(q(&mut c, &["LINDEX", "l", "0"]).await, bulk("y"));
    assert_eq!(q(&mut c, &["LINDEX", "l", "-1"]).await, bulk("c"));
    assert_eq!(q(&mut c, &["LINDEX", "l", "99"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["LSET", "l", "1", "Z"]).await, Value::Okay);
    assert_eq!(e(&mut c, &["LSET", "l", "99", "x"]).await, "ERR index out of range");
    assert_eq!(e(&mut c, &["LSET", "nolist", "0", "x"]).await, "ERR no such key");
    assert_eq!(q(&mut c, &["LPOP", "l"]).await, bulk("y"));
    assert_eq!(q(&mut c, &["RPOP", "l"]).await, bulk("c"));
    assert_eq!(q(&mut c, &["LPOP", "l", "2"]).await, arr(&["Z", "a"]));
    assert_eq!(q(&mut c, &["RPOP", "l", "5"]).await, arr(&["b"]));
    assert_eq!(q(&mut c, &["LPOP", "l"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["LPOP", "l", "2"]).await, Value::Nil, "null array when missing");
    assert_eq!(q(&mut c, &["RPUSH", "t", "0", "1", "2", "3", "4"]).await, int(5));
    assert_eq!(q(&mut c, &["LTRIM", "t", "1", "-2"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["LRANGE", "t", "0", "-1"]).await, arr(&["1", "2", "3"]));
    assert_eq!(q(&mut c, &["LTRIM", "t", "5", "10"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["EXISTS", "t"]).await, int(0), "an empty trim removes the list");
    assert_eq!(e(&mut c, &["LPOP", "t", "-1"]).await, "ERR value is out of range, must be positive");
    server.shutdown().await;
}

#[tokio::test]
async fn server_commands() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["SET", "k", "v", "EX", "100"]).await, Value::Okay);
    assert_eq!(q(&mut c, &["SET", "k2", "v"]).await, Value::Okay);
    let info: String = redis::cmd("INFO").query_async(&mut c).await.expect("info");
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
        assert!(info.contains(section), "{section} in {info}");
    }
    assert!(info.contains("redis_version:"));
    assert!(info.contains("db0:keys=2,expires=1,avg_ttl=0"), "{info}");
    assert!(info.contains("connected_clients:1"), "{info}");
    let ks: String = redis::cmd("INFO").arg("keyspace").query_async(&mut c).await.expect("info");
    assert!(ks.starts_with("# Keyspace\r\n") && !ks.contains("# Server"), "{ks}");
    let Value::Int(n) = q(&mut c, &["COMMAND", "COUNT"]).await else { panic!("int") };
    assert!(n > 60);
    let Value::Array(infos) = q(&mut c, &["COMMAND", "INFO", "get", "nosuch"]).await else { panic!("array") };
    let Value::Array(get) = &infos[0] else { panic!("entry") };
    assert_eq!((&get[0], &get[1]), (&bulk("get"), &int(2)));
    assert_eq!(infos[1], Value::Nil);
    assert_eq!(q(&mut c, &["COMMAND", "DOCS"]).await, Value::Array(vec![]));
    assert_eq!(q(&mut c, &["CONFIG", "GET", "save"]).await, arr(&["save", ""]));
    let Value::Array(cfg) = q(&mut c, &["CONFIG", "GET", "max*"]).await else { panic!("array") };
    assert!(cfg.contains(&bulk("maxclients")) && cfg.contains(&bulk("maxmemory")));
    let Value::Array(t) = q(&mut c, &["TIME"]).await else { panic!("array") };
    let secs: u64 = redis::from_redis_value(t[0].clone()).expect("seconds");
    assert!(secs > 1_600_000_000);
    server.shutdown().await;
}

#[tokio::test]
async fn config_get_appendonly_says_whether_writes_are_persisted() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["CONFIG", "GET", "appendonly"]).await, arr(&["appendonly", "no"]));
    server.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Config {
        resp_addr: any_port(),
        persistence: true,
        data_dir: dir.path().to_path_buf(),
        fsync: nanodb_server::persist::FsyncPolicy::Always,
        ..config()
    })
    .await;
    let mut c = connect(&server).await;
    assert_eq!(q(&mut c, &["CONFIG", "GET", "appendonly"]).await, arr(&["appendonly", "yes"]));
    assert_eq!(
        q(&mut c, &["CONFIG", "GET", "append*"]).await,
        arr(&["appendonly", "yes", "appendfsync", "always"])
    );
    let refused = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async::<Value>(&mut c)
        .await
        .expect_err("fixed while running");
    assert!(refused.to_string().contains("can't set immutable config"), "{refused}");
    server.shutdown().await;
}

#[tokio::test]
async fn wrongtype_across_types() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    q(&mut c, &["SET", "s", "v"]).await;
    q(&mut c, &["HSET", "h", "f", "v"]).await;
    q(&mut c, &["RPUSH", "l", "v"]).await;
    const WT: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
    let cases: &[&[&str]] = &[
        &["GET", "h"],
        &["APPEND", "l", "x"],
        &["INCR", "h"],
        &["GETDEL", "l"],
        &["SET", "h", "v", "GET"],
        &["HGET", "s", "f"],
        &["HSET", "l", "f", "v"],
        &["HGETALL", "s"],
        &["HLEN", "l"],
        &["HINCRBY", "s", "f", "1"],
        &["LPUSH", "s", "v"],
        &["LRANGE", "h", "0", "-1"],
        &["LLEN", "s"],
        &["LPOP", "h"],
        &["LSET", "s", "0", "v"],
    ];
    for words in cases {
        let err = e(&mut c, words).await;
        assert!(err.starts_with("WRONGTYPE"), "{words:?}: {err}");
    }
    // The exact text, and nothing changed.
    let mut s = TcpStream::connect(server.addrs().resp.expect("resp")).await.expect("connect");
    let got = raw(&mut s, b"*2\r\n$3\r\nGET\r\n$1\r\nh\r\n", WT.len() + 3).await;
    assert_eq!(got, format!("-{WT}\r\n").into_bytes());
    assert_eq!(q(&mut c, &["MGET", "s", "h"]).await, Value::Array(vec![bulk("v"), Value::Nil]));
    assert_eq!(q(&mut c, &["SET", "h", "now-a-string"]).await, Value::Okay, "a plain SET replaces any type");
    assert_eq!(q(&mut c, &["TYPE", "h"]).await, Value::SimpleString("string".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn pipeline_of_ten_thousand_commands_answers_in_order() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i);
        pipe.cmd("INCR").arg(format!("p{i}"));
    }
    let replies: Vec<Value> = pipe.query_async(&mut c).await.expect("pipeline");
    assert_eq!(replies.len(), 10_000);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], Value::Okay);
        assert_eq!(pair[1], int(i as i64 + 1), "reply {i} in order");
    }
    assert_eq!(q(&mut c, &["DBSIZE"]).await, int(5_000));
    server.shutdown().await;
}

#[tokio::test]
async fn binary_values_round_trip_exactly() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    let key: Vec<u8> = vec![0, b'k', 0xff, b'\r', b'\n'];
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let _: () = redis::cmd("SET").arg(&key).arg(&value).query_async(&mut c).await.expect("set");
    let got: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut c).await.expect("get");
    assert_eq!(got, value);
    let hkey = b"h\x00".to_vec();
    let n: i64 = redis::cmd("HSET")
        .arg(&hkey)
        .arg(&b"\x00f"[..])
        .arg(&b"\r\n\x00"[..])
        .query_async(&mut c)
        .await
        .expect("hset");
    assert_eq!(n, 1);
    let v: Vec<u8> =
        redis::cmd("HGET").arg(&hkey).arg(&b"\x00f"[..]).query_async(&mut c).await.expect("hget");
    assert_eq!(v, b"\r\n\x00");
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ttls_expire_on_the_engine_clock() {
    // The engine clock follows the runtime a command runs on, and only this test's runtime is
    // paused: RESP is served on it (`--resp-threads 0`) instead of on event loops of its own.
    let server = start(Config { resp_addr: any_port(), resp_threads: 0, ..config() }).await;
    let mut c = connect(&server).await;
    q(&mut c, &["SET", "t", "v", "PX", "1500"]).await;
    q(&mut c, &["SET", "u", "v"]).await;
    q(&mut c, &["EXPIRE", "u", "3"]).await;
    assert_eq!(q(&mut c, &["TTL", "t"]).await, int(2), "1.5 s rounds to 2");
    tokio::time::advance(Duration::from_millis(1600)).await;
    assert_eq!(q(&mut c, &["GET", "t"]).await, Value::Nil);
    assert_eq!(q(&mut c, &["TTL", "t"]).await, int(-2));
    assert_eq!(q(&mut c, &["GET", "u"]).await, bulk("v"));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(q(&mut c, &["EXISTS", "u"]).await, int(0));
    server.shutdown().await;
}

#[tokio::test]
async fn three_event_loops_serve_and_drain_at_shutdown() {
    let server = start(Config { resp_addr: any_port(), resp_threads: 3, ..config() }).await;
    let mut conns = Vec::new();
    for i in 0..6 {
        let mut c = connect(&server).await;
        q(&mut c, &["SET", &format!("loop:{i}"), &i.to_string()]).await;
        conns.push(c);
    }
    // Every connection sees every other's writes, whichever loop serves it.
    for (i, c) in conns.iter_mut().enumerate() {
        let other = (i + 1) % 6;
        assert_eq!(q(c, &["GET", &format!("loop:{other}")]).await, bulk(&other.to_string()));
    }
    // Shutdown waits for the loops' connections, which end at once: it returns.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown drains the loops");
}

#[tokio::test]
async fn visible_across_protocols() {
    let server = resp_server().await;
    let mut c = connect(&server).await;
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    assert!(tcp.max_frame_len > 0);
    q(&mut c, &["SET", "shared", "from-resp"]).await;
    let Ok(Reply::Value(Some(Entry { value, .. }))) =
        tcp.call(Command::Get(cmd::Get { key: Bytes::from_static(b"shared") })).await
    else {
        panic!("tcp sees the RESP write")
    };
    assert_eq!(&value[..], b"from-resp");
    let put = Command::Put(cmd::Put {
        key: Bytes::from_static(b"t2"),
        value: Bytes::from_static(b"from-tcp"),
        condition: nanodb_protocol::PutCondition::Always,
        expiry: nanodb_protocol::Expiry::In(60_000),
    });
    tcp.call(put).await.expect("tcp set");
    assert_eq!(q(&mut c, &["GET", "t2"]).await, bulk("from-tcp"));
    assert_eq!(q(&mut c, &["TTL", "t2"]).await, int(60));
    tcp.call(Command::ListPush(cmd::ListPush {
        key: Bytes::from_static(b"tl"),
        end: nanodb_protocol::ListEnd::Back,
        values: vec![Bytes::from_static(b"x")],
    }))
    .await
    .expect("push");
    assert_eq!(q(&mut c, &["LLEN", "tl"]).await, int(1));
    assert_eq!(
        tcp.call(Command::Type(cmd::Type { key: Bytes::from_static(b"tl") })).await,
        Ok(Reply::Bytes(Some(Bytes::from_static(b"list"))))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn exact_error_texts_inline_commands_and_protocol_errors() {
    let server = resp_server().await;
    let addr = server.addrs().resp.expect("resp");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let unknown = b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n";
    assert_eq!(raw(&mut s, b"*3\r\n$3\r\nfoo\r\n$1\r\na\r\n$1\r\nb\r\n", unknown.len()).await, unknown);
    let arity = b"-ERR wrong number of arguments for 'get' command\r\n";
    assert_eq!(raw(&mut s, b"*1\r\n$3\r\nGET\r\n", arity.len()).await, arity);
    let not_int = b"-ERR value is not an integer or out of range\r\n";
    assert_eq!(raw(&mut s, b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\nx\r\n", not_int.len()).await, not_int);
    // Inline commands, as typed in telnet, with quotes.
    let inline = raw(&mut s, b"PING\r\nset k \"a b\"\r\nget k\r\n", 7 + 5 + 9).await;
    assert_eq!(inline, b"+PONG\r\n+OK\r\n$3\r\na b\r\n");
    // A protocol error gets its reply and the connection is closed.
    let got = raw(&mut s, b"*1\r\n:1\r\n", 1 << 16).await;
    assert!(
        got.starts_with(b"-ERR Protocol error: expected '$', got ':'"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut rest = [0u8; 1];
    assert_eq!(s.read(&mut rest).await.expect("read"), 0, "closed after a protocol error");
    // QUIT answers and closes.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(raw(&mut s, b"QUIT\r\n", 5).await, b"+OK\r\n");
    assert_eq!(s.read(&mut rest).await.expect("read"), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn limits_are_enforced_before_reading_the_payload() {
    let server = start(Config {
        resp_addr: any_port(),
        resp_max_bulk_len: 16,
        resp_max_args: 4,
        max_connections: 2,
        ..config()
    })
    .await;
    let addr = server.addrs().resp.expect("resp");
    // The connection limit first, while no closed connection may still be giving its slot back:
    // two are served, a third is told why and closed.
    let mut a = TcpStream::connect(addr).await.expect("connect");
    let mut b = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(raw(&mut a, b"PING\r\n", 7).await, b"+PONG\r\n");
    assert_eq!(raw(&mut b, b"PING\r\n", 7).await, b"+PONG\r\n");
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let got = raw(&mut third, b"", 1 << 16).await;
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    // A bulk claiming more than the limit is refused from its header alone.
    let got = raw(&mut a, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$17\r\n", 1 << 16).await;
    assert_eq!(got, b"-ERR Protocol error: invalid bulk length\r\n");
    let got = raw(&mut b, b"*5\r\n", 1 << 16).await;
    assert_eq!(got, b"-ERR Protocol error: invalid multibulk length\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn msetnx_is_all_or_nothing_under_concurrency() {
    let server = resp_server().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = connect(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for round in 0..50 {
                let (a, b) = (format!("r{round}:a"), format!("r{round}:b"));
                let v = format!("t{t}");
                let r: i64 = redis::cmd("MSETNX")
                    .arg(&a)
                    .arg(&v)
                    .arg(&b)
                    .arg(&v)
                    .query_async(&mut c)
                    .await
                    .expect("msetnx");
                won += r;
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 50, "exactly one MSETNX wins each round");
    let mut c = connect(&server).await;
    for round in 0..50 {
        let a: String = redis::cmd("GET").arg(format!("r{round}:a")).query_async(&mut c).await.expect("get");
        let b: String = redis::cmd("GET").arg(format!("r{round}:b")).query_async(&mut c).await.expect("get");
        assert_eq!(a, b, "both keys come from the same winner");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_idle_connections() {
    let server = resp_server().await;
    let mut s = TcpStream::connect(server.addrs().resp.expect("resp")).await.expect("connect");
    assert_eq!(raw(&mut s, b"PING\r\n", 7).await, b"+PONG\r\n");
    assert!(server.shutdown().await, "an idle RESP connection does not hold shutdown up");
    let mut rest = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the connection is closed by shutdown");
}

/// A runtime that ends without [`Server::shutdown`] (an embedder's, a test's that panicked, or the
/// binary's after a shutdown whose grace ran out) drops the RESP event loops inside it, where
/// dropping a runtime panics ("Cannot drop a runtime in a context where blocking is not allowed").
/// They must end quietly instead.
#[test]
fn a_runtime_ending_without_shutdown_drops_the_event_loops_quietly() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNTIME_DROP_PANICS: AtomicUsize = AtomicUsize::new(0);
    // The panic happens on one of the runtime's own threads, so only a hook sees it; it counts that
    // panic alone and passes every panic on, so other tests running meanwhile are unaffected.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload_as_str().is_some_and(|m| m.contains("Cannot drop a runtime")) {
            RUNTIME_DROP_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(async {
        let server = start(Config { resp_addr: any_port(), resp_threads: 2, ..config() }).await;
        let mut c = connect(&server).await;
        assert_eq!(q(&mut c, &["PING"]).await, Value::SimpleString("PONG".into()));
        server
    });
    drop(rt);
    drop(server);
    assert_eq!(RUNTIME_DROP_PANICS.load(Ordering::SeqCst), 0, "dropping the event loops panicked");
}

#[tokio::test]
async fn getrange_answers_as_redis_does() {
    let server = resp_server().await;
    let mut con = connect(&server).await;
    q(&mut con, &["SET", "s", "This is a string"]).await;
    assert_eq!(q(&mut con, &["GETRANGE", "s", "0", "3"]).await, bulk("This"));
    assert_eq!(q(&mut con, &["GETRANGE", "s", "-3", "-1"]).await, bulk("ing"));
    assert_eq!(q(&mut con, &["GETRANGE", "s", "10", "100"]).await, bulk("string"));
    assert_eq!(q(&mut con, &["GETRANGE", "missing", "0", "-1"]).await, bulk(""));
    q(&mut con, &["RPUSH", "l", "x"]).await;
    assert!(e(&mut con, &["GETRANGE", "l", "0", "1"]).await.starts_with("WRONGTYPE"));
    assert!(e(&mut con, &["GETRANGE", "s", "x", "1"]).await.contains("not an integer"));
    assert!(e(&mut con, &["GETRANGE", "s", "0"]).await.contains("wrong number of arguments"));
    server.shutdown().await;
}
