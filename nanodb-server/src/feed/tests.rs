//! Hub tests through a real engine: what each write reports, matching, ordering, backpressure,
//! pub/sub, keyspace notifications and cleanup.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nanodb_protocol::{Command, Limits, ListEnd, PutCondition};

use super::*;
use crate::engine::Engine;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// An engine observed by a hub, as `server.rs` wires them.
struct Observed {
    engine: Engine,
    hub: Arc<Hub>,
}

impl Observed {
    fn feed(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl std::ops::Deref for Observed {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

fn engine_with(limits: FeedLimits) -> Observed {
    let hub = Arc::new(Hub::new(limits));
    Observed { engine: Engine::with_observers(Limits::default(), vec![hub.clone()]), hub }
}

fn put(e: &Engine, k: &str, v: &str) {
    e.execute(Command::Put(cmd::Put {
        key: b(k),
        value: b(v),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    }))
    .expect("succeeds");
}

fn run(e: &Engine, cmd: Command) {
    e.execute(cmd).expect("succeeds");
}

/// Every delivery waiting, as (key, kind, op, value shown).
fn drain(s: &Subscriber) -> Vec<(String, EventKind, RedisEvent, Option<String>)> {
    std::iter::from_fn(|| s.try_recv())
        .map(|d| {
            let shown = d.value().map(|v| String::from_utf8_lossy(v).into_owned());
            match d {
                Delivery::Key { event, .. } => {
                    (String::from_utf8_lossy(&event.key).into_owned(), event.kind, event.op, shown)
                }
                other => panic!("not a key event: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn every_kind_of_write_reports_its_event() {
    let e = engine_with(FeedLimits::default());
    let mut s = e.feed().subscriber();
    s.add(Topic::Prefix(b("")), true).expect("succeeds");
    put(&e, "s", "v");
    run(&e, Command::Incr(cmd::Incr { key: b("s2"), delta: 5 }));
    run(&e, Command::Expire(cmd::Expire { key: b("s"), expiry: Expiry::from_expire_ttl_ms(60_000) }));
    run(&e, Command::GetEx(cmd::GetEx { key: b("s"), expiry: nanodb_protocol::Expiry::Persist }));
    run(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("1") }));
    run(&e, Command::HashSet(cmd::HashSet { key: b("h"), field: b("g"), value: b("2") }));
    run(&e, Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("f") }));
    run(
        &e,
        Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Back, values: vec![b("a"), b("b")] }),
    );
    run(&e, Command::ListPush(cmd::ListPush { key: b("l"), end: ListEnd::Front, values: vec![b("z")] }));
    run(&e, Command::ListPop(cmd::ListPop { key: b("l"), end: ListEnd::Back, count: 1 }));
    run(&e, Command::Delete(cmd::Delete { key: b("s") }));
    run(&e, Command::Delete(cmd::Delete { key: b("missing") }));
    use EventKind::*;
    let want = vec![
        ("s".into(), Put, RedisEvent::Set, Some("v".into())),
        ("s2".into(), Put, RedisEvent::Set, Some("5".into())),
        ("s".into(), Put, RedisEvent::Expire, None),
        ("s".into(), Put, RedisEvent::Persist, None),
        ("h".into(), Put, RedisEvent::HSet, None),
        ("h".into(), Put, RedisEvent::HSet, None),
        ("h".into(), Put, RedisEvent::HDel, None),
        ("l".into(), Put, RedisEvent::RPush, None),
        ("l".into(), Put, RedisEvent::LPush, None),
        ("l".into(), Put, RedisEvent::RPop, None),
        ("s".into(), Delete, RedisEvent::Del, None),
    ];
    assert_eq!(drain(&s), want);
}

#[test]
fn exact_and_prefix_topics_match_only_their_keys_and_values_only_when_asked() {
    let e = engine_with(FeedLimits::default());
    let mut exact = e.feed().subscriber();
    exact.add(Topic::Key(b("user:1")), false).expect("succeeds");
    let mut prefix = e.feed().subscriber();
    prefix.add(Topic::Prefix(b("user:")), true).expect("succeeds");
    // Two matching topics on one subscriber still deliver once.
    prefix.add(Topic::Key(b("user:1")), false).expect("succeeds");
    put(&e, "user:1", "a");
    put(&e, "user:10", "b");
    put(&e, "users", "c");
    put(&e, "x", "d");
    let exact_got: Vec<_> = drain(&exact).into_iter().map(|(k, _, _, v)| (k, v)).collect();
    assert_eq!(exact_got, vec![("user:1".to_string(), None)]);
    let prefix_got: Vec<_> = drain(&prefix).into_iter().map(|(k, _, _, v)| (k, v)).collect();
    assert_eq!(
        prefix_got,
        vec![("user:1".to_string(), Some("a".to_string())), ("user:10".to_string(), Some("b".to_string()))]
    );
}

#[test]
fn versions_in_events_are_the_versions_readers_see() {
    let e = engine_with(FeedLimits::default());
    let mut s = e.feed().subscriber();
    s.add(Topic::Key(b("k")), false).expect("succeeds");
    put(&e, "k", "1");
    let Some(Delivery::Key { event, .. }) = s.try_recv() else { panic!("no event") };
    let Ok(nanodb_protocol::Reply::Value(Some(entry))) = e.execute(Command::Get(cmd::Get { key: b("k") }))
    else {
        panic!("no value")
    };
    assert_eq!(event.version, entry.version);
}

#[tokio::test(start_paused = true)]
async fn expiry_is_reported_by_the_read_that_finds_it_and_by_the_sweeper() {
    let e = engine_with(FeedLimits::default());
    let mut s = e.feed().subscriber();
    s.add(Topic::Prefix(b("t")), false).expect("succeeds");
    run(
        &e,
        Command::Put(cmd::Put {
            key: b("t1"),
            value: b("v"),
            expiry: Expiry::from_put_ttl_ms(10),
            condition: PutCondition::Always,
        }),
    );
    run(
        &e,
        Command::Put(cmd::Put {
            key: b("t2"),
            value: b("v"),
            expiry: Expiry::from_put_ttl_ms(10),
            condition: PutCondition::Always,
        }),
    );
    drain(&s);
    tokio::time::advance(Duration::from_millis(20)).await;
    run(&e, Command::Get(cmd::Get { key: b("t1") }));
    e.sweep_expired(100);
    let got = drain(&s);
    assert_eq!(
        got,
        vec![
            ("t1".to_string(), EventKind::Expire, RedisEvent::Expired, None),
            ("t2".to_string(), EventKind::Expire, RedisEvent::Expired, None)
        ]
    );
}

#[test]
fn per_key_order_holds_across_threads() {
    let e = Arc::new(engine_with(FeedLimits { queue_len: 1_000_000, ..FeedLimits::default() }));
    let mut s = e.feed().subscriber();
    s.add(Topic::Prefix(b("k")), true).expect("succeeds");
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    // Two threads per key: each key's values come from the engine's INCR order.
                    let key = format!("k{}", t % 2);
                    e.execute(Command::Incr(cmd::Incr { key: b(&key), delta: 1 })).expect("succeeds");
                    let _ = i;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("succeeds");
    }
    let mut last = std::collections::HashMap::new();
    for (key, _, _, value) in drain(&s) {
        let v: i64 = value.expect("succeeds").parse().expect("succeeds");
        let prev = last.insert(key.clone(), v).unwrap_or(0);
        assert_eq!(v, prev + 1, "events for {key} out of order");
    }
    assert_eq!(last.values().sum::<i64>(), 8_000);
}

