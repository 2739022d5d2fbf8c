//! `--max-memory` and `--maxmemory-policy` end to end (#20): Redis's `-OOM` under `noeviction`
//! (and OUT_OF_MEMORY on the binary protocol), eviction by `allkeys-lru` and `volatile-ttl` with
//! the `redis` crate as the client, evictions logged (gone after a restart), and the limit changed
//! at run time with CONFIG SET.

use std::time::Duration;

use bytes::Bytes;
use nanodb_protocol::{Command, ErrorCode, Expiry, PutCondition, cmd};
use nanodb_server::config::Config;
use nanodb_server::engine::Policy;
use nanodb_server::server::Server;
use redis::aio::MultiplexedConnection;

use crate::harness::{TcpClient, any_port, config, start};

/// A kilobyte value: a key with it is one 1,024-byte block or so.
fn kb(tag: &str) -> String {
    format!("{tag}:{}", "v".repeat(1000))
}

fn limited(max_memory: u64, policy: Policy) -> Config {
    Config { resp_addr: any_port(), tcp_addr: any_port(), max_memory, maxmemory_policy: policy, ..config() }
}

async fn connect(server: &Server) -> MultiplexedConnection {
    let addr = server.addrs().resp.expect("resp on");
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    client.get_multiplexed_async_connection().await.expect("connect")
}

async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(key).arg(value).query_async(con).await
}

async fn exists(con: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async::<i64>(con).await.expect("exists") == 1
}

/// A field of INFO, as a number.
async fn info_field(con: &mut MultiplexedConnection, field: &str) -> u64 {
    let text: String = redis::cmd("INFO").query_async(con).await.expect("info");
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number"))
}

/// Whether `e` is Redis's OOM error, word for word.
fn is_oom(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM") && e.detail() == Some("command not allowed when used memory > 'maxmemory'.")
}

