//! The protocol-neutral request model.
//!
//! Every frontend (gRPC, REST, TCP, RESP) decodes its wire format into a [`Command`], hands it to
//! the engine, and encodes the [`Reply`] back. Rules that must not differ between protocols live
//! here or in the engine, never in an adapter: [`Command::validate`] is the one place that enforces
//! the size and count [`Limits`].

use bytes::Bytes;

use crate::error::Error;

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

/// One request, whatever protocol it arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Round trip without touching data. Replies [`Reply::Pong`].
    Ping,
    /// Read a string key. Replies [`Reply::Value`].
    Get {
        /// The key.
        key: Bytes,
    },
    /// Write a string key. Replies [`Reply::Put`].
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in ms; 0 for none (clears any previous TTL).
        ttl_ms: u64,
        /// When the write applies.
        condition: PutCondition,
    },
    /// Remove a key of any type. Replies [`Reply::Bool`] (whether it existed).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Remove a key of any type only if it exists with exactly `version`, atomically (HTTP
    /// `DELETE` with `If-Match`). Replies [`Reply::Bool`]: false when the key is missing or its
    /// version differs, and then nothing changed.
    DeleteIf {
        /// The key.
        key: Bytes,
        /// The version the key must have.
        version: u64,
    },
    /// Whether a key exists. Replies [`Reply::Bool`].
    Exists {
        /// The key.
        key: Bytes,
    },
    /// Add `delta` to an integer (a missing key counts as 0). Replies [`Reply::Int`].
    Incr {
        /// The key.
        key: Bytes,
        /// The signed amount.
        delta: i64,
    },
    /// Set (`ttl_ms > 0`), fire (`0`) or clear (`< 0`) a key's TTL. Replies [`Reply::Bool`].
    Expire {
        /// The key.
        key: Bytes,
        /// Milliseconds from now, 0 to expire at once, negative to persist.
        ttl_ms: i64,
    },
    /// Remaining TTL in ms: -2 when missing, -1 when none. Replies [`Reply::Int`].
    Ttl {
        /// The key.
        key: Bytes,
    },
    /// One page of keys starting with `prefix`. Replies [`Reply::Scan`].
    Scan {
        /// The prefix; empty for all keys.
        prefix: Bytes,
        /// Page size; 0 for the configured default.
        limit: u32,
        /// Empty to start, else the previous page's `next_cursor`.
        cursor: Bytes,
    },
    /// Operations applied in order, one result each. Replies [`Reply::Batch`].
    Batch {
        /// The operations; no nested batches.
        ops: Vec<Command>,
    },
    /// Set a hash field. Replies [`Reply::Bool`] (whether the field is new).
    HashSet {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read a hash field. Replies [`Reply::Bytes`].
    HashGet {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
    },
    /// Remove a hash field. Replies [`Reply::Bool`].
    HashDelete {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
    },
    /// Read every field of a hash. Replies [`Reply::Pairs`].
    HashGetAll {
        /// The hash's key.
        key: Bytes,
    },
    /// Push values at one end of a list. Replies [`Reply::Int`] (the new length).
    ListPush {
        /// The list's key.
        key: Bytes,
        /// Which end.
        end: ListEnd,
        /// The values, pushed one after another.
        values: Vec<Bytes>,
    },
    /// Pop up to `count` values (0 counts as 1) from one end. Replies [`Reply::List`].
    ListPop {
        /// The list's key.
        key: Bytes,
        /// Which end.
        end: ListEnd,
        /// How many at most.
        count: u32,
    },
    /// Values from `start` to `stop` inclusive, negatives from the end. Replies [`Reply::List`].
    ListRange {
        /// The list's key.
        key: Bytes,
        /// First index.
        start: i64,
        /// Last index.
        stop: i64,
    },
    /// The number of keys. Replies [`Reply::Int`].
    KeyCount,
    /// A string write with every option Redis's SET has. Replies [`Reply::Value`] with the old
    /// value when `get` (whether or not the write applied), else [`Reply::Put`]. With `get`, a key
    /// of another type is WRONGTYPE and nothing is written.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// When the write applies.
        condition: PutCondition,
        /// What happens to the TTL.
        expiry: Expiry,
        /// Return the previous value.
        get: bool,
    },
    /// Read and remove a string key. Replies [`Reply::Value`] (the value before removal).
    GetDel {
        /// The key.
        key: Bytes,
    },
    /// Read a string key and change its TTL (`Keep` changes nothing). Replies [`Reply::Value`].
    GetEx {
        /// The key.
        key: Bytes,
        /// The new TTL.
        expiry: Expiry,
    },
    /// Set a key's deadline as absolute Unix ms; a time already past removes the key. Replies
    /// [`Reply::Bool`] (whether the key existed).
    ExpireAt {
        /// The key.
        key: Bytes,
        /// Unix time in milliseconds.
        at_ms: u64,
    },
    /// Append to a string (a missing key counts as empty). Replies [`Reply::Int`] (the new length).
    Append {
        /// The key.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    },
    /// Add a decimal floating-point amount to a number held as a string. Replies
    /// [`Reply::Bytes`] with the new value's text.
    IncrFloat {
        /// The key.
        key: Bytes,
        /// The amount as decimal text (finite), as the client sent it.
        delta: Bytes,
    },
    /// Write several string keys, clearing their TTLs; with `only_if_none_exist`, nothing is
    /// written if any key exists. Replies [`Reply::Bool`] (whether the keys were written).
    MultiPut {
        /// Key/value pairs, applied in order (a repeated key ends with its last value).
        pairs: Vec<(Bytes, Bytes)>,
        /// MSETNX semantics.
        only_if_none_exist: bool,
    },
    /// Move a key's value (and TTL) to another key, replacing it. Replies [`Reply::Bool`] (true);
    /// `NotFound` when `from` does not exist.
    Rename {
        /// The source key.
        from: Bytes,
        /// The destination key.
        to: Bytes,
    },
    /// Send a message to a pub/sub channel (channels are separate from keys). Replies
    /// [`Reply::Int`]: how many subscriptions received it (channel subscribers plus matching
    /// patterns, as Redis counts).
    Publish {
        /// The channel (at most `max_key_len` bytes).
        channel: Bytes,
        /// The message (at most `max_value_len` bytes).
        message: Bytes,
    },
    /// A key's type: "string", "hash", "list" or "none". Replies [`Reply::Bytes`].
    Type {
        /// The key.
        key: Bytes,
    },
    /// Remove every key. Replies [`Reply::Int`] (how many were removed).
    Flush,
    /// A random live key, or none when empty. Replies [`Reply::Bytes`].
    RandomKey,
    /// Add `delta` to an integer hash field (missing counts as 0). Replies [`Reply::Int`].
    HashIncr {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The signed amount.
        delta: i64,
    },
    /// Set a hash field only when it does not exist. Replies [`Reply::Bool`] (whether it was set).
    HashSetIfAbsent {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Number of fields in a hash (0 when missing). Replies [`Reply::Int`].
    HashLen {
        /// The hash's key.
        key: Bytes,
    },
    /// Length of a list (0 when missing). Replies [`Reply::Int`].
    ListLen {
        /// The list's key.
        key: Bytes,
    },
    /// Replace the element at `index` (negative from the end). Replies [`Reply::Bool`] (true);
    /// `NotFound` when the key is missing, `InvalidArgument` when the index is out of range.
    ListSet {
        /// The list's key.
        key: Bytes,
        /// The index.
        index: i64,
        /// The new value.
        value: Bytes,
    },
    /// Keep only the elements from `start` to `stop` inclusive (Redis LTRIM); an empty range
    /// removes the key. Replies [`Reply::Bool`] (true).
    ListTrim {
        /// The list's key.
        key: Bytes,
        /// First index kept.
        start: i64,
        /// Last index kept.
        stop: i64,
    },
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
    /// Answer to [`Command::Ping`].
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
    fn key(&self, key: &[u8]) -> Result<(), Error> {
        self.name("key", key)
    }

    fn name(&self, what: &'static str, name: &[u8]) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::Empty { what });
        }
        if name.len() > self.max_key_len {
            return Err(Error::KeyTooLarge { what, len: name.len(), max: self.max_key_len });
        }
        Ok(())
    }

    fn value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value_len {
            return Err(Error::ValueTooLarge { len: value.len(), max: self.max_value_len });
        }
        Ok(())
    }

    fn count(&self, what: &'static str, len: usize) -> Result<(), Error> {
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
    /// Checks every key, field, value and count against `limits`; the engine calls this before it
    /// touches anything, so an invalid command changes nothing.
    pub fn validate(&self, limits: &Limits) -> Result<(), Error> {
        match self {
            Self::Ping | Self::KeyCount | Self::Flush | Self::RandomKey => Ok(()),
            Self::GetDel { key }
            | Self::ExpireAt { key, .. }
            | Self::Type { key }
            | Self::HashLen { key }
            | Self::ListLen { key }
            | Self::ListTrim { key, .. } => limits.key(key),
            Self::Set { key, value, expiry, .. } => {
                limits.key(key)?;
                limits.value(value)?;
                check_expiry(*expiry)
            }
            Self::GetEx { key, expiry } => {
                limits.key(key)?;
                check_expiry(*expiry)
            }
            Self::Append { key, value } | Self::ListSet { key, value, .. } => {
                limits.key(key)?;
                limits.value(value)
            }
            Self::IncrFloat { key, delta } => {
                limits.key(key)?;
                parse_f64(delta).map(drop)
            }
            Self::MultiPut { pairs, .. } => {
                if pairs.is_empty() {
                    return Err(Error::InvalidArgument("a multi-put needs at least one pair".into()));
                }
                limits.count("pairs in one multi-put", pairs.len())?;
                pairs.iter().try_for_each(|(k, v)| {
                    limits.key(k)?;
                    limits.value(v)
                })
            }
            Self::Rename { from, to } => {
                limits.key(from)?;
                limits.key(to)
            }
            Self::Publish { channel, message } => {
                if channel.len() > limits.max_key_len {
                    return Err(Error::KeyTooLarge {
                        what: "channel",
                        len: channel.len(),
                        max: limits.max_key_len,
                    });
                }
                limits.value(message)
            }
            Self::HashIncr { key, field, .. } => {
                limits.key(key)?;
                limits.name("field", field)
            }
            Self::HashSetIfAbsent { key, field, value } => {
                limits.key(key)?;
                limits.name("field", field)?;
                limits.value(value)
            }
            Self::Get { key }
            | Self::Delete { key }
            | Self::DeleteIf { key, .. }
            | Self::Exists { key }
            | Self::Incr { key, .. }
            | Self::Expire { key, .. }
            | Self::Ttl { key }
            | Self::HashGetAll { key }
            | Self::ListPop { key, .. }
            | Self::ListRange { key, .. } => limits.key(key),
            Self::Put { key, value, .. } => {
                limits.key(key)?;
                limits.value(value)
            }
            Self::Scan { prefix, limit, .. } => {
                if prefix.len() > limits.max_key_len {
                    return Err(Error::KeyTooLarge {
                        what: "prefix",
                        len: prefix.len(),
                        max: limits.max_key_len,
                    });
                }
                limits.scan_page(*limit).map(drop)
            }
            Self::Batch { ops } => {
                limits.count("batch length", ops.len())?;
                for op in ops {
                    if matches!(op, Self::Batch { .. }) {
                        return Err(Error::InvalidArgument("a batch cannot contain a batch".into()));
                    }
                    op.validate(limits)?;
                }
                Ok(())
            }
            Self::HashSet { key, field, value } => {
                limits.key(key)?;
                limits.name("field", field)?;
                limits.value(value)
            }
            Self::HashGet { key, field } | Self::HashDelete { key, field } => {
                limits.key(key)?;
                limits.name("field", field)
            }
            Self::ListPush { key, values, .. } => {
                limits.key(key)?;
                if values.is_empty() {
                    return Err(Error::InvalidArgument("a push needs at least one value".into()));
                }
                limits.count("values in one push", values.len())?;
                values.iter().try_for_each(|v| limits.value(v))
            }
        }
    }

    /// Whether the command may change the keyspace (refused while the log cannot take writes, and
    /// on read-only nodes later). A batch writes when any of its operations does; `Publish`
    /// touches no key.
    pub fn is_write(&self) -> bool {
        match self {
            Self::Ping
            | Self::Get { .. }
            | Self::Exists { .. }
            | Self::Ttl { .. }
            | Self::Scan { .. }
            | Self::HashGet { .. }
            | Self::HashGetAll { .. }
            | Self::ListRange { .. }
            | Self::KeyCount
            | Self::Type { .. }
            | Self::RandomKey
            | Self::HashLen { .. }
            | Self::ListLen { .. }
            | Self::Publish { .. } => false,
            Self::Batch { ops } => ops.iter().any(Self::is_write),
            Self::Put { .. }
            | Self::Delete { .. }
            | Self::DeleteIf { .. }
            | Self::Incr { .. }
            | Self::Expire { .. }
            | Self::HashSet { .. }
            | Self::HashDelete { .. }
            | Self::ListPush { .. }
            | Self::ListPop { .. }
            | Self::Set { .. }
            | Self::GetDel { .. }
            | Self::GetEx { .. }
            | Self::ExpireAt { .. }
            | Self::Append { .. }
            | Self::IncrFloat { .. }
            | Self::MultiPut { .. }
            | Self::Rename { .. }
            | Self::Flush
            | Self::HashIncr { .. }
            | Self::HashSetIfAbsent { .. }
            | Self::ListSet { .. }
            | Self::ListTrim { .. } => true,
        }
    }

    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
            Self::DeleteIf { .. } => "delete_if",
            Self::Exists { .. } => "exists",
            Self::Incr { .. } => "incr",
            Self::Expire { .. } => "expire",
            Self::Ttl { .. } => "ttl",
            Self::Scan { .. } => "scan",
            Self::Batch { .. } => "batch",
            Self::HashSet { .. } => "hash_set",
            Self::HashGet { .. } => "hash_get",
            Self::HashDelete { .. } => "hash_delete",
            Self::HashGetAll { .. } => "hash_get_all",
            Self::ListPush { .. } => "list_push",
            Self::ListPop { .. } => "list_pop",
            Self::ListRange { .. } => "list_range",
            Self::KeyCount => "key_count",
            Self::Set { .. } => "set",
            Self::GetDel { .. } => "get_del",
            Self::GetEx { .. } => "get_ex",
            Self::ExpireAt { .. } => "expire_at",
            Self::Append { .. } => "append",
            Self::IncrFloat { .. } => "incr_float",
            Self::MultiPut { .. } => "multi_put",
            Self::Rename { .. } => "rename",
            Self::Publish { .. } => "publish",
            Self::Type { .. } => "type",
            Self::Flush => "flush",
            Self::RandomKey => "random_key",
            Self::HashIncr { .. } => "hash_incr",
            Self::HashSetIfAbsent { .. } => "hash_set_if_absent",
            Self::HashLen { .. } => "hash_len",
            Self::ListLen { .. } => "list_len",
            Self::ListSet { .. } => "list_set",
            Self::ListTrim { .. } => "list_trim",
        }
    }
}

