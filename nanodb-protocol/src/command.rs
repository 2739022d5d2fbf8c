//! The protocol-neutral request model: what commands share.
//!
//! Every frontend (gRPC, REST, TCP, RESP) decodes its wire format into a typed command (declared
//! once in [`crate::commands`]), runs it, and encodes its typed output; the dynamic [`Command`]
//! and [`Reply`] carry commands whose type is known only at run time (the TCP wire, batches).
//! Rules that must not differ between protocols live here or in the engine, never in an adapter:
//! [`TypedCommand::validate`] is the one place that enforces the size and count [`Limits`].

use bytes::Bytes;

pub use crate::commands::{Command, CommandName};
use crate::error::Error;

/// A command with a typed output: what [`crate::commands`] declares for each command.
pub trait TypedCommand: Into<Command> + Sized {
    /// What the command answers.
    type Output: Into<Reply>;
    /// Its name, for logs and metrics.
    const NAME: &'static str;
    /// Its binary TCP request kind (`wire::kind`).
    const KIND: u8;
    /// Whether it reads or writes the keyspace.
    const CLASS: Class;
    /// Which command it is (what permissions are checked against).
    const COMMAND: CommandName;
    /// The keys it touches (for permissions and routing).
    fn keys(&self) -> Keys<'_>;
    /// Checks every key, field, value and count against `limits`.
    fn validate(&self, limits: &Limits) -> Result<(), Error>;
}

/// What a command does, for the checks that depend on it (a failed log refuses writes; later,
/// permissions and read-only replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Touches no data (PING).
    Connection,
    /// Reads keys.
    Read,
    /// May change keys.
    Write,
    /// Publishes to a channel; touches no key.
    PubSub,
    /// A batch: what its operations are.
    Batch,
}

/// The keys a command touches.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// None.
    None,
    /// One key.
    One(&'a Bytes),
    /// Two keys (a rename's source and destination).
    Two(&'a Bytes, &'a Bytes),
    /// The keys of key/value pairs.
    Pairs(&'a [(Bytes, Bytes)]),
    /// Keys a script declares: it may read and write each of them.
    Many(&'a [Bytes]),
    /// Every key starting with a prefix (empty: every key).
    Prefix(&'a Bytes),
    /// Every key (FLUSH, counting, a random key).
    All,
    /// No key: a pub/sub channel.
    Channel(&'a Bytes),
    /// Whatever a batch's operations touch.
    Batch(&'a [Command]),
    /// A transaction's compared keys (read) and whatever its operations touch.
    Txn(&'a crate::cmd::Txn),
}

/// The answer to a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong;

/// What a [`crate::commands::Put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// False when the condition did not hold.
    pub applied: bool,
    /// The new version, or the current one (0 if missing) when not applied.
    pub version: u64,
    /// Whether the write created the key (it did not exist, or had expired).
    pub created: bool,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The entries, in cursor order.
    pub entries: Vec<ScanEntry>,
    /// Empty when the scan is complete.
    pub next_cursor: Bytes,
}

/// When a [`Command::Put`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutCondition {
    /// Always.
    #[default]
    Always,
    /// Only when the key does not exist.
    IfAbsent,
    /// Only when the key exists.
    IfPresent,
    /// Only when the key exists with exactly this version.
    IfVersion(u64),
}

impl PutCondition {
    /// Whether the condition holds for a key that is `present` with `version` (0 when absent).
    pub fn holds(self, present: bool, version: u64) -> bool {
        match self {
            Self::Always => true,
            Self::IfAbsent => !present,
            Self::IfPresent => present,
            Self::IfVersion(v) => present && version == v,
        }
    }
}

/// An end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListEnd {
    /// The head (Redis's left).
    #[default]
    Front,
    /// The tail (Redis's right).
    Back,
}

/// What a write does to a key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// Remove any TTL (what a plain write does).
    #[default]
    Persist,
    /// Keep the key's current TTL (none when the key is new).
    Keep,
    /// Expire this many milliseconds from now (> 0).
    In(u64),
    /// Expire at this absolute Unix time in milliseconds (> 0); a time already past removes the key.
    At(u64),
}

/// Parses a client's floating-point text strictly (no spaces, finite), as Redis does.
pub fn parse_f64(b: &[u8]) -> Result<f64, Error> {
    let bad = || Error::InvalidArgument("value is not a valid float".into());
    let s = std::str::from_utf8(b).map_err(|_| bad())?;
    if s.is_empty() || s.trim() != s {
        return Err(bad());
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        _ => Err(bad()),
    }
}

impl Expiry {
    /// The TTL of a put given as milliseconds, 0 for none (the TCP PUT body, gRPC `PutRequest`,
    /// REST `?ttl_ms=`).
    pub fn from_put_ttl_ms(ms: u64) -> Self {
        match ms {
            0 => Self::Persist,
            ms => Self::In(ms),
        }
    }

    /// The TTL of an expire given as signed milliseconds: negative persists, zero expires at once
    /// (a deadline already past), positive is a TTL (the TCP EXPIRE body, gRPC `ExpireRequest`).
    pub fn from_expire_ttl_ms(ms: i64) -> Self {
        match ms {
            ms if ms < 0 => Self::Persist,
            0 => Self::At(0),
            ms => Self::In(ms.unsigned_abs()),
        }
    }
}

/// A string value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Bytes,
    /// The key's version.
    pub version: u64,
    /// Milliseconds to expiry, -1 for none.
    pub ttl_ms: i64,
}

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Bytes (integers written by INCR included).
    String,
    /// Fields and values.
    Hash,
    /// A sequence of values.
    List,
}

