//! Server configuration: command-line flags, `NANODB_*` environment variables and an optional TOML
//! file, in that order of precedence (flag > environment > file > default).
//!
//! Every setting is a clap flag with its default shown in `--help`. The file uses the flags' long
//! names as keys (`tcp_addr = "127.0.0.1:7070"` or `tcp-addr = ...`); unknown keys are an error, so
//! a typo never passes silently, and the nearest known key is suggested. `--help` groups the flags
//! under headings by concern. Merging is generic: file entries whose flag was neither given nor
//! set in the environment are injected as flags and the command line is parsed again.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use nanodb_protocol::Limits;

use crate::engine::Policy;
use crate::feed::{FeedLimits, NotifyFlags};
use crate::persist::FsyncPolicy;

fn on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{s}' is neither on nor off")),
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 67108864 or 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit '{other}' in '{s}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// Where the durable state lives (`--storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The append-only log and snapshots in `--data-dir`.
    Memory,
    /// RocksDB in `--data-dir/rocksdb` (cargo feature `rocksdb`; docs/ROCKSDB.md).
    Rocksdb,
}

impl FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "memory" => Ok(Self::Memory),
            "rocksdb" => Ok(Self::Rocksdb),
            _ => Err(format!("'{s}' is not one of memory, rocksdb")),
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Rocksdb => "rocksdb",
        })
    }
}

/// A listen address: `HOST:PORT`, or `off` to disable that frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// The frontend is disabled.
    Off,
    /// Listen here (`HOST:PORT`; port 0 picks a free port).
    On(String),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::On(s.to_string()))
            }
            _ => Err(format!("'{s}' is neither HOST:PORT nor 'off'")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On(a) => f.write_str(a),
        }
    }
}

impl ListenAddr {
    /// The address, or `None` when off.
    pub fn as_option(&self) -> Option<&str> {
        match self {
            Self::Off => None,
            Self::On(a) => Some(a),
        }
    }
}

// `--help` headings, by concern. Flags without one (the config file, logging) are under Options.
const NETWORK: &str = "Network";
const DURABILITY: &str = "Durability";
const LIMITS: &str = "Limits";
const WATCH: &str = "Watch/Pub-sub";
const RUNTIME: &str = "Performance/Runtime";
const TLS: &str = "TLS and connection limits";
const CLUSTER: &str = "Cluster";

/// NanoDB: one in-memory key-value engine served over gRPC, REST, a binary TCP protocol and RESP.
#[derive(Debug, Clone, Parser)]
#[command(name = "nanodb-server", version, args_override_self = true)]
pub struct Cli {
    /// TOML file with any of the settings below (keys are the flag names); flags and NANODB_*
    /// variables win over it.
    #[arg(long, env = "NANODB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// gRPC listen address (HOST:PORT or off).
    #[arg(long, help_heading = NETWORK, env = "NANODB_GRPC_ADDR", default_value = "127.0.0.1:50051", value_name = "ADDR")]
    pub grpc_addr: ListenAddr,

    /// REST (HTTP) listen address (HOST:PORT or off).
    #[arg(long, help_heading = NETWORK, env = "NANODB_HTTP_ADDR", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http_addr: ListenAddr,

    /// Binary TCP protocol listen address (HOST:PORT or off).
    #[arg(long, help_heading = NETWORK, env = "NANODB_TCP_ADDR", default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub tcp_addr: ListenAddr,

    /// Redis protocol (RESP2) listen address (HOST:PORT or off).
    #[arg(long, help_heading = NETWORK, env = "NANODB_RESP_ADDR", default_value = "127.0.0.1:6379", value_name = "ADDR")]
    pub resp_addr: ListenAddr,

    /// Directory for the append-only log and snapshots.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_DATA_DIR", default_value = "./nanodb-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Keep data on disk (append-only log + snapshots) or be a pure in-memory cache.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_PERSISTENCE", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, value_name = "on|off")]
    pub persistence: bool,

    /// When a write is acknowledged: after its log record is fsynced (always, with group commit),
    /// written and fsynced within a second (everysec), or written (no).
    #[arg(long, help_heading = DURABILITY, env = "NANODB_FSYNC", default_value = "everysec", value_name = "always|everysec|no")]
    pub fsync: FsyncPolicy,

    /// Log growth that triggers a snapshot and log compaction: bytes, or with a KiB/MiB/GiB suffix.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_SNAPSHOT_EVERY", default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub snapshot_every: u64,

    /// At a clean shutdown (SIGTERM, ctrl-c), write a snapshot when the log has grown since the
    /// last one, so the next start loads that snapshot and replays no log. Crash-safe like every
    /// snapshot (temp file, fsync, rename); a kill during it loses nothing. Off: shut down at once
    /// and replay the log at the next start.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_SNAPSHOT_ON_SHUTDOWN", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set, value_name = "on|off")]
    pub snapshot_on_shutdown: bool,

    /// Where data lives on disk: memory (every key in RAM, made durable by the append-only log
    /// and snapshots) or rocksdb (RocksDB in DIR/rocksdb replaces the log and snapshots; needs a
    /// server built with `--features rocksdb`; see docs/ROCKSDB.md).
    #[arg(long, help_heading = DURABILITY, env = "NANODB_STORAGE", default_value = "memory", value_name = "memory|rocksdb")]
    pub storage: Storage,

    /// RocksDB's block cache (--storage rocksdb): bytes, or with a KiB/MiB/GiB suffix.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_BLOCK_CACHE", default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub block_cache: u64,

    /// Start even if a log segment is corrupt: truncate it at the damage (keeping a .broken copy).
    #[arg(long, help_heading = DURABILITY, env = "NANODB_REPAIR")]
    pub repair: bool,

