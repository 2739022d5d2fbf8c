//! Nodes that run in Docker containers (docker/compose.cluster.yaml), driven through the `docker`
//! command: their client ports are found with `docker port`, and a node is cut off from the
//! others by disconnecting its container from the network the Raft port is reached on, then
//! reconnected under the same aliases (the names `--cluster-peers` uses). Every call is bounded in
//! time: a stuck Docker engine fails the run instead of hanging it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::nodes::{Node, Ports};

/// Longest a `docker` call may take (a loaded machine's engine can take seconds to reconnect).
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// The container ports the image listens on (docker/Dockerfile.local: tcp, resp, http, grpc).
const TCP: u16 = 7070;
const RESP: u16 = 6379;
const HTTP: u16 = 8080;
const GRPC: u16 = 50051;

/// Runs `docker ARGS`, answering its stdout, or failing with its stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let run = Command::new("docker").args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(CALL_LIMIT, run)
        .await
        .map_err(|_| anyhow::anyhow!("docker {}: no answer within {CALL_LIMIT:?}", args.join(" ")))?
        .with_context(|| format!("docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host port `docker port` reports for `container`'s `port`/tcp (the first binding).
pub fn parse_port(out: &str) -> Option<u16> {
    out.lines().next()?.trim().rsplit_once(':')?.1.parse().ok()
}

/// The host port published for `container`'s `port`.
async fn host_port(container: &str, port: u16) -> anyhow::Result<u16> {
    let out = docker(&["port", container, &format!("{port}/tcp")]).await?;
    parse_port(&out).with_context(|| format!("{container} does not publish port {port}: {out:?}"))
}

/// One node in a container: its id (`--node-id`) and the container's name or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The node id.
    pub id: u64,
    /// The container.
    pub name: String,
}

/// Parses `ID=CONTAINER` (`--docker-node`).
pub fn parse_container(s: &str) -> Result<Container, String> {
    let (id, name) = s.split_once('=').ok_or_else(|| format!("'{s}' is not ID=CONTAINER"))?;
    let id: u64 = id.trim().parse().map_err(|_| format!("'{id}' is not a node id"))?;
    if id == 0 || name.trim().is_empty() {
        return Err(format!("'{s}': a node id >= 1 and a container name"));
    }
    Ok(Container { id, name: name.trim().to_string() })
}

/// Nodes for `containers` (ids 1..=n, each once), reached on the ports they publish on loopback;
/// `root` gets a directory per node.
pub async fn nodes(containers: &[Container], root: &Path) -> anyhow::Result<Vec<Node>> {
    let mut sorted = containers.to_vec();
    sorted.sort_by_key(|c| c.id);
    if sorted.iter().enumerate().any(|(i, c)| c.id != i as u64 + 1) {
        bail!("--docker-node ids must be 1..=N, each once: {containers:?}");
    }
    let mut nodes = Vec::new();
    for c in &sorted {
        let ports = Ports {
            tcp: host_port(&c.name, TCP).await?,
            resp: host_port(&c.name, RESP).await?,
            http: host_port(&c.name, HTTP).await?,
            grpc: host_port(&c.name, GRPC).await?,
            raft: 0,
        };
        let dir = root.join(format!("node{}", c.id));
        std::fs::create_dir_all(&dir)?;
        nodes.push(Node::external(c.id, ports, dir));
    }
    Ok(nodes)
}

/// The aliases `container` has on `network` (the service name among them), to reconnect it as it
/// was; fails when it is not on `network`.
pub async fn aliases(network: &str, container: &str) -> anyhow::Result<Vec<String>> {
    let format = format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}");
    let out = docker(&["inspect", "-f", &format, container]).await?;
    let v: Option<Vec<String>> = serde_json::from_str(out.trim())
        .with_context(|| format!("{container} is not on network {network}: {}", out.trim()))?;
    Ok(v.unwrap_or_default())
}

/// Cuts `container` off `network`.
pub async fn disconnect(network: &str, container: &str) -> anyhow::Result<()> {
    docker(&["network", "disconnect", network, container]).await.map(drop)
}

/// Connects `container` to `network` again under `aliases`.
pub async fn connect(network: &str, container: &str, aliases: &[String]) -> anyhow::Result<()> {
    let mut args = vec!["network", "connect"];
    for a in aliases {
        args.extend(["--alias", a.as_str()]);
    }
    args.extend([network, container]);
    docker(&args).await.map(drop)
}

/// The container's log tail, for failure reports.
pub async fn log_tail(container: &str, lines: usize) -> String {
    let out = Command::new("docker")
        .args(["logs", "--tail", &lines.to_string(), container])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CALL_LIMIT, out).await {
        Ok(Ok(o)) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        _ => format!("(docker logs {container} failed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_output_parses() {
        assert_eq!(parse_port("127.0.0.1:32770\n"), Some(32770));
        assert_eq!(parse_port("0.0.0.0:6379\n[::]:6379\n"), Some(6379));
        assert_eq!(parse_port(""), None);
        assert_eq!(parse_port("garbage"), None);
    }

    #[test]
    fn containers_parse() {
        assert_eq!(parse_container("2=p_node2_1"), Ok(Container { id: 2, name: "p_node2_1".into() }));
        assert!(parse_container("p_node2_1").is_err());
        assert!(parse_container("0=x").is_err());
        assert!(parse_container("1=").is_err());
        assert!(parse_container("x=y").is_err());
    }
}
