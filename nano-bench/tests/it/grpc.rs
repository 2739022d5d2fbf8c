//! gRPC against a stub `nanodb.v1.KV` server (switch to NanoDB's frontend once merged).

use crate::{args, stubs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_channels_multiplex_every_user() {
    let (addr, store) = stubs::grpc().await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "grpc",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--requests",
        "50",
        "--workload",
        "mixed",
        "--keyspace",
        "200",
        "--populate",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses, s.connections), (400, 0, 0, 2), "{:?}", s.errors_by_kind);
    assert_eq!(store.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_misses() {
    let (addr, store) = stubs::grpc().await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "grpc",
        "--concurrency",
        "2",
        "--requests",
        "20",
        "--workload",
        "incr",
        "--keyspace",
        "1",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors), (40, 0));
    assert_eq!(store.get(b"key:000000000000"), Some(b"40".to_vec()));
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "grpc",
        "--concurrency",
        "2",
        "--requests",
        "5",
        "--key-prefix",
        "absent:",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses), (10, 0, 10));
    store.map.lock().expect("lock").insert(b"text:000000000000".to_vec(), b"abc".to_vec());
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "grpc",
        "--requests",
        "3",
        "--concurrency",
        "1",
        "--workload",
        "incr",
        "--keyspace",
        "1",
        "--key-prefix",
        "text:",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!(s.errors_by_kind.get("grpc FailedPrecondition"), Some(&3), "{:?}", s.errors_by_kind);
}
