//! The RESP command table and what every command family shares: lookup without allocating,
//! arity checks, argument parsing, running a [`Command`] through the engine (with stats), and the
//! one mapping from [`nanodb_protocol::Error`] to Redis's error replies.

mod acl;
pub mod clustered;
mod connection;
mod hashes;
mod keys;
mod lists;
pub mod pubsub;
mod scripting;
mod server;
mod strings;
pub mod transactions;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Denied, Error};

use super::{Clients, encode};
use crate::auth::Caller;
use crate::engine::group::GroupState;
use crate::feed::Subscriber;
use crate::frontend::{Context, Run};
use crate::stats::Protocol;

/// Whether the connection goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Write what is pending and close (QUIT).
    Close,
}

/// Per-connection state commands may read or change.
#[derive(Debug)]
pub struct Session<'a> {
    /// The connection's id (CLIENT ID).
    pub id: u64,
    /// The peer.
    pub addr: SocketAddr,
    /// CLIENT SETNAME's name.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME / LIB-VER.
    pub lib: (Option<Bytes>, Option<Bytes>),
    /// Open SCAN cursors: the decimal cursor handed to the client and the engine's opaque cursor.
    pub cursors: Vec<(u64, Bytes)>,
    /// The log position the replies buffered so far must wait for before they are written.
    pub log_position: u64,
    /// In a cluster, the Raft log index of this connection's last write (`WAIT` waits for the
    /// other members to hold it).
    pub last_write: u64,
    /// The change-feed subscriber while the connection holds channels or patterns (Redis's
    /// subscribed mode); `None` otherwise, so an unsubscribed connection costs the hub nothing.
    pub sub: Option<Subscriber>,
    /// Who the connection is authenticated as (changed by AUTH, HELLO AUTH and RESET).
    pub caller: Caller,
    /// The transaction being queued, between MULTI and EXEC/DISCARD.
    pub multi: Option<transactions::Multi>,
    /// WATCHed keys as WATCH saw them.
    pub watched: Vec<transactions::Watched>,
    next_cursor: u64,
    clients: &'a Clients,
    /// Inside a script (or a cluster's EXEC): the group the commands run in (see [`run`]).
    pub group: Option<Arc<GroupState>>,
    /// In a cluster: the writes held in this round and the read barrier (see [`clustered`]).
    pub round: clustered::Round,
}

/// SCAN cursors remembered per connection; the oldest is forgotten beyond this.
const MAX_CURSORS: usize = 16;

impl<'a> Session<'a> {
    /// A fresh session for connection `id`, starting as `caller`.
    pub fn new(id: u64, addr: SocketAddr, clients: &'a Clients, caller: Caller) -> Self {
        Self {
            caller,
            id,
            addr,
            name: None,
            lib: (None, None),
            cursors: Vec::new(),
            log_position: 0,
            last_write: 0,
            sub: None,
            multi: None,
            watched: Vec::new(),
            next_cursor: 0,
            clients,
            group: None,
            round: clustered::Round::default(),
        }
    }

    /// Readies a script's session for the next script on the same Lua state (a state keeps its
    /// session rather than building one per EVAL): the group and the log marks are dropped;
    /// whether nothing else a command could change was changed. When something was (a SCAN's
    /// cursor), the caller builds the session anew, so no script meets another's leftovers.
    /// AUTH, CLIENT, MULTI, WATCH, SUBSCRIBE and the like cannot run in a script at all.
    pub fn ready_for_next_script(&mut self) -> bool {
        self.group = None;
        self.log_position = 0;
        self.last_write = 0;
        self.name.is_none()
            && self.lib.0.is_none()
            && self.lib.1.is_none()
            && self.cursors.is_empty()
            && self.next_cursor == 0
            && self.sub.is_none()
            && self.multi.is_none()
            && self.watched.is_empty()
    }

    /// Whether the connection is in subscribed mode (holds a channel or pattern).
    pub fn subscribed(&self) -> bool {
        self.sub.is_some()
    }

    /// Channels plus patterns held: the running count Redis's confirmations carry.
    pub fn subscriptions(&self) -> usize {
        self.channels() + self.patterns()
    }

    /// Channels held.
    pub fn channels(&self) -> usize {
        self.sub.as_ref().map_or(0, Subscriber::channel_count)
    }

    /// Patterns held.
    pub fn patterns(&self) -> usize {
        self.sub.as_ref().map_or(0, Subscriber::pattern_count)
    }

