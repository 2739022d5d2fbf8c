//! The command line, declared once with clap and shared by the shell and the REPL: a REPL line is
//! split into words ([`crate::words`]) and parsed by the same [`Cmd`] as `nanodb-cli CMD ...`, so
//! both accept the same commands, flags and errors. Every flag also reads a `NANODB_CLI_*`
//! variable (the password also `NANODB_PASSWORD`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nanodb_protocol::tls_client::TlsClient;

/// NanoDB's command-line client: one-shot commands, an interactive shell (no command), bulk
/// loading (`--pipe`) and a live dashboard (`monitor`).
#[derive(Debug, Parser)]
#[command(name = "nanodb-cli", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Where the server is, and how to talk to it.
    #[command(flatten)]
    pub conn: Conn,
    /// Output format; by default `human` on a terminal and `raw` otherwise.
    #[arg(short = 'o', long, value_enum, env = "NANODB_CLI_OUTPUT", global = true)]
    pub output: Option<Format>,
    /// Bulk load: read commands from stdin, one per line in the REPL's syntax (`put KEY VALUE`),
    /// send them pipelined in batches, and print how many succeeded and failed.
    #[arg(long, env = "NANODB_CLI_PIPE")]
    pub pipe: bool,
    /// Operations per BATCH frame with --pipe (at most the server's max batch length, 1024 by
    /// default).
    #[arg(long, env = "NANODB_CLI_PIPE_BATCH", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub pipe_batch: u32,
    /// The command; without one, an interactive shell.
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 the server answered an error (printed with \
its code), 2 usage error, 3 cannot connect (or the connection broke).";

/// Connection flags.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Server host name or address.
    #[arg(long, short = 'H', env = "NANODB_CLI_HOST", default_value = "127.0.0.1", global = true)]
    pub host: String,
    /// The binary TCP port (nanodb-server --tcp-addr).
    #[arg(long, short = 'p', env = "NANODB_CLI_PORT", default_value_t = 7070, global = true)]
    pub port: u16,
    /// The gRPC port, for `stats` and `monitor` (nanodb-server --grpc-addr).
    #[arg(long, env = "NANODB_CLI_GRPC_PORT", default_value_t = 50051, global = true)]
    pub grpc_port: u16,
    /// User to authenticate as (`default` with only a password, as `--requirepass`).
    #[arg(long, env = "NANODB_CLI_USER", global = true)]
    pub user: Option<String>,
    /// Password (prefer the NANODB_PASSWORD variable: flags show in `ps`).
    #[arg(long, env = "NANODB_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Speak TLS (a server started with --tls-cert); needs --ca.
    #[arg(long, env = "NANODB_CLI_TLS", requires = "ca", global = true)]
    pub tls: bool,
    /// CA certificates (PEM) to trust for --tls.
    #[arg(long, env = "NANODB_CLI_CA", global = true)]
    pub ca: Option<PathBuf>,
}

