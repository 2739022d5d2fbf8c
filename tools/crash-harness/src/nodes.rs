//! The server processes under test: one `nanodb-server` per node on loopback ports chosen free,
//! each with its own data dir kept across restarts, `--fsync always`, and in cluster mode the
//! issue #16 flags (`--node-id`, `--raft-addr`, `--cluster-peers`). Readiness is probed (ports
//! accept; in cluster mode `GET /v1/cluster` names a leader), never slept for. A kill is SIGKILL.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::client::http_get;

/// One node's ports (all on 127.0.0.1).
#[derive(Debug, Clone)]
pub struct Ports {
    /// Binary TCP protocol.
    pub tcp: u16,
    /// RESP2.
    pub resp: u16,
    /// REST (status).
    pub http: u16,
    /// gRPC.
    pub grpc: u16,
    /// Raft (cluster mode only).
    pub raft: u16,
}

/// A port nobody listens on now (bound and released; the server binds it moments later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What a node said at `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Its id.
    pub node_id: u64,
    /// The leader it knows, if any.
    pub leader_id: Option<u64>,
    /// Its role.
    pub role: String,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied.
    pub applied_index: u64,
}

impl Status {
    /// Reads the issue's JSON shape; fields it does not need are ignored.
    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let num = |k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("no numeric {k}"));
        Ok(Self {
            node_id: num("node_id")?,
            leader_id: v.get("leader_id").and_then(Value::as_u64),
            role: v.get("role").and_then(Value::as_str).unwrap_or("").to_string(),
            commit_index: num("commit_index").unwrap_or(0),
            applied_index: num("applied_index")?,
        })
    }
}

/// One server process and everything needed to restart it identically.
#[derive(Debug)]
pub struct Node {
    /// 1-based, as `--node-id`.
    pub id: u64,
    /// Its ports.
    pub ports: Ports,
    dir: PathBuf,
    args: Vec<String>,
    bin: PathBuf,
    child: Option<Child>,
    /// Times started.
    pub starts: u32,
    /// Started by someone else (a container, see [`crate::docker`]): always up as far as the
    /// harness knows; it neither starts nor kills it.
    external: bool,
}

