//! The runner, the sandbox and the limits, through the RESP command path's `run`.

use bytes::Bytes;
use nanodb_protocol::{Error, ScriptSource, ScriptValue, cmd};

use crate::auth::Caller;
use crate::config::Config;
use crate::frontend::Context;
use crate::stats::Protocol;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ctx() -> Context {
    let mut config = Config::all_off();
    config.script_timeout = std::time::Duration::from_millis(200);
    config.script_max_memory = 8 * 1024 * 1024;
    Context::for_tests(config)
}

fn eval(ctx: &Context, script: &str, keys: &[&str], args: &[&str]) -> Result<ScriptValue, Error> {
    let eval = cmd::Eval {
        script: ScriptSource::Text(b(script)),
        keys: keys.iter().map(|k| b(k)).collect(),
        args: args.iter().map(|a| b(a)).collect(),
    };
    ctx.run_pipelined(&Caller::everything(Protocol::Resp), eval).0
}

fn script_error(r: Result<ScriptValue, Error>) -> String {
    match r {
        Err(Error::Script(m)) => m,
        other => panic!("expected a script error, got {other:?}"),
    }
}

#[test]
fn replies_convert_as_redis_converts_them() {
    let ctx = ctx();
    assert_eq!(eval(&ctx, "return 3.9", &[], &[]), Ok(ScriptValue::Int(3)));
    assert_eq!(eval(&ctx, "return 'x'", &[], &[]), Ok(ScriptValue::Bulk(b("x"))));
    assert_eq!(eval(&ctx, "return nil", &[], &[]), Ok(ScriptValue::Nil));
    assert_eq!(eval(&ctx, "return true", &[], &[]), Ok(ScriptValue::Int(1)));
    assert_eq!(eval(&ctx, "return false", &[], &[]), Ok(ScriptValue::Nil));
    assert_eq!(
        eval(&ctx, "return {1, 'a', {2}, nil, 5}", &[], &[]),
        Ok(ScriptValue::Array(vec![
            ScriptValue::Int(1),
            ScriptValue::Bulk(b("a")),
            ScriptValue::Array(vec![ScriptValue::Int(2)]),
        ]))
    );
    assert_eq!(
        eval(&ctx, "return redis.status_reply('FINE')", &[], &[]),
        Ok(ScriptValue::Status("FINE".into()))
    );
    let sha = super::sha1_hex(b"return redis.error_reply('MY err')");
    assert_eq!(
        script_error(eval(&ctx, "return redis.error_reply('MY err')", &[], &[])),
        format!("MY err script: {sha}")
    );
    // Redis -> Lua: integer, bulk, nil -> false, status table, array.
    let r = eval(
        &ctx,
        "redis.call('set', KEYS[1], 'v'); local s = redis.call('set', KEYS[1], 'w'); \
         return {redis.call('get', KEYS[1]), redis.call('incr', KEYS[2]), tostring(redis.call('get', KEYS[3])), \
         s.ok, type(redis.call('lrange', KEYS[3], 0, -1))}",
        &["k", "n", "missing"],
        &[],
    );
    assert_eq!(
        r,
        Ok(ScriptValue::Array(vec![
            ScriptValue::Bulk(b("w")),
            ScriptValue::Int(1),
            ScriptValue::Bulk(b("false")),
            ScriptValue::Bulk(b("OK")),
            ScriptValue::Bulk(b("table")),
        ]))
    );
}

#[test]
fn errors_name_the_line_and_leave_nothing_written() {
    let ctx = ctx();
    let e =
        script_error(eval(&ctx, "redis.call('set', KEYS[1], 'x')\nlocal t = nil\nreturn t.x", &["a"], &[]));
    assert!(e.starts_with("ERR user_script:3: attempt to index"), "{e}");
    assert_eq!(ctx.engine.key_count(), 0, "a failed script writes nothing");
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x')\nreturn redis.call('incr', KEYS[1])",
        &["a"],
        &[],
    ));
    assert!(e.starts_with("ERR value is not an integer"), "{e}");
    assert_eq!(ctx.engine.key_count(), 0);
    let r = eval(&ctx, "redis.call('set', KEYS[1], 'x')\nreturn redis.pcall('incr', KEYS[1])", &["a"], &[]);
    // pcall returns the error table instead of raising; returned, it is the script's error.
    assert!(script_error(r).starts_with("ERR value is not an integer"));
    let r = eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x') local e = redis.pcall('incr', KEYS[1]) return {type(e), e.err ~= nil}",
        &["a"],
        &[],
    );
    assert_eq!(r, Ok(ScriptValue::Array(vec![ScriptValue::Bulk(b("table")), ScriptValue::Int(1)])));
    let e = script_error(eval(&ctx, "return redis.call('set', 'other', 'x')", &["a"], &[]));
    assert!(e.contains("was not declared"), "{e}");
    let e = script_error(eval(&ctx, "return 1 +", &[], &[]));
    assert!(e.starts_with("ERR Error compiling script"), "{e}");
}