    /// Restore a backup and exit: verify the snapshot file PATH (a `snapshot-N.snap`, with its
    /// `.meta` beside it when it came from a cluster node), then seed the empty `--data-dir` with
    /// exactly its keys, as a single node or, with `--node-id` and `--raft-addr`, as a new cluster
    /// of one (a fresh cluster id). Refuses a damaged file (exit 3) and a data dir that is not
    /// empty (exit 4). Start the server afterwards with the same flags, without this one.
    #[arg(long, help_heading = DURABILITY, env = "NANODB_RESTORE_FROM", value_name = "PATH")]
    pub restore_from: Option<PathBuf>,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    #[arg(long, env = "NANODB_LOG_LEVEL", default_value = "info", value_name = "FILTER")]
    pub log_level: String,

    /// Longest key or hash field, in bytes.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_KEY_LEN", default_value_t = Limits::default().max_key_len, value_name = "BYTES")]
    pub max_key_len: usize,

    /// Longest value, in bytes.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_VALUE_LEN", default_value_t = Limits::default().max_value_len, value_name = "BYTES")]
    pub max_value_len: usize,

    /// Most operations in one batch (and values in one list push).
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_BATCH_LEN", default_value_t = Limits::default().max_batch_len, value_name = "N")]
    pub max_batch_len: usize,

    /// Largest scan page a client may ask for.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_SCAN_PAGE", default_value_t = Limits::default().max_scan_page, value_name = "N")]
    pub max_scan_page: u32,

    /// Scan page size when a client asks for 0.
    #[arg(long, help_heading = LIMITS, env = "NANODB_DEFAULT_SCAN_PAGE", default_value_t = Limits::default().default_scan_page, value_name = "N")]
    pub default_scan_page: u32,

    /// Largest binary TCP frame, in bytes (length prefix excluded).
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_FRAME_LEN", default_value_t = nanodb_protocol::frame::DEFAULT_MAX_FRAME_LEN, value_name = "BYTES")]
    pub max_frame_len: usize,

    /// Longest RESP bulk string (a key or value argument), in bytes; refused before it is read.
    /// Defaults to --max-value-len.
    #[arg(long, help_heading = LIMITS, env = "NANODB_RESP_MAX_BULK_LEN", value_name = "BYTES")]
    pub resp_max_bulk_len: Option<usize>,

    /// Most arguments in one RESP command (array length); refused before anything is allocated.
    #[arg(long, help_heading = LIMITS, env = "NANODB_RESP_MAX_ARGS", default_value_t = 1_048_576, value_name = "N")]
    pub resp_max_args: usize,

    /// RESP event loops: threads of their own serving RESP connections (round robin), apart from
    /// the runtime serving the other protocols. One loop is Redis's model and the fastest for
    /// requests that are not pipelined; more spread pipelined load over more cores; 0 serves RESP
    /// on the shared runtime. At most 256.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_RESP_THREADS", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub resp_threads: u64,

    /// Longest time, in microseconds, an RESP event loop keeps polling its sockets after its
    /// latest request before it sleeps. Polling spares a client with one request in flight the
    /// cost of waking the loop for each request; the window adapts, so sparse traffic polls
    /// little and an idle server not at all. A loaded loop keeps its core busy between requests.
    /// 0 turns polling off. At most 1000.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_RESP_IDLE_POLL_US", default_value_t = 50, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub resp_idle_poll_us: u64,

    /// Binary TCP event loops: threads of their own serving binary-protocol connections (round
    /// robin), as `--resp-threads` does for RESP, so a connection with a request ready is not left
    /// on a shared-runtime worker the kernel descheduled. 0 serves binary TCP on the shared
    /// runtime. At most 256.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_TCP_THREADS", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub tcp_threads: u64,

    /// Longest time, in microseconds, a binary TCP event loop keeps polling its sockets after its
    /// latest request before it sleeps (as `--resp-idle-poll-us`). 0 turns polling off. At most
    /// 1000.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_TCP_IDLE_POLL_US", default_value_t = 50, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub tcp_idle_poll_us: u64,

    /// gRPC event loops: threads of their own serving gRPC connections (round robin), each with
    /// its HTTP/2 streams. Default 1, as for the other protocols: one loop already keeps a core
    /// busy at `-P 1`, and on a small machine more loops than cores only take turns. 0 serves gRPC
    /// on the shared runtime. At most 256.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_GRPC_THREADS", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub grpc_threads: u64,

    /// Longest time, in microseconds, a gRPC event loop keeps polling after its latest read before
    /// it sleeps (as `--resp-idle-poll-us`). 0 turns polling off. At most 1000.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_GRPC_IDLE_POLL_US", default_value_t = 50, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub grpc_idle_poll_us: u64,

    /// REST event loops: threads of their own serving HTTP connections (round robin), each with
    /// its HTTP/2 streams, SSE streams and WebSockets. Default 1, as for the other protocols. 0
    /// serves REST on the shared runtime. At most 256.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_HTTP_THREADS", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub http_threads: u64,

    /// Longest time, in microseconds, a REST event loop keeps polling after its latest read before
    /// it sleeps (as `--resp-idle-poll-us`). 0 turns polling off. At most 1000.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_HTTP_IDLE_POLL_US", default_value_t = 50, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub http_idle_poll_us: u64,

    /// Most client connections per protocol at once (binary TCP, RESP, gRPC and REST alike); further
    /// connections are refused with an error in their protocol.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_CONNECTIONS", default_value_t = 10_000, value_name = "N")]
    pub max_connections: usize,

    /// Most gRPC and REST requests being served at once, per protocol; beyond it a request is shed
    /// at once (gRPC RESOURCE_EXHAUSTED, HTTP 503 BUSY) rather than queued.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_IN_FLIGHT", default_value_t = 10_000, value_name = "N")]
    pub max_in_flight: usize,

    /// Most open watch and subscribe streams per protocol (gRPC Watch/Subscribe, REST SSE and
    /// WebSocket); they outlive requests, so they are bounded apart.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_STREAMS", default_value_t = 10_000, value_name = "N")]
    pub max_streams: usize,

