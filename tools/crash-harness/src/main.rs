//! `crash-harness`: starts NanoDB (one node, or a cluster with `--nodes 3`) on loopback with
//! `--fsync always`, runs writers and readers over the binary TCP protocol and RESP on every node
//! while killing (`kill -9`) and restarting nodes, then checks durability, that nothing unsent
//! appears, and each key's linearizability. Exit status 0: passed; 1: a violation or a failure.
//! With `--docker-node` it starts nothing: it runs the same clients and checks against a cluster in
//! containers and partitions its network instead of killing processes (see `partition`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crash_harness::docker::{self, Container};
use crash_harness::nodes::{self, NodeConfig};
use crash_harness::partition::Partitions;
use crash_harness::run::{self, Options};

/// Crash harness for NanoDB: kill -9 under load, then check every acknowledged write and each
/// key's history for linearizability.
#[derive(Debug, Parser)]
#[command(name = "crash-harness", version, args_override_self = true)]
struct Cli {
    /// The server binary [default: $NANODB_BIN, else nanodb-server beside this binary].
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Nodes: 1 runs one server without cluster flags; more run a cluster (--node-id,
    /// --raft-addr, --cluster-peers).
    #[arg(long, default_value_t = 3, value_name = "N")]
    nodes: usize,
    /// How long clients write and read (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "TIME")]
    duration: Duration,
    /// kill -9 + restart cycles, spread evenly over --duration (in a cluster every other one
    /// targets the leader).
    #[arg(long, default_value_t = 10, value_name = "N")]
    kills: u32,
    /// Client connections per node, alternating binary TCP and RESP.
    #[arg(long, default_value_t = 4, value_name = "N")]
    clients_per_node: usize,
    /// Shared keys whose histories are checked for linearizability.
    #[arg(long, default_value_t = 8, value_name = "N")]
    registers: u32,
    /// Per-request timeout; a write without a reply by then is indeterminate.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "TIME")]
    op_timeout: Duration,
    /// How long a restarted node may take to be ready, and the cluster to converge at the end.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "TIME")]
    ready_timeout: Duration,
    /// Passed to the servers as --raft-election-timeout-ms (cluster mode).
    #[arg(long, value_name = "MS")]
    election_timeout_ms: Option<u64>,
    /// Seed for the workload and the nemesis.
    #[arg(long, default_value_t = 0x6e61_6e6f, value_name = "N")]
    seed: u64,
    /// Search steps per key before the checker gives up (which fails the run).
    #[arg(long, default_value_t = 20_000_000, value_name = "N")]
    check_budget: u64,
    /// An extra server flag (repeat; e.g. --server-arg=--read-consistency --server-arg=stale).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Leave out the group workload (tagged 10-key MSETs and version-guarded transfers between
    /// accounts, over TXN and MULTI/EXEC, each group checked whole or absent and the accounts'
    /// sum conserved after every restart and at the end); it runs by default.
    #[arg(long)]
    no_groups: bool,
    /// Accounts the transfers of the group workload move money between.
    #[arg(long, default_value_t = 8, value_name = "N")]
    accounts: u32,
    /// Keep the data dirs and logs (always kept when the run fails).
    #[arg(long)]
    keep: bool,
    /// A node running in a container, `ID=CONTAINER` (repeat for each node, ids 1..=N): nothing
    /// is started or killed (--nodes and --kills do not apply); clients use the ports it publishes
    /// on loopback, and the faults are network partitions on --docker-network
    /// (docker/partition-test.sh).
    #[arg(long = "docker-node", value_parser = docker::parse_container, value_name = "ID=CONTAINER")]
    docker_nodes: Vec<Container>,
    /// The Docker network the nodes' Raft ports are reached on; a node is cut off by
    /// disconnecting its container from it.
    #[arg(long, value_name = "NETWORK", requires = "docker_nodes")]
    docker_network: Option<String>,
    /// How long a partitioned node stays cut off (a flapping link flaps this long).
    #[arg(long, default_value = "4s", value_parser = parse_duration, value_name = "TIME")]
    partition_hold: Duration,
}

/// Parses `60s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a duration like 60s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(n * mul).map_err(|e| format!("'{s}': {e}"))
}

