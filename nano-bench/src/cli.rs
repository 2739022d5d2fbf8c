//! The command line. Flag names are part of the product (issue #6): scripts and READMEs depend on
//! them, so they change only with a deprecation.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Three runs a new user can copy, shown at the top of `--help` (issue #22); the tests parse each
/// `nano-bench` line, so they stay valid.
pub const EXAMPLES: &str = "\
Examples:
  # GETs over NanoDB's binary protocol (127.0.0.1:7070), 50 connections, 16 in flight each
  nano-bench --protocol tcp --workload get --populate --concurrency 50 --pipeline 16 --duration 10s

  # a SET/GET mix against Redis (or NanoDB's RESP port), pipelined
  nano-bench --protocol resp --target 127.0.0.1:6379 --workload mixed --read-ratio 0.5 --pipeline 16 --populate

  # open loop at 20k ops/s over REST, latency chart and result kept
  nano-bench --protocol http --rate 20000 --duration 30s --warmup 2s --plot latency.svg --json run.json";

/// nano-bench: load generator for NanoDB (binary TCP, gRPC, REST), anything speaking RESP, and etcd
/// v3 (gRPC KV Put/Range).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "nano-bench",
    version,
    args_conflicts_with_subcommands = true,
    before_help = EXAMPLES,
    help_template = "{about-with-newline}\n{before-help}{usage-heading} {usage}\n\n{all-args}{after-help}"
)]
pub struct Cli {
    /// A subcommand; without one, nano-bench runs a benchmark.
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// The benchmark to run.
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Subcommands besides running a benchmark.
#[derive(Debug, Clone, Subcommand)]
pub enum Cmd {
    /// Draw one SVG comparing the latency spectra of earlier runs (their --json files).
    Plot(PlotArgs),
    /// Measure change-feed delivery latency: writes carry their send time, one gRPC Watch on
    /// their prefix records write-to-receipt latency; a missing event is an error.
    WatchLatency(WatchLatencyArgs),
}

/// `nano-bench watch-latency`.
#[derive(Debug, Clone, Args)]
pub struct WatchLatencyArgs {
    /// The gRPC address of the watcher (NanoDB's --grpc-addr), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = Protocol::Grpc.default_target())]
    pub target: String,
    /// The protocol the writes go over.
    #[arg(long, value_enum, default_value = "grpc")]
    pub write_protocol: Protocol,
    /// Where the writes go, HOST:PORT. Default: --target when writing over grpc, else --target's
    /// host at the write protocol's default port (tcp 7070, http 8080, resp 6379).
    #[arg(long, value_name = "HOST:PORT")]
    pub write_target: Option<String>,
    /// Writer connections; together they write at --rate.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub concurrency: usize,
    /// Writes per second, in total (open loop).
    #[arg(long, default_value_t = 1000.0, value_name = "OPS")]
    pub rate: f64,
    /// How long to write (e.g. 10s).
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Writes before this are sent and checked for delivery but not recorded (e.g. 1s).
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// After the last write, how long events still missing may take before they count as lost.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "5s")]
    pub drain: Duration,
    /// Distinct keys written, round robin; they all start with --key-prefix, which is watched.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub keyspace: u64,
    /// The watched prefix; nothing else should write keys starting with it during the run.
    #[arg(long, default_value = "__watch_latency:", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Bytes per written value (at least the 41 that carry the sequence number and send time).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub value_size: usize,
    /// Write the result as JSON (the benchmark's format, with an `events` record).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the full percentile spectrum in HdrHistogram's text format (values in ms).
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A label for this run in reports.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
}

impl WatchLatencyArgs {
    /// Where the writes go: --write-target, else --target for grpc, else --target's host at the
    /// write protocol's default port.
    pub fn write_target(&self) -> String {
        match (&self.write_target, self.write_protocol) {
            (Some(t), _) => t.clone(),
            (None, Protocol::Grpc) => self.target.clone(),
            (None, p) => with_port(&self.target, p.default_port()),
        }
    }

    /// Checks combinations clap cannot express; the message is the whole error line.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(format!("--rate must be > 0, got {}", self.rate));
        }
        if self.keyspace == 0 {
            return Err("--keyspace must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if self.write_protocol == Protocol::Etcd {
            return Err(
                "--write-protocol etcd: the watcher is NanoDB's, so the writes must go to NanoDB".into()
            );
        }
        Ok(())
    }
}