impl Node {
    /// The binary-protocol address.
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.tcp)
    }
    /// The RESP address.
    pub fn resp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.resp)
    }
    /// The REST address.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }
    /// The server log (all starts appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }
    /// Whether the process is running (as far as the harness started and did not kill it).
    pub fn is_up(&self) -> bool {
        self.external || self.child.is_some()
    }

    /// A node the harness did not start and does not manage (a container), reached on loopback
    /// at `ports`; `dir` holds whatever the caller keeps about it (its log, say).
    pub fn external(id: u64, ports: Ports, dir: PathBuf) -> Self {
        Self { id, ports, dir, args: Vec::new(), bin: PathBuf::new(), child: None, starts: 1, external: true }
    }

    /// Starts the process (its data dir is reused).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.external {
            bail!("node {} is external: the harness does not start it", self.id);
        }
        let log = OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.external {
            bail!("node {} is external: the harness does not kill it", self.id);
        }
        if let Some(mut c) = self.child.take() {
            c.kill().context("kill -9")?;
            c.wait()?;
        }
        Ok(())
    }

    /// Waits until every client port accepts (and, given `cluster`, until the node reports a
    /// leader), or fails after `limit`; a process that exits meanwhile fails at once.
    pub async fn wait_ready(&mut self, cluster: bool, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let addrs = [self.tcp_addr(), self.resp_addr(), self.http_addr()];
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(code) = c.try_wait()?
            {
                self.child = None;
                bail!("node {} exited during startup ({code}); see {}", self.id, self.log_path().display());
            }
            let mut ready = true;
            for a in &addrs {
                if tokio::net::TcpStream::connect(a).await.is_err() {
                    ready = false;
                    break;
                }
            }
            if ready && cluster {
                ready = matches!(self.status().await, Ok(s) if s.leader_id.is_some());
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {} not ready after {limit:?}; see {}", self.id, self.log_path().display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /v1/cluster`.
    pub async fn status(&self) -> anyhow::Result<Status> {
        let (code, body) = http_get(&self.http_addr(), "/v1/cluster", Duration::from_secs(2)).await?;
        if code != 200 {
            bail!("GET /v1/cluster: HTTP {code}: {body}");
        }
        Status::from_json(&serde_json::from_str(&body)?)
    }

    /// The last lines of the log, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Options every node shares.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The server binary.
    pub bin: PathBuf,
    /// Cluster mode (the issue #16 flags) when more than one node.
    pub nodes: usize,
    /// `--raft-election-timeout-ms`, if set.
    pub election_timeout_ms: Option<u64>,
    /// Extra server flags.
    pub extra: Vec<String>,
}

/// Lays out `cfg.nodes` nodes under `root` (not started).
pub fn layout(cfg: &NodeConfig, root: &Path) -> anyhow::Result<Vec<Node>> {
    let cluster = cfg.nodes > 1;
    let mut ports = Vec::new();
    for _ in 0..cfg.nodes {
        ports.push(Ports {
            tcp: free_port()?,
            resp: free_port()?,
            http: free_port()?,
            grpc: free_port()?,
            raft: free_port()?,
        });
    }
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.raft)).collect();
    let mut nodes = Vec::new();
    for (i, p) in ports.into_iter().enumerate() {
        let id = i as u64 + 1;
        let dir = root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = vec![
            "--tcp-addr".into(),
            format!("127.0.0.1:{}", p.tcp),
            "--resp-addr".into(),
            format!("127.0.0.1:{}", p.resp),
            "--http-addr".into(),
            format!("127.0.0.1:{}", p.http),
            "--grpc-addr".into(),
            format!("127.0.0.1:{}", p.grpc),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--fsync".into(),
            "always".into(),
        ];
        if cluster {
            args.extend([
                "--node-id".into(),
                id.to_string(),
                "--raft-addr".into(),
                format!("127.0.0.1:{}", p.raft),
                "--cluster-peers".into(),
                peers.join(","),
            ]);
            if let Some(ms) = cfg.election_timeout_ms {
                args.extend(["--raft-election-timeout-ms".into(), ms.to_string()]);
            }
        }
        args.extend(cfg.extra.iter().cloned());
        nodes.push(Node {
            id,
            ports: p,
            dir,
            args,
            bin: cfg.bin.clone(),
            child: None,
            starts: 0,
            external: false,
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_the_issue_shape() {
        let v = serde_json::json!({"node_id": 2, "leader_id": null, "term": 3, "role": "candidate",
            "commit_index": 7, "applied_index": 6, "members": []});
        let s = Status::from_json(&v).ok();
        assert_eq!(s.as_ref().map(|s| (s.node_id, s.leader_id, s.applied_index)), Some((2, None, 6)));
        let v = serde_json::json!({"node_id": 1, "leader_id": 1, "role": "leader", "applied_index": 9});
        assert_eq!(Status::from_json(&v).ok().and_then(|s| s.leader_id), Some(1));
        assert!(Status::from_json(&serde_json::json!({"leader_id": 1})).is_err(), "no node_id");
    }

    #[test]
    fn cluster_flags_only_with_several_nodes() {
        let root = tempfile::tempdir().expect("tempdir");
        let cfg = NodeConfig { bin: "x".into(), nodes: 1, election_timeout_ms: Some(300), extra: vec![] };
        let one = layout(&cfg, root.path()).expect("layout");
        assert!(!one[0].args.iter().any(|a| a.contains("raft")));
        assert!(one[0].args.windows(2).any(|w| w[0] == "--fsync" && w[1] == "always"));
        let three = layout(&NodeConfig { nodes: 3, ..cfg }, root.path()).expect("layout");
        let peers = three[0].args.iter().position(|a| a == "--cluster-peers").map(|i| &three[0].args[i + 1]);
        let want = format!(
            "1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}",
            three[0].ports.raft, three[1].ports.raft, three[2].ports.raft
        );
        assert_eq!(peers, Some(&want));
        assert!(three.iter().all(|n| n.args.iter().any(|a| a == "--raft-election-timeout-ms")));
        assert_eq!(
            three[2].args.iter().position(|a| a == "--node-id").map(|i| three[2].args[i + 1].clone()),
            Some("3".into())
        );
    }
}