    /// Deadline for one request, in milliseconds.
    #[arg(long, help_heading = LIMITS, env = "NANODB_REQUEST_TIMEOUT_MS", default_value_t = 5_000, value_name = "MS")]
    pub request_timeout_ms: u64,

    /// Most memory one Lua script (EVAL) may allocate, in bytes; past it the script is stopped
    /// and writes nothing.
    #[arg(long, help_heading = LIMITS, env = "NANODB_SCRIPT_MAX_MEMORY", default_value_t = 64 * 1024 * 1024,
          value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024 * 1024..))]
    pub script_max_memory: u64,

    /// Most memory the dataset may use (its entries, what values own, the tables and expiry
    /// indexes: INFO's `used_memory`), as a size (`512MiB`, `1GB`, bytes); 0 for no limit. Past
    /// it, commands that may grow memory evict keys by --maxmemory-policy, or are refused with
    /// Redis's `-OOM` (OUT_OF_MEMORY elsewhere). CONFIG SET maxmemory changes it until restart.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAX_MEMORY", default_value = "0", value_parser = parse_size, value_name = "SIZE")]
    pub max_memory: u64,

    /// What to do past --max-memory, in Redis's words: noeviction (refuse), allkeys-lru,
    /// allkeys-random, volatile-lru, volatile-ttl, volatile-random (the volatile ones evict only
    /// keys with a TTL). Cluster mode takes noeviction only.
    #[arg(long, help_heading = LIMITS, env = "NANODB_MAXMEMORY_POLICY", default_value = "noeviction", value_name = "POLICY")]
    pub maxmemory_policy: Policy,

    /// Longest a Lua script (EVAL) may run, in milliseconds (checked every few thousand Lua
    /// instructions); past it the script is stopped and writes nothing.
    #[arg(long, help_heading = LIMITS, env = "NANODB_SCRIPT_TIMEOUT_MS", default_value_t = 5_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub script_timeout_ms: u64,

    /// Time a new TCP connection has to send its HELLO, in milliseconds; with TLS, also the time
    /// any connection has to complete its TLS handshake.
    #[arg(long, help_heading = LIMITS, env = "NANODB_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_name = "MS")]
    pub handshake_timeout_ms: u64,

    /// On shutdown, how long connections get to finish before the server exits anyway.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_SHUTDOWN_GRACE_MS", default_value_t = 5_000, value_name = "MS")]
    pub shutdown_grace_ms: u64,

    /// Runtime worker threads; 0 means one per CPU. On a machine shared with its clients (a
    /// benchmark on the same cores), fewer workers than cores trades peak throughput for a shorter
    /// latency tail.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_WORKER_THREADS", default_value_t = 0, value_name = "N")]
    pub worker_threads: usize,

    /// How often the expiry sweeper runs, in milliseconds.
    #[arg(long, help_heading = RUNTIME, env = "NANODB_SWEEP_INTERVAL_MS", default_value_t = 100, value_name = "MS")]
    pub sweep_interval_ms: u64,

    /// Origins allowed to call the REST API from a browser (CORS), comma-separated, or `*` for
    /// any; empty (the default) turns CORS off.
    #[arg(long, help_heading = NETWORK, env = "NANODB_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGINS")]
    pub cors_origins: Vec<String>,

    /// Most events one watcher or subscriber may have waiting; one more and it is told it lagged
    /// (events dropped) and closed. Writers never wait for subscribers.
    #[arg(long, help_heading = WATCH, env = "NANODB_WATCH_QUEUE_LEN", default_value_t = 4096, value_name = "N")]
    pub watch_queue_len: usize,

    /// Most bytes (keys, values, messages) one watcher or subscriber may have waiting, e.g. 16MiB.
    #[arg(long, help_heading = WATCH, env = "NANODB_WATCH_QUEUE_BYTES", default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub watch_queue_bytes: u64,

    /// Most keys, prefixes, channels and patterns one connection (or one watch stream) may
    /// subscribe to.
    #[arg(long, help_heading = WATCH, env = "NANODB_WATCH_MAX_TOPICS", default_value_t = 10_000, value_name = "N")]
    pub watch_max_topics: usize,

    /// Keyspace notifications published to Redis pub/sub channels, in Redis's letters (e.g. `KEA`;
    /// empty = off). Also settable at run time with CONFIG SET notify-keyspace-events.
    #[arg(long, help_heading = WATCH, env = "NANODB_NOTIFY_KEYSPACE_EVENTS", default_value = "", value_parser = NotifyFlags::parse, value_name = "FLAGS")]
    pub notify_keyspace_events: NotifyFlags,

    /// Users and authentication (#15).
    #[command(flatten)]
    pub auth: AuthCli,

    // --- TLS and connection limits (#15) ---
    /// Certificate chain (PEM, leaf first) to serve every frontend over TLS with; needs
    /// `--tls-key`. Re-read with the key on SIGHUP.
    #[arg(long, help_heading = TLS, env = "NANODB_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, help_heading = TLS, env = "NANODB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that client certificates must chain to; with it, clients are
    /// asked for a certificate (see `--tls-auth-clients`).
    #[arg(long, help_heading = TLS, env = "NANODB_TLS_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,

    /// Whether clients must present a certificate signed by `--tls-ca`: `yes` (Redis's default),
    /// `optional` (verified when presented), or `no`. Needs `--tls-ca` unless `no`.
    #[arg(long, help_heading = TLS, env = "NANODB_TLS_AUTH_CLIENTS", value_name = "no|optional|yes")]
    pub tls_auth_clients: Option<ClientAuth>,

    /// Whether `REPLICAOF` speaks TLS to its target's RESP port (Redis's `tls-replication`),
    /// trusting `--tls-ca` and presenting `--tls-cert` if the target asks for a client
    /// certificate. Needs `--tls-cert` and `--tls-ca`.
    #[arg(long, help_heading = TLS, env = "NANODB_TLS_REPLICATION", default_value = "no", value_parser = on_off, action = clap::ArgAction::Set, value_name = "yes|no")]
    pub tls_replication: bool,

    /// Seconds a connection may stay idle (no request in flight) before it is closed, on every
    /// protocol (Redis's `timeout`); connections that watch or subscribe are never closed for
    /// idleness. 0 = never.
    #[arg(long, help_heading = TLS, env = "NANODB_IDLE_TIMEOUT", default_value_t = 0, value_name = "SECS")]
    pub idle_timeout: u64,

    /// Seconds an HTTP/1 client has to send a request's headers (from the connection's start or
    /// the previous response) before it is cut: the slowloris defence.
    #[arg(long, help_heading = TLS, env = "NANODB_HTTP_HEADER_TIMEOUT", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout: u64,

    /// Most concurrent HTTP/2 streams (requests) per connection, for gRPC and REST alike.
    #[arg(long, help_heading = TLS, env = "NANODB_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 1024, value_name = "N")]
    pub http2_max_concurrent_streams: u32,

    /// Largest HTTP/2 header list per request (`SETTINGS_MAX_HEADER_LIST_SIZE`), for gRPC and
    /// REST; at least 1KiB. (HTTP/1 requests are bounded by hyper's 100 headers and ~400KiB.)
    #[arg(long, help_heading = TLS, env = "NANODB_HTTP2_MAX_HEADER_BYTES", default_value = "16KiB", value_parser = parse_size, value_name = "SIZE")]
    pub http2_max_header_bytes: u64,

    /// This node's id in a cluster (an integer >= 1, never reused for another node).
    #[arg(long, help_heading = CLUSTER, env = "NANODB_NODE_ID", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// The internal Raft port (HOST:PORT); giving it turns cluster mode on (needs --node-id).
    #[arg(long, help_heading = CLUSTER, env = "NANODB_RAFT_ADDR", value_name = "ADDR")]
    pub raft_addr: Option<String>,

    /// The initial voters by Raft address, the same list on every node: `1=HOST:PORT,2=HOST:PORT`.
    /// A new cluster initializes itself once (the lowest id does it); a restarted node rejoins
    /// from its data directory.
    #[arg(long, help_heading = CLUSTER, env = "NANODB_CLUSTER_PEERS", value_delimiter = ',', value_parser = parse_peer, value_name = "ID=ADDR,...")]
    pub cluster_peers: Vec<(u64, String)>,

    /// Raft election timeout: a follower that hears no leader for about this long (randomised,
    /// 0.9-1.1x it) starts an election, so a new leader is elected within twice it; heartbeats
    /// go every twentieth of it.
    #[arg(long, help_heading = CLUSTER, env = "NANODB_RAFT_ELECTION_TIMEOUT_MS", default_value_t = 1000, value_name = "MS")]
    pub raft_election_timeout_ms: u64,

    /// Entries applied between two Raft snapshots (the log is purged behind each).
    #[arg(long, help_heading = CLUSTER, env = "NANODB_RAFT_SNAPSHOT_EVERY", default_value_t = 100_000, value_name = "N")]
    pub raft_snapshot_every: u64,

    /// Reads in a cluster: `linearizable` (confirmed with the leader's read index) or `stale`
    /// (answered from this node's state, as Redis replicas do).
    #[arg(long, help_heading = CLUSTER, env = "NANODB_READ_CONSISTENCY", default_value = "linearizable", value_name = "linearizable|stale")]
    pub read_consistency: ReadConsistency,
}

