//! Engine unit tests: every operation, TTL under paused time, WRONGTYPE, conditions, limits,
//! scans and the sweeper.

use nanodb_protocol::cmd;
use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use nanodb_protocol::{
    Class, Command, CommandName, Entry, Error, Expiry, Limits, ListEnd, PutCondition, Reply,
};

use super::Engine;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn engine() -> Engine {
    Engine::new(Limits::default())
}

fn ok(e: &Engine, cmd: Command) -> Reply {
    e.execute(cmd).expect("command succeeds")
}

fn put(e: &Engine, k: &str, v: &str) -> u64 {
    put_with(e, k, v, 0, PutCondition::Always).1
}

fn put_with(e: &Engine, k: &str, v: &str, ttl_ms: u64, condition: PutCondition) -> (bool, u64) {
    match ok(
        e,
        Command::Put(cmd::Put { key: b(k), value: b(v), expiry: Expiry::from_put_ttl_ms(ttl_ms), condition }),
    ) {
        Reply::Put { applied, version } => (applied, version),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(e: &Engine, k: &str) -> Option<Entry> {
    match ok(e, Command::Get(cmd::Get { key: b(k) })) {
        Reply::Value(v) => v,
        other => panic!("unexpected {other:?}"),
    }
}

fn int(e: &Engine, cmd: Command) -> i64 {
    match ok(e, cmd) {
        Reply::Int(i) => i,
        other => panic!("unexpected {other:?}"),
    }
}

fn boolean(e: &Engine, cmd: Command) -> bool {
    match ok(e, cmd) {
        Reply::Bool(x) => x,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn put_get_delete_exists() {
    let e = engine();
    assert_eq!(get(&e, "k"), None);
    let v1 = put(&e, "k", "v1");
    assert_eq!(get(&e, "k"), Some(Entry { value: b("v1"), version: v1, ttl_ms: -1 }));
    assert!(boolean(&e, Command::Exists(cmd::Exists { key: b("k") })));
    let v2 = put(&e, "k", "v2");
    assert!(v2 > v1, "every write gets a new, larger version");
    assert!(boolean(&e, Command::Delete(cmd::Delete { key: b("k") })));
    assert!(!boolean(&e, Command::Delete(cmd::Delete { key: b("k") })));
    assert!(!boolean(&e, Command::Exists(cmd::Exists { key: b("k") })));
    assert_eq!(get(&e, "k"), None);
    let v3 = put(&e, "k", "v3");
    assert!(v3 > v2, "a re-created key never repeats a version");
}

#[tokio::test(start_paused = true)]
async fn delete_if_removes_only_the_named_version() {
    let e = engine();
    assert!(
        !boolean(&e, Command::DeleteIf(cmd::DeleteIf { key: b("k"), version: 1 })),
        "missing: nothing to delete"
    );
    let v1 = put(&e, "k", "v1");
    let v2 = put(&e, "k", "v2");
    assert!(!boolean(&e, Command::DeleteIf(cmd::DeleteIf { key: b("k"), version: v1 })), "stale version");
    assert_eq!(get(&e, "k").map(|x| x.version), Some(v2), "a failed delete_if changes nothing");
    assert!(boolean(&e, Command::DeleteIf(cmd::DeleteIf { key: b("k"), version: v2 })));
    assert_eq!(get(&e, "k"), None);
    let expired = put_with(&e, "t", "v", 1, PutCondition::Always).1;
    tokio::time::advance(Duration::from_millis(5)).await;
    assert!(
        !boolean(&e, Command::DeleteIf(cmd::DeleteIf { key: b("t"), version: expired })),
        "expired keys are missing"
    );
}

#[test]
fn binary_keys_and_values_are_exact() {
    let e = engine();
    let key = Bytes::from_static(b"\x00k\xff/ \xc3");
    let value = Bytes::from_static(b"\x00\xff\r\n\x00");
    ok(
        &e,
        Command::Put(cmd::Put {
            key: key.clone(),
            value: value.clone(),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }),
    );
    match ok(&e, Command::Get(cmd::Get { key })) {
        Reply::Value(Some(entry)) => assert_eq!(entry.value, value),
        other => panic!("{other:?}"),
    }
}

#[test]
fn put_conditions() {
    let e = engine();
    assert_eq!(put_with(&e, "k", "x", 0, PutCondition::IfPresent), (false, 0));
    assert_eq!(get(&e, "k"), None, "a failed condition writes nothing");
    let (applied, v1) = put_with(&e, "k", "a", 0, PutCondition::IfAbsent);
    assert!(applied);
    assert_eq!(put_with(&e, "k", "b", 0, PutCondition::IfAbsent), (false, v1));
    assert_eq!(put_with(&e, "k", "c", 0, PutCondition::IfVersion(v1 + 100)), (false, v1));
    let (applied, v2) = put_with(&e, "k", "d", 0, PutCondition::IfVersion(v1));
    assert!(applied && v2 > v1);
    assert_eq!(put_with(&e, "k", "e", 0, PutCondition::IfVersion(v1)), (false, v2), "stale version loses");
    let (applied, _) = put_with(&e, "k", "f", 0, PutCondition::IfPresent);
    assert!(applied);
    assert_eq!(get(&e, "k").map(|x| x.value), Some(b("f")));
}

#[test]
fn incr_and_decr() {
    let e = engine();
    assert_eq!(int(&e, Command::Incr(cmd::Incr { key: b("n"), delta: 5 })), 5);
    assert_eq!(int(&e, Command::Incr(cmd::Incr { key: b("n"), delta: -7 })), -2);
    assert_eq!(get(&e, "n").map(|x| x.value), Some(b("-2")), "integers read back as text");
    put(&e, "s", "41");
    assert_eq!(int(&e, Command::Incr(cmd::Incr { key: b("s"), delta: 1 })), 42);
    put(&e, "t", "4.5");
    assert_eq!(e.execute(Command::Incr(cmd::Incr { key: b("t"), delta: 1 })), Err(Error::NotAnInteger));
    assert_eq!(get(&e, "t").map(|x| x.value), Some(b("4.5")), "a failed incr changes nothing");
    put(&e, "max", &i64::MAX.to_string());
    assert_eq!(e.execute(Command::Incr(cmd::Incr { key: b("max"), delta: 1 })), Err(Error::Overflow));
    assert_eq!(int(&e, Command::Incr(cmd::Incr { key: b("max"), delta: -1 })), i64::MAX - 1);
}

#[test]
fn wrong_type_across_types() {
    let e = engine();
    ok(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") }));
    ok(&e, Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values: vec![b("a")] }));
    put(&e, "s", "v");
    let wrong = [
        Command::Get(cmd::Get { key: b("h") }),
        Command::Incr(cmd::Incr { key: b("l"), delta: 1 }),
        Command::HashSet(cmd::HashSet { key: b("s"), field: b("f"), value: b("v") }),
        Command::HashGet(cmd::HashGet { key: b("l"), field: b("f") }),
        Command::HashDelete(cmd::HashDelete { key: b("s"), field: b("f") }),
        Command::HashGetAll(cmd::HashGetAll { key: b("l") }),
        Command::ListPush(cmd::ListPush { key: b("h"), end: ListEnd::Front, values: vec![b("x")] }),
        Command::ListPop(cmd::ListPop { key: b("s"), end: ListEnd::Back, count: 1 }),
        Command::ListRange(cmd::ListRange { key: b("h"), start: 0, stop: -1 }),
    ];
    for cmd in wrong {
        assert_eq!(e.execute(cmd.clone()), Err(Error::WrongType), "{cmd:?}");
    }
    // Put replaces any type, as SET does; delete removes any type.
    put(&e, "h", "now a string");
    assert_eq!(get(&e, "h").map(|x| x.value), Some(b("now a string")));
    assert!(boolean(&e, Command::Delete(cmd::Delete { key: b("l") })));
}

#[test]
fn hashes() {
    let e = engine();
    assert!(boolean(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("a"), value: b("1") })));
    assert!(!boolean(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("a"), value: b("2") })));
    assert!(boolean(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("b"), value: b("3") })));
    assert_eq!(
        ok(&e, Command::HashGet(cmd::HashGet { key: b("h"), field: b("a") })),
        Reply::Bytes(Some(b("2")))
    );
    assert_eq!(ok(&e, Command::HashGet(cmd::HashGet { key: b("h"), field: b("zz") })), Reply::Bytes(None));
    assert_eq!(ok(&e, Command::HashGet(cmd::HashGet { key: b("nope"), field: b("a") })), Reply::Bytes(None));
    let Reply::Pairs(mut all) = ok(&e, Command::HashGetAll(cmd::HashGetAll { key: b("h") })) else {
        panic!()
    };
    all.sort();
    assert_eq!(all, vec![(b("a"), b("2")), (b("b"), b("3"))]);
    assert!(boolean(&e, Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("a") })));
    assert!(!boolean(&e, Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("a") })));
    assert!(boolean(&e, Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("b") })));
    assert!(!boolean(&e, Command::Exists(cmd::Exists { key: b("h") })), "an emptied hash is removed");
    assert_eq!(ok(&e, Command::HashGetAll(cmd::HashGetAll { key: b("h") })), Reply::Pairs(vec![]));
}

