//! `--workload txn` against NanoDB on every protocol: each request is one atomic group of three
//! writes (MULTI/EXEC over RESP, TXN over tcp, `KV.Txn`, `POST /v1/txn`), counted once, and the
//! server holds exactly the three keys of every key the run drew.

use nano_bench::cli::Protocol;

use crate::args;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_writes_three_keys_per_request_atomically() {
    for (protocol, pipeline) in
        [(Protocol::Tcp, "8"), (Protocol::Resp, "8"), (Protocol::Grpc, "8"), (Protocol::Http, "1")]
    {
        // A server per protocol, so that its keys are this protocol's alone.
        let (server, addrs) = crate::mismatch::server().await;
        let target = addrs[&protocol].clone();
        let prefix = format!("{}:", protocol.name());
        let flags = [
            "--target",
            &target,
            "--protocol",
            protocol.name(),
            "--workload",
            "txn",
            "--concurrency",
            "2",
            "--pipeline",
            pipeline,
            "--requests",
            "50",
            "--keyspace",
            "20",
            "--key-prefix",
            &prefix,
        ];
        let s = nano_bench::bench(&args(&flags), false).await.expect("bench runs");
        assert_eq!(s.requests, 100, "{protocol:?}: one request per group");
        assert_eq!(s.errors, 0, "{protocol:?}: {:?}", s.errors_by_kind);
        // Every key drawn got its three writes, so the count is a multiple of three, and each
        // group's keys are all there.
        let keys = server.engine().key_count();
        assert!(keys > 0 && keys % 3 == 0, "{protocol:?}: {keys} keys");
        for i in 0..20u64 {
            let base = format!("{prefix}{i:012}");
            let present: Vec<bool> =
                (0..3).map(|n| server.engine().version_of(format!("{base}.{n}").as_bytes()) != 0).collect();
            assert!(
                present.iter().all(|p| *p) || present.iter().all(|p| !p),
                "{protocol:?} {base}: {present:?}"
            );
        }
    }
}

#[test]
fn etcd_refuses_the_txn_workload_before_running() {
    let a = args(&["--protocol", "etcd", "--workload", "txn"]);
    let err = a.validate().expect_err("refused");
    assert!(err.contains("--workload txn"), "{err}");
}