/// How a cluster node answers reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Every read sees every write acknowledged before it started (Raft read index).
    #[default]
    Linearizable,
    /// A read answers from this node's applied state, possibly behind the leader.
    Stale,
}

impl FromStr for ReadConsistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" => Ok(Self::Linearizable),
            "stale" => Ok(Self::Stale),
            _ => Err(format!("'{s}' is neither linearizable nor stale")),
        }
    }
}

// ---- Users and authentication (#15) ----

const SECURITY: &str = "Security";

/// The users and authentication flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthCli {
    /// Password of the `default` user (as Redis's requirepass); turns authentication on.
    #[arg(long, help_heading = SECURITY, env = "NANODB_REQUIREPASS", hide_env_values = true, value_name = "PASS")]
    pub requirepass: Option<String>,

    /// Users in Redis ACL rule syntax, one `user NAME rules...` per line; turns authentication on.
    /// ACL SAVE rewrites it, ACL LOAD re-reads it.
    #[arg(long, help_heading = SECURITY, env = "NANODB_USERS_FILE", value_name = "FILE")]
    pub users_file: Option<PathBuf>,

    /// Refuse to start when a frontend listens on a non-loopback address without a password or a
    /// users file.
    #[arg(long, help_heading = SECURITY, env = "NANODB_PROTECTED_MODE", default_value = "yes", value_parser = on_off, action = clap::ArgAction::Set, value_name = "yes|no")]
    pub protected_mode: bool,

    /// How long a bearer token from `POST /v1/auth/token` or `Auth/Authenticate` lives:
    /// seconds, or with a unit (`90s`, `30m`, `1h`, `7d`).
    #[arg(long, help_heading = SECURITY, env = "NANODB_TOKEN_TTL", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub token_ttl: Duration,

    /// The secret tokens are signed with (at least 32 bytes; surrounding whitespace ignored).
    /// Give every node the same file and a token works on all of them. Without it, a secret is
    /// generated once in the data directory (`token-secret`, mode 0600).
    #[arg(long, help_heading = SECURITY, env = "NANODB_TOKEN_SECRET_FILE", value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// The user `REPLICAOF` authenticates as on the node it replicates (Redis's masteruser);
    /// without it, `--masterauth` is the `default` user's password. Also CONFIG SET masteruser.
    #[arg(long, help_heading = SECURITY, env = "NANODB_MASTERUSER", value_name = "USER")]
    pub masteruser: Option<String>,

    /// The password `REPLICAOF` authenticates with on the node it replicates (Redis's
    /// masterauth); never shown by CONFIG GET or the logs. Also CONFIG SET masterauth. Prefer
    /// the NANODB_MASTERAUTH variable or the config file: a flag shows in the process list.
    #[arg(long, help_heading = SECURITY, env = "NANODB_MASTERAUTH", hide_env_values = true, value_name = "PASS")]
    pub masterauth: Option<String>,
}