#[test]
fn lists() {
    let e = engine();
    let push = |end, vals: &[&str]| {
        Command::ListPush(cmd::ListPush { key: b("l"), end, values: vals.iter().map(|v| b(v)).collect() })
    };
    assert_eq!(int(&e, push(ListEnd::Back, &["c", "d"])), 2);
    assert_eq!(int(&e, push(ListEnd::Front, &["b", "a"])), 4);
    let range = |start, stop| ok(&e, Command::ListRange(cmd::ListRange { key: b("l"), start, stop }));
    assert_eq!(range(0, -1), Reply::List(vec![b("a"), b("b"), b("c"), b("d")]));
    assert_eq!(range(-2, -1), Reply::List(vec![b("c"), b("d")]));
    assert_eq!(range(5, 9), Reply::List(vec![]));
    assert_eq!(
        ok(&e, Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Front, count: 0 })),
        Reply::List(vec![b("a")])
    );
    assert_eq!(
        ok(&e, Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Back, count: 2 })),
        Reply::List(vec![b("d"), b("c")])
    );
    assert_eq!(
        ok(&e, Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Back, count: 9 })),
        Reply::List(vec![b("b")])
    );
    assert!(!boolean(&e, Command::Exists(cmd::Exists { key: b("l") })), "an emptied list is removed");
    assert_eq!(
        ok(&e, Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Back, count: 1 })),
        Reply::List(vec![])
    );
}