impl KeyType {
    /// The type named `name` as [`KeyType::as_str`] spells it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        [Self::String, Self::Hash, Self::List].into_iter().find(|t| t.as_str().as_bytes() == name)
    }

    /// The name Redis's TYPE answers (`string`, `hash`, `list`), also used by REST.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Hash => "hash",
            Self::List => "list",
        }
    }
}

/// One entry of a scan page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key.
    pub key: Bytes,
    /// The value of a string key; empty for hashes and lists (tell them apart by `key_type`).
    pub value: Bytes,
    /// The key's version.
    pub version: u64,
    /// Milliseconds to expiry, -1 for none.
    pub ttl_ms: i64,
    /// The key's type: always set by the engine; `None` only when the entry was decoded from the
    /// binary TCP protocol, whose scan reply layout does not carry it.
    pub key_type: Option<KeyType>,
}

/// The answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer to [`Command::Ping(cmd::Ping {})`].
    Pong,
    /// A string value, or `None` when the key is missing.
    Value(Option<Entry>),
    /// Outcome of a put: whether it applied, and the version now.
    Put {
        /// False when the condition did not hold.
        applied: bool,
        /// The new version, or the current one (0 if missing) when not applied.
        version: u64,
    },
    /// A yes/no answer.
    Bool(bool),
    /// An integer answer.
    Int(i64),
    /// Bytes, or `None` when missing (hash fields).
    Bytes(Option<Bytes>),
    /// A scan page.
    Scan {
        /// The entries.
        entries: Vec<ScanEntry>,
        /// Empty when the scan is complete.
        next_cursor: Bytes,
    },
    /// Field/value pairs (a hash).
    Pairs(Vec<(Bytes, Bytes)>),
    /// A sequence of values (a list).
    List(Vec<Bytes>),
    /// One result per batch operation, in order.
    Batch(Vec<Result<Reply, Error>>),
    /// What a transaction did: which branch ran, and its operations' results.
    Txn(crate::txn::TxnOutcome),
    /// What a script returned.
    Script(crate::script::ScriptValue),
}

impl From<Pong> for Reply {
    fn from(_: Pong) -> Self {
        Self::Pong
    }
}

impl From<Option<Entry>> for Reply {
    fn from(v: Option<Entry>) -> Self {
        Self::Value(v)
    }
}

impl From<PutOutcome> for Reply {
    fn from(p: PutOutcome) -> Self {
        Self::Put { applied: p.applied, version: p.version }
    }
}