/// A duration: whole seconds, or a number with `ms`, `s`, `m`, `h` or `d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 3600, 90s, 30m, 1h, 7d)"))?;
    let ms_per = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m, h or d)")),
    };
    let ms = n.checked_mul(ms_per).ok_or_else(|| format!("`{text}` is too long"))?;
    if ms == 0 {
        return Err("a token lifetime must be above zero".into());
    }
    Ok(Duration::from_millis(ms))
}

/// Users and authentication settings.
#[derive(Clone)]
pub struct AuthConfig {
    /// `default`'s password.
    pub requirepass: Option<String>,
    /// The users file.
    pub users_file: Option<PathBuf>,
    /// Protected mode (on unless `--protected-mode no`).
    pub protected_mode: bool,
    /// How long a new token lives.
    pub token_ttl: Duration,
    /// `--token-secret-file`.
    pub token_secret_file: Option<PathBuf>,
    /// `--masteruser`: who `REPLICAOF` authenticates as on its target.
    pub masteruser: Option<String>,
    /// `--masterauth`: the password `REPLICAOF` authenticates with on its target.
    pub masterauth: Option<String>,
}

/// Auth off, protected mode on, tokens living an hour: the flags' defaults.
impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            requirepass: None,
            users_file: None,
            protected_mode: true,
            token_ttl: Duration::from_secs(3600),
            token_secret_file: None,
            masteruser: None,
            masterauth: None,
        }
    }
}

/// Never prints the password.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("requirepass", &self.requirepass.as_ref().map(|_| "<redacted>"))
            .field("users_file", &self.users_file)
            .field("protected_mode", &self.protected_mode)
            .field("token_ttl", &self.token_ttl)
            .field("token_secret_file", &self.token_secret_file)
            .field("masteruser", &self.masteruser)
            .field("masterauth", &self.masterauth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl From<AuthCli> for AuthConfig {
    fn from(c: AuthCli) -> Self {
        Self {
            requirepass: c.requirepass.filter(|p| !p.is_empty()),
            users_file: c.users_file,
            protected_mode: c.protected_mode,
            token_ttl: c.token_ttl,
            token_secret_file: c.token_secret_file,
            masteruser: c.masteruser.filter(|u| !u.is_empty()),
            masterauth: c.masterauth.filter(|p| !p.is_empty()),
        }
    }
}

/// Parses one `ID=HOST:PORT` of `--cluster-peers`.
fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("'{s}' is not ID=HOST:PORT"))?;
    let id: u64 = id.trim().parse().map_err(|_| format!("'{id}' is not a node id"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok((id, addr.to_string())),
        _ => Err(format!("'{addr}' is not HOST:PORT")),
    }
}

/// Cluster mode's settings (`--raft-addr` given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// The Raft port.
    pub raft_addr: String,
    /// The initial voters.
    pub peers: Vec<(u64, String)>,
    /// Election timeout.
    pub election_timeout: Duration,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// Read consistency.
    pub read_consistency: ReadConsistency,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address.
    pub grpc_addr: ListenAddr,
    /// REST listen address.
    pub http_addr: ListenAddr,
    /// Binary TCP listen address.
    pub tcp_addr: ListenAddr,
    /// RESP listen address.
    pub resp_addr: ListenAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log filter.
    pub log_level: String,
    /// Whether to keep data on disk.
    pub persistence: bool,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Log growth that triggers a snapshot.
    pub snapshot_every: u64,
    /// Snapshot at a clean shutdown when the log grew since the last snapshot.
    pub snapshot_on_shutdown: bool,
    /// Truncate corrupt log segments instead of refusing to start.
    pub repair: bool,
    /// Where the durable state lives.
    pub storage: Storage,
    /// RocksDB's block cache in bytes.
    pub block_cache: u64,
    /// Restore this backup into the data directory and exit (see `restore`).
    pub restore_from: Option<PathBuf>,
    /// Size and count limits, enforced by the engine.
    pub limits: Limits,
    /// Largest TCP frame.
    pub max_frame_len: usize,
    /// Longest RESP bulk string.
    pub resp_max_bulk_len: usize,
    /// Most arguments in one RESP command.
    pub resp_max_args: usize,
    /// RESP event loops; 0 for none (RESP on the shared runtime).
    pub resp_threads: usize,
    /// Longest busy-polling window of a RESP event loop; zero for none.
    pub resp_idle_poll: Duration,
    /// Binary TCP event loops; 0 for none (binary TCP on the shared runtime).
    pub tcp_threads: usize,
    /// Longest busy-polling window of a binary TCP event loop; zero for none.
    pub tcp_idle_poll: Duration,
    /// gRPC event loops; 0 for none (gRPC on the shared runtime).
    pub grpc_threads: usize,
    /// Longest busy-polling window of a gRPC event loop; zero for none.
    pub grpc_idle_poll: Duration,
    /// REST event loops; 0 for none (REST on the shared runtime).
    pub http_threads: usize,
    /// Longest busy-polling window of a REST event loop; zero for none.
    pub http_idle_poll: Duration,
    /// Connection limit per protocol.
    pub max_connections: usize,
    /// Requests served at once per protocol (gRPC, REST).
    pub max_in_flight: usize,
    /// Open watch/subscribe streams per protocol (gRPC, REST).
    pub max_streams: usize,
    /// Request deadline.
    pub request_timeout: Duration,
    /// HELLO deadline for TCP connections.
    pub handshake_timeout: Duration,
    /// Memory one Lua script may allocate.
    pub script_max_memory: usize,
    /// The dataset's memory limit in bytes (0: none).
    pub max_memory: u64,
    /// What happens past `max_memory`.
    pub maxmemory_policy: Policy,
    /// Run time one Lua script may take.
    pub script_timeout: Duration,
    /// Drain deadline at shutdown.
    pub shutdown_grace: Duration,
    /// Expiry sweeper period.
    pub sweep_interval: Duration,
    /// Runtime worker threads (0 = one per CPU).
    pub worker_threads: usize,
    /// Origins allowed by CORS on the REST API; empty for CORS off.
    pub cors_origins: Vec<String>,
    /// Bounds of the change feed (watchers and pub/sub).
    pub feed: FeedLimits,
    /// Keyspace notifications at start.
    pub notify_keyspace_events: NotifyFlags,
    /// Users and authentication.
    pub auth: AuthConfig,
    /// TLS for every frontend, when configured.
    pub tls: Option<TlsFiles>,
    /// `REPLICAOF` speaks TLS to its target (needs `tls`, with a CA).
    pub tls_replication: bool,
    /// Idle connections are closed after this; `None` for never.
    pub idle_timeout: Option<Duration>,
    /// Deadline for an HTTP/1 request's headers.
    pub http_header_timeout: Duration,
    /// HTTP/2 streams per connection (gRPC, REST).
    pub http2_max_concurrent_streams: u32,
    /// Largest request header list (gRPC, REST).
    pub http2_max_header_bytes: u32,
    /// Cluster mode, when `--raft-addr` is given.
    pub cluster: Option<ClusterConfig>,
}