#[test]
fn limits_are_enforced_and_change_nothing() {
    let limits = Limits {
        max_key_len: 8,
        max_value_len: 16,
        max_batch_len: 3,
        max_scan_page: 5,
        default_scan_page: 2,
    };
    let e = Engine::new(limits);
    let long_key = Command::Put(cmd::Put {
        key: b("123456789"),
        value: b("v"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    assert!(matches!(e.execute(long_key), Err(Error::KeyTooLarge { len: 9, max: 8, .. })));
    let big = Command::Put(cmd::Put {
        key: b("k"),
        value: Bytes::from(vec![0; 17]),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    assert!(matches!(e.execute(big), Err(Error::ValueTooLarge { len: 17, max: 16 })));
    assert!(matches!(e.execute(Command::Get(cmd::Get { key: Bytes::new() })), Err(Error::Empty { .. })));
    let batch =
        Command::Batch(cmd::Batch { ops: vec![Command::Incr(cmd::Incr { key: b("n"), delta: 1 }); 4] });
    assert!(matches!(e.execute(batch), Err(Error::LimitExceeded { .. })));
    assert_eq!(e.key_count(), 0, "no rejected command wrote anything");
    let scan = Command::Scan(cmd::Scan { prefix: Bytes::new(), limit: 6, cursor: Bytes::new() });
    assert!(matches!(e.execute(scan), Err(Error::LimitExceeded { .. })));
}

#[tokio::test(start_paused = true)]
async fn ttl_expire_persist_with_paused_time() {
    let e = engine();
    put_with(&e, "k", "v", 1_000, PutCondition::Always);
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("k") })), 1_000);
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(get(&e, "k").map(|x| x.ttl_ms), Some(600));
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(get(&e, "k"), None, "expired exactly at the deadline");
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("k") })), -2);
    assert_eq!(e.key_count(), 0, "the read reclaimed the expired key");

    put(&e, "p", "v");
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("p") })), -1);
    assert!(
        !boolean(&e, Command::Expire(cmd::Expire { key: b("p"), expiry: Expiry::from_expire_ttl_ms(-1) })),
        "persist without a TTL is a no-op"
    );
    assert!(boolean(
        &e,
        Command::Expire(cmd::Expire { key: b("p"), expiry: Expiry::from_expire_ttl_ms(50) })
    ));
    assert!(boolean(
        &e,
        Command::Expire(cmd::Expire { key: b("p"), expiry: Expiry::from_expire_ttl_ms(-1) })
    ));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(get(&e, "p").is_some(), "persisted keys outlive their old deadline");
    assert!(
        boolean(&e, Command::Expire(cmd::Expire { key: b("p"), expiry: Expiry::from_expire_ttl_ms(0) })),
        "expire 0 deletes"
    );
    assert_eq!(get(&e, "p"), None);
    assert!(!boolean(
        &e,
        Command::Expire(cmd::Expire { key: b("missing"), expiry: Expiry::from_expire_ttl_ms(10) })
    ));

    // A plain put clears the TTL; an incr keeps it.
    put_with(&e, "c", "1", 100, PutCondition::Always);
    int(&e, Command::Incr(cmd::Incr { key: b("c"), delta: 1 }));
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("c") })), 100);
    put(&e, "c", "5");
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("c") })), -1);

    // An expired key counts as absent for conditions and types.
    put_with(&e, "x", "old", 10, PutCondition::Always);
    ok(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") }));
    ok(&e, Command::Expire(cmd::Expire { key: b("h"), expiry: Expiry::from_expire_ttl_ms(10) }));
    tokio::time::advance(Duration::from_millis(10)).await;
    assert!(put_with(&e, "x", "new", 0, PutCondition::IfAbsent).0);
    assert_eq!(
        int(&e, Command::Incr(cmd::Incr { key: b("h"), delta: 1 })),
        1,
        "the expired hash is gone, not WRONGTYPE"
    );
}

