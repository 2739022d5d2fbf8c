//! A target that speaks another protocol than `--protocol` fails the run before it starts, with one
//! line naming the target, the protocol tried and the flag that fits (issue #22), instead of a run
//! that counts thousands of errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nano_bench::cli::Protocol;
use nano_bench::client::probe::{Mismatch, PROBE_TIMEOUT};
use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;

use crate::{args, run_binary};

/// NanoDB with every frontend on a free port, and the address of each protocol.
async fn server() -> (Server, HashMap<Protocol, String>) {
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
            assert!(
                msg.starts_with(&format!("{target} probably speaks another protocol than {}", tried.name())),
                "{msg}"
            );
            // the run never started: no 3 s of load, at most the probe's deadline
            assert!(took < PROBE_TIMEOUT + Duration::from_secs(1), "{tried:?} on {real:?} took {took:?}");
            if (tried, real) == (Protocol::Tcp, Protocol::Resp) {
                // a HELLO frame has no newline: a RESP server waits for the rest of the line
                assert!(msg.contains("no answer to HELLO"), "{msg}");
                assert!(msg.contains("check --protocol"), "{msg}");
            } else {
                assert!(m.guess.contains(&real), "{tried:?} on {real:?} suggests {:?}: {msg}", m.guess);
                assert!(msg.contains(&format!("--protocol {}", m.guess[0].name())), "{msg}");
                assert!(took < Duration::from_secs(1), "{tried:?} on {real:?} took {took:?}");
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
        (tcp.clone(), "resp", "it answered PING with a NanoDB binary-protocol frame", "try --protocol tcp"),
        (resp.clone(), "http", "it answered a GET with \"-ERR", "try --protocol resp"),
    ];
    for (target, proto, evidence, hint) in cases {
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
        let want = format!("nano-bench: {target} probably speaks another protocol than {proto} ({evidence}");
        assert!(stderr.starts_with(&want), "{stderr}");
        assert!(stderr.contains(hint), "{stderr}");
    }
    assert!(server.shutdown().await);
}