impl From<bool> for Reply {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<i64> for Reply {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<Option<Bytes>> for Reply {
    fn from(b: Option<Bytes>) -> Self {
        Self::Bytes(b)
    }
}

impl From<Bytes> for Reply {
    fn from(b: Bytes) -> Self {
        Self::Bytes(Some(b))
    }
}

impl From<ScanPage> for Reply {
    fn from(p: ScanPage) -> Self {
        Self::Scan { entries: p.entries, next_cursor: p.next_cursor }
    }
}

impl From<Vec<(Bytes, Bytes)>> for Reply {
    fn from(pairs: Vec<(Bytes, Bytes)>) -> Self {
        Self::Pairs(pairs)
    }
}

impl From<Vec<Bytes>> for Reply {
    fn from(values: Vec<Bytes>) -> Self {
        Self::List(values)
    }
}

impl From<Vec<Result<Reply, Error>>> for Reply {
    fn from(results: Vec<Result<Reply, Error>>) -> Self {
        Self::Batch(results)
    }
}

impl From<crate::txn::TxnOutcome> for Reply {
    fn from(t: crate::txn::TxnOutcome) -> Self {
        Self::Txn(t)
    }
}

impl From<crate::script::ScriptValue> for Reply {
    fn from(v: crate::script::ScriptValue) -> Self {
        Self::Script(v)
    }
}

impl From<Option<KeyType>> for Reply {
    /// The type's name, `none` when the key does not exist (Redis's TYPE).
    fn from(t: Option<KeyType>) -> Self {
        Self::Bytes(Some(Bytes::from_static(t.map_or("none", KeyType::as_str).as_bytes())))
    }
}

/// A typed output back from the dynamic [`Reply`] it was turned into (`From<Output> for Reply`),
/// for a batch's results or a Rust client; the reply itself when its shape is not this output's.
pub trait FromReply: Sized {
    /// The output `reply` carries, or `reply` back.
    fn from_reply(reply: Reply) -> Result<Self, Reply>;
}

/// `Type = pattern => value;` implements [`FromReply`] for `Type`.
macro_rules! from_reply {
    ($($t:ty = $pat:pat => $v:expr;)*) => {$(
        impl FromReply for $t {
            fn from_reply(reply: Reply) -> Result<Self, Reply> {
                match reply {
                    $pat => Ok($v),
                    other => Err(other),
                }
            }
        }
    )*};
}

from_reply! {
    Option<Entry> = Reply::Value(entry) => entry;
    bool = Reply::Bool(b) => b;
    i64 = Reply::Int(n) => n;
    Option<Bytes> = Reply::Bytes(b) => b;
    Bytes = Reply::Bytes(Some(b)) => b;
    Vec<Bytes> = Reply::List(values) => values;
    Vec<(Bytes, Bytes)> = Reply::Pairs(pairs) => pairs;
    ScanPage = Reply::Scan { entries, next_cursor } => ScanPage { entries, next_cursor };
    // `Reply::Put` does not carry `created` (the TCP reply layout has no room for it).
    PutOutcome = Reply::Put { applied, version } => PutOutcome { applied, version, created: false };
    Pong = Reply::Pong => Pong;
    Vec<Result<Reply, Error>> = Reply::Batch(results) => results;
    crate::txn::TxnOutcome = Reply::Txn(outcome) => outcome;
    crate::script::ScriptValue = Reply::Script(value) => value;
}

impl FromReply for Option<KeyType> {
    /// The type's name as `From<Option<KeyType>> for Reply` writes it (`none` when missing).
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        let Reply::Bytes(Some(name)) = &reply else { return Err(reply) };
        if &name[..] == b"none" {
            return Ok(None);
        }
        match KeyType::from_name(name) {
            Some(t) => Ok(Some(t)),
            None => Err(reply),
        }
    }
}

/// Size and count limits, enforced once by [`Command::validate`]. Servers take them from
/// configuration; the defaults are documented on [`Limits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key or hash field, in bytes.
    pub max_key_len: usize,
    /// Longest value (string, hash field value, list element), in bytes.
    pub max_value_len: usize,
    /// Most operations in one batch, and most values in one list push.
    pub max_batch_len: usize,
    /// Largest scan page a client may ask for.
    pub max_scan_page: u32,
    /// Scan page size when the client asks for 0.
    pub default_scan_page: u32,
}

impl Default for Limits {
    /// Keys up to 64 KiB, values up to 4 MiB, 1,024 operations per batch, scan pages of 100
    /// (at most 10,000).
    fn default() -> Self {
        Self {
            max_key_len: 64 * 1024,
            max_value_len: 4 * 1024 * 1024,
            max_batch_len: 1024,
            max_scan_page: 10_000,
            default_scan_page: 100,
        }
    }
}

impl Limits {
    pub(crate) fn key(&self, key: &[u8]) -> Result<(), Error> {
        self.name("key", key)
    }

    pub(crate) fn name(&self, what: &'static str, name: &[u8]) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::Empty { what });
        }
        if name.len() > self.max_key_len {
            return Err(Error::KeyTooLarge { what, len: name.len(), max: self.max_key_len });
        }
        Ok(())
    }

    pub(crate) fn value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value_len {
            return Err(Error::ValueTooLarge { len: value.len(), max: self.max_value_len });
        }
        Ok(())
    }

    pub(crate) fn count(&self, what: &'static str, len: usize) -> Result<(), Error> {
        if len > self.max_batch_len {
            return Err(Error::LimitExceeded {
                what,
                len,
                max: self.max_batch_len,
                setting: "max_batch_len",
            });
        }
        Ok(())
    }

    /// The page size a scan asking for `limit` gets, or an error above `max_scan_page`.
    pub fn scan_page(&self, limit: u32) -> Result<u32, Error> {
        match limit {
            0 => Ok(self.default_scan_page.min(self.max_scan_page).max(1)),
            n if n > self.max_scan_page => Err(Error::LimitExceeded {
                what: "scan limit",
                len: n as usize,
                max: self.max_scan_page as usize,
                setting: "max_scan_page",
            }),
            n => Ok(n),
        }
    }
}

