//! The built `nanodb-cli` binary against a server started in-process on 127.0.0.1:0: exit
//! codes, binary values, every output format, the shell across a server restart, scans, watches,
//! bulk loading and the gRPC stats.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;

const BIN: &str = env!("CARGO_BIN_EXE_nanodb-cli");
const DEADLINE: Duration = Duration::from_secs(30);

async fn server_on(tcp: &str, grpc: &str) -> Server {
    let config = Config {
        tcp_addr: ListenAddr::On(tcp.into()),
        grpc_addr: ListenAddr::On(grpc.into()),
        ..Config::all_off()
    };
    Server::start(config).await.expect("server starts")
}

async fn server() -> (Server, u16, u16) {
    let s = server_on("127.0.0.1:0", "127.0.0.1:0").await;
    let a = s.addrs();
    let (tcp, grpc) = (a.tcp.expect("tcp").port(), a.grpc.expect("grpc").port());
    (s, tcp, grpc)
}

fn cli(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("NANODB_CLI_PORT", port.to_string()).args(args);
    c.stdin(Stdio::null());
    c
}

async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("spawn nanodb-cli")).await.expect("join")
}

async fn run_with_stdin(mut c: Command, input: Vec<u8>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child =
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("wait");
        writer.join().expect("writer").expect("write stdin");
        out
    })
    .await
    .expect("join")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_what_went_wrong() {
    let (server, port, _) = server().await;
    let ok = run(cli(port, &["put", "k", "v"])).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    // A server error: exit 1, printed with its code.
    let e = run(cli(port, &["incr", "k"])).await;
    assert_eq!(e.status.code(), Some(1));
    assert!(text(&e.stderr).contains("(error) NOT_AN_INTEGER"), "{}", text(&e.stderr));
    // Usage: unknown command, wrong arity, unparsable number, bad escape, bad TTL: exit 2.
    for args in [
        &["frobnicate", "k"][..],
        &["get"],
        &["get", "a", "b"],
        &["incr", "k", "12x"],
        &["lrange", "l", "0", "nope"],
        &["put", "k\\q", "v"],
        &["put", "k", "v", "--ttl", "5y"],
        &["put", "k"],
    ] {
        let o = run(cli(port, args)).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(!text(&o.stderr).is_empty() && !text(&o.stderr).contains("panicked"), "{args:?}");
    }
    // Nothing changed by the refused ones.
    assert_eq!(run(cli(port, &["get", "k"])).await.stdout, b"v\n");
    // Nobody listening: exit 3.
    drop(server);
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let o = run(cli(free, &["get", "k"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("cannot connect to 127.0.0.1:"), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_in_and_out_in_every_format() {
    let (server, port, _) = server().await;
    let value = b"\x00\xffnot utf-8\n".to_vec();
    let o = run_with_stdin(cli(port, &["put", "bin\\x01", "-"]), value.clone()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stored = server.engine().key_count();
    assert_eq!(stored, 1);
    // raw (stdout is not a terminal): the bytes, then a newline.
    let raw = run(cli(port, &["get", "bin\\x01"])).await;
    assert_eq!(raw.stdout, [value.as_slice(), b"\n"].concat());
    let human = run(cli(port, &["-o", "human", "get", "bin\\x01"])).await;
    assert_eq!(text(&human.stdout), "\"\\x00\\xffnot utf-8\\n\"\n");
    let json = run(cli(port, &["-o", "json", "get", "bin\\x01"])).await;
    assert_eq!(text(&json.stdout), "{\"base64\":\"AP9ub3QgdXRmLTgK\"}\n");
    assert_eq!(text(&run(cli(port, &["-o", "human", "get", "missing"])).await.stdout), "(nil)\n");
    assert_eq!(text(&run(cli(port, &["-o", "human", "incr", "n", "-7"])).await.stdout), "(integer) -7\n");
    // --value-file, byte for byte.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("v.bin");
    std::fs::write(&file, [1u8, 2, 0, 255]).expect("write");
    let path = file.to_str().expect("utf-8 path");
    assert_eq!(run(cli(port, &["put", "f", "--value-file", path])).await.status.code(), Some(0));
    assert_eq!(run(cli(port, &["get", "f"])).await.stdout, [1, 2, 0, 255, b'\n']);
    // A non-UTF-8 argument is taken as bytes.
    use std::os::unix::ffi::OsStrExt;
    let mut c = cli(port, &["put"]);
    c.arg(std::ffi::OsStr::from_bytes(b"k\xfe")).arg(std::ffi::OsStr::from_bytes(b"v\xfd"));
    assert_eq!(run(c).await.status.code(), Some(0));
    assert_eq!(text(&run(cli(port, &["-o", "human", "get", "k\\xfe"])).await.stdout), "\"v\\xfd\"\n");
    // Conditions.
    assert!(text(&run(cli(port, &["put", "c", "1", "--if-absent"])).await.stdout).starts_with("OK "));
    let again = run(cli(port, &["-o", "json", "put", "c", "2", "--if-absent"])).await;
    assert!(text(&again.stdout).contains("\"applied\":false"), "{}", text(&again.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_streams_every_page() {
    let (server, port, _) = server().await;
    let lines: String = (0..2500).map(|i| format!("put user:{i:05} v{i}\n")).collect();
    let o = run_with_stdin(cli(port, &["--pipe"]), lines.into_bytes()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(server.engine().key_count(), 2500);
    let o = run(cli(port, &["scan", "--prefix", "user:", "--page", "100", "--keys-only"])).await;
    let keys: Vec<_> = text(&o.stdout).lines().map(String::from).collect();
    assert_eq!(keys.len(), 2500);
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 2500, "every key exactly once");
    let json = run(cli(port, &["-o", "json", "scan", "--prefix", "user:0000"])).await;
    let first = text(&json.stdout).lines().next().map(String::from).unwrap_or_default();
    assert!(first.contains("\"key\":\"user:0000") && first.contains("\"version\""), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_counts_replies_and_explains_bad_lines() {
    let (server, port, _) = server().await;
    let mut input = String::new();
    for i in 0..3000 {
        input.push_str(&format!("put k{i} {i}\n"));
        if i == 1000 {
            input.push_str("incr k5 notanumber\n");
            input.push_str("put \"unbalanced\n");
            input.push_str("incr k7\n");
            input.push_str("put k8 x --ttl 10\n");
        }
    }
    let o = run_with_stdin(cli(port, &["--pipe", "--pipe-batch", "64"]), input.into_bytes()).await;
    assert_eq!(o.status.code(), Some(1), "a failed line makes exit 1: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "All data transferred. errors: 2, replies: 3002\n");
    let err = text(&o.stderr);
    assert!(err.contains("line 1002:") && err.contains("notanumber"), "{err}");
    assert!(err.contains("line 1003:") && err.contains("unbalanced"), "{err}");
    assert_eq!(server.engine().key_count(), 3000);
    assert_eq!(run(cli(port, &["get", "k7"])).await.stdout, b"8\n", "incr applied in order");
    assert_eq!(run(cli(port, &["ttl", "k8"])).await.status.code(), Some(0));
}

/// Reads a child's stdout and stderr into one shared buffer, so a test can wait for text.
fn capture(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for stream in [out, err] {
        let buf = buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { return };
                let mut b = buf.lock().expect("buffer");
                b.push_str(&String::from_utf8_lossy(&line));
                b.push('\n');
            }
        });
    }
    buf
}

async fn wait_for(buf: &Arc<Mutex<String>>, want: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if buf.lock().expect("buffer").contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "no {want:?} in:\n{}", buf.lock().expect("buffer"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_survives_bad_input_and_a_server_restart() {
    let (server, port, grpc) = server().await;
    let mut child = cli(port, &["-o", "human"])
        .env("NANODB_CLI_HISTFILE", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    let out = capture(&mut child);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut say = |line: &str| stdin.write_all(format!("{line}\n").as_bytes()).expect("write to the shell");
    say("put greeting \"hello world\"");
    say("get greeting");
    wait_for(&out, "\"hello world\"").await;
    say("frobnicate");
    wait_for(&out, "unknown command 'frobnicate'").await;
    say("incr n twelve");
    wait_for(&out, "invalid value 'twelve'").await;
    say("get");
    wait_for(&out, "<KEY>").await;
    say("put k \"unterminated");
    wait_for(&out, "unbalanced").await;
    say("help hset");
    wait_for(&out, "--value-file").await;
    // The server goes away: a clear message, the shell stays.
    assert!(server.shutdown().await);
    say("get greeting");
    wait_for(&out, "(disconnected)").await;
    // It comes back on the same port (in memory: the key is gone): the next command reconnects.
    let server = server_on(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{grpc}")).await;
    say("put after restart");
    say("get after");
    wait_for(&out, "\"restart\"").await;
    say("quit");
    drop(stdin);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the shell did not quit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!out.lock().expect("buffer").contains("panicked"));
    // The last command (quit) leaves with the last command's code: `get after` succeeded.
    assert_eq!(status.code(), Some(0));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_events_until_stopped() {
    let (_server, port, _) = server().await;
    let mut child = cli(port, &["-o", "human", "watch", "--prefix", "w:"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let out = capture(&mut child);
    // The watch is registered some time after the spawn: write until an event shows.
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0;
    while !out.lock().expect("buffer").contains("put set \"w:") {
        assert!(Instant::now() < deadline, "no event in:\n{}", out.lock().expect("buffer"));
        let o = run(cli(port, &["put", &format!("w:{i}"), "val\\xff"])).await;
        assert_eq!(o.status.code(), Some(0));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(cli(port, &["del", "w:0"])).await;
    wait_for(&out, "delete del \"w:0\"").await;
    assert!(out.lock().expect("buffer").contains("\"val\\xff\""));
    child.kill().expect("kill");
    child.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_come_from_grpc() {
    let (_server, port, grpc) = server().await;
    run(cli(port, &["put", "a", "1"])).await;
    let o = run(cli(port, &["-o", "json", "--grpc-port", &grpc.to_string(), "stats"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["keys"], 1);
    let tcp = v["protocols"].as_array().expect("protocols").iter().find(|p| p["protocol"] == "tcp").cloned();
    assert!(tcp.is_some_and(|t| t["ops"].as_u64() >= Some(1)), "{v}");
    // No gRPC listening: exit 3.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let o = run(cli(port, &["--grpc-port", &free.to_string(), "stats"])).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
}

/// `--tls --ca` with `--user` and `NANODB_PASSWORD`, on the TCP port and on gRPC (stats): what a
/// server with users and TLS needs; wrong credentials are the server's WRONGPASS (exit 1), and
/// plaintext against the TLS port cannot connect (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_users() {
    use nanodb_server::config::{AuthConfig, ClientAuth, TlsFiles};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let users = write("users.acl", "user alice on >alicepw ~* +@all\n".into());
    let config = Config {
        tcp_addr: ListenAddr::On("127.0.0.1:0".into()),
        grpc_addr: ListenAddr::On("127.0.0.1:0".into()),
        tls: Some(TlsFiles {
            cert: write("server.crt", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            ca: None,
            auth_clients: ClientAuth::No,
        }),
        auth: AuthConfig { users_file: Some(users), ..AuthConfig::default() },
        ..Config::all_off()
    };
    let server = Server::start(config).await.expect("server");
    let (tcp, grpc) = (server.addrs().tcp.expect("tcp").port(), server.addrs().grpc.expect("grpc").port());
    let ca_file = write("ca.crt", ca.pem());
    let secure = |args: &[&str], password: &str| {
        let mut c = cli(
            tcp,
            &["--host", "localhost", "--tls", "--ca", ca_file.to_str().expect("path"), "--user", "alice"],
        );
        c.args(args).env("NANODB_PASSWORD", password).env("NANODB_CLI_GRPC_PORT", grpc.to_string());
        c
    };
    let o = run(secure(&["put", "k", "v"], "alicepw")).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(run(secure(&["get", "k"], "alicepw")).await.stdout, b"v\n");
    let o = run(secure(&["-o", "json", "stats"], "alicepw")).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("\"keys\":1"), "{}", text(&o.stdout));
    let o = run(secure(&["get", "k"], "wrong")).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("WRONGPASS"), "{}", text(&o.stderr));
    let o = run(cli(tcp, &["get", "k"])).await;
    assert_eq!(o.status.code(), Some(3), "plaintext on a TLS port: {}", text(&o.stderr));
    server.shutdown().await;
}

/// `txn` from flags and from stdin: the branch taken follows the compares, both keys move
/// together, a command the server refuses inside a transaction is a server error (exit 1), and a
/// malformed compare is a usage error (exit 2) that sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_moves_two_keys_at_once_or_runs_the_failure_branch() {
    let (server, port, _) = server().await;
    for (k, v) in [("a", "100"), ("b", "0")] {
        assert_eq!(run(cli(port, &["put", k, v])).await.status.code(), Some(0));
    }
    // Versions come from one counter (as etcd's revisions): `a` is at 1, `b` at 2. The compares
    // hold, both writes apply, and `a` gets the next version.
    let moved = run(cli(
        port,
        &[
            "-o",
            "human",
            "txn",
            "--compare",
            "version a = 1",
            "--compare",
            "value b = 0",
            "--success",
            "put a 90",
            "--success",
            "incr b 10",
            "--failure",
            "get a",
        ],
    ))
    .await;
    assert_eq!(moved.status.code(), Some(0), "{}", text(&moved.stderr));
    assert_eq!(text(&moved.stdout), "SUCCEEDED\n1) OK (version 3)\n2) (integer) 10\n");
    assert_eq!(text(&run(cli(port, &["get", "a"])).await.stdout), "90\n");
    assert_eq!(text(&run(cli(port, &["get", "b"])).await.stdout), "10\n");

    // The same again from stdin: `a` is at version 3 now, so the failure branch runs.
    let input = b"version a = 1\n\nput a 80\nincr b 10\n\nget a\nget b\n".to_vec();
    let stale = run_with_stdin(cli(port, &["-o", "json", "txn"]), input).await;
    assert_eq!(stale.status.code(), Some(0), "{}", text(&stale.stderr));
    assert_eq!(text(&stale.stdout), "{\"results\":[\"90\",\"10\"],\"succeeded\":false}\n");
    assert_eq!(text(&run(cli(port, &["get", "b"])).await.stdout), "10\n", "nothing moved");

    // A scan cannot run in a transaction: the CLI says so before sending anything.
    let scan = run(cli(port, &["txn", "--success", "scan --prefix a"])).await;
    assert_eq!(scan.status.code(), Some(2), "{}", text(&scan.stderr));
    // A compare it cannot read is a usage error naming the line.
    let bad = run(cli(port, &["txn", "--compare", "version a >= 1", "--success", "put a 1"])).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("version a >= 1"), "{}", text(&bad.stderr));
    // A runtime error fails that command only (as in EXEC); the other one applies.
    let mixed = run(cli(port, &["-o", "raw", "txn", "--success", "lpush a x", "--success", "put c 1"])).await;
    assert_eq!(mixed.status.code(), Some(0), "{}", text(&mixed.stderr));
    let out = text(&mixed.stdout);
    assert!(out.starts_with("SUCCEEDED\n(error) WRONGTYPE"), "{out}");
    assert_eq!(text(&run(cli(port, &["get", "c"])).await.stdout), "1\n");
    assert_eq!(server.engine().key_count(), 3);
}