#[tokio::test(start_paused = true)]
async fn sweeper_reclaims_only_due_keys_within_budget() {
    let e = engine();
    for i in 0..1_000 {
        put_with(&e, &format!("short{i}"), "v", 100, PutCondition::Always);
        put_with(&e, &format!("long{i}"), "v", 10_000, PutCondition::Always);
        put(&e, &format!("forever{i}"), "v");
    }
    assert_eq!(e.sweep_expired(10_000).removed, 0, "nothing due yet");
    tokio::time::advance(Duration::from_millis(100)).await;
    let first = e.sweep_expired(300);
    assert_eq!((first.removed, first.more), (300, true), "the budget bounds one call");
    let mut removed = first.removed;
    loop {
        let r = e.sweep_expired(300);
        removed += r.removed;
        if !r.more {
            break;
        }
    }
    assert_eq!(removed, 1_000);
    assert_eq!(e.key_count(), 2_000, "unexpired keys are untouched");
    // Rewriting a key with a new TTL drops its old index entry: nothing stale is left behind.
    put_with(&e, "long0", "v", 50, PutCondition::Always);
    put(&e, "long1", "v");
    tokio::time::advance(Duration::from_millis(50)).await;
    assert_eq!(e.sweep_expired(10_000).removed, 1);
    tokio::time::advance(Duration::from_millis(10_000)).await;
    assert_eq!(e.sweep_expired(10_000).removed, 998);
    assert_eq!(e.key_count(), 1_001);
}

fn scan_all(e: &Engine, prefix: &str, limit: u32, mut between_pages: impl FnMut(usize)) -> Vec<Bytes> {
    let mut cursor = Bytes::new();
    let mut seen = Vec::new();
    for page in 0.. {
        let reply = ok(e, Command::Scan(cmd::Scan { prefix: b(prefix), limit, cursor: cursor.clone() }));
        let Reply::Scan { entries, next_cursor } = reply else { panic!("{reply:?}") };
        assert!(entries.len() <= limit as usize);
        seen.extend(entries.into_iter().map(|x| x.key));
        if next_cursor.is_empty() {
            break;
        }
        cursor = next_cursor;
        between_pages(page);
    }
    seen
}

#[test]
fn scan_visits_every_key_once_with_prefix() {
    let e = engine();
    for i in 0..2_000 {
        put(&e, &format!("user:{i}"), "v");
        put(&e, &format!("item:{i}"), "v");
    }
    for limit in [1, 7, 100, 10_000] {
        let seen = scan_all(&e, "user:", limit, |_| {});
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 2_000, "limit {limit}");
        assert_eq!(unique.len(), 2_000, "no duplicates at limit {limit}");
        assert!(unique.iter().all(|k| k.starts_with(b"user:")));
    }
    assert_eq!(scan_all(&e, "nothing", 10, |_| {}).len(), 0);
}