impl Conn {
    /// The TLS configuration when --tls is on.
    pub fn tls_config(&self) -> anyhow::Result<Option<TlsClient>> {
        match (&self.ca, self.tls) {
            (Some(ca), true) => Ok(Some(TlsClient::new(ca)?)),
            (None, true) => anyhow::bail!("--tls needs --ca"),
            _ => Ok(None),
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: quoted, escaped values, `(nil)`, `(integer) 7`.
    Human,
    /// For scripts: the bytes as they are, one item per line.
    Raw,
    /// One JSON document per reply (binary values as {"base64": ...}).
    Json,
    /// Aligned columns (scan, hgetall), else as human.
    Table,
}

/// A value argument: given, from a file, or from stdin.
#[derive(Debug, Clone, Args)]
pub struct ValueSource {
    /// The value (backslash escapes: \xNN, \n, \t, \\); `-` reads it from stdin.
    #[arg(allow_hyphen_values = true)]
    pub value: Option<OsString>,
    /// Read the value from this file, byte for byte.
    #[arg(long, conflicts_with = "value")]
    pub value_file: Option<PathBuf>,
}

/// The commands (one-shot from the shell, or typed in the REPL).
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Read a string key.
    Get {
        /// The key (backslash escapes allowed).
        key: OsString,
    },
    /// Write a string key.
    Put {
        /// The key.
        key: OsString,
        #[command(flatten)]
        value: ValueSource,
        /// Expire after this long: 10 (seconds), 500ms, 30s, 5m, 2h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Write only if the key exists with exactly this version (compare-and-set).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Remove keys; how many existed.
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
    /// Add to an integer (default 1; negative to decrement); the new value.
    Incr {
        /// The key.
        key: OsString,
        /// The amount.
        #[arg(allow_negative_numbers = true, default_value_t = 1)]
        delta: i64,
    },
    /// Whether a key exists.
    Exists {
        /// The key.
        key: OsString,
    },
    /// Remaining time to live in ms (-1: none, -2: missing).
    Ttl {
        /// The key.
        key: OsString,
    },
    /// Set a key's time to live (or remove it with --persist).
    Expire {
        /// The key.
        key: OsString,
        /// 10 (seconds), 500ms, 30s, 5m, 2h.
        #[arg(value_parser = parse_ttl, required_unless_present = "persist")]
        ttl: Option<u64>,
        /// Remove the TTL instead.
        #[arg(long)]
        persist: bool,
    },
    /// The type of a key: string, hash, list or none.
    Type {
        /// The key.
        key: OsString,
    },
    /// List keys (and values) starting with a prefix, every page, as they arrive.
    Scan {
        /// The prefix (empty: every key).
        #[arg(long, default_value = "")]
        prefix: OsString,
        /// Keys per page asked of the server.
        #[arg(long, default_value_t = 1000)]
        page: u32,
        /// Print only the keys.
        #[arg(long)]
        keys_only: bool,
    },
    /// Print changes to a key, or to every key under a prefix, as they happen, until Ctrl-C.
    Watch {
        /// The key to watch.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<OsString>,
        /// Watch every key starting with this instead.
        #[arg(long)]
        prefix: Option<OsString>,
    },
    /// Publish a message to a channel; how many subscribers received it.
    Publish {
        /// The channel.
        channel: OsString,
        /// The message.
        message: OsString,
    },
    /// Print messages published to channels (or glob patterns with --pattern) until Ctrl-C.
    Subscribe {
        /// The channels.
        #[arg(required = true)]
        channels: Vec<OsString>,
        /// The arguments are glob patterns (PSUBSCRIBE).
        #[arg(long)]
        pattern: bool,
    },
    /// Set a hash field; whether it is new.
    Hset {
        /// The hash's key.
        key: OsString,
        /// The field.
        field: OsString,
        #[command(flatten)]
        value: ValueSource,
    },
    /// Read a hash field.
    Hget {
        /// The hash's key.
        key: OsString,
        /// The field.
        field: OsString,
    },
    /// Remove a hash field; whether it existed.
    Hdel {
        /// The hash's key.
        key: OsString,
        /// The field.
        field: OsString,
    },
    /// Every field and value of a hash.
    Hgetall {
        /// The hash's key.
        key: OsString,
    },
    /// Push values at the head of a list; its new length.
    Lpush {
        /// The list's key.
        key: OsString,
        /// The values.
        #[arg(required = true, allow_hyphen_values = true)]
        values: Vec<OsString>,
    },
    /// Push values at the tail of a list; its new length.
    Rpush {
        /// The list's key.
        key: OsString,
        /// The values.
        #[arg(required = true, allow_hyphen_values = true)]
        values: Vec<OsString>,
    },
    /// Pop values from the head of a list.
    Lpop {
        /// The list's key.
        key: OsString,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Pop values from the tail of a list.
    Rpop {
        /// The list's key.
        key: OsString,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Values of a list from START to STOP inclusive (negative: from the end).
    Lrange {
        /// The list's key.
        key: OsString,
        /// First index.
        #[arg(allow_negative_numbers = true)]
        start: i64,
        /// Last index.
        #[arg(allow_negative_numbers = true)]
        stop: i64,
    },
    /// Compare, then run the success or the failure commands as one atomic group (etcd's txn).
    /// Without flags, reads stdin: compares, a blank line, success commands, a blank line,
    /// failure commands. A compare: `version KEY OP N`, `value KEY OP VALUE`, `exists KEY`,
    /// `missing KEY` (OP: = != < >); a command: `put KEY VALUE`, `get KEY`, `del KEY`, `incr KEY`...
    Txn {
        /// A condition (repeatable); all must hold for the success commands to run.
        #[arg(long = "compare", value_name = "COND")]
        compares: Vec<String>,
        /// A command run when every compare holds (repeatable).
        #[arg(long = "success", value_name = "CMD")]
        success: Vec<String>,
        /// A command run otherwise (repeatable).
        #[arg(long = "failure", value_name = "CMD")]
        failure: Vec<String>,
    },
    /// The number of keys.
    Dbsize,
    /// Round trip to the server.
    Ping,
    /// The server's statistics (gRPC Admin.Stats, on --grpc-port).
    Stats,
    /// A live dashboard of the server (gRPC Admin.Stats every second, on --grpc-port). Keys: q
    /// quits, p pauses, Tab switches panes.
    Monitor {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

/// `10` (seconds), `500ms`, `30s`, `5m`, `2h`, as milliseconds (> 0).
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 10, 500ms, 30s, 5m, 2h)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    match ms {
        Some(0) => Err("a TTL must be more than 0".into()),
        Some(ms) => Ok(ms),
        None => Err(format!("`{s}` is too long a duration")),
    }
}

/// A REPL line: the same commands, without the connection flags (set when the shell started).
#[derive(Debug, Parser)]
#[command(name = "", no_binary_name = true, disable_help_flag = false, disable_version_flag = true)]
pub struct Line {
    /// The command.
    #[command(subcommand)]
    pub command: Cmd,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("10"), Ok(10_000));
        assert_eq!(parse_ttl("500ms"), Ok(500));
        assert_eq!(parse_ttl("2h"), Ok(7_200_000));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("ten").expect_err("an error").contains("not a duration"));
        assert!(parse_ttl("5y").expect_err("an error").contains("unknown unit"));
        assert!(parse_ttl("99999999999999999999").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        Line::command().debug_assert();
    }
}