/// `nano-bench plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A result written by --json; repeat to compare runs (one curve each).
    #[arg(long = "json", value_name = "FILE", required = true)]
    pub json: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "Latency by percentile")]
    pub title: String,
}

/// Which wire protocol to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Protocol {
    /// NanoDB's binary TCP protocol (`nanodb-protocol`), pipelined by request id.
    Tcp,
    /// gRPC `nanodb.v1.KV` over shared HTTP/2 connections.
    Grpc,
    /// REST over HTTP/1.1 keep-alive: `GET/PUT /v1/kv/{key}`, `POST /v1/kv/{key}/incr?by=1`.
    Http,
    /// Redis RESP2 (`GET`, `SET`, `INCR`): NanoDB's RESP port or Redis itself.
    Resp,
    /// etcd v3 gRPC (`etcdserverpb.KV`): `Put` for writes, `Range` of one key (linearizable) for
    /// reads; shared HTTP/2 connections like grpc. One endpoint: the leader or any member.
    Etcd,
}

impl Protocol {
    /// Every NanoDB protocol, in the order help texts list them (etcd is not NanoDB's: it is left
    /// out of the wrong-port guesses).
    pub const ALL: [Protocol; 4] = [Self::Tcp, Self::Grpc, Self::Http, Self::Resp];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Grpc => "grpc",
            Self::Http => "http",
            Self::Resp => "resp",
            Self::Etcd => "etcd",
        }
    }

    /// Where NanoDB listens for this protocol by default (`--tcp-addr`, `--grpc-addr`,
    /// `--http-addr`, `--resp-addr`; 6379 is also Redis's port).
    pub const fn default_target(self) -> &'static str {
        match self {
            Self::Tcp => "127.0.0.1:7070",
            Self::Grpc => "127.0.0.1:50051",
            Self::Http => "127.0.0.1:8080",
            Self::Resp => "127.0.0.1:6379",
            Self::Etcd => "127.0.0.1:2379",
        }
    }

    /// The port of [`Protocol::default_target`].
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Tcp => 7070,
            Self::Grpc => 50051,
            Self::Http => 8080,
            Self::Resp => 6379,
            Self::Etcd => 2379,
        }
    }

    /// How a person calls it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Tcp => "NanoDB binary TCP",
            Self::Grpc => "gRPC",
            Self::Http => "HTTP",
            Self::Resp => "RESP",
            Self::Etcd => "etcd v3 gRPC",
        }
    }
}

/// `target`'s host with `port` (`host:1` becomes `host:port`, `[::1]:1` becomes `[::1]:port`).
pub fn with_port(target: &str, port: u16) -> String {
    let host = match target.rsplit_once(':') {
        // `::1` has colons but no port: only `[::1]:p` splits
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && (h.ends_with(']') || !h.contains(':')) => h,
        _ => target,
    };
    format!("{host}:{port}")
}

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Reads only.
    Get,
    /// Writes only (`--value-size` bytes).
    Set,
    /// Increments only.
    Incr,
    /// Reads and writes, `--read-ratio` of them reads.
    Mixed,
    /// Atomic groups of three writes (KEY.0, KEY.1, KEY.2, `--value-size` bytes each): MULTI, 3
    /// SETs and EXEC over RESP; one transaction over tcp (TXN), grpc (`KV.Txn`) and http
    /// (`POST /v1/txn`). One group counts as one request.
    Txn,
}

impl WorkloadKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Incr => "incr",
            Self::Mixed => "mixed",
            Self::Txn => "txn",
        }
    }
}

/// How keys are picked from the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank k with probability proportional to 1/k^s (`--zipf-exponent` s).
    Zipf,
}

