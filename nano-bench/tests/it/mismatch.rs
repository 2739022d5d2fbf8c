//! A target that speaks another protocol than `--protocol` fails the run before it starts, with one
//! line naming the target, the protocol tried and the flag that fits (issue #22), instead of a run
//! that counts thousands of errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nano_bench::cli::Protocol;
use nano_bench::client::probe::Mismatch;
use nano_bench::client::{grpc, resp, tcp};
use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;

use crate::{args, run_binary};

/// NanoDB with every frontend on a free port, and the address of each protocol.
pub async fn server() -> (Server, HashMap<Protocol, String>) {
    let on = || ListenAddr::On("127.0.0.1:0".into());
    let server = Server::start(Config {
        grpc_addr: on(),
        tcp_addr: on(),
        resp_addr: on(),
        http_addr: on(),
        ..Config::all_off()
    })
    .await
    .expect("server starts");
    let a = server.addrs();
    let addrs = HashMap::from([
        (Protocol::Tcp, a.tcp.expect("tcp").to_string()),
        (Protocol::Grpc, a.grpc.expect("grpc").to_string()),
        (Protocol::Http, a.http.expect("http").to_string()),
        (Protocol::Resp, a.resp.expect("resp").to_string()),
    ]);
    (server, addrs)
}

/// How NanoDB's port of `protocol` calls itself when it tells another protocol's client it is on
/// the wrong port; `None` for the ports that do not (REST and gRPC answer in HTTP anyway).
fn own_port_name(protocol: Protocol) -> Option<&'static str> {
    match protocol {
        Protocol::Tcp => Some("binary TCP port"),
        Protocol::Resp => Some("Redis (RESP) port"),
        Protocol::Grpc | Protocol::Http | Protocol::Etcd => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wrong_protocol_fails_before_the_run_with_one_line() {
    let (server, addrs) = server().await;
    for tried in Protocol::ALL {
        for real in Protocol::ALL {
            let target = &addrs[&real];
            // a run that started would last 3 s; the right protocol only checks the probe passes
            let length: [&str; 2] = if tried == real { ["--requests", "20"] } else { ["--duration", "3s"] };
            let a = args(&["--target", target, "--protocol", tried.name(), length[0], length[1]]);
            let started = Instant::now();
            let result = nano_bench::bench(&a, false).await;
            let took = started.elapsed();
            if tried == real {
                let s = result.expect("the right protocol runs");
                assert_eq!(s.errors, 0, "{tried:?}: {:?}", s.errors_by_kind);
                continue;
            }
            let err = result.expect_err("the wrong protocol fails");
            let msg = format!("{err:#}");
            let m = err.downcast_ref::<Mismatch>().unwrap_or_else(|| panic!("{tried:?} on {real:?}: {msg}"));
            assert_eq!((m.target.as_str(), m.tried), (target.as_str(), tried), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
            // the run never started: no 3 s of load, not even the probe's deadline
            assert!(took < Duration::from_secs(1), "{tried:?} on {real:?} took {took:?}");
            assert!(m.guess.contains(&real), "{tried:?} on {real:?} suggests {:?}: {msg}", m.guess);
            assert!(msg.contains(&format!("--protocol {}", m.guess[0].name())), "{msg}");
            match own_port_name(real) {
                // the TCP and RESP ports answer in the client's protocol, saying which port this is:
                // quoted, and its protocol is the one suggested
                Some(port) => {
                    let says = format!("{target} says: this is NanoDB's {port}, which does not speak ");
                    assert!(msg.starts_with(&says), "{tried:?} on {real:?}: {msg}");
                    assert!(m.said.is_some(), "{msg}");
                    assert_eq!(m.guess, [real], "{msg}");
                }
                None => {
                    let prefix = format!("{target} probably speaks another protocol than {}", tried.name());
                    assert!(msg.starts_with(&prefix), "{tried:?} on {real:?}: {msg}");
                }
            }
        }
    }
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_on_the_tcp_port_and_http_on_the_resp_port_exit_with_one_line() {
    let (server, addrs) = server().await;
    let (tcp, resp) = (addrs[&Protocol::Tcp].clone(), addrs[&Protocol::Resp].clone());
    let cases = [
        (tcp.clone(), "resp", "binary TCP port, which does not speak RESP; ", "; try --protocol tcp, or"),
        (
            resp.clone(),
            "http",
            "Redis (RESP) port, which does not speak HTTP/1.x; ",
            "; try --protocol resp, or",
        ),
    ];
    for (target, proto, said, hint) in cases {
        let flags = ["--no-progress", "--target", &target, "--protocol", proto, "--duration", "5s"];
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let started = Instant::now();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            run_binary(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("joins");
        assert!(started.elapsed() < Duration::from_secs(2), "fails fast: {:?}", started.elapsed());
        assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
        assert_eq!(stdout, "", "no table for a run that never started");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        let want = format!("nano-bench: {target} says: this is NanoDB's {said}");
        assert!(stderr.starts_with(&want), "{stderr}");
        assert!(stderr.contains(hint), "{stderr}");
    }
    assert!(server.shutdown().await);
}

/// Without the probe (a client's own connect), the TCP and RESP ports' answers read the same:
/// a [`Mismatch`] quoting the port, not an "unexpected HELLO reply" or a count of failed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_handshakes_recognise_the_wrong_port() {
    let (server, addrs) = server().await;
    let (tcp_port, resp_port) = (&addrs[&Protocol::Tcp], &addrs[&Protocol::Resp]);
    let check = |err: anyhow::Error, tried: Protocol, target: &str, real: Protocol| {
        let msg = format!("{err:#}");
        let m = err.downcast_ref::<Mismatch>().unwrap_or_else(|| panic!("{tried:?} on {real:?}: {msg}"));
        assert_eq!((m.tried, m.target.as_str(), m.guess.as_slice()), (tried, target, &[real][..]), "{msg}");
        let port = own_port_name(real).expect("a port that explains itself");
        assert!(msg.starts_with(&format!("{target} says: this is NanoDB's {port}, which")), "{msg}");
        assert!(msg.contains(&format!("; try --protocol {}", real.name())) && !msg.contains('\n'), "{msg}");
    };
    let err = tcp::TcpConn::connect(resp_port, None).await.expect_err("tcp on the RESP port");
    check(err, Protocol::Tcp, resp_port, Protocol::Resp);
    let err = resp::RespConn::connect(tcp_port, None).await.expect_err("resp on the TCP port");
    check(err, Protocol::Resp, tcp_port, Protocol::Tcp);
    for (target, real) in [(tcp_port, Protocol::Tcp), (resp_port, Protocol::Resp)] {
        let err = grpc::channel(target).await.expect_err("grpc on the TCP or RESP port");
        // The server's GOAWAY explains itself, but hyper may see the connection close before it
        // reads that frame; then the channel still refuses, saying its first call failed.
        if err.downcast_ref::<Mismatch>().is_some() {
            check(err, Protocol::Grpc, target, real);
        } else {
            let msg = format!("{err:#}");
            assert!(msg.contains("the first call failed") && !msg.contains('\n'), "{msg}");
        }
    }
    // the right ports still connect
    tcp::TcpConn::connect(tcp_port, None).await.expect("tcp on the TCP port");
    resp::RespConn::connect(resp_port, None).await.expect("resp on the RESP port");
    grpc::channel(&addrs[&Protocol::Grpc]).await.expect("grpc on the gRPC port");
    assert!(server.shutdown().await);
}
