//! `--user`/`--password` on every protocol, against one NanoDB with a users file: the right
//! credentials run without an error, a wrong password stops before the run (tcp, resp) or fails
//! every request (http, grpc: the server refuses each), and a user limited to `bench:*` cannot
//! write the benchmark's keys elsewhere.

use nanodb_server::config::{AuthConfig, Config, ListenAddr};
use nanodb_server::server::Server;

use crate::args;

const USERS: &str = "\
user default off
user bench on >benchpw allkeys +@read +@write
user narrow on >narrowpw ~elsewhere:* +@read +@write
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_authenticates_with_user_and_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.acl");
    std::fs::write(&users, USERS).expect("users file");
    let any = || ListenAddr::On("127.0.0.1:0".into());
    let server = Server::start(Config {
        tcp_addr: any(),
        resp_addr: any(),
        http_addr: any(),
        grpc_addr: any(),
        auth: AuthConfig { users_file: Some(users), ..AuthConfig::default() },
        ..Config::all_off()
    })
    .await
    .expect("server");
    let a = server.addrs();
    for (protocol, addr) in [
        ("tcp", a.tcp.expect("tcp")),
        ("resp", a.resp.expect("resp")),
        ("http", a.http.expect("http")),
        ("grpc", a.grpc.expect("grpc")),
    ] {
        let target = addr.to_string();
        let base = ["--target", &target, "--protocol", protocol, "--concurrency", "2", "--requests", "50"];
        let with = |user: &'static str, pass: &'static str| -> Vec<&str> {
            base.iter().copied().chain(["--workload", "mixed", "--user", user, "--password", pass]).collect()
        };
        let s = nano_bench::bench(&args(&with("bench", "benchpw")), false).await.expect("authenticated run");
        assert_eq!((s.requests, s.errors), (100, 0), "{protocol}: {:?}", s.errors_by_kind);

        match nano_bench::bench(&args(&with("bench", "wrong")), false).await {
            Err(e) => assert!(format!("{e:#}").contains("AUTH"), "{protocol}: {e:#}"),
            Ok(s) => assert_eq!(s.errors, s.requests, "{protocol}: a wrong password must fail every request"),
        }
        let narrow = nano_bench::bench(&args(&with("narrow", "narrowpw")), false).await.expect("runs");
        assert_eq!(narrow.errors, narrow.requests, "{protocol}: the keys are outside ~elsewhere:*");
    }
    server.shutdown().await;
}