    /// Leaves subscribed mode without confirmations (RESET).
    pub fn unsubscribe_all(&mut self) {
        self.sub = None;
        self.clients.set_subscriptions(self.id, 0, 0);
    }

    /// Remembers an engine cursor; the number to give the client.
    fn save_cursor(&mut self, engine_cursor: Bytes) -> u64 {
        self.next_cursor += 1;
        if self.cursors.len() >= MAX_CURSORS {
            self.cursors.remove(0);
        }
        self.cursors.push((self.next_cursor, engine_cursor));
        self.next_cursor
    }

    /// The engine cursor for a client cursor; `None` when unknown (expired or never issued).
    fn cursor(&self, n: u64) -> Option<Bytes> {
        self.cursors.iter().find(|(id, _)| *id == n).map(|(_, c)| c.clone())
    }
}

/// Why a command was refused before reaching the engine; rendered in Redis's words.
#[derive(Debug)]
pub enum Reject {
    /// `ERR syntax error`.
    Syntax,
    /// `ERR value is not an integer or out of range`.
    NotInt,
    /// `ERR value is not a valid float`.
    NotFloat,
    /// Any other `-<text>` (with its prefix, e.g. "ERR ...").
    Msg(String),
    /// An engine error.
    Engine(Error),
}

impl From<Error> for Reject {
    fn from(e: Error) -> Self {
        Self::Engine(e)
    }
}

type Outcome = Result<Flow, Reject>;
type Handler = fn(&Context, &mut Session<'_>, &[Bytes], &mut BytesMut) -> Outcome;

/// One entry of the command table; also what COMMAND reports.
#[derive(Debug)]
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: n exact, -n at least n (the name counts).
    pub arity: i64,
    /// COMMAND flags.
    pub flags: &'static [&'static str],
    /// First key argument, last (-1 = the last argument), step; 0,0,0 when keyless.
    pub keys: (i64, i64, i64),
    handler: Handler,
}

const W: &[&str] = &["write"];
/// A write that may grow memory (Redis's `denyoom`): EXEC refuses a queue holding one while the
/// dataset is over `--max-memory` and nothing can be evicted, as Redis does. Alone, such a
/// command is checked on the command path (`nanodb_protocol::CommandName::may_grow`).
const WD: &[&str] = &["write", "denyoom"];
const R: &[&str] = &["readonly", "fast"];
const F: &[&str] = &["fast"];
const PS: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $handler:path) => {
        Spec { name: $name, arity: $arity, flags: $flags, keys: $keys, handler: $handler }
    };
}