#[test]
fn evalsha_finds_cached_scripts_only() {
    let ctx = ctx();
    let run_sha = |sha: &str| {
        let eval = cmd::Eval { script: ScriptSource::Sha(b(sha)), keys: vec![], args: vec![b("7")] };
        ctx.run_pipelined(&Caller::everything(Protocol::Resp), eval).0
    };
    let sha = super::sha1_hex(b"return ARGV[1]");
    assert_eq!(script_error(run_sha(&sha)), "NOSCRIPT No matching script. Please use EVAL.");
    assert_eq!(ctx.scripts.load(b("return ARGV[1]")), Ok(sha.clone()));
    assert!(ctx.scripts.exists(sha.to_uppercase().as_bytes()));
    assert_eq!(run_sha(&sha), Ok(ScriptValue::Bulk(b("7"))));
    ctx.scripts.flush();
    assert!(!ctx.scripts.exists(sha.as_bytes()));
    assert_eq!(script_error(run_sha(&sha)), "NOSCRIPT No matching script. Please use EVAL.");
}

#[test]
fn sandbox_escapes_are_refused_and_the_state_stays_usable() {
    let ctx = ctx();
    for (script, want) in [
        ("return os.execute('true')", "attempt to index global 'os'"),
        ("return io.open('/etc/passwd')", "attempt to index global 'io'"),
        ("return require('os')", "attempt to call global 'require'"),
        ("return dofile('/etc/passwd')", "attempt to call global 'dofile'"),
        ("return loadfile('/etc/passwd')", "attempt to call global 'loadfile'"),
        ("return debug.getinfo(1)", "attempt to index global 'debug'"),
        ("return package.loaded", "attempt to index global 'package'"),
        ("return setfenv(1, {})", "attempt to call global 'setfenv'"),
        ("return assert(load(string.dump(function() return 1 end)))()", "loading bytecode is not allowed"),
        (
            "return assert(loadstring(string.dump(function() return 1 end)))()",
            "loading bytecode is not allowed",
        ),
        ("setmetatable(_G, {})", "cannot change a protected metatable"),
        ("rawset(_G, 'x', 1)", "Attempt to modify a readonly table"),
        ("x = 1", "Attempt to modify a readonly table"),
        ("KEYS = {}", "Attempt to modify a readonly table"),
        ("_G = nil", "Attempt to modify a readonly table"),
        ("string.upper = nil", "Attempt to modify a readonly table"),
        ("rawset(string, 'upper', nil)", "Attempt to modify a readonly table"),
        ("redis.call = nil", "Attempt to modify a readonly table"),
        ("return getmetatable('').__index", "attempt to index a boolean value"),
        ("local function f() return 1 + f() end return f()", "stack overflow"),
    ] {
        let e = script_error(eval(&ctx, script, &[], &[]));
        assert!(e.contains(want), "{script}: {e}");
    }
    // Nothing leaked into later scripts.
    assert_eq!(eval(&ctx, "return string.upper('a') .. type(x)", &[], &[]), Ok(ScriptValue::Bulk(b("Anil"))));
    // A loaded text chunk runs in the script's environment.
    assert_eq!(
        eval(&ctx, "return loadstring('return KEYS[1]')()", &["k"], &[]),
        Ok(ScriptValue::Bulk(b("k")))
    );
}