#[test]
fn scan_is_stable_under_concurrent_writes() {
    let e = engine();
    for i in 0..3_000 {
        put(&e, &format!("stable:{i}"), "v");
    }
    // Between pages, churn keys (inserts grow the maps, deletes shrink them).
    let mut churn = 0;
    let seen = scan_all(&e, "", 50, |_| {
        for _ in 0..40 {
            put(&e, &format!("churn:{churn}"), "v");
            if churn % 2 == 0 {
                ok(&e, Command::Delete(cmd::Delete { key: b(&format!("churn:{}", churn / 2)) }));
            }
            churn += 1;
        }
    });
    let stable: Vec<_> = seen.iter().filter(|k| k.starts_with(b"stable:")).collect();
    let unique: HashSet<_> = stable.iter().collect();
    assert_eq!(stable.len(), 3_000, "every key that existed throughout was visited");
    assert_eq!(unique.len(), 3_000, "exactly once");
    let all_unique: HashSet<_> = seen.iter().collect();
    assert_eq!(all_unique.len(), seen.len(), "no key is ever returned twice");
}

#[test]
fn scan_skips_expired_and_rejects_bad_cursors() {
    let e = engine();
    put(&e, "a", "v");
    let bad = Command::Scan(cmd::Scan { prefix: Bytes::new(), limit: 10, cursor: b("garbage-cursor") });
    assert!(matches!(e.execute(bad), Err(Error::InvalidArgument(_))));
}

#[test]
fn concurrent_incr_from_many_threads_is_exact() {
    let e = std::sync::Arc::new(engine());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    e.execute(Command::Incr(cmd::Incr { key: b("ctr"), delta: 1 })).expect("incr");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(get(&e, "ctr").map(|x| x.value), Some(b("40000")));
}

#[tokio::test(start_paused = true)]
async fn redis_string_operations() {
    use nanodb_protocol::Expiry;
    let e = engine();
    let set = |k: &str, v: &str, condition, expiry, get: bool| {
        let (key, value) = (b(k), b(v));
        if get {
            Command::GetSet(cmd::GetSet { key, value, condition, expiry })
        } else {
            Command::Put(cmd::Put { key, value, condition, expiry })
        }
    };
    put_with(&e, "k", "v1", 10_000, PutCondition::Always);
    // KEEPTTL keeps the deadline; GET returns the old value even when the condition fails.
    assert!(matches!(
        ok(&e, set("k", "v2", PutCondition::Always, Expiry::Keep, false)),
        Reply::Put { applied: true, .. }
    ));
    assert!(get(&e, "k").expect("present").ttl_ms > 9_000);
    match ok(&e, set("k", "v3", PutCondition::IfAbsent, Expiry::Persist, true)) {
        Reply::Value(Some(old)) => assert_eq!(old.value, b("v2")),
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&e, "k").expect("present").value, b("v2"), "NX did not apply");
    // An absolute deadline already past removes the key.
    ok(&e, set("k", "v4", PutCondition::Always, Expiry::At(1), false));
    assert_eq!(get(&e, "k"), None);
    // GETEX changes the TTL; GETDEL removes.
    put(&e, "g", "x");
    assert!(matches!(
        ok(&e, Command::GetEx(cmd::GetEx { key: b("g"), expiry: Expiry::In(5_000) })),
        Reply::Value(Some(_))
    ));
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("g") })), 5_000);
    assert!(matches!(ok(&e, Command::GetDel(cmd::GetDel { key: b("g") })), Reply::Value(Some(_))));
    assert_eq!(get(&e, "g"), None);
    // EXPIREAT in the future, then in the past.
    put(&e, "x", "1");
    let now = e.clock().now_ms();
    assert!(boolean(&e, Command::Expire(cmd::Expire { key: b("x"), expiry: Expiry::At(now + 1_000) })));
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert_eq!(get(&e, "x"), None);
    // APPEND onto an integer, INCRBYFLOAT.
    int(&e, Command::Incr(cmd::Incr { key: b("n"), delta: 12 }));
    assert_eq!(int(&e, Command::Append(cmd::Append { key: b("n"), value: b("3") })), 3);
    assert_eq!(get(&e, "n").expect("present").value, b("123"));
    assert_eq!(
        ok(&e, Command::IncrFloat(cmd::IncrFloat { key: b("n"), delta: b("0.5") })),
        Reply::Bytes(Some(b("123.5")))
    );
    ok(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") }));
    assert_eq!(e.execute(Command::Append(cmd::Append { key: b("h"), value: b("x") })), Err(Error::WrongType));
    assert_eq!(
        e.execute(Command::GetSet(cmd::GetSet {
            key: b("h"),
            value: b("v"),
            condition: PutCondition::Always,
            expiry: Expiry::Persist
        })),
        Err(Error::WrongType)
    );
}