/// Every command this frontend answers, sorted by name (COMMAND lists them in this order).
pub static COMMANDS: &[Spec] = &[
    spec!("acl", -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), acl::acl),
    spec!("append", 3, WD, (1, 1, 1), strings::append),
    spec!("auth", -2, F, (0, 0, 0), connection::auth),
    spec!("client", -2, F, (0, 0, 0), connection::client),
    spec!("command", -1, &["loading", "stale"], (0, 0, 0), server::command),
    spec!("config", -2, &["admin"], (0, 0, 0), server::config),
    spec!("dbsize", 1, R, (0, 0, 0), keys::dbsize),
    spec!("decr", 2, WD, (1, 1, 1), strings::decr),
    spec!("decrby", 3, WD, (1, 1, 1), strings::decrby),
    spec!("del", -2, W, (1, -1, 1), keys::del),
    spec!("discard", 1, TX, (0, 0, 0), transactions::discard),
    spec!("echo", 2, F, (0, 0, 0), connection::echo),
    spec!("eval", -3, &["noscript", "skip_monitor", "may_replicate"], (0, 0, 0), scripting::eval),
    spec!("evalsha", -3, &["noscript", "skip_monitor", "may_replicate"], (0, 0, 0), scripting::evalsha),
    spec!("exec", 1, TX, (0, 0, 0), transactions::exec),
    spec!("exists", -2, R, (1, -1, 1), keys::exists),
    spec!("expire", -3, W, (1, 1, 1), keys::expire),
    spec!("expireat", -3, W, (1, 1, 1), keys::expireat),
    spec!("flushall", -1, W, (0, 0, 0), keys::flush),
    spec!("flushdb", -1, W, (0, 0, 0), keys::flush),
    spec!("get", 2, R, (1, 1, 1), strings::get),
    spec!("getdel", 2, W, (1, 1, 1), strings::getdel),
    spec!("getex", -2, W, (1, 1, 1), strings::getex),
    spec!("getrange", 4, R, (1, 1, 1), strings::getrange),
    spec!("getset", 3, WD, (1, 1, 1), strings::getset),
    spec!("hdel", -3, W, (1, 1, 1), hashes::hdel),
    spec!("hello", -1, F, (0, 0, 0), connection::hello),
    spec!("hexists", 3, R, (1, 1, 1), hashes::hexists),
    spec!("hget", 3, R, (1, 1, 1), hashes::hget),
    spec!("hgetall", 2, &["readonly"], (1, 1, 1), hashes::hgetall),
    spec!("hincrby", 4, WD, (1, 1, 1), hashes::hincrby),
    spec!("hkeys", 2, &["readonly"], (1, 1, 1), hashes::hkeys),
    spec!("hlen", 2, R, (1, 1, 1), hashes::hlen),
    spec!("hmget", -3, R, (1, 1, 1), hashes::hmget),
    spec!("hmset", -4, WD, (1, 1, 1), hashes::hmset),
    spec!("hset", -4, WD, (1, 1, 1), hashes::hset),
    spec!("hsetnx", 4, WD, (1, 1, 1), hashes::hsetnx),
    spec!("hvals", 2, &["readonly"], (1, 1, 1), hashes::hvals),
    spec!("incr", 2, WD, (1, 1, 1), strings::incr),
    spec!("incrby", 3, WD, (1, 1, 1), strings::incrby),
    spec!("incrbyfloat", 3, WD, (1, 1, 1), strings::incrbyfloat),
    spec!("info", -1, &["loading", "stale"], (0, 0, 0), server::info),
    spec!("keys", 2, &["readonly"], (0, 0, 0), keys::keys),
    spec!("lindex", 3, &["readonly"], (1, 1, 1), lists::lindex),
    spec!("llen", 2, R, (1, 1, 1), lists::llen),
    spec!("lpop", -2, W, (1, 1, 1), lists::lpop),
    spec!("lpush", -3, WD, (1, 1, 1), lists::lpush),
    spec!("lrange", 4, &["readonly"], (1, 1, 1), lists::lrange),
    spec!("lset", 4, WD, (1, 1, 1), lists::lset),
    spec!("ltrim", 4, W, (1, 1, 1), lists::ltrim),
    spec!("mget", -2, R, (1, -1, 1), strings::mget),
    spec!("mset", -3, WD, (1, -1, 2), strings::mset),
    spec!("msetnx", -3, WD, (1, -1, 2), strings::msetnx),
    spec!("multi", 1, TX, (0, 0, 0), transactions::multi),
    spec!("persist", 2, W, (1, 1, 1), keys::persist),
    spec!("pexpire", -3, W, (1, 1, 1), keys::pexpire),
    spec!("pexpireat", -3, W, (1, 1, 1), keys::pexpireat),
    spec!("ping", -1, F, (0, 0, 0), connection::ping),
    spec!("psetex", 4, WD, (1, 1, 1), strings::psetex),
    spec!("psubscribe", -2, PS, (0, 0, 0), pubsub::psubscribe),
    spec!("pttl", 2, R, (1, 1, 1), keys::pttl),
    spec!("publish", 3, &["pubsub", "loading", "stale", "fast"], (0, 0, 0), pubsub::publish),
    spec!("pubsub", -2, &["pubsub", "loading", "stale"], (0, 0, 0), pubsub::pubsub),
    spec!("punsubscribe", -1, PS, (0, 0, 0), pubsub::punsubscribe),
    spec!("quit", -1, F, (0, 0, 0), connection::quit),
    spec!("randomkey", 1, &["readonly"], (0, 0, 0), keys::randomkey),
    spec!("rename", 3, W, (1, 2, 1), keys::rename),
    spec!("replicaof", 3, &["admin", "noscript", "stale"], (0, 0, 0), server::replicaof),
    spec!("reset", 1, F, (0, 0, 0), connection::reset),
    spec!("role", 1, F, (0, 0, 0), server::role),
    spec!("rpop", -2, W, (1, 1, 1), lists::rpop),
    spec!("rpush", -3, WD, (1, 1, 1), lists::rpush),
    spec!("scan", -2, &["readonly"], (0, 0, 0), keys::scan),
    spec!("script", -2, &["noscript"], (0, 0, 0), scripting::script),
    spec!("select", 2, F, (0, 0, 0), connection::select),
    spec!("set", -3, WD, (1, 1, 1), strings::set),
    spec!("setex", 4, WD, (1, 1, 1), strings::setex),
    spec!("setnx", 3, WD, (1, 1, 1), strings::setnx),
    spec!("slaveof", 3, &["admin", "noscript", "stale"], (0, 0, 0), server::replicaof),
    spec!("strlen", 2, R, (1, 1, 1), strings::strlen),
    spec!("subscribe", -2, PS, (0, 0, 0), pubsub::subscribe),
    spec!("time", 1, F, (0, 0, 0), server::time),
    spec!("ttl", 2, R, (1, 1, 1), keys::ttl),
    spec!("type", 2, R, (1, 1, 1), keys::type_),
    spec!("unlink", -2, W, (1, -1, 1), keys::del),
    spec!("unsubscribe", -1, PS, (0, 0, 0), pubsub::unsubscribe),
    spec!("unwatch", 1, TX, (0, 0, 0), transactions::unwatch),
    spec!("wait", 3, &["noscript"], (0, 0, 0), server::wait),
    spec!("watch", -2, TX, (1, -1, 1), transactions::watch),
];

