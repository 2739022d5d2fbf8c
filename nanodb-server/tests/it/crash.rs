//! `kill -9` tests' pieces: a server in a child process, writers that keep a ledger of what was
//! acknowledged, and the check that a restarted server lost none of it (persist.rs, and the
//! RocksDB store's tests in tests/rocksdb.rs).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::{Command, Reply, cmd};

use crate::harness::{TcpClient, b, put};

/// A server in a child process, so the test can `kill -9` it.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    pub fn start(dir: &Path, fsync: &str, extra: &[&str], failpoint: Option<&str>) -> Self {
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_nanodb-server"));
        cmd.args([
            "--tcp-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "off",
            "--http-addr",
            "off",
            "--resp-addr",
            "off",
        ])
        .args(["--fsync", fsync, "--log-level", "info", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        match failpoint {
            Some(f) => cmd.env("NANODB_FAILPOINT", f),
            None => cmd.env_remove("NANODB_FAILPOINT"),
        };
        let mut child = cmd.spawn().expect("spawn nanodb-server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Read the bound port from the log, then keep draining so the pipe never fills.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) =
                    line.split("listening addr=").nth(1).and_then(|r| r.split_whitespace().next())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server reports its address")
            .parse()
            .expect("addr");
        Self { child, addr }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    /// A failing test does not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Per key: the highest sequence number acknowledged, and the highest ever sent.
#[derive(Default)]
pub struct Ledger {
    pub acked: HashMap<String, u64>,
    pub sent: HashMap<String, u64>,
}

/// Writes `c<client>:<k>` = `<seq>` with rising seq until the connection dies or `until`.
pub async fn writer(addr: SocketAddr, client: usize, until: Instant) -> Ledger {
    let mut ledger = Ledger::default();
    // Killed before it connected (the kill comes at a random moment): it wrote nothing.
    let Some(mut c) = TcpClient::try_connect(addr).await else { return ledger };
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let key = format!("c{client}:{}", seq % 16);
        ledger.sent.insert(key.clone(), seq);
        let send = c.try_call(put(&key, &seq.to_string()));
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Some(Ok(Reply::Put { applied: true, .. }))) => {
                ledger.acked.insert(key, seq);
            }
            _ => break, // killed mid-request: not acknowledged
        }
    }
    ledger
}

pub async fn verify(addr: SocketAddr, ledgers: &[Ledger], context: &str) {
    let mut c = TcpClient::connect(addr).await;
    for (client, ledger) in ledgers.iter().enumerate() {
        for (key, acked) in &ledger.acked {
            let got = match c.call(Command::Get(cmd::Get { key: b(key) })).await {
                Ok(Reply::Value(Some(e))) => String::from_utf8_lossy(&e.value).parse::<u64>().expect("a seq"),
                other => panic!("{context}: acknowledged {key}={acked} lost: {other:?}"),
            };
            assert!(got >= *acked, "{context}: {key} went back from acknowledged {acked} to {got}");
            assert!(got <= ledger.sent[key], "{context}: {key}={got} was never written");
        }
        assert!(client < ledgers.len());
    }
    // No key appears that nobody wrote.
    let mut cursor = Bytes::new();
    loop {
        let Ok(Reply::Scan { entries, next_cursor }) = c
            .call(Command::Scan(cmd::Scan { prefix: Bytes::new(), limit: 500, cursor: cursor.clone() }))
            .await
        else {
            panic!("scan")
        };
        for e in entries {
            let key = String::from_utf8_lossy(&e.key).into_owned();
            let client: usize = key[1..key.find(':').expect("c<i>:")].parse().expect("client");
            assert!(ledgers[client].sent.contains_key(&key), "{context}: unknown key {key}");
        }
        if next_cursor.is_empty() {
            break;
        }
        cursor = next_cursor;
    }
}

pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