#[tokio::test(start_paused = true)]
async fn multi_key_and_keyspace_operations() {
    let e = engine();
    let pairs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (b(k), b(v))).collect::<Vec<_>>();
    assert!(boolean(
        &e,
        Command::MultiPut(cmd::MultiPut {
            pairs: pairs(&[("a", "1"), ("b", "2")]),
            only_if_none_exist: true
        })
    ));
    assert!(!boolean(
        &e,
        Command::MultiPut(cmd::MultiPut {
            pairs: pairs(&[("c", "3"), ("a", "9")]),
            only_if_none_exist: true
        })
    ));
    assert_eq!(get(&e, "c"), None, "MSETNX wrote nothing");
    put_with(&e, "t", "v", 5_000, PutCondition::Always);
    assert!(boolean(&e, Command::Rename(cmd::Rename { from: b("t"), to: b("a") })));
    let moved = get(&e, "a").expect("renamed");
    assert_eq!(moved.value, b("v"));
    assert!(moved.ttl_ms > 4_000, "the deadline moves with the value");
    assert_eq!(get(&e, "t"), None);
    assert_eq!(e.execute(Command::Rename(cmd::Rename { from: b("t"), to: b("z") })), Err(Error::NotFound));
    assert_eq!(ok(&e, Command::Type(cmd::Type { key: b("a") })), Reply::Bytes(Some(b("string"))));
    assert_eq!(ok(&e, Command::Type(cmd::Type { key: b("nope") })), Reply::Bytes(Some(b("none"))));
    assert!(matches!(ok(&e, Command::RandomKey(cmd::RandomKey {})), Reply::Bytes(Some(_))));
    assert_eq!(int(&e, Command::Flush(cmd::Flush {})), 2);
    assert_eq!(ok(&e, Command::RandomKey(cmd::RandomKey {})), Reply::Bytes(None));
    assert_eq!(e.expiring_count(), 0, "the expiry index is emptied with the keys");
}

#[test]
fn hash_and_list_operations() {
    let e = engine();
    assert_eq!(int(&e, Command::HashIncr(cmd::HashIncr { key: b("h"), field: b("n"), delta: 5 })), 5);
    assert_eq!(int(&e, Command::HashIncr(cmd::HashIncr { key: b("h"), field: b("n"), delta: -7 })), -2);
    assert!(boolean(
        &e,
        Command::HashSetIfAbsent(cmd::HashSetIfAbsent { key: b("h"), field: b("f"), value: b("v") })
    ));
    assert!(!boolean(
        &e,
        Command::HashSetIfAbsent(cmd::HashSetIfAbsent { key: b("h"), field: b("f"), value: b("w") })
    ));
    assert_eq!(int(&e, Command::HashLen(cmd::HashLen { key: b("h") })), 2);
    assert_eq!(
        e.execute(Command::HashIncr(cmd::HashIncr { key: b("h"), field: b("f"), delta: 1 })),
        Err(Error::NotAnInteger)
    );
    let values = ["a", "b", "c", "d"].iter().map(|s| b(s)).collect();
    int(&e, Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values }));
    assert_eq!(int(&e, Command::ListLen(cmd::ListLen { key: b("l") })), 4);
    assert!(boolean(&e, Command::ListSet(cmd::ListSet { key: b("l"), index: -1, value: b("D") })));
    assert!(matches!(
        e.execute(Command::ListSet(cmd::ListSet { key: b("l"), index: 4, value: b("x") })),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        e.execute(Command::ListSet(cmd::ListSet { key: b("nope"), index: 0, value: b("x") })),
        Err(Error::NotFound)
    );
    assert!(boolean(&e, Command::ListTrim(cmd::ListTrim { key: b("l"), start: 1, stop: -1 })));
    assert_eq!(
        ok(&e, Command::ListRange(cmd::ListRange { key: b("l"), start: 0, stop: -1 })),
        Reply::List(vec![b("b"), b("c"), b("D")])
    );
    assert!(boolean(&e, Command::ListTrim(cmd::ListTrim { key: b("l"), start: 3, stop: 5 })));
    assert_eq!(int(&e, Command::ListLen(cmd::ListLen { key: b("l") })), 0);
    assert!(!boolean(&e, Command::Exists(cmd::Exists { key: b("l") })), "an emptied list is removed");
}

/// Records the effects an engine emits, in order.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<(Vec<u8>, &'static str)>>);

impl super::EffectLog for Recorder {
    fn check_writable(&self) -> Result<(), Error> {
        Ok(())
    }