/// Longest command name looked up (longer names are unknown without further work).
const MAX_NAME: usize = 16;

/// A name of at most [`MAX_NAME`] bytes, lowercased and packed into one integer, so lookup is a
/// binary search over integers: no hashing, no allocation, no byte-wise compares.
fn pack(name: &[u8]) -> u128 {
    let mut buf = [0u8; MAX_NAME];
    buf[..name.len()].copy_from_slice(name);
    ascii_lowercase(u128::from_le_bytes(buf))
}

/// Lowercases the ASCII letters among 16 packed bytes at once (SWAR): a byte gets 0x20 added
/// exactly when it is in `A..=Z`.
fn ascii_lowercase(x: u128) -> u128 {
    const ONES: u128 = u128::from_le_bytes([0x01; 16]);
    const HIGH: u128 = ONES * 0x80;
    let low7 = x & !HIGH;
    let ge_a = low7 + ONES * (0x80 - u128::from(b'A')); // high bit set where byte >= 'A'
    let gt_z = low7 + ONES * (0x80 - u128::from(b'Z') - 1); // high bit set where byte > 'Z'
    let upper = ge_a & !gt_z & !x & HIGH; // and the byte itself was ASCII
    x | (upper >> 2)
}

/// `(packed name, index in COMMANDS)`, sorted by packed name.
static PACKED: LazyLock<Vec<(u128, usize)>> = LazyLock::new(|| {
    let mut v: Vec<_> = COMMANDS.iter().enumerate().map(|(i, s)| (pack(s.name.as_bytes()), i)).collect();
    v.sort_unstable();
    v
});

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).map(|i| &COMMANDS[i])
}

/// [`lookup`], answering the command's index in [`COMMANDS`].
fn lookup_index(name: &[u8]) -> Option<usize> {
    if name.len() > MAX_NAME {
        return None;
    }
    let key = pack(name);
    let table = &*PACKED;
    table.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| table[i].1)
}

/// Runs one command (`args[0]` is its name) and writes its reply.
pub fn execute(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Flow {
    // Refusals are counted (INFO's error count, metrics) but not timed: no clock read on the
    // hot path for them.
    let refused = std::time::Duration::ZERO;
    let Some(spec) = lookup(&args[0]) else {
        transactions::flag(session);
        unknown_command(args, out);
        ctx.stats.record(Protocol::Resp, "unknown_command", false, refused);
        return Flow::Continue;
    };
    if !session.caller.is_authenticated() && !NO_AUTH.contains(&spec.name) {
        engine_error(out, &Error::NoAuth);
        ctx.stats.record(Protocol::Resp, spec.name, false, refused);
        return Flow::Continue;
    }
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        transactions::flag(session);
        encode::error(out, &format!("ERR wrong number of arguments for '{}' command", spec.name));
        ctx.stats.record(Protocol::Resp, spec.name, false, refused);
        return Flow::Continue;
    }
    if session.multi.is_some() && !transactions::NOT_QUEUED.contains(&spec.name) {
        transactions::queue(ctx, session, spec, args, out);
        return Flow::Continue;
    }
    if session.subscribed() && !pubsub::ALLOWED_WHEN_SUBSCRIBED.contains(&spec.name) {
        encode::error(
            out,
            &format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                full_name(spec, args)
            ),
        );
        ctx.stats.record(Protocol::Resp, spec.name, false, refused);
        return Flow::Continue;
    }
    match (spec.handler)(ctx, session, args, out) {
        Ok(flow) => flow,
        Err(reject) => {
            // Engine errors were recorded by `run`; refusals before the engine are recorded here
            // so INFO's error count and the metrics see them too.
            if !matches!(reject, Reject::Engine(_)) {
                ctx.stats.record(Protocol::Resp, spec.name, false, refused);
            }
            // A refused command is named as the client sent it (`set`, `config|get`), not as
            // the command model names it.
            let reject = match reject {
                Reject::Engine(Error::NoPerm(Denied::Command { user, .. })) => {
                    Reject::Engine(Error::NoPerm(Denied::Command { user, command: full_name(spec, args) }))
                }
                other => other,
            };
            write_reject(out, reject);
            Flow::Continue
        }
    }
}

