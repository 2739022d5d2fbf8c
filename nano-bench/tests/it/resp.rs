//! RESP against a stub RESP2 server (real Redis is exercised by `.ci/interop/nano-bench.sh`).

use crate::{args, stubs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_get_after_populate_hits() {
    let (addr, store) = stubs::resp(None).await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "3",
        "--pipeline",
        "16",
        "--requests",
        "400",
        "--workload",
        "get",
        "--keyspace",
        "1000",
        "--populate",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses), (1200, 0, 0), "{:?}", s.errors_by_kind);
    assert_eq!(store.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_not_errors_and_server_errors_are_counted_by_kind() {
    let (addr, _store) = stubs::resp(None).await;
    // no --populate: every GET misses
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "2",
        "--requests",
        "50",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses), (100, 0, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_are_counted_by_kind_and_exit_non_zero() {
    let (addr, store) = stubs::resp(None).await;
    // INCR of a value that is not an integer fails, as on Redis
    store.map.lock().expect("lock").insert(b"key:000000000000".to_vec(), b"not a number".to_vec());
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "2",
        "--pipeline",
        "4",
        "--requests",
        "25",
        "--workload",
        "incr",
        "--keyspace",
        "1",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!(s.requests, 50);
    assert_eq!(s.errors, 50);
    assert_eq!(s.errors_by_kind.get("resp ERR"), Some(&50), "{:?}", s.errors_by_kind);
}