#[test]
fn a_script_past_its_limits_is_stopped_and_writes_nothing() {
    let ctx = ctx();
    let started = std::time::Instant::now();
    let e = script_error(eval(&ctx, "redis.call('set', KEYS[1], 'x') while true do end", &["a"], &[]));
    assert!(e.starts_with("BUSY") && e.contains("--script-timeout-ms"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // pcall cannot swallow the stop.
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x') while true do pcall(function() while true do end end) end",
        &["a"],
        &[],
    ));
    assert!(e.starts_with("BUSY"), "{e}");
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x') return #string.rep('x', 2^30)",
        &["a"],
        &[],
    ));
    assert!(e.contains("--script-max-memory"), "{e}");
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x') local t = {} for i = 1, 1e9 do t[i] = i end",
        &["a"],
        &[],
    ));
    assert!(e.starts_with("OOM"), "{e}");
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x') local ok = pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end) return 1",
        &["a"],
        &[],
    ));
    assert!(e.starts_with("OOM"), "{e}");
    assert_eq!(ctx.engine.key_count(), 0, "no stopped script wrote anything");
    assert_eq!(
        eval(&ctx, "return redis.call('set', KEYS[1], 'ok')", &["a"], &[]),
        Ok(ScriptValue::Status("OK".into()))
    );
    assert_eq!(ctx.engine.key_count(), 1);
}

#[test]
fn script_kill_stops_a_running_script() {
    let ctx = ctx();
    assert_eq!(ctx.scripts.kill(), super::Killed::NotBusy);
    let mut config = Config::all_off();
    config.script_timeout = std::time::Duration::from_secs(30);
    let ctx = Context::for_tests(config);
    let runner = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            eval(&ctx, "redis.call('set', KEYS[1], 'x') while true do end", &["a"], &[])
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ctx.scripts.kill() == super::Killed::NotBusy {
        assert!(std::time::Instant::now() < deadline, "the script never showed up as running");
        std::thread::yield_now();
    }
    let e = script_error(runner.join().expect("runner"));
    assert!(e.contains("SCRIPT KILL"), "{e}");
    assert_eq!(ctx.engine.key_count(), 0);
}