    fn append(&self, effect: &super::Effect<'_>) -> u64 {
        let kind = match effect.kind {
            super::EffectKind::Set { .. } => "set",
            super::EffectKind::Delete => "delete",
            _ => "other",
        };
        let mut log = self.0.lock().expect("recorder");
        log.push((effect.key.to_vec(), kind));
        log.len() as u64
    }

    fn append_group(&self, effects: &[super::Effect<'_>]) -> Result<u64, Error> {
        let mut log = self.0.lock().expect("recorder");
        for effect in effects {
            let kind = match effect.kind {
                super::EffectKind::Set { .. } => "group set",
                super::EffectKind::Delete => "group delete",
                _ => "group other",
            };
            log.push((effect.key.to_vec(), kind));
        }
        Ok(log.len() as u64)
    }
}

#[test]
fn rename_is_one_group_record() {
    let e = engine();
    put(&e, "src", "value");
    let recorder = std::sync::Arc::new(Recorder::default());
    e.attach_log(recorder.clone()).expect("attach");
    assert!(boolean(&e, Command::Rename(cmd::Rename { from: b("src"), to: b("dst") })));
    let log = recorder.0.lock().expect("recorder").clone();
    assert_eq!(
        log,
        vec![(b"dst".to_vec(), "group set"), (b"src".to_vec(), "group delete")],
        "the destination's write and the source's removal are one record: a crash keeps both or neither"
    );
    assert_eq!(get(&e, "dst").map(|x| x.value), Some(b("value")));
    assert_eq!(get(&e, "src"), None);
}

/// A log that has failed: it refuses every write.
#[derive(Debug)]
struct FailedLog;

impl super::EffectLog for FailedLog {
    fn check_writable(&self) -> Result<(), Error> {
        Err(Error::Unavailable("the log failed (test)".into()))
    }

    fn append(&self, _: &super::Effect<'_>) -> u64 {
        panic!("a refused write reached the log")
    }