impl Command {
    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.command_name().as_str()
    }

    /// Whether the command may change the keyspace (refused while the log cannot take writes,
    /// and on read-only nodes later). A batch or a transaction writes when any of its operations
    /// does.
    pub fn is_write(&self) -> bool {
        match self {
            Self::Batch(b) => b.ops.iter().any(Self::is_write),
            Self::Txn(t) => t.writes(),
            other => other.command_name().class() == Class::Write,
        }
    }

    /// Whether running it may grow the dataset's memory: what Redis flags `denyoom`, refused
    /// over `--max-memory` when nothing can be evicted. A batch or transaction may when one of
    /// its operations may; a script always may (refused up front, as Redis refuses a script
    /// that may write).
    pub fn may_grow(&self) -> bool {
        match self {
            Self::Batch(b) => b.ops.iter().any(Self::may_grow),
            Self::Txn(t) => t.success.iter().chain(&t.failure).any(Self::may_grow),
            other => other.command_name().may_grow(),
        }
    }
}

impl CommandName {
    /// Whether the command may grow memory (see [`Command::may_grow`]; a batch or transaction
    /// answers for its operations there). Exhaustive, so a new command must say.
    pub fn may_grow(self) -> bool {
        match self {
            Self::Put
            | Self::GetSet
            | Self::Incr
            | Self::HashSet
            | Self::ListPush
            | Self::Append
            | Self::IncrFloat
            | Self::MultiPut
            | Self::HashIncr
            | Self::HashSetIfAbsent
            | Self::ListSet
            | Self::Eval
            | Self::Batch
            | Self::Txn => true,
            // Reads, deletes and what only shrinks or re-times a key (Redis: no `denyoom`).
            Self::Ping
            | Self::Get
            | Self::Delete
            | Self::DeleteIf
            | Self::Exists
            | Self::Expire
            | Self::Ttl
            | Self::Scan
            | Self::HashGet
            | Self::HashDelete
            | Self::HashGetAll
            | Self::ListPop
            | Self::ListRange
            | Self::KeyCount
            | Self::GetDel
            | Self::GetEx
            | Self::Rename
            | Self::Publish
            | Self::Type
            | Self::Flush
            | Self::RandomKey
            | Self::HashLen
            | Self::ListLen
            | Self::GetRange
            | Self::ListTrim => false,
        }
    }
}