/// Where TLS's files are, and how clients are verified (`--tls-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CAs for client certificates, PEM.
    pub ca: Option<PathBuf>,
    /// Whether client certificates are required.
    pub auth_clients: ClientAuth,
}

/// `--tls-auth-clients`: Redis's `tls-auth-clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    No,
    /// A client certificate is verified when presented; clients without one are served.
    Optional,
    /// A client certificate signed by `--tls-ca` is required.
    Yes,
}

impl Default for Config {
    /// The defaults of every flag.
    fn default() -> Self {
        Cli::parse_from(["nanodb-server"]).into()
    }
}

impl Config {
    /// Defaults with every listener off and persistence off; tests switch on what they need (on
    /// port 0, with a temporary data directory).
    pub fn all_off() -> Self {
        Self {
            grpc_addr: ListenAddr::Off,
            http_addr: ListenAddr::Off,
            tcp_addr: ListenAddr::Off,
            resp_addr: ListenAddr::Off,
            persistence: false,
            ..Self::default()
        }
    }
}

impl From<Cli> for Config {
    fn from(c: Cli) -> Self {
        Self {
            grpc_addr: c.grpc_addr,
            http_addr: c.http_addr,
            tcp_addr: c.tcp_addr,
            resp_addr: c.resp_addr,
            data_dir: c.data_dir,
            log_level: c.log_level,
            persistence: c.persistence,
            fsync: c.fsync,
            snapshot_every: c.snapshot_every.max(1),
            snapshot_on_shutdown: c.snapshot_on_shutdown,
            repair: c.repair,
            storage: c.storage,
            block_cache: c.block_cache,
            restore_from: c.restore_from,
            limits: Limits {
                max_key_len: c.max_key_len,
                max_value_len: c.max_value_len,
                max_batch_len: c.max_batch_len,
                max_scan_page: c.max_scan_page,
                default_scan_page: c.default_scan_page,
            },
            max_frame_len: c.max_frame_len,
            resp_max_bulk_len: c.resp_max_bulk_len.unwrap_or(c.max_value_len),
            resp_max_args: c.resp_max_args.max(1),
            resp_threads: c.resp_threads as usize,
            resp_idle_poll: Duration::from_micros(c.resp_idle_poll_us),
            tcp_threads: c.tcp_threads as usize,
            tcp_idle_poll: Duration::from_micros(c.tcp_idle_poll_us),
            grpc_threads: c.grpc_threads as usize,
            grpc_idle_poll: Duration::from_micros(c.grpc_idle_poll_us),
            http_threads: c.http_threads as usize,
            http_idle_poll: Duration::from_micros(c.http_idle_poll_us),
            max_connections: c.max_connections.max(1),
            max_in_flight: c.max_in_flight.max(1),
            max_streams: c.max_streams,
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
            script_max_memory: usize::try_from(c.script_max_memory).unwrap_or(usize::MAX),
            max_memory: c.max_memory,
            maxmemory_policy: c.maxmemory_policy,
            script_timeout: Duration::from_millis(c.script_timeout_ms),
            shutdown_grace: Duration::from_millis(c.shutdown_grace_ms),
            sweep_interval: Duration::from_millis(c.sweep_interval_ms.max(1)),
            worker_threads: c.worker_threads,
            cors_origins: c.cors_origins.into_iter().filter(|o| !o.is_empty()).collect(),
            feed: FeedLimits {
                queue_len: c.watch_queue_len.max(1),
                queue_bytes: usize::try_from(c.watch_queue_bytes).unwrap_or(usize::MAX).max(1024),
                max_topics: c.watch_max_topics.max(1),
                max_topic_len: c.max_key_len,
            },
            notify_keyspace_events: c.notify_keyspace_events,
            auth: c.auth.into(),
            tls: match (c.tls_cert, c.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    auth_clients: c.tls_auth_clients.unwrap_or(if c.tls_ca.is_some() {
                        ClientAuth::Yes
                    } else {
                        ClientAuth::No
                    }),
                    ca: c.tls_ca,
                }),
                _ => None,
            },
            tls_replication: c.tls_replication,
            idle_timeout: (c.idle_timeout > 0).then(|| Duration::from_secs(c.idle_timeout)),
            http_header_timeout: Duration::from_secs(c.http_header_timeout.max(1)),
            http2_max_concurrent_streams: c.http2_max_concurrent_streams.max(1),
            http2_max_header_bytes: u32::try_from(c.http2_max_header_bytes).unwrap_or(u32::MAX).max(1024),
            cluster: c.raft_addr.map(|raft_addr| ClusterConfig {
                // Checked by `load`: cluster mode needs a node id.
                node_id: c.node_id.unwrap_or(0),
                raft_addr,
                peers: c.cluster_peers,
                election_timeout: Duration::from_millis(c.raft_election_timeout_ms.max(50)),
                snapshot_every: c.raft_snapshot_every.max(1),
                read_consistency: c.read_consistency,
            }),
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags, or `--help`/`--version` (which clap prints and exits on).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or holds an unknown key or a bad value.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Loads the configuration from `args` (the first is the program name), the environment and the
/// file named by `--config`.
pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cmd = Cli::command();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let Some(path) = cli.config.clone() else { return Ok(cli.into()) };