#[tokio::test]
async fn noeviction_refuses_growing_commands_and_keeps_the_data_and_deletes_work() {
    let server = start(limited(200_000, Policy::NoEviction)).await;
    let mut con = connect(&server).await;
    let mut written = 0;
    let refused = loop {
        assert!(written < 1000, "200 kB never ran out");
        match set(&mut con, &format!("k{written}"), &kb("old")).await {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(is_oom(&refused), "{refused:?}");
    assert!(written > 100, "only {written} keys fit in 200 kB");
    assert!(info_field(&mut con, "used_memory").await > 200_000);
    assert_eq!(info_field(&mut con, "maxmemory").await, 200_000);
    // Data unchanged: the refused key does not exist, an overwrite is refused too.
    assert!(!exists(&mut con, &format!("k{written}")).await);
    let e = set(&mut con, "k0", &kb("new")).await.expect_err("an overwrite may grow memory");
    assert!(is_oom(&e), "{e:?}");
    let v: String = redis::cmd("GET").arg("k0").query_async(&mut con).await.expect("get");
    assert_eq!(v, kb("old"));
    // Growing commands of every type are refused; shrinking and re-timing ones are not.
    for words in
        [vec!["APPEND", "k0", "x"], vec!["HSET", "h", "f", "v"], vec!["RPUSH", "l", "a"], vec!["INCR", "n"]]
    {
        let e = redis::cmd(words[0]).arg(&words[1..]).query_async::<redis::Value>(&mut con).await;
        assert!(e.as_ref().is_err_and(is_oom), "{words:?}: {e:?}");
    }
    let _: i64 = redis::cmd("EXPIRE").arg("k1").arg(100).query_async(&mut con).await.expect("expire");
    // EXEC with a growing command queued is refused whole, as Redis refuses it.
    let _: () = redis::cmd("MULTI").query_async(&mut con).await.expect("multi");
    let _: String = redis::cmd("SET").arg("tx").arg("1").query_async(&mut con).await.expect("queued");
    let e = redis::cmd("EXEC").query_async::<redis::Value>(&mut con).await.expect_err("exec refused");
    assert!(is_oom(&e), "{e:?}");
    assert!(!exists(&mut con, "tx").await);
    // A script is refused up front, as Redis refuses one that may write.
    let e = redis::cmd("EVAL")
        .arg("return redis.call('set', KEYS[1], 'x')")
        .arg(1)
        .arg("script")
        .query_async::<redis::Value>(&mut con)
        .await
        .expect_err("script refused");
    assert!(is_oom(&e), "{e:?}");
    assert!(!exists(&mut con, "script").await);
    // The binary protocol says OUT_OF_MEMORY (code 23) with the same words.
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    let put = |key: &str| {
        Command::Put(cmd::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from(kb("tcp")),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        })
    };
    let e = tcp.call(put("over-tcp")).await.expect_err("refused over TCP");
    assert_eq!(e.code(), ErrorCode::OutOfMemory);
    assert!(e.to_string().contains("maxmemory"), "{e}");
    // A queue of deletes is not refused.
    let _: () = redis::cmd("MULTI").query_async(&mut con).await.expect("multi");
    let _: String = redis::cmd("DEL").arg("k2").query_async(&mut con).await.expect("queued");
    let deleted: Vec<i64> = redis::cmd("EXEC").query_async(&mut con).await.expect("a queue of deletes runs");
    assert_eq!(deleted, [1]);
    // Deletes still work, and once under the limit writes do again.
    for i in 3..written / 2 {
        let n: i64 = redis::cmd("DEL").arg(format!("k{i}")).query_async(&mut con).await.expect("del");
        assert_eq!(n, 1);
    }
    assert!(info_field(&mut con, "used_memory").await < 200_000);
    set(&mut con, "after", "fits").await.expect("under the limit again");
    tcp.call(put("over-tcp")).await.expect("TCP too");
    assert_eq!(info_field(&mut con, "evicted_keys").await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn allkeys_lru_keeps_recently_read_keys_and_stays_under_the_limit() {
    let max = 1 << 20;
    let server = start(limited(max, Policy::AllKeysLru)).await;
    let mut con = connect(&server).await;
    // About 700 kB of cold keys and 50 kB of hot ones.
    for i in 0..700 {
        set(&mut con, &format!("cold{i}"), &kb("c")).await.expect("cold");
    }
    for i in 0..50 {
        set(&mut con, &format!("hot{i}"), &kb("h")).await.expect("hot");
    }
    // The access clock counts seconds: the hot keys' reads must be a later second than the
    // cold keys' writes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for i in 0..50 {
        let _: String =
            redis::cmd("GET").arg(format!("hot{i}")).query_async(&mut con).await.expect("hot read");
    }
    // About 150 keys more than fit.
    for i in 0..400 {
        set(&mut con, &format!("new{i}"), &kb("n")).await.expect("evicts instead of refusing");
    }
    let used = info_field(&mut con, "used_memory").await;
    // At most the last write's key (and a table's growth) over.
    assert!(used <= max + 8192, "used_memory {used} > maxmemory {max}");
    let evicted = info_field(&mut con, "evicted_keys").await;
    assert!(evicted >= 100, "evicted {evicted}");
    for i in 0..50 {
        assert!(exists(&mut con, &format!("hot{i}")).await, "hot{i} was evicted");
    }
    let mut cold_left = 0;
    for i in 0..700 {
        cold_left += usize::from(exists(&mut con, &format!("cold{i}")).await);
    }
    assert_eq!(cold_left as u64, 700 - evicted, "every eviction was a cold key");
    server.shutdown().await;
}

#[tokio::test]
async fn volatile_ttl_evicts_the_nearest_deadline_first_and_never_a_key_without_ttl() {
    let server = start(limited(200_000, Policy::VolatileTtl)).await;
    let mut con = connect(&server).await;
    for i in 0..60 {
        set(&mut con, &format!("keep{i}"), &kb("k")).await.expect("keep");
    }
    // Deadlines in an order unrelated to the names: ttl{i} expires after `rank(i)` others.
    let rank = |i: u64| i * 7 % 40;
    for i in 0..40u64 {
        let _: () = redis::cmd("SET")
            .arg(format!("ttl{i}"))
            .arg(kb("t"))
            .arg("EX")
            .arg(1000 + rank(i))
            .query_async(&mut con)
            .await
            .expect("ttl key");
    }
    let mut refused = None;
    for j in 0..200 {
        if let Err(e) = set(&mut con, &format!("plain{j}"), &kb("p")).await {
            refused = Some(e);
            break;
        }
        // Whatever went is the nearest deadlines, in order.
        let mut gone = Vec::new();
        for i in 0..40 {
            if !exists(&mut con, &format!("ttl{i}")).await {
                gone.push(rank(i));
            }
        }
        gone.sort_unstable();
        assert_eq!(gone, (0..gone.len() as u64).collect::<Vec<_>>(), "after plain{j}");
    }
    // Refused only once no key with a TTL was left to evict.
    let refused = refused.expect("runs out of keys with a TTL");
    assert!(is_oom(&refused), "{refused:?}");
    for i in 0..40 {
        assert!(!exists(&mut con, &format!("ttl{i}")).await, "ttl{i} left while refusing");
    }
    for i in 0..60 {
        assert!(exists(&mut con, &format!("keep{i}")).await, "keep{i} (no TTL) was evicted");
    }
    assert_eq!(info_field(&mut con, "evicted_keys").await, 40);
    server.shutdown().await;
}

#[tokio::test]
async fn evicted_keys_stay_gone_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let persistent = |max_memory| Config {
        persistence: true,
        data_dir: dir.path().to_path_buf(),
        ..limited(max_memory, Policy::AllKeysRandom)
    };
    let server = start(persistent(100_000)).await;
    let mut con = connect(&server).await;
    for i in 0..300 {
        set(&mut con, &format!("k{i}"), &kb("v")).await.expect("evicts instead of refusing");
    }
    let mut present = Vec::new();
    for i in 0..300 {
        present.push(exists(&mut con, &format!("k{i}")).await);
    }
    let evicted = present.iter().filter(|p| !**p).count();
    assert!(evicted >= 150, "only {evicted} of 300 kB-keys evicted under 100 kB");
    drop(con);
    server.shutdown().await;

    // No limit now: whatever comes back came from the log.
    let server = start(persistent(0)).await;
    let mut con = connect(&server).await;
    for (i, was) in present.iter().enumerate() {
        assert_eq!(exists(&mut con, &format!("k{i}")).await, *was, "k{i} after the restart");
    }
    server.shutdown().await;
}

async fn config_get(con: &mut MultiplexedConnection, name: &str) -> String {
    let pair: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg(name).query_async(con).await.expect("config get");
    pair[1].clone()
}

async fn config_set(con: &mut MultiplexedConnection, name: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(con).await
}

#[tokio::test]
async fn config_set_changes_the_limit_and_policy_at_run_time() {
    let server = start(limited(0, Policy::NoEviction)).await;
    let mut con = connect(&server).await;
    assert_eq!(config_get(&mut con, "maxmemory").await, "0");
    assert_eq!(config_get(&mut con, "maxmemory-policy").await, "noeviction");
    for i in 0..50 {
        set(&mut con, &format!("k{i}"), &kb("v")).await.expect("no limit");
    }
    config_set(&mut con, "maxmemory", "10kb").await.expect("set maxmemory");
    assert_eq!(config_get(&mut con, "maxmemory").await, "10240");
    let e = set(&mut con, "over", "x").await.expect_err("over the new limit");
    assert!(is_oom(&e), "{e:?}");
    config_set(&mut con, "maxmemory-policy", "allkeys-lru").await.expect("set policy");
    assert_eq!(config_get(&mut con, "maxmemory-policy").await, "allkeys-lru");
    set(&mut con, "over", "x").await.expect("evicts now");
    assert!(info_field(&mut con, "evicted_keys").await > 0);
    let e = config_set(&mut con, "maxmemory-policy", "sometimes").await.expect_err("unknown policy");
    assert!(e.to_string().contains("maxmemory-policy"), "{e}");
    assert_eq!(config_get(&mut con, "maxmemory-policy").await, "allkeys-lru");
    config_set(&mut con, "maxmemory", "0").await.expect("no limit again");
    for i in 0..50 {
        set(&mut con, &format!("again{i}"), &kb("v")).await.expect("no limit");
    }
    server.shutdown().await;
}
