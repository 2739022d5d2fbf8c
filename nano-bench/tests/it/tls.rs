//! `--tls --ca` on every protocol, against one NanoDB serving all four over TLS with an
//! rcgen-made certificate.

use nanodb_server::config::{ClientAuth, Config, ListenAddr, TlsFiles};
use nanodb_server::server::Server;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::args;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_runs_over_tls_and_plaintext_on_a_tls_port_fails_before_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let tls = TlsFiles {
        cert: write("server.crt", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        ca: None,
        auth_clients: ClientAuth::No,
    };
    let ca_file = write("ca.crt", ca.pem());
    let any = || ListenAddr::On("127.0.0.1:0".into());
    let server = Server::start(Config {
        tcp_addr: any(),
        resp_addr: any(),
        http_addr: any(),
        grpc_addr: any(),
        tls: Some(tls),
        ..Config::all_off()
    })
    .await
    .expect("server");
    let a = server.addrs();
    let ca = ca_file.to_str().expect("utf-8 path");
    for (protocol, addr) in [
        ("tcp", a.tcp.expect("tcp")),
        ("resp", a.resp.expect("resp")),
        ("http", a.http.expect("http")),
        ("grpc", a.grpc.expect("grpc")),
    ] {
        let target = addr.to_string();
        let flags = ["--target", &target, "--protocol", protocol, "--concurrency", "2", "--requests", "50"];
        let tls_flags: Vec<&str> =
            flags.iter().copied().chain(["--tls", "--ca", ca, "--workload", "mixed"]).collect();
        let s = nano_bench::bench(&args(&tls_flags), false).await.expect("bench over TLS runs");
        assert_eq!((s.requests, s.errors), (100, 0), "{protocol}: {:?}", s.errors_by_kind);

        // Plaintext against the TLS port stops before the run.
        let plain = nano_bench::bench(&args(&flags), false).await;
        assert!(plain.is_err(), "{protocol}: plaintext ran against a TLS port");
    }
    server.shutdown().await;
}
