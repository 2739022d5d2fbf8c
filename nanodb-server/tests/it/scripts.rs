//! Lua scripts end to end: EVAL/EVALSHA/SCRIPT with the `redis` crate (and the EVALSHA-then-EVAL
//! dance client libraries do), the sandbox refusing each escape with the server unharmed,
//! stopped scripts writing nothing, SCRIPT KILL from another connection, and EVAL over the binary
//! TCP protocol.

use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::{Command, Error, Reply, ScriptSource, ScriptValue, cmd};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::harness::{TcpClient, any_port, config, start};

async fn server(timeout_ms: u64) -> Server {
    start(Config {
        resp_addr: any_port(),
        tcp_addr: any_port(),
        script_timeout: Duration::from_millis(timeout_ms),
        script_max_memory: 16 * 1024 * 1024,
        ..config()
    })
    .await
}

async fn connect(server: &Server) -> MultiplexedConnection {
    let addr = server.addrs().resp.expect("resp on");
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    client.get_multiplexed_async_connection().await.expect("connect")
}

async fn eval(
    con: &mut MultiplexedConnection,
    script: &str,
    keys: &[&str],
    args: &[&str],
) -> redis::RedisResult<Value> {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(keys.len()).arg(keys).arg(args);
    c.query_async(con).await
}

/// The error line as the server sent it.
fn err_text(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
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

#[tokio::test]
async fn replies_convert_both_ways_and_writes_commit() {
    let server = server(5_000).await;
    let mut con = connect(&server).await;
    let r = eval(
        &mut con,
        "redis.call('set', KEYS[1], ARGV[1]); redis.call('rpush', KEYS[2], 'a', 'b'); \
         return {redis.call('get', KEYS[1]), redis.call('incr', KEYS[3]), \
         redis.call('get', KEYS[4]) == false and 'nil-is-false' or 'no', \
         redis.call('lrange', KEYS[2], 0, -1), redis.call('set', KEYS[1], 'w').ok, 3.99, true}",
        &["s", "l", "n", "missing"],
        &["v"],
    )
    .await
    .expect("eval");
    assert_eq!(
        r,
        Value::Array(vec![
            bulk("v"),
            Value::Int(1),
            bulk("nil-is-false"),
            Value::Array(vec![bulk("a"), bulk("b")]),
            bulk("OK"),
            Value::Int(3),
            Value::Int(1),
        ])
    );
    assert_eq!(eval(&mut con, "return nil", &[], &[]).await.expect("nil"), Value::Nil);
    assert_eq!(
        eval(&mut con, "return redis.status_reply('FINE')", &[], &[]).await.expect("status"),
        Value::SimpleString("FINE".into())
    );
    let e = err_text(eval(&mut con, "return redis.error_reply('MYERR went wrong')", &[], &[]).await);
    assert!(e.starts_with("MYERR went wrong"), "{e}");
    // The script's writes were committed together.
    let got: (String, i64) = redis::pipe().get("s").get("n").query_async(&mut con).await.expect("read back");
    assert_eq!(got, ("w".to_string(), 1));
}

#[tokio::test]
async fn evalsha_falls_back_to_eval_and_script_commands_work() {
    let server = server(5_000).await;
    let mut con = connect(&server).await;
    let body = "return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha = nanodb_server::scripting::sha1_hex(body.as_bytes());
    let e = err_text(redis::cmd("EVALSHA").arg(&sha).arg(1).arg("c").arg(5).query_async(&mut con).await);
    assert_eq!(e, "NOSCRIPT No matching script. Please use EVAL.");
    let exists: Vec<i64> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).query_async(&mut con).await.expect("exists");
    assert_eq!(exists, vec![0]);
    // What a client library does (redis-py's Script, the redis crate's): EVALSHA, and on
    // NOSCRIPT, EVAL with the text, which caches it.
    let n: i64 =
        match redis::cmd("EVALSHA").arg(&sha).arg(1).arg("c").arg(5).query_async::<i64>(&mut con).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                redis::cmd("EVAL").arg(body).arg(1).arg("c").arg(5).query_async(&mut con).await.expect("eval")
            }
            other => panic!("{other:?}"),
        };
    assert_eq!(n, 5);
    let exists: Vec<i64> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).query_async(&mut con).await.expect("exists");
    assert_eq!(exists, vec![1], "EVAL cached the script");
    let loaded: String =
        redis::cmd("SCRIPT").arg("LOAD").arg(body).query_async(&mut con).await.expect("load");
    assert_eq!(loaded, sha);
    let n: i64 = redis::cmd("EVALSHA")
        .arg(sha.to_uppercase())
        .arg(1)
        .arg("c")
        .arg(2)
        .query_async(&mut con)
        .await
        .expect("evalsha");
    assert_eq!(n, 7);
    let ok: String = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut con).await.expect("flush");
    assert_eq!(ok, "OK");
    let exists: Vec<i64> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).arg("x").query_async(&mut con).await.expect("exists");
    assert_eq!(exists, vec![0, 0]);
    let e = err_text(redis::cmd("SCRIPT").arg("KILL").query_async(&mut con).await);
    assert_eq!(e, "NOTBUSY No scripts in execution right now.");
    let e = err_text(redis::cmd("SCRIPT").arg("LOAD").arg("return +").query_async(&mut con).await);
    assert!(e.starts_with("ERR Error compiling script"), "{e}");
    let e = err_text(redis::cmd("EVAL").arg("return 1").arg(2).arg("a").query_async(&mut con).await);
    assert_eq!(e, "ERR Number of keys can't be greater than number of args");
    let e = err_text(eval(&mut con, "local x = 1\nreturn x.y", &[], &[]).await);
    assert!(e.starts_with("ERR user_script:2: attempt to index local 'x'"), "the error names the line: {e}");
}