/// Running a benchmark.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server, HOST:PORT [default: the port for --protocol: tcp 127.0.0.1:7070, grpc
    /// 127.0.0.1:50051, http 127.0.0.1:8080, resp 127.0.0.1:6379, etcd 127.0.0.1:2379]
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// The protocol to speak.
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: Protocol,
    /// Speak TLS (a NanoDB started with --tls-cert, or Redis's --tls-port); needs --ca.
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// CA certificates (PEM) to trust for --tls; implies --tls.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// The user to authenticate as (a NanoDB with --requirepass or --users-file, or Redis with
    /// ACL users); needs --password.
    #[arg(long, env = "NANODB_USER", default_value = "default", value_name = "NAME")]
    pub user: String,
    /// The password to authenticate with, on every connection: tcp `AUTH` after HELLO, resp
    /// `AUTH`, http `Authorization: Basic`, grpc `authorization` metadata.
    #[arg(long, env = "NANODB_PASSWORD", hide_env_values = true, value_name = "PASS")]
    pub password: Option<String>,
    /// Virtual users: independent request streams, each recording its own histogram.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub concurrency: usize,
    /// Connections. tcp/resp/http: one per virtual user by default (tcp/resp may share: a
    /// connection then carries its users' pipelines); grpc, etcd: shared HTTP/2 connections,
    /// default 1.
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Requests in flight per virtual user (tcp, resp, grpc, etcd; http allows 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,
    /// Requests per virtual user (after warm-up); conflicts with --duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// How long to measure (e.g. 10s, 500ms, 1m); default 10s unless --requests is given.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Load applied before measuring, not counted (e.g. 2s).
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Open loop at this total rate (ops/s), latency measured from each request's intended send
    /// time (coordinated omission corrected). Without it: closed loop, as fast as replies come.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// What the requests do.
    #[arg(long, value_enum, default_value = "get")]
    pub workload: WorkloadKind,
    /// Share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9, value_name = "RATIO")]
    pub read_ratio: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub keyspace: u64,
    /// How keys are picked.
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_dist: KeyDist,
    /// The zipf exponent s (larger is more skewed; 0.99 is YCSB's).
    #[arg(long, default_value_t = 0.99, value_name = "S")]
    pub zipf_exponent: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub value_size: usize,
    /// Every key starts with this.
    #[arg(long, default_value = "key:", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Write every key of the keyspace first (pipelined, not measured) so reads hit.
    #[arg(long)]
    pub populate: bool,
    /// Write the result as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the full percentile spectrum in HdrHistogram's text format (values in ms).
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Draw the latency percentile spectrum as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seed for key and operation choice, for reproducible request streams.
    #[arg(long, default_value_t = 0x6e61_6e6f, value_name = "N")]
    pub seed: u64,
    /// A label for this run in reports and plots (default: protocol and target).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Open this many idle gRPC Watch streams (on keys `__watch_idle:<i>`, which the workload
    /// never writes) before the run and keep them for all of it; any stream failing fails the run.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub watchers: usize,
    /// The gRPC address for --watchers. Default: the target with --protocol grpc, else the
    /// target's host at port 50051.
    #[arg(long, value_name = "HOST:PORT")]
    pub watch_addr: Option<String>,
}

impl BenchArgs {
    /// Connections actually opened.
    pub fn effective_connections(&self) -> usize {
        match (self.connections, self.protocol) {
            (Some(c), _) => c,
            (None, Protocol::Grpc | Protocol::Etcd) => 1,
            (None, _) => self.concurrency,
        }
    }

    /// The server: --target, else NanoDB's default address for --protocol.
    pub fn target_addr(&self) -> &str {
        self.target.as_deref().unwrap_or(self.protocol.default_target())
    }

    /// Where the --watchers streams go: --watch-addr, else the target with --protocol grpc, else
    /// the target's host at gRPC's default port.
    pub fn watch_target(&self) -> String {
        match (&self.watch_addr, self.protocol) {
            (Some(a), _) => a.clone(),
            (None, Protocol::Grpc) => self.target_addr().to_string(),
            (None, _) => with_port(self.target_addr(), Protocol::Grpc.default_port()),
        }
    }

    /// The label of this run.
    pub fn run_label(&self) -> String {
        self.label.clone().unwrap_or_else(|| format!("{} {}", self.protocol.name(), self.target_addr()))
    }