/// What a script may not run through `redis.call` (Redis's `noscript` commands, and those about
/// the connection rather than the keyspace).
const NOT_IN_SCRIPTS: &[&str] = &[
    "acl",
    "auth",
    "client",
    "command",
    "config",
    "discard",
    "eval",
    "evalsha",
    "exec",
    "hello",
    "info",
    "multi",
    "psubscribe",
    "punsubscribe",
    "quit",
    "replicaof",
    "reset",
    "role",
    "script",
    "select",
    "slaveof",
    "subscribe",
    "unsubscribe",
    "unwatch",
    "wait",
    "watch",
];

/// Whether a script may run each command of [`COMMANDS`] (by index): [`NOT_IN_SCRIPTS`] looked
/// up once, not by comparing names on every `redis.call`.
static IN_SCRIPTS: LazyLock<Vec<bool>> =
    LazyLock::new(|| COMMANDS.iter().map(|spec| !NOT_IN_SCRIPTS.contains(&spec.name)).collect());

/// Runs one `redis.call` of a script (`args[0]` is the command's name) through the command's
/// own handler, inside the script's group (`session.group`), and writes its RESP reply.
pub fn execute_in_script(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) {
    let Some(index) = lookup_index(&args[0]) else {
        encode::error(out, "ERR Unknown Redis command called from script");
        return;
    };
    let spec = &COMMANDS[index];
    if !IN_SCRIPTS.get(index).copied().unwrap_or(false) {
        encode::error(out, "ERR This Redis command is not allowed from script");
        return;
    }
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        encode::error(out, "ERR Wrong number of args calling Redis command from script");
        return;
    }
    if let Err(reject) = (spec.handler)(ctx, session, args, out) {
        write_reject(out, reject);
    }
}

/// What an unauthenticated connection may send (Redis's `no-auth` commands).
const NO_AUTH: &[&str] = &["auth", "hello", "quit", "reset"];

/// Redis's full command name: `container|subcommand` for commands with subcommands.
fn full_name(spec: &Spec, args: &[Bytes]) -> String {
    match args.get(1) {
        Some(sub) if ["acl", "client", "command", "config", "pubsub", "script"].contains(&spec.name) => {
            format!("{}|{}", spec.name, String::from_utf8_lossy(sub).to_ascii_lowercase())
        }
        _ => spec.name.to_string(),
    }
}

fn unknown_command(args: &[Bytes], out: &mut BytesMut) {
    let name = String::from_utf8_lossy(&args[0]);
    let mut msg = format!("ERR unknown command '{}', with args beginning with: ", truncate(&name, 128));
    let mut listed = String::new();
    for a in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(truncate(&String::from_utf8_lossy(a), room));
        listed.push_str("' ");
    }
    msg.push_str(&listed);
    encode::error(out, &msg);
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn write_reject(out: &mut BytesMut, reject: Reject) {
    match reject {
        Reject::Syntax => encode::error(out, "ERR syntax error"),
        Reject::NotInt => encode::error(out, "ERR value is not an integer or out of range"),
        Reject::NotFloat => encode::error(out, "ERR value is not a valid float"),
        Reject::Msg(m) => encode::error(out, &m),
        Reject::Engine(e) => engine_error(out, &e),
    }
}