#[test]
fn scripts_are_named_by_the_sha1_redis_gives_them() {
    // Values from Redis (SCRIPT LOAD "return 1") and from any SHA-1 of the empty string.
    assert_eq!(super::sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    assert_eq!(super::sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

#[test]
fn a_script_run_again_starts_from_a_clean_environment() {
    let ctx = ctx();
    // A script keeps its environment from one run to the next (built once): what a run puts
    // into KEYS and ARGV is gone in the next run, and, as in Redis 7, the globals themselves
    // (KEYS, ARGV and _G included) cannot be assigned, so no run can leave one behind.
    let script = "local seen = {tostring(KEYS[2]), tostring(ARGV[2]), type(_G), tostring(rawget(_G, 'x')), \
                  tostring(_G.KEYS == KEYS)} \
                  KEYS[2] = 'left'; ARGV[2] = 'left'; \
                  for _, assign in ipairs({function() _G = nil end, function() KEYS = nil end, \
                                           function() ARGV = {} end}) do \
                    local ok, e = pcall(assign) \
                    if ok or not string.find(e, 'Attempt to modify a readonly table', 1, true) then \
                      return 'assigned a global' \
                    end \
                  end \
                  return seen";
    let want = Ok(ScriptValue::Array(vec![
        ScriptValue::Bulk(b("nil")),
        ScriptValue::Bulk(b("nil")),
        ScriptValue::Bulk(b("table")),
        ScriptValue::Bulk(b("nil")),
        ScriptValue::Bulk(b("true")),
    ]));
    for _ in 0..3 {
        assert_eq!(eval(&ctx, script, &["k"], &["a"]), want);
    }
    // Between runs the environment holds nothing of the last one: a script without keys sees
    // empty KEYS and ARGV, not the previous run's.
    assert_eq!(
        eval(&ctx, "return {#KEYS, #ARGV}", &[], &[]),
        Ok(ScriptValue::Array(vec![ScriptValue::Int(0), ScriptValue::Int(0)]))
    );
    // The same body arrives again (its SHA-1 remembered by this thread) with other keys.
    assert_eq!(eval(&ctx, "return KEYS[1] .. ARGV[1]", &["k1"], &["a1"]), Ok(ScriptValue::Bulk(b("k1a1"))));
    assert_eq!(eval(&ctx, "return KEYS[1] .. ARGV[1]", &["k2"], &["a2"]), Ok(ScriptValue::Bulk(b("k2a2"))));
    // KEYS and ARGV are whole whether the lists are short (passed as values) or long (as tables).
    let script =
        "return {#KEYS, #ARGV, KEYS[1] or '-', KEYS[#KEYS] or '-', ARGV[1] or '-', ARGV[#ARGV] or '-'}";
    for (nkeys, nargs) in [(0, 0), (1, 0), (0, 1), (2, 3), (16, 16), (17, 16), (3, 40), (40, 0)] {
        let keys: Vec<String> = (1..=nkeys).map(|i| format!("k{i}")).collect();
        let args: Vec<String> = (1..=nargs).map(|i| format!("a{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let edge = |items: &[&str], first: bool| {
            b(if first { items.first() } else { items.last() }.copied().unwrap_or("-"))
        };
        assert_eq!(
            eval(&ctx, script, &keys, &args),
            Ok(ScriptValue::Array(vec![
                ScriptValue::Int(nkeys),
                ScriptValue::Int(nargs),
                ScriptValue::Bulk(edge(&keys, true)),
                ScriptValue::Bulk(edge(&keys, false)),
                ScriptValue::Bulk(edge(&args, true)),
                ScriptValue::Bulk(edge(&args, false)),
            ])),
            "{nkeys} keys, {nargs} arguments"
        );
    }
    // An error names the script by its SHA-1 on a remembered body too.
    let body = "return redis.error_reply('again')";
    for _ in 0..2 {
        let e = script_error(eval(&ctx, body, &[], &[]));
        assert_eq!(e, format!("again script: {}", super::sha1_hex(body.as_bytes())));
    }
}

/// A thread's Lua state keeps its session and the group's overlay from one script to the next:
/// a script that wrote and then failed, or was stopped, leaves nothing the next script on the
/// same state can see, and a committed script's keys are visible only where declared.
#[test]
fn a_script_on_a_reused_state_finds_nothing_an_earlier_one_left() {
    let ctx = ctx();
    let seen =
        "return {redis.call('exists', KEYS[1]), redis.call('exists', KEYS[2]), redis.call('pttl', KEYS[2])}";
    let none = Ok(ScriptValue::Array(vec![ScriptValue::Int(0), ScriptValue::Int(0), ScriptValue::Int(-2)]));
    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x'); redis.call('set', KEYS[2], 'y', 'PX', 100000); error('boom')",
        &["a", "b"],
        &[],
    ));
    assert!(e.contains("boom"), "{e}");
    assert_eq!(eval(&ctx, seen, &["a", "b"], &[]), none);

    let e = script_error(eval(&ctx, "redis.call('set', KEYS[1], 'x'); while true do end", &["a"], &[]));
    assert!(e.starts_with("BUSY"), "{e}");
    assert_eq!(eval(&ctx, seen, &["a", "b"], &[]), none);

    let e = script_error(eval(
        &ctx,
        "redis.call('set', KEYS[1], 'x'); redis.call('set', 'undeclared', 'y')",
        &["a"],
        &[],
    ));
    assert!(e.contains("not declared"), "{e}");
    assert_eq!(eval(&ctx, seen, &["a", "undeclared"], &[]), none);

    // Committed, with a TTL: the next script sees it under its key, and nothing under others.
    assert_eq!(
        eval(&ctx, "return redis.call('set', KEYS[1], 'v', 'PX', 100000)", &["c"], &[]),
        Ok(ScriptValue::Status("OK".into()))
    );
    assert_eq!(eval(&ctx, seen, &["d", "e"], &[]), none);
    assert_eq!(eval(&ctx, "return redis.call('get', KEYS[1])", &["c"], &[]), Ok(ScriptValue::Bulk(b("v"))));
    // Nothing of any earlier run is in the next one's environment or session either.
    assert_eq!(
        eval(&ctx, "return {tostring(rawget(_G, 'x')), #KEYS, #ARGV}", &[], &[]),
        Ok(ScriptValue::Array(vec![ScriptValue::Bulk(b("nil")), ScriptValue::Int(0), ScriptValue::Int(0)]))
    );
}