    /// Checks combinations clap cannot express; the message is the whole error line.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.keyspace == 0 {
            return Err("--keyspace must be at least 1".into());
        }
        let conns = self.effective_connections();
        if conns == 0 {
            return Err("--connections must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!("--read-ratio must be within 0..=1, got {}", self.read_ratio));
        }
        if self.key_dist == KeyDist::Zipf && !(self.zipf_exponent > 0.0 && self.zipf_exponent.is_finite()) {
            return Err(format!("--zipf-exponent must be > 0, got {}", self.zipf_exponent));
        }
        if let Some(r) = self.rate
            && !(r > 0.0 && r.is_finite())
        {
            return Err(format!("--rate must be > 0, got {r}"));
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        match self.protocol {
            Protocol::Http if self.pipeline > 1 => {
                return Err("--pipeline > 1 needs tcp, resp or grpc (HTTP/1.1 carries one request at a \
                            time per connection); raise --concurrency instead"
                    .into());
            }
            Protocol::Http if conns != self.concurrency => {
                return Err("--connections must equal --concurrency for http (one HTTP/1.1 connection per \
                            virtual user)"
                    .into());
            }
            Protocol::Etcd if self.password.is_some() => {
                return Err("--password with --protocol etcd is not supported (the etcd client does not \
                            authenticate)"
                    .into());
            }
            Protocol::Etcd if self.tls || self.ca.is_some() => {
                return Err(
                    "--tls with --protocol etcd is not supported (the etcd client is plaintext)".into()
                );
            }
            Protocol::Etcd if matches!(self.workload, WorkloadKind::Incr) => {
                return Err("--workload incr needs a NanoDB protocol or RESP (etcd has no increment)".into());
            }
            Protocol::Etcd if matches!(self.workload, WorkloadKind::Txn) => {
                return Err("--workload txn needs a NanoDB protocol or RESP (nano-bench's etcd client \
                            sends Put and Range only)"
                    .into());
            }
            Protocol::Tcp | Protocol::Resp if conns > self.concurrency => {
                return Err(format!(
                    "--connections ({conns}) cannot exceed --concurrency ({}) for {}",
                    self.concurrency,
                    self.protocol.name()
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `100us` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit '{u}' in '{s}' (use us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn issue_flag_names_parse() {
        let cli = Cli::try_parse_from([
            "nano-bench",
            "--target",
            "127.0.0.1:1",
            "--protocol",
            "resp",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--pipeline",
            "8",
            "--duration",
            "1s",
            "--warmup",
            "2s",
            "--rate",
            "1000",
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "--keyspace",
            "10",
            "--key-dist",
            "zipf",
            "--zipf-exponent",
            "1.1",
            "--value-size",
            "3",
            "--key-prefix",
            "p:",
            "--populate",
            "--json",
            "a.json",
            "--hdr-out",
            "a.hgrm",
            "--plot",
            "a.svg",
            "--no-progress",
        ])
        .expect("parses");
        let b = cli.bench;
        assert_eq!(
            (b.protocol, b.concurrency, b.effective_connections(), b.pipeline),
            (Protocol::Resp, 4, 2, 8)
        );
        assert_eq!((b.workload, b.key_dist, b.keyspace), (WorkloadKind::Mixed, KeyDist::Zipf, 10));
        assert!(b.validate().is_ok());
        let plot =
            Cli::try_parse_from(["nano-bench", "plot", "--json", "a", "--json", "b", "--out", "x.svg"])
                .expect("parses");
        assert!(matches!(plot.command, Some(Cmd::Plot(p)) if p.json.len() == 2));
    }

    #[test]
    fn target_defaults_to_the_protocols_port() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).expect("parses").bench;
        let want = [("tcp", 7070), ("grpc", 50051), ("http", 8080), ("resp", 6379)];
        for (proto, port) in want {
            let a = parse(&["nano-bench", "--protocol", proto]);
            assert_eq!(a.target_addr(), format!("127.0.0.1:{port}"), "--protocol {proto}");
            assert_eq!(a.run_label(), format!("{proto} 127.0.0.1:{port}"));
            // an explicit --target always wins
            let a = parse(&["nano-bench", "--protocol", proto, "--target", "db:1"]);
            assert_eq!(a.target_addr(), "db:1");
        }
        assert_eq!(parse(&["nano-bench"]).target_addr(), "127.0.0.1:7070", "tcp is the default protocol");
        assert_eq!(Protocol::ALL.map(|p| p.default_port().to_string()), ["7070", "50051", "8080", "6379"]);
        assert!(Protocol::ALL.iter().all(|p| p.default_target().ends_with(&p.default_port().to_string())));
    }

    #[test]
    fn ports_replace_on_any_host() {
        assert_eq!(with_port("10.0.0.5:50051", 7070), "10.0.0.5:7070");
        assert_eq!(with_port("db.local", 6379), "db.local:6379");
        assert_eq!(with_port("[::1]:50051", 8080), "[::1]:8080");
    }

    #[test]
    fn watchers_default_to_the_grpc_port_of_the_target_host() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).expect("parses").bench;
        let a = parse(&["nano-bench", "--protocol", "resp", "--watchers", "100"]);
        assert_eq!((a.validate(), a.watch_target()), (Ok(()), "127.0.0.1:50051".to_string()));
        let a = parse(&["nano-bench", "--protocol", "resp", "--target", "db:6380", "--watchers", "1"]);
        assert_eq!(a.watch_target(), "db:50051");
        let a = parse(&["nano-bench", "--protocol", "resp", "--watchers", "1", "--watch-addr", "h:1"]);
        assert_eq!((a.validate(), a.watch_target()), (Ok(()), "h:1".to_string()));
        let a = parse(&["nano-bench", "--protocol", "grpc", "--target", "g:2", "--watchers", "3"]);
        assert_eq!((a.validate(), a.watch_target(), a.watchers), (Ok(()), "g:2".to_string(), 3));
        assert_eq!(parse(&["nano-bench"]).watchers, 0);
    }

    #[test]
    fn watch_latency_writes_to_the_write_protocols_port() {
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv).expect("parses").command {
            Some(Cmd::WatchLatency(w)) => w,
            other => panic!("not watch-latency: {other:?}"),
        };
        let w = parse(&["nano-bench", "watch-latency"]);
        assert_eq!(
            (w.validate(), w.target.as_str(), w.write_target()),
            (Ok(()), "127.0.0.1:50051", w.target.clone())
        );
        let w = parse(&["nano-bench", "watch-latency", "--target", "g:1", "--write-protocol", "tcp"]);
        assert_eq!((w.validate(), w.write_target()), (Ok(()), "g:7070".to_string()));
        let w = parse(&["nano-bench", "watch-latency", "--write-protocol", "http"]);
        assert_eq!(w.write_target(), "127.0.0.1:8080");
        let w = parse(&[
            "nano-bench",
            "watch-latency",
            "--target",
            "g:1",
            "--write-protocol",
            "resp",
            "--write-target",
            "r:2",
            "--rate",
            "500",
            "--duration",
            "2s",
        ]);
        assert_eq!((w.validate(), w.write_target(), w.rate), (Ok(()), "r:2".to_string(), 500.0));
        let w = parse(&["nano-bench", "watch-latency", "--target", "g:1"]);
        assert_eq!((w.validate(), w.write_target()), (Ok(()), "g:1".to_string()));
    }

    #[test]
    fn help_opens_with_examples_that_parse() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let short = Cli::command().render_help().to_string();
        for text in [&help, &short] {
            let examples = text.find("Examples:").expect("an Examples block");
            assert!(examples < text.find("Usage:").expect("usage"), "examples come first:\n{text}");
        }
        let runs: Vec<&str> =
            EXAMPLES.lines().map(str::trim).filter(|l| l.starts_with("nano-bench ")).collect();
        assert_eq!(runs.len(), 3, "{EXAMPLES}");
        for run in runs {
            assert!(help.contains(run), "--help shows {run}");
            let cli = Cli::try_parse_from(run.split_whitespace()).unwrap_or_else(|e| panic!("{run}: {e}"));
            assert_eq!(cli.bench.validate(), Ok(()), "{run}");
        }
    }

    #[test]
    fn etcd_parses_like_grpc_and_refuses_incr() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).expect("parses").bench;
        let a = parse(&["nano-bench", "--protocol", "etcd", "--workload", "set", "--pipeline", "16"]);
        assert_eq!((a.validate(), a.target_addr(), a.effective_connections()), (Ok(()), "127.0.0.1:2379", 1));
        let a = parse(&["nano-bench", "--protocol", "etcd", "--connections", "50", "--target", "h:1"]);
        assert_eq!((a.validate(), a.effective_connections(), a.run_label()), (Ok(()), 50, "etcd h:1".into()));
        let a = parse(&["nano-bench", "--protocol", "etcd", "--workload", "incr"]);
        assert!(a.validate().is_err_and(|e| e.contains("incr")));
        let a = parse(&["nano-bench", "--protocol", "etcd", "--tls", "--ca", "ca.pem"]);
        assert!(a.validate().is_err_and(|e| e.contains("--tls")));
        // the change feed watched by watch-latency is NanoDB's: writes to etcd would never arrive
        let w =
            Cli::try_parse_from(["nano-bench", "watch-latency", "--write-protocol", "etcd"]).expect("parses");
        assert!(
            matches!(w.command, Some(Cmd::WatchLatency(w)) if w.validate().is_err_and(|e| e.contains("etcd")))
        );
    }

    #[test]
    fn http_refuses_pipelining() {
        let cli =
            Cli::try_parse_from(["nano-bench", "--protocol", "http", "--pipeline", "4"]).expect("parses");
        assert!(cli.bench.validate().is_err_and(|e| e.contains("--pipeline")));
    }
}