    fn append_group(&self, _: &[super::Effect<'_>]) -> Result<u64, Error> {
        Err(Error::Unavailable("the log failed (test)".into()))
    }
}

/// One command of every keyspace write kind, each aimed at keys that exist (`s`, `n`, `h`, `l`)
/// or that do not (`none`), so that a write which would change something and a write which would
/// change nothing are both covered.
fn every_write() -> Vec<Command> {
    let k = b;
    vec![
        Command::Txn(cmd::Txn {
            compares: vec![],
            success: vec![Command::Incr(cmd::Incr { key: k("n"), delta: 1 })],
            failure: vec![],
        }),
        Command::Put(cmd::Put {
            key: k("s"),
            value: k("x"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }),
        Command::GetSet(cmd::GetSet {
            key: k("s"),
            value: k("x"),
            condition: PutCondition::Always,
            expiry: Expiry::Keep,
        }),
        Command::Delete(cmd::Delete { key: k("s") }),
        Command::Delete(cmd::Delete { key: k("none") }),
        Command::DeleteIf(cmd::DeleteIf { key: k("s"), version: 1 }),
        Command::Incr(cmd::Incr { key: k("n"), delta: 1 }),
        Command::Expire(cmd::Expire { key: k("s"), expiry: Expiry::from_expire_ttl_ms(1000) }),
        Command::Expire(cmd::Expire { key: k("none"), expiry: Expiry::from_expire_ttl_ms(-1) }),
        Command::Expire(cmd::Expire { key: k("s"), expiry: Expiry::At(1) }),
        Command::GetDel(cmd::GetDel { key: k("s") }),
        Command::GetEx(cmd::GetEx { key: k("s"), expiry: Expiry::In(1000) }),
        Command::Append(cmd::Append { key: k("s"), value: k("y") }),
        Command::IncrFloat(cmd::IncrFloat { key: k("n"), delta: k("1.5") }),
        Command::MultiPut(cmd::MultiPut {
            pairs: vec![(k("a"), k("1")), (k("b"), k("2"))],
            only_if_none_exist: false,
        }),
        Command::MultiPut(cmd::MultiPut { pairs: vec![(k("a"), k("1"))], only_if_none_exist: true }),
        Command::Rename(cmd::Rename { from: k("s"), to: k("t") }),
        Command::Flush(cmd::Flush {}),
        Command::HashSet(cmd::HashSet { key: k("h"), field: k("f"), value: k("v") }),
        Command::HashSetIfAbsent(cmd::HashSetIfAbsent { key: k("h"), field: k("g"), value: k("v") }),
        Command::HashDelete(cmd::HashDelete { key: k("h"), field: k("f") }),
        Command::HashIncr(cmd::HashIncr { key: k("h"), field: k("c"), delta: 1 }),
        Command::ListPush(cmd::ListPush { key: k("l"), end: ListEnd::Back, values: vec![k("z")] }),
        Command::ListPop(cmd::ListPop { key: k("l"), end: ListEnd::Front, count: 1 }),
        Command::ListSet(cmd::ListSet { key: k("l"), index: 0, value: k("w") }),
        Command::ListTrim(cmd::ListTrim { key: k("l"), start: 0, stop: 0 }),
    ]
}

#[test]
fn every_write_is_refused_when_the_log_refuses_and_changes_nothing() {
    let e = engine();
    put(&e, "s", "v");
    ok(&e, Command::Incr(cmd::Incr { key: b("n"), delta: 1 }));
    ok(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") }));
    ok(
        &e,
        Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values: vec![b("a"), b("b")] }),
    );
    let before = dump(&e);
    e.attach_log(std::sync::Arc::new(FailedLog)).expect("attach");
    let writes = every_write();
    for cmd in &writes {
        assert!(cmd.is_write(), "{cmd:?} is a write");
        let got = e.execute(cmd.clone());
        assert!(matches!(got, Err(Error::Unavailable(_))), "{cmd:?} answered {got:?}");
        assert_eq!(dump(&e), before, "{cmd:?} changed the keyspace");
    }
    // The table covers every write command the model declares.
    let tested: std::collections::BTreeSet<_> = writes.iter().map(Command::command_name).collect();
    // EVAL is a write the engine does not run: the scripting module runs it on a group, whose
    // commit is the log write refused here (see `scripting`'s tests for a stopped script).
    let declared: std::collections::BTreeSet<_> = CommandName::ALL
        .iter()
        .copied()
        .filter(|n| n.class() == Class::Write && *n != CommandName::Eval)
        .collect();
    assert_eq!(tested, declared, "every_write() must hold one command of each write kind");
}

/// Every live key with its type and version, in a stable order.
fn dump(e: &Engine) -> Vec<(Bytes, String, u64)> {
    let mut all = Vec::new();
    for p in 0..super::PARTITIONS {
        e.visit_partition(p, |k, slot| {
            all.push((Bytes::copy_from_slice(k), format!("{:?}", slot.value()), slot.version()))
        });
    }
    all.sort();
    all
}

#[test]
fn get_range_clamps_offsets_as_redis_getrange_does() {
    let e = engine();
    put(&e, "s", "This is a string");
    let range = |start, end| match ok(&e, Command::GetRange(cmd::GetRange { key: b("s"), start, end })) {
        Reply::Bytes(Some(v)) => String::from_utf8(v.to_vec()).expect("utf8"),
        other => panic!("{other:?}"),
    };
    // Redis's documented examples, then its clamping edges.
    assert_eq!(range(0, 3), "This");
    assert_eq!(range(-3, -1), "ing");
    assert_eq!(range(0, -1), "This is a string");
    assert_eq!(range(10, 100), "string");
    assert_eq!(range(0, -100), "T", "an end before the start of the string clamps to 0");
    assert_eq!(range(-100, 3), "This", "a start before the string clamps to 0");
    assert_eq!(range(5, 3), "", "start after end");
    assert_eq!(range(-1, -2), "", "both negative and reversed");
    assert_eq!(range(100, 200), "", "past the end");
    let missing = ok(&e, Command::GetRange(cmd::GetRange { key: b("nope"), start: 0, end: -1 }));
    assert_eq!(missing, Reply::Bytes(Some(Bytes::new())), "a missing key reads as empty");
    ok(&e, Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values: vec![b("x")] }));
    let wrong = e.execute(Command::GetRange(cmd::GetRange { key: b("l"), start: 0, end: 1 }));
    assert_eq!(wrong, Err(Error::WrongType));
}

#[test]
fn a_deadline_beyond_i64_ms_reads_as_the_largest_ttl_not_as_none() {
    let e = engine();
    let far = Command::Put(cmd::Put {
        key: b("far"),
        value: b("v"),
        expiry: Expiry::At(u64::MAX),
        condition: PutCondition::Always,
    });
    ok(&e, far);
    assert_eq!(int(&e, Command::Ttl(cmd::Ttl { key: b("far") })), i64::MAX);
    assert_eq!(get(&e, "far").map(|x| x.ttl_ms), Some(i64::MAX));
}