#[tokio::test]
async fn undeclared_keys_are_refused_and_nothing_is_written() {
    let server = server(5_000).await;
    let mut con = connect(&server).await;
    let e = err_text(
        eval(
            &mut con,
            "redis.call('set', KEYS[1], 'x') return redis.call('set', 'other', 'y')",
            &["mine"],
            &[],
        )
        .await,
    );
    assert!(e.contains("'other' was not declared"), "{e}");
    let e = err_text(eval(&mut con, "return redis.call('dbsize')", &[], &[]).await);
    assert!(e.contains("cannot run in a transaction"), "{e}");
    let e = err_text(eval(&mut con, "return redis.call('eval', 'return 1', 0)", &[], &[]).await);
    assert!(e.contains("not allowed from script"), "{e}");
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.expect("dbsize");
    assert_eq!(n, 0, "a failed script writes nothing, not even before its error");
}

#[tokio::test]
async fn each_sandbox_escape_is_refused_and_the_server_is_unharmed() {
    let server = server(300).await;
    let mut con = connect(&server).await;
    for (script, want) in [
        ("return os.execute('touch /tmp/nanodb-escaped')", "global 'os'"),
        ("return io.open('/etc/passwd'):read('*a')", "global 'io'"),
        ("return require('os')", "global 'require'"),
        ("return assert(load(string.dump(function() return 1 end)))()", "bytecode"),
        ("return setmetatable(_G, {__index = function() return 1 end})", "protected metatable"),
        ("return rawset(_G, 'KEYS', {})", "readonly table"),
        ("while true do end", "BUSY"),
        ("return string.rep('x', 2^30)", "--script-max-memory"),
        ("local function f(n) return 1 + f(n + 1) end return f(1)", "stack overflow"),
    ] {
        let e = err_text(eval(&mut con, script, &["k"], &[]).await);
        assert!(e.contains(want), "{script}: {e}");
        // The server still answers, scripts still run.
        let pong: String = redis::cmd("PING").query_async(&mut con).await.expect("ping");
        assert_eq!(pong, "PONG");
        assert_eq!(eval(&mut con, "return KEYS[1]", &["k"], &[]).await.expect("eval"), bulk("k"));
    }
    assert!(!std::path::Path::new("/tmp/nanodb-escaped").exists());
}

