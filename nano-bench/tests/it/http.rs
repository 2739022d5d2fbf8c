//! REST against a stub serving NanoDB's documented routes (switch to the frontend once merged).

use crate::{args, stubs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_per_user() {
    let (addr, store) = stubs::http().await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "http",
        "--concurrency",
        "4",
        "--requests",
        "50",
        "--workload",
        "mixed",
        "--keyspace",
        "100",
        "--populate",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses), (200, 0, 0), "{:?}", s.errors_by_kind);
    assert_eq!(store.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_404_and_http_errors() {
    let (addr, store) = stubs::http().await;
    let t = addr.to_string();
    let s = nano_bench::bench(
        &args(&[
            "--target",
            &t,
            "--protocol",
            "http",
            "--concurrency",
            "2",
            "--requests",
            "10",
            "--workload",
            "incr",
            "--keyspace",
            "1",
        ]),
        false,
    )
    .await
    .expect("bench runs");
    assert_eq!((s.requests, s.errors), (20, 0));
    assert_eq!(store.get(b"key:000000000000"), Some(b"20".to_vec()));
    let s = nano_bench::bench(
        &args(&[
            "--target",
            &t,
            "--protocol",
            "http",
            "--concurrency",
            "1",
            "--requests",
            "5",
            "--key-prefix",
            "nope:",
        ]),
        false,
    )
    .await
    .expect("bench runs");
    assert_eq!((s.errors, s.misses), (0, 5), "404 on GET is a miss");
    // a key with a slash is percent-encoded into one segment; the stub's route then still matches
    let s = nano_bench::bench(
        &args(&[
            "--target",
            &t,
            "--protocol",
            "http",
            "--concurrency",
            "1",
            "--requests",
            "3",
            "--workload",
            "set",
            "--key-prefix",
            "a/b ",
        ]),
        false,
    )
    .await
    .expect("bench runs");
    assert_eq!((s.requests, s.errors), (3, 0), "{:?}", s.errors_by_kind);
    // error statuses are counted by status
    store.map.lock().expect("lock").insert(b"text:000000000000".to_vec(), b"abc".to_vec());
    let s = nano_bench::bench(
        &args(&[
            "--target",
            &t,
            "--protocol",
            "http",
            "--concurrency",
            "1",
            "--requests",
            "4",
            "--workload",
            "incr",
            "--keyspace",
            "1",
            "--key-prefix",
            "text:",
        ]),
        false,
    )
    .await
    .expect("bench runs");
    assert_eq!(s.errors_by_kind.get("http 400"), Some(&4), "{:?}", s.errors_by_kind);
}