fn default_server() -> PathBuf {
    if let Some(p) = std::env::var_os("NANODB_BIN") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("nanodb-server")))
        .unwrap_or_else(|| "nanodb-server".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let in_docker = !cli.docker_nodes.is_empty();
    if in_docker {
        if cli.docker_network.is_none() {
            eprintln!("crash-harness: --docker-node needs --docker-network (the network to partition)");
            return ExitCode::FAILURE;
        }
        // The containers are the nodes; the harness starts no server and kills nothing.
        cli.nodes = cli.docker_nodes.len();
        cli.kills = 0;
        cli.server = Some("(none: the nodes are containers)".into());
        let names: Vec<&str> = cli.docker_nodes.iter().map(|c| c.name.as_str()).collect();
        println!(
            "crash-harness: nodes in containers {}; faults: partitions of {:?} on network {}",
            names.join(", "),
            cli.partition_hold,
            cli.docker_network.as_deref().unwrap_or_default()
        );
    }
    if cli.nodes == 0 || cli.clients_per_node == 0 || cli.registers == 0 || cli.duration.is_zero() {
        eprintln!("crash-harness: --nodes, --clients-per-node, --registers and --duration must be > 0");
        return ExitCode::FAILURE;
    }
    if cli.accounts < 2 || cli.accounts > 1000 {
        eprintln!("crash-harness: --accounts must be between 2 and 1000");
        return ExitCode::FAILURE;
    }
    let root = match tempfile::Builder::new().prefix("nanodb-crash.").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("crash-harness: temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = NodeConfig {
        bin: cli.server.clone().unwrap_or_else(default_server),
        nodes: cli.nodes,
        election_timeout_ms: cli.election_timeout_ms,
        extra: cli.server_args.clone(),
    };
    let opts = Options {
        duration: cli.duration,
        kills: cli.kills,
        clients_per_node: cli.clients_per_node,
        registers: cli.registers,
        op_timeout: cli.op_timeout,
        seed: cli.seed,
        check_budget: cli.check_budget,
        ready_timeout: cli.ready_timeout,
        groups: !cli.no_groups,
        accounts: cli.accounts,
        // `--server-arg=--read-consistency --server-arg=stale` (or `=stale`) lets reads lag.
        linearizable_reads: !cli.server_args.iter().any(|a| a.to_ascii_lowercase().contains("stale")),
    };
    let mode = if cli.nodes == 1 { "single node".to_string() } else { format!("{}-node cluster", cli.nodes) };
    println!(
        "crash-harness: {mode}, {:?}, {} kills, {} clients per node, {} registers, {}, server {}",
        opts.duration,
        opts.kills,
        opts.clients_per_node,
        opts.registers,
        if opts.groups { format!("groups ({} accounts)", opts.accounts) } else { "no groups".into() },
        cfg.bin.display()
    );
    let laid_out = if in_docker {
        docker::nodes(&cli.docker_nodes, root.path()).await
    } else {
        nodes::layout(&cfg, root.path())
    };
    let mut nodes = match laid_out {
        Ok(n) => n,
        Err(e) => {
            eprintln!("crash-harness: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut partitions = cli.docker_network.clone().map(|network| {
        let mut c = cli.docker_nodes.clone();
        c.sort_by_key(|c| c.id);
        Partitions::new(network, c.into_iter().map(|c| c.name).collect(), cli.partition_hold)
    });
    let outcome = async {
        for n in nodes.iter_mut().filter(|_| !in_docker) {
            n.start()?;
        }
        for n in nodes.iter_mut() {
            n.wait_ready(cli.nodes > 1, opts.ready_timeout).await?;
        }
        run::run_with(&mut nodes, &opts, partitions.as_mut()).await
    }
    .await;
    for n in nodes.iter_mut() {
        let _ = n.kill();
    }
    // What went wrong is printed after the servers' logs, so that it is what the last lines of a
    // CI job's output show.
    let (passed, verdict) = match outcome {
        Ok(report) => {
            for l in &report.lines {
                println!("  {l}");
            }
            let verdict: Vec<String> = report.violations.iter().map(|v| format!("VIOLATION: {v}")).collect();
            (report.violations.is_empty(), verdict)
        }
        Err(e) => (false, vec![format!("FAILED: {e:#}")]),
    };
    if !passed {
        // a container's log is Docker's: keep it beside the data the harness keeps
        for c in cli.docker_nodes.iter() {
            let path = root.path().join(format!("node{}", c.id)).join("server.log");
            let _ = std::fs::write(path, docker::log_tail(&c.name, 400).await);
        }
        for n in &nodes {
            println!("--- node {} log tail ({})\n{}", n.id, n.log_path().display(), n.log_tail(20));
        }
        println!("--- what failed");
        for v in &verdict {
            println!("{v}");
        }
    }
    // nothing to look at when no server ever started (a wrong --server path, say)
    let started = nodes.iter().any(|n| n.starts > 0);
    if (passed && !cli.keep) || !started {
        println!("{}", if passed { "PASS" } else { "FAIL" });
        return if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let kept = root.keep();
    println!("data dirs and logs kept in {}", kept.display());
    if passed {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
    }
}