/// A relative or absolute TTL must be positive.
fn check_expiry(expiry: Expiry) -> Result<(), Error> {
    match expiry {
        Expiry::In(0) | Expiry::At(0) => Err(Error::InvalidArgument("invalid expire time".into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits { max_key_len: 4, max_value_len: 8, max_batch_len: 2, max_scan_page: 10, default_scan_page: 3 }
    }

    #[test]
    fn keys_values_and_fields_are_bounded() {
        let l = small();
        let get = |k: &'static [u8]| Command::Get { key: Bytes::from_static(k) };
        assert_eq!(get(b"").validate(&l), Err(Error::Empty { what: "key" }));
        assert!(get(b"abcd").validate(&l).is_ok());
        assert_eq!(get(b"abcde").validate(&l), Err(Error::KeyTooLarge { what: "key", len: 5, max: 4 }));
        let put = Command::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; 9]),
            ttl_ms: 0,
            condition: PutCondition::Always,
        };
        assert_eq!(put.validate(&l), Err(Error::ValueTooLarge { len: 9, max: 8 }));
        let hset =
            Command::HashSet { key: Bytes::from_static(b"k"), field: Bytes::new(), value: Bytes::new() };
        assert_eq!(hset.validate(&l), Err(Error::Empty { what: "field" }));
    }

    #[test]
    fn batches_are_bounded_and_flat() {
        let l = small();
        let ping = Command::Ping;
        let ok = Command::Batch { ops: vec![ping.clone(), ping.clone()] };
        assert!(ok.validate(&l).is_ok());
        let long = Command::Batch { ops: vec![ping.clone(); 3] };
        assert!(matches!(long.validate(&l), Err(Error::LimitExceeded { len: 3, max: 2, .. })));
        let nested = Command::Batch { ops: vec![Command::Batch { ops: vec![] }] };
        assert!(matches!(nested.validate(&l), Err(Error::InvalidArgument(_))));
        let bad_inner = Command::Batch { ops: vec![Command::Get { key: Bytes::new() }] };
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
        let set = |expiry| Command::Set {
            key: k(),
            value: Bytes::new(),
            condition: PutCondition::Always,
            expiry,
            get: false,
        };
        assert!(set(Expiry::In(1)).validate(&l).is_ok());
        assert!(matches!(set(Expiry::In(0)).validate(&l), Err(Error::InvalidArgument(_))));
        assert!(matches!(set(Expiry::At(0)).validate(&l), Err(Error::InvalidArgument(_))));
        let f = |d: &'static [u8]| Command::IncrFloat { key: k(), delta: Bytes::from_static(d) };
        assert!(f(b"1.5e3").validate(&l).is_ok());
        for bad in [&b""[..], b" 1", b"inf", b"nan", b"x"] {
            assert!(f(bad).validate(&l).is_err(), "{bad:?}");
        }
        let mp = |n| Command::MultiPut { pairs: vec![(k(), Bytes::new()); n], only_if_none_exist: true };
        assert!(mp(2).validate(&l).is_ok());
        assert!(mp(0).validate(&l).is_err());
        assert!(matches!(mp(3).validate(&l), Err(Error::LimitExceeded { .. })));
        let rename = Command::Rename { from: k(), to: Bytes::new() };
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
}
