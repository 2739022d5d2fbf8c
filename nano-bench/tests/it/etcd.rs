//! `--protocol etcd` against a stub `etcdserverpb.KV` server (a real etcd is measured by
//! scripts/bench-cluster.sh), and against a NanoDB gRPC port, which it must refuse before the run.

use crate::{args, stubs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_ranges_reach_the_etcd_service() {
    let (addr, store) = stubs::etcd().await;
    let target = addr.to_string();
    let run = |workload: &'static str, populate: bool| {
        let mut flags = vec![
            "--target",
            &target,
            "--protocol",
            "etcd",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--pipeline",
            "16",
            "--requests",
            "50",
            "--workload",
            workload,
            "--keyspace",
            "300",
        ];
        if populate {
            flags.push("--populate");
        }
        args(&flags)
    };
    // reads of keys nobody wrote are misses, not errors
    let s = nano_bench::bench(&run("get", false), false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses, s.connections), (400, 0, 400, 2), "{:?}", s.errors_by_kind);
    let s = nano_bench::bench(&run("set", false), false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors), (400, 0), "{:?}", s.errors_by_kind);
    assert!(store.len() > 100, "Puts wrote keys: {}", store.len());
    let s = nano_bench::bench(&run("get", true), false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.misses), (400, 0, 0), "{:?}", s.errors_by_kind);
    assert_eq!(store.len(), 300, "--populate wrote every key with Put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nanodb_grpc_port_is_not_etcd() {
    let (addr, _store) = stubs::grpc().await;
    let a = args(&["--target", &addr.to_string(), "--protocol", "etcd", "--duration", "3s"]);
    let started = std::time::Instant::now();
    let err = nano_bench::bench(&a, false).await.expect_err("not etcd");
    let msg = format!("{err:#}");
    assert!(msg.contains("not an etcd v3 gRPC endpoint"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "failed before the run");
}