    let file_error = |message: String| ConfigError::File { path: path.clone(), message };
    let text =
        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| file_error(e.message().to_string()))?;

    let mut merged: Vec<OsString> = args.first().cloned().into_iter().collect();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && id != "config")
            .ok_or_else(|| file_error(unknown_setting(&cmd, &key)))?;
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(file_error(format!(
                    "setting '{key}' must be a string, number or boolean, not {}",
                    other.type_str()
                )));
            }
        };
        if matches!(matches.value_source(&id), None | Some(ValueSource::DefaultValue)) {
            let long = arg.get_long().unwrap_or(id.as_str()).to_string();
            merged.push(format!("--{long}").into());
            merged.push(value.into());
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    let matches = cmd
        .try_get_matches_from(&merged)
        .map_err(|e| file_error(e.kind().to_string() + ": " + &first_line(&e)))?;
    Ok(Cli::from_arg_matches(&matches)?.into())
}

/// "unknown setting 'tcp_adr'; did you mean 'tcp_addr'?", spelt as the user spells keys (with
/// dashes or underscores), or a pointer to the list when nothing is close.
fn unknown_setting(cmd: &clap::Command, key: &str) -> String {
    let typed = key.replace('-', "_");
    let known = cmd.get_arguments().map(|a| a.get_id().as_str()).filter(|id| *id != "config");
    let nearest = known.map(|id| (edit_distance(&typed, id), id)).min();
    match nearest {
        // Close: a typo, a letter or two, or a third of a long name.
        Some((d, id)) if d <= 2 || d * 3 <= typed.len() => {
            let suggestion = if key.contains('-') { id.replace('_', "-") } else { id.to_string() };
            format!("unknown setting '{key}'; did you mean '{suggestion}'?")
        }
        _ => format!("unknown setting '{key}' (the keys are the flag names; see nanodb-server --help)"),
    }
}