#[test]
fn a_slow_subscriber_is_signalled_and_writers_never_wait() {
    let e = engine_with(FeedLimits { queue_len: 10, ..FeedLimits::default() });
    let mut slow = e.feed().subscriber();
    slow.add(Topic::Prefix(b("")), false).expect("succeeds");
    for i in 0..1_000 {
        put(&e, &format!("k{i}"), "v");
    }
    let mut got = 0;
    loop {
        match slow.try_recv() {
            Some(Delivery::Key { .. }) => got += 1,
            Some(Delivery::Lagged { dropped }) => {
                assert_eq!(got, 10);
                assert_eq!(dropped, 990);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(slow.try_recv(), None);
    assert_eq!(e.feed().stats().lagged.load(Ordering::Relaxed), 1);
    // Resync: a lagged subscriber is dropped and a new one taken; delivery resumes.
    drop(slow);
    let mut fresh = e.feed().subscriber();
    fresh.add(Topic::Key(b("again")), false).expect("succeeds");
    put(&e, "again", "v");
    assert!(matches!(fresh.try_recv(), Some(Delivery::Key { .. })));
}

#[test]
fn publish_reaches_channels_and_patterns_and_counts_receivers() {
    let hub = Arc::new(Hub::new(FeedLimits::default()));
    let mut a = hub.subscriber();
    a.add(Topic::Channel(b("news")), false).expect("succeeds");
    let mut p = hub.subscriber();
    p.add(Topic::Pattern(b("n*")), false).expect("succeeds");
    p.add(Topic::Pattern(b("*s")), false).expect("succeeds");
    assert_eq!(hub.publish(&b("news"), &b("hi")), 3);
    assert_eq!(hub.publish(&b("other"), &b("x")), 0);
    assert_eq!(a.try_recv(), Some(Delivery::Message { channel: b("news"), payload: b("hi"), pattern: None }));
    let mut patterns: Vec<_> = std::iter::from_fn(|| p.try_recv())
        .map(|d| match d {
            Delivery::Message { pattern: Some(p), .. } => p,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    patterns.sort();
    assert_eq!(patterns, vec![b("*s"), b("n*")]);
    assert_eq!(hub.channels(None), vec![b("news")]);
    assert_eq!(hub.channels(Some(b"x*")), Vec::<Bytes>::new());
    assert_eq!(hub.subscriber_count(b"news"), 1);
    assert_eq!(hub.pattern_count(), 2);
    // The subscriber's own counts follow adds, removes and clears.
    assert_eq!((p.channel_count(), p.pattern_count(), p.len()), (0, 2, 2));
    p.add(Topic::Key(b("k")), false).expect("succeeds");
    p.add(Topic::Channel(b("news")), false).expect("succeeds");
    p.add(Topic::Pattern(b("n*")), true).expect("succeeds");
    assert_eq!((p.channel_count(), p.pattern_count(), p.len()), (1, 2, 4));
    assert!(p.remove(&Topic::Pattern(b("n*"))));
    assert!(!p.remove(&Topic::Pattern(b("n*"))));
    assert_eq!((p.channel_count(), p.pattern_count(), p.len()), (1, 1, 3));
}

#[test]
fn keyspace_notifications_publish_only_when_switched_on() {
    let e = engine_with(FeedLimits::default());
    let mut s = e.feed().subscriber();
    s.add(Topic::Pattern(b("__key*__:*")), false).expect("succeeds");
    put(&e, "k", "v");
    assert_eq!(s.try_recv(), None, "notifications are off by default");
    e.feed().set_notify_flags(NotifyFlags::parse("KEA").expect("succeeds"));
    put(&e, "k", "v2");
    let got: Vec<_> = std::iter::from_fn(|| s.try_recv())
        .map(|d| match d {
            Delivery::Message { channel, payload, .. } => (channel, payload),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, vec![(b("__keyspace@0__:k"), b("set")), (b("__keyevent@0__:set"), b("k"))]);
    // Only the hash class: a string write publishes nothing.
    e.feed().set_notify_flags(NotifyFlags::parse("Kh").expect("succeeds"));
    put(&e, "k", "v3");
    assert_eq!(s.try_recv(), None);
    assert_eq!(e.feed().notify_flags().to_string(), "hK");
}

#[test]
fn subscribe_and_unsubscribe_cycles_leave_nothing_behind() {
    let e = engine_with(FeedLimits::default());
    let hub = e.feed().clone();
    for i in 0..10_000 {
        let mut s = hub.subscriber();
        s.add(Topic::Key(b(&format!("k{i}"))), true).expect("succeeds");
        s.add(Topic::Prefix(b(&format!("p{i}"))), false).expect("succeeds");
        s.add(Topic::Channel(b(&format!("c{i}"))), false).expect("succeeds");
        s.add(Topic::Pattern(b(&format!("c{i}*"))), false).expect("succeeds");
        if i % 2 == 0 {
            assert!(s.remove(&Topic::Key(b(&format!("k{i}")))));
        }
        // The rest go with the drop.
    }
    assert!(!hub.is_active());
    assert_eq!(hub.stats().subscribers.load(Ordering::Relaxed), 0);
    assert!(hub.key_filter.iter().all(|slot| slot.load(Ordering::Relaxed) == 0));
    assert_eq!(hub.prefix_topics.load(Ordering::Relaxed), 0);
    let reg = hub.read();
    assert!(reg.keys.is_empty() && reg.prefixes.is_empty() && reg.prefix_lens.is_empty());
    assert!(reg.channels.is_empty() && reg.patterns.is_empty());
}

#[test]
fn topics_are_bounded() {
    let hub = Arc::new(Hub::new(FeedLimits { max_topics: 2, max_topic_len: 4, ..FeedLimits::default() }));
    let mut s = hub.subscriber();
    assert!(s.add(Topic::Key(b("a")), false).expect("succeeds"));
    assert!(!s.add(Topic::Key(b("a")), true).expect("succeeds"), "re-adding updates, not duplicates");
    assert!(s.add(Topic::Channel(b("a")), false).expect("succeeds"));
    assert!(matches!(s.add(Topic::Channel(b("b")), false), Err(Error::LimitExceeded { max: 2, .. })));
    assert!(matches!(s.add(Topic::Key(b("toolong")), false), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(s.add(Topic::Key(b("")), false), Err(Error::Empty { .. })));
    assert_eq!(s.channel_count(), 1);
}

/// A log stand-in: durable up to whatever the test says.
#[derive(Debug, Default)]
struct FakeLog {
    durable: std::sync::atomic::AtomicU64,
    changed: tokio::sync::Notify,
}

impl DurabilityGate for FakeLog {
    fn is_durable(&self, position: u64) -> bool {
        self.durable.load(Ordering::Acquire) >= position
    }

    fn wait_durable(&self, position: u64) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(async move {
            while !self.is_durable(position) {
                self.changed.notified().await;
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn key_events_wait_until_their_write_is_durable() {
    let hub = Arc::new(Hub::new(FeedLimits::default()));
    let log = Arc::new(FakeLog::default());
    hub.set_gate(log.clone());
    let mut s = hub.subscriber();
    s.add(Topic::Prefix(b("")), false).expect("succeeds");
    s.add(Topic::Channel(b("c")), false).expect("succeeds");
    let effect_value = crate::engine::Value::str(b"v");
    let effect = Effect {
        key: b"k",
        version: 1,
        kind: crate::engine::EffectKind::Set { value: effect_value.view(), deadline: 0 },
    };
    hub.on_effect(&b("k"), &effect, 100);
    assert_eq!(s.try_recv(), None, "position 100 is not durable yet");
    // Messages behind it keep their order: they wait too.
    hub.publish(&b("c"), &b("m"));
    assert_eq!(s.try_recv(), None);
    let reader = tokio::spawn(async move {
        let first = s.recv().await;
        let second = s.recv().await;
        (first, second)
    });
    tokio::task::yield_now().await;
    assert!(!reader.is_finished());
    log.durable.store(100, Ordering::Release);
    log.changed.notify_waiters();
    let (first, second) = reader.await.expect("reader finishes");
    assert!(matches!(first, Delivery::Key { ref event, .. } if event.position == 100), "{first:?}");
    assert!(matches!(second, Delivery::Message { .. }), "{second:?}");
}

/// Many watchers of one hot key: each gets exactly one delivery per write (with a value when any
/// of its matching topics asked), and dispatch stays linear in the watchers, since it runs under
/// the key's shard lock (a per-subscriber search made it quadratic: seconds per write here).
#[test]
/// Speed is a benchmark's business; this pins what the one-pass grouping must deliver: one event
/// per subscriber, with a value exactly when one of its matching topics asked for it.
fn a_hot_key_with_many_watchers_gets_one_event_each_with_values_as_asked() {
    let e = engine_with(FeedLimits::default());
    let subs: Vec<Subscriber> = (0..2_000)
        .map(|i| {
            let mut s = e.feed().subscriber();
            s.add(Topic::Key(b("hot")), false).expect("succeeds");
            s.add(Topic::Prefix(b("ho")), i % 2 == 0).expect("succeeds");
            s
        })
        .collect();
    put(&e, "hot", "v");
    for (i, s) in subs.iter().enumerate() {
        let want = if i % 2 == 0 { Some("v".to_string()) } else { None };
        assert_eq!(drain(s), vec![("hot".to_string(), EventKind::Put, RedisEvent::Set, want)]);
    }
}

/// What the stats report as watcher queue use: deliveries waiting, summed over subscribers (each
/// counted once however many topics it holds), and the fullest queue.
#[test]
fn queue_use_sums_subscribers_once_each() {
    let e = engine_with(FeedLimits::default());
    assert_eq!(e.feed().queue_use(), (0, 0));
    let mut both = e.feed().subscriber();
    both.add(Topic::Key(b("a")), false).expect("succeeds");
    both.add(Topic::Prefix(b("")), false).expect("succeeds");
    let mut one = e.feed().subscriber();
    one.add(Topic::Key(b("b")), false).expect("succeeds");
    put(&e, "a", "1");
    put(&e, "b", "2");
    put(&e, "b", "3");
    // `both` matched all three (once each), `one` the two writes of b.
    assert_eq!(e.feed().queue_use(), (5, 3));
    drain(&both);
    assert_eq!(e.feed().queue_use(), (2, 2));
}