#[tokio::test]
async fn stopped_scripts_leave_nothing_written() {
    let server = server(300).await;
    let mut con = connect(&server).await;
    for script in [
        "redis.call('set', KEYS[1], 'x') redis.call('incr', KEYS[2]) while true do end",
        "redis.call('set', KEYS[1], 'x') redis.call('incr', KEYS[2]) local t = {} for i = 1, 1e9 do t[i] = i end",
        "redis.call('set', KEYS[1], 'x') redis.call('incr', KEYS[2]) pcall(string.rep, 'x', 2^30) return 1",
    ] {
        let e = err_text(eval(&mut con, script, &["a", "b"], &[]).await);
        assert!(
            e.starts_with("BUSY") || e.starts_with("OOM") || e.contains("--script-max-memory"),
            "{script}: {e}"
        );
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.expect("dbsize");
        assert_eq!(n, 0, "{script} wrote something");
    }
}

#[tokio::test]
async fn script_kill_stops_a_writing_script_and_others_are_not_blocked() {
    let server = server(60_000).await;
    let mut runner = connect(&server).await;
    let mut other = connect(&server).await;
    let running = tokio::spawn(async move {
        eval(&mut runner, "redis.call('set', KEYS[1], 'x') while true do end", &["held"], &[]).await
    });
    // Another client is served meanwhile (whichever event loop it shares), then kills the
    // script. (A key in one of the script's partitions would wait: PING touches none.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pong: String = redis::cmd("PING").query_async(&mut other).await.expect("ping");
        assert_eq!(pong, "PONG");
        match redis::cmd("SCRIPT").arg("KILL").query_async::<String>(&mut other).await {
            Ok(ok) => {
                assert_eq!(ok, "OK");
                break;
            }
            Err(e) if e.code() == Some("NOTBUSY") => {
                assert!(Instant::now() < deadline, "the script never ran");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("SCRIPT KILL: {e}"),
        }
    }
    let e = err_text(running.await.expect("runner task"));
    assert!(e.contains("SCRIPT KILL"), "{e}");
    let held: Option<String> = redis::cmd("GET").arg("held").query_async(&mut other).await.expect("get");
    assert_eq!(held, None, "the killed script's write was not kept");
}

#[tokio::test]
async fn eval_over_the_binary_tcp_protocol() {
    let server = server(5_000).await;
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let eval =
        |script: ScriptSource| Command::Eval(cmd::Eval { script, keys: vec![b("t")], args: vec![b("3")] });
    let text = "return {redis.call('incrby', KEYS[1], ARGV[1]), redis.status_reply('OK')}";
    let r = tcp.call(eval(ScriptSource::Text(b(text)))).await;
    assert_eq!(
        r,
        Ok(Reply::Script(ScriptValue::Array(vec![ScriptValue::Int(3), ScriptValue::Status("OK".into())])))
    );
    let sha = nanodb_server::scripting::sha1_hex(text.as_bytes());
    let r = tcp.call(eval(ScriptSource::Sha(b(&sha)))).await;
    assert!(
        matches!(r, Ok(Reply::Script(ScriptValue::Array(ref v))) if v[0] == ScriptValue::Int(6)),
        "{r:?}"
    );
    let r = tcp.call(eval(ScriptSource::Sha(b(&"0".repeat(40))))).await;
    assert!(
        matches!(&r, Err(Error::Remote { message, .. }) if message == "NOSCRIPT No matching script. Please use EVAL."),
        "{r:?}"
    );
    let r = tcp.call(Command::Get(cmd::Get { key: b("t") })).await;
    assert!(matches!(r, Ok(Reply::Value(Some(ref e))) if e.value == b("6")), "{r:?}");
}