/// Levenshtein distance (insertions, deletions and substitutions), over bytes: keys are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn first_line(e: &clap::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(contents: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with_contents(contents)
    }

    /// A file removed on drop, without pulling a crate in for one test.
    mod tempfile_path {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct TempPath(PathBuf);

        impl TempPath {
            pub fn with_contents(s: &str) -> Self {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "nanodb-config-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, s).expect("write temp config");
                Self(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults() {
        let c = load(["nanodb-server"]).expect("defaults load");
        assert_eq!(c.tcp_addr, ListenAddr::On("127.0.0.1:7070".into()));
        assert_eq!(c.grpc_addr, ListenAddr::On("127.0.0.1:50051".into()));
        assert_eq!(c.http_addr, ListenAddr::On("127.0.0.1:8080".into()));
        assert_eq!(c.resp_addr, ListenAddr::On("127.0.0.1:6379".into()));
        assert_eq!(c.limits, Limits::default());
        assert!(c.persistence);
        assert_eq!(c.fsync, FsyncPolicy::EverySec);
        assert_eq!(c.snapshot_every, 64 << 20);
        assert!(c.snapshot_on_shutdown);
        assert_eq!(c.resp_max_bulk_len, c.limits.max_value_len);
        assert_eq!(c.resp_max_args, 1_048_576);
        assert_eq!(c.resp_threads, 1);
        assert_eq!(c.resp_idle_poll, Duration::from_micros(50));
        for (threads, poll) in [
            (c.tcp_threads, c.tcp_idle_poll),
            (c.grpc_threads, c.grpc_idle_poll),
            (c.http_threads, c.http_idle_poll),
        ] {
            assert_eq!((threads, poll), (1, Duration::from_micros(50)), "every frontend has one loop");
        }
        let c = load(["nanodb-server", "--max-value-len", "10"]).expect("loads");
        assert_eq!(c.resp_max_bulk_len, 10, "the bulk limit follows the value limit unless set");
        assert!(c.cors_origins.is_empty(), "CORS is off by default");
        let c =
            load(["nanodb-server", "--cors-origins", "https://a.example,https://b.example"]).expect("loads");
        assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
    }

    #[test]
    fn a_typo_in_a_file_key_suggests_the_nearest_setting_in_the_same_spelling() {
        for (typed, suggested) in [
            ("snapshot-evry", "snapshot-every"),
            ("fsnyc", "fsync"),
            ("max_value_length", "max_value_len"),
            ("resp_max_arg", "resp_max_args"),
            ("watch-queue-byte", "watch-queue-bytes"),
        ] {
            let f = write(&format!("{typed} = \"1\"\n"));
            let err =
                load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect_err("typo");
            let expected = format!("unknown setting '{typed}'; did you mean '{suggested}'?");
            assert!(err.to_string().ends_with(&expected), "{err}");
        }
        let f = write("colour = \"blue\"\n");
        let err = load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect_err("unknown");
        assert!(err.to_string().contains("unknown setting 'colour' (the keys are the flag names"), "{err}");
        assert!(!err.to_string().contains("did you mean"), "{err}");
        let f = write("config = \"other.toml\"\n");
        let err =
            load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect_err("no nesting");
        assert!(!err.to_string().contains("did you mean 'config'"), "{err}");
        assert_eq!(edit_distance("tcp_adr", "tcp_addr"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn help_groups_the_flags_by_concern_and_every_flag_keeps_its_env_variable() {
        let help = Cli::command().render_help().to_string();
        let headings =
            ["Options:", "Network:", "Durability:", "Limits:", "Performance/Runtime:", "Watch/Pub-sub:"];
        let mut at = 0;
        for h in headings {
            let found = help.lines().position(|l| l == h).unwrap_or_else(|| panic!("no {h} in\n{help}"));
            assert!(found >= at, "{h} out of order in\n{help}");
            at = found;
        }
        // Each flag under the heading it belongs to: the lines after a heading, up to the next.
        let section = |h: &str| -> String {
            help.split(&format!("\n{h}\n"))
                .nth(1)
                .map(|r| r.split("\n\n").next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        assert!(section("Network:").contains("--tcp-addr <ADDR>"));
        assert!(section("Durability:").contains("--fsync <always|everysec|no>"));
        assert!(section("Limits:").contains("--max-value-len <BYTES>"));
        assert!(section("Performance/Runtime:").contains("--worker-threads <N>"));
        assert!(section("Watch/Pub-sub:").contains("--notify-keyspace-events <FLAGS>"));
        // Scripts set flags through NANODB_<FLAG>: every flag has exactly that variable.
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env, Some(format!("NANODB_{}", long.to_uppercase().replace('-', "_"))), "--{long}");
            if !["config", "log-level"].contains(&long) {
                assert!(arg.get_help_heading().is_some(), "--{long} has no heading");
            }
        }
    }

    #[test]
    fn sizes_and_switches_parse() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("lots").is_err() && parse_size("5 parsecs").is_err());
        let c = load(["nanodb-server", "--persistence", "off", "--fsync", "always"]).expect("loads");
        assert!(!c.persistence);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert!(load(["nanodb-server", "--fsync", "sometimes"]).is_err());
        let c = load(["nanodb-server"]).expect("loads");
        assert_eq!((c.storage, c.block_cache), (Storage::Memory, 64 << 20), "the defaults");
        let c = load(["nanodb-server", "--storage", "RocksDB", "--block-cache", "1GiB"]).expect("loads");
        assert_eq!((c.storage, c.block_cache), (Storage::Rocksdb, 1 << 30));
        assert!(load(["nanodb-server", "--storage", "lmdb"]).is_err());
        let c = load(["nanodb-server", "--snapshot-on-shutdown", "off"]).expect("loads");
        assert!(!c.snapshot_on_shutdown);
    }

    #[test]
    fn file_fills_in_and_flags_win() {
        let f = write("tcp_addr = \"127.0.0.1:9000\"\ngrpc-addr = \"off\"\nmax_key_len = 99\n");
        let p = f.path().to_str().expect("utf8 path");
        let c = load(["nanodb-server", "--config", p]).expect("loads");
        assert_eq!(c.tcp_addr, ListenAddr::On("127.0.0.1:9000".into()));
        assert_eq!(c.grpc_addr, ListenAddr::Off);
        assert_eq!(c.limits.max_key_len, 99);
        let c = load(["nanodb-server", "--tcp-addr", "127.0.0.1:1", "--config", p]).expect("loads");
        assert_eq!(c.tcp_addr, ListenAddr::On("127.0.0.1:1".into()), "the flag wins over the file");
    }

    #[test]
    fn bad_files_and_values_are_clear_errors() {
        let f = write("tcp_adr = \"127.0.0.1:9000\"\n");
        let err = load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect_err("typo");
        assert!(err.to_string().ends_with("unknown setting 'tcp_adr'; did you mean 'tcp_addr'?"), "{err}");
        let f = write("max_key_len = \"lots\"\n");
        let err =
            load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect_err("bad value");
        assert!(err.to_string().contains("lots"), "{err}");
        let err = load(["nanodb-server", "--tcp-addr", "nonsense"]).expect_err("bad addr");
        assert!(err.to_string().contains("neither HOST:PORT nor 'off'"), "{err}");
        let err = load(["nanodb-server", "--config", "/nonexistent/nanodb.toml"]).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }));
        let err = load(["nanodb-server", "--resp-threads", "100000"]).expect_err("too many loops");
        assert!(err.to_string().contains("0..=256"), "{err}");
        let c = load(["nanodb-server", "--resp-threads", "0"]).expect("0 is RESP on the shared runtime");
        assert_eq!(c.resp_threads, 0);
        let err = load(["nanodb-server", "--resp-idle-poll-us", "5000"]).expect_err("too long");
        assert!(err.to_string().contains("0..=1000"), "{err}");
        let c = load(["nanodb-server", "--resp-idle-poll-us", "0"]).expect("0 turns polling off");
        assert_eq!(c.resp_idle_poll, Duration::ZERO);
        let c =
            load(["nanodb-server", "--tcp-threads", "0", "--grpc-threads", "3", "--http-idle-poll-us", "0"])
                .expect("loops per frontend");
        assert_eq!((c.tcp_threads, c.grpc_threads, c.http_idle_poll), (0, 3, Duration::ZERO));
        let err = load(["nanodb-server", "--http-threads", "257"]).expect_err("too many loops");
        assert!(err.to_string().contains("0..=256"), "{err}");
        let f = write("tcp_threads = 2\ngrpc-idle-poll-us = 7\n");
        let c = load(["nanodb-server", "--config", f.path().to_str().expect("utf8")]).expect("from the file");
        assert_eq!((c.tcp_threads, c.grpc_idle_poll), (2, Duration::from_micros(7)));
    }
}