/// A relative or absolute TTL must be positive.
pub(crate) fn check_expiry(expiry: Expiry) -> Result<(), Error> {
    match expiry {
        Expiry::In(0) | Expiry::At(0) => Err(Error::InvalidArgument("invalid expire time".into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;
    use crate::command::Expiry;

    fn small() -> Limits {
        Limits { max_key_len: 4, max_value_len: 8, max_batch_len: 2, max_scan_page: 10, default_scan_page: 3 }
    }

    #[test]
    fn keys_values_and_fields_are_bounded() {
        let l = small();
        let get = |k: &'static [u8]| Command::Get(cmd::Get { key: Bytes::from_static(k) });
        assert_eq!(get(b"").validate(&l), Err(Error::Empty { what: "key" }));
        assert!(get(b"abcd").validate(&l).is_ok());
        assert_eq!(get(b"abcde").validate(&l), Err(Error::KeyTooLarge { what: "key", len: 5, max: 4 }));
        let put = Command::Put(cmd::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; 9]),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        });
        assert_eq!(put.validate(&l), Err(Error::ValueTooLarge { len: 9, max: 8 }));
        let hset = Command::HashSet(cmd::HashSet {
            key: Bytes::from_static(b"k"),
            field: Bytes::new(),
            value: Bytes::new(),
        });
        assert_eq!(hset.validate(&l), Err(Error::Empty { what: "field" }));
    }

    #[test]
    fn batches_are_bounded_and_flat() {
        let l = small();
        let ping = Command::Ping(cmd::Ping {});
        let ok = Command::Batch(cmd::Batch { ops: vec![ping.clone(), ping.clone()] });
        assert!(ok.validate(&l).is_ok());
        let long = Command::Batch(cmd::Batch { ops: vec![ping.clone(); 3] });
        assert!(matches!(long.validate(&l), Err(Error::LimitExceeded { len: 3, max: 2, .. })));
        let nested = Command::Batch(cmd::Batch { ops: vec![Command::Batch(cmd::Batch { ops: vec![] })] });
        assert!(matches!(nested.validate(&l), Err(Error::InvalidArgument(_))));
        let bad_inner =
            Command::Batch(cmd::Batch { ops: vec![Command::Get(cmd::Get { key: Bytes::new() })] });
        assert_eq!(bad_inner.validate(&l), Err(Error::Empty { what: "key" }));
    }

    #[test]
    fn scan_page_defaults_and_caps() {
        let l = small();
        assert_eq!(l.scan_page(0), Ok(3));
        assert_eq!(l.scan_page(10), Ok(10));
        assert!(matches!(l.scan_page(11), Err(Error::LimitExceeded { .. })));
    }

    #[test]
    fn new_commands_validate() {
        let l = small();
        let k = || Bytes::from_static(b"k");
        let set = |expiry| {
            Command::Put(cmd::Put { key: k(), value: Bytes::new(), condition: PutCondition::Always, expiry })
        };
        assert!(set(Expiry::In(1)).validate(&l).is_ok());
        assert!(matches!(set(Expiry::In(0)).validate(&l), Err(Error::InvalidArgument(_))));
        assert!(matches!(set(Expiry::At(0)).validate(&l), Err(Error::InvalidArgument(_))));
        let f =
            |d: &'static [u8]| Command::IncrFloat(cmd::IncrFloat { key: k(), delta: Bytes::from_static(d) });
        assert!(f(b"1.5e3").validate(&l).is_ok());
        for bad in [&b""[..], b" 1", b"inf", b"nan", b"x"] {
            assert!(f(bad).validate(&l).is_err(), "{bad:?}");
        }
        let mp = |n| {
            Command::MultiPut(cmd::MultiPut { pairs: vec![(k(), Bytes::new()); n], only_if_none_exist: true })
        };
        assert!(mp(2).validate(&l).is_ok());
        assert!(mp(0).validate(&l).is_err());
        assert!(matches!(mp(3).validate(&l), Err(Error::LimitExceeded { .. })));
        let rename = Command::Rename(cmd::Rename { from: k(), to: Bytes::new() });
        assert_eq!(rename.validate(&l), Err(Error::Empty { what: "key" }));
    }

    #[test]
    fn conditions() {
        assert!(PutCondition::Always.holds(false, 0));
        assert!(PutCondition::IfAbsent.holds(false, 0));
        assert!(!PutCondition::IfAbsent.holds(true, 3));
        assert!(PutCondition::IfPresent.holds(true, 3));
        assert!(!PutCondition::IfPresent.holds(false, 0));
        assert!(PutCondition::IfVersion(3).holds(true, 3));
        assert!(!PutCondition::IfVersion(3).holds(true, 4));
        assert!(!PutCondition::IfVersion(0).holds(false, 0), "absent never matches a version");
    }

    fn round_trips<T: Into<Reply> + FromReply + Clone + PartialEq + std::fmt::Debug>(outputs: &[T]) {
        for out in outputs {
            assert_eq!(T::from_reply(out.clone().into()), Ok(out.clone()));
        }
    }

    /// What a batch turns into a `Reply` comes back as the same typed output.
    #[test]
    fn typed_outputs_come_back_from_their_replies() {
        let b = Bytes::from_static;
        let entry = Entry { value: b(b"v"), version: 7, ttl_ms: -1 };
        round_trips(&[None, Some(entry)]);
        round_trips(&[true, false]);
        round_trips(&[-2, 0, i64::MAX]);
        round_trips(&[None, Some(b(b"")), Some(b(b"x"))]);
        round_trips(&[b(b"10.5")]);
        round_trips(&[vec![], vec![b(b"a"), b(b"b")]]);
        round_trips(&[vec![(b(b"f"), b(b"v"))]]);
        round_trips(&[ScanPage { entries: vec![], next_cursor: b(b"c") }]);
        round_trips(&[None, Some(KeyType::String), Some(KeyType::Hash), Some(KeyType::List)]);
        // `created` is not carried by the reply (no gRPC response shows it).
        round_trips(&[PutOutcome { applied: true, version: 3, created: false }]);
        // A shape of another output is given back, not misread.
        assert_eq!(bool::from_reply(Reply::Int(1)), Err(Reply::Int(1)));
        let other = Reply::Bytes(Some(b(b"set")));
        assert_eq!(<Option<KeyType>>::from_reply(other.clone()), Err(other));
    }
}