/// The one mapping from engine errors to RESP error replies, in Redis's words where Redis has
/// them. Messages are the error's client-safe Display; internals are never in it.
pub fn engine_error(out: &mut BytesMut, e: &Error) {
    match e {
        Error::WrongType => {
            encode::error(out, "WRONGTYPE Operation against a key holding the wrong kind of value")
        }
        Error::NotAnInteger => encode::error(out, "ERR value is not an integer or out of range"),
        Error::Overflow => encode::error(out, "ERR increment or decrement would overflow"),
        Error::NotFound => encode::error(out, "ERR no such key"),
        Error::InvalidArgument(m) => encode::error(out, &format!("ERR {m}")),
        Error::Internal => encode::error(out, "ERR internal error"),
        Error::NoAuth => encode::error(out, "NOAUTH Authentication required."),
        Error::WrongPass => {
            encode::error(out, "WRONGPASS invalid username-password pair or user is disabled.")
        }
        Error::NoPerm(d) => encode::error(out, &format!("NOPERM {d}")),
        Error::OutOfMemory => encode::error(out, &format!("OOM {e}")),
        // Already in Redis's words, prefix included.
        Error::Script(m) => encode::error(out, m),
        // A cluster without a leader: Redis Cluster's retryable words.
        Error::Unavailable(m) if m.starts_with("CLUSTERDOWN") => encode::error(out, m),
        other => encode::error(out, &format!("ERR {other}")),
    }
}

/// Runs a command through [`Context::run_pipelined`] (which records it in the stats) and raises the
/// position the session's buffered replies wait for: the connection waits for it once per
/// round, before writing them.
///
/// In a cluster, what the connection's round says ([`clustered`]): a held write is submitted, then
/// answered from its settled outcome; anything else runs, reads under a shared read barrier.
///
/// Inside a script (or a cluster's EXEC) the command runs in the group instead (its declared keys
/// only), and is committed with it. The caller is checked as for a command alone: a script's
/// session may do everything (its permissions were checked on the keys it declares), an EXEC's is
/// the connection's user.
pub fn run<C: Run>(ctx: &Context, session: &mut Session<'_>, cmd: C) -> Result<C::Output, Error> {
    if let Some(group) = &session.group {
        session.caller.authorize_with(|| cmd.need())?;
        let reply = group.run(cmd.into_command())?;
        return C::output_from(reply, false);
    }
    if ctx.cluster.is_some() {
        // Held, answered from its settled outcome, or run (see `clustered`).
        let (result, index) = session.round.run(ctx, &session.caller, cmd);
        session.last_write = session.last_write.max(index);
        return result;
    }
    let (result, position) = ctx.run_pipelined(&session.caller, cmd);
    session.log_position = session.log_position.max(position);
    session.last_write = session.last_write.max(position);
    result
}

/// Parses an integer argument strictly, as Redis does.
pub fn int_arg(b: &[u8]) -> Result<i64, Reject> {
    crate::engine::value::parse_i64(b).map_err(|_| Reject::NotInt)
}

pub use crate::glob::{glob_match, glob_prefix};

/// Whether `arg` equals `word` ignoring ASCII case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_lowercasing_touches_only_ascii_capitals() {
        let all: Vec<u8> = (0..=255u8).collect();
        for chunk in all.chunks(16) {
            let mut want = [0u8; 16];
            want[..chunk.len()].copy_from_slice(chunk);
            want.make_ascii_lowercase();
            assert_eq!(pack(chunk), u128::from_le_bytes(want), "{chunk:?}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_every_name_resolves() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name), "COMMANDS must stay sorted and unique");
        for spec in COMMANDS {
            assert!(spec.name.len() <= MAX_NAME, "{}", spec.name);
            assert_eq!(lookup(spec.name.to_uppercase().as_bytes()).map(|s| s.name), Some(spec.name));
        }
    }

    #[test]
    fn the_commands_scripts_may_not_run_are_sorted() {
        assert!(NOT_IN_SCRIPTS.windows(2).all(|w| w[0] < w[1]), "NOT_IN_SCRIPTS must stay sorted and unique");
        // A misspelt entry would let its command run in scripts: every one names a command,
        // and exactly those commands are refused.
        for name in NOT_IN_SCRIPTS {
            let index = lookup_index(name.as_bytes()).unwrap_or_else(|| panic!("{name} is no command"));
            assert!(!IN_SCRIPTS[index], "{name}");
        }
        assert_eq!(IN_SCRIPTS.iter().filter(|allowed| !**allowed).count(), NOT_IN_SCRIPTS.len());
    }

    #[test]
    fn lookup_ignores_case_and_unknown_names_list_their_args() {
        assert_eq!(lookup(b"gEt").map(|s| s.name), Some("get"));
        assert!(lookup(b"nosuchcommandatallreally").is_none());
        let mut out = BytesMut::new();
        unknown_command(
            &[Bytes::from_static(b"foo"), Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            &mut out,
        );
        assert_eq!(&out[..], b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n");
    }
}
