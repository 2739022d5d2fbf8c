//! Every command, declared once.
//!
//! One [`commands!`] entry per command gives its type (a struct of its arguments), its name, its
//! binary TCP kind, its class (read, write, ...), its typed output, the keys it touches and its
//! validation. From that the macro derives the [`TypedCommand`] impl, the [`Command`] variant that
//! carries it through dynamic paths (the TCP wire, batches), and [`CommandName`], a fieldless twin
//! that frontends match exhaustively to say how they reach each command: adding a command here
//! fails to compile in every protocol's coverage table until that protocol maps it (or says why
//! not), and in the engine until it applies it.
//!
//! Adding a command end to end: its entry here; its engine function and one line in the engine's
//! dispatch; its TCP body in `wire.rs` (encode and decode); one line in each protocol's coverage
//! match plus the adapter that builds it (RESP handler, gRPC message and RPC, REST route); a test.

use bytes::Bytes;

use crate::command::{
    Class, Entry, Expiry, KeyType, Keys, Limits, ListEnd, Pong, PutCondition, PutOutcome, Reply, ScanPage,
    TypedCommand, check_expiry, parse_f64,
};
use crate::error::Error;
use crate::script::{ScriptSource, ScriptValue};
use crate::txn::{Compare, TxnOutcome};

/// Declares the commands: see the module documentation.
macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        $name:ident = $label:literal, $kind:ident, $class:ident -> $out:ty {
            $( $(#[$fdoc:meta])* $field:ident : $fty:ty ),* $(,)?
        }
        keys |$kc:ident| $keys:expr,
        validate |$vc:ident, $vl:ident| $validate:expr;
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct $name {
                $( $(#[$fdoc])* pub $field: $fty, )*
            }

            impl TypedCommand for $name {
                type Output = $out;
                const NAME: &'static str = $label;
                const KIND: u8 = crate::wire::kind::$kind;
                const CLASS: Class = Class::$class;
                const COMMAND: CommandName = CommandName::$name;

                fn keys(&self) -> Keys<'_> {
                    let $kc = self;
                    $keys
                }

                fn validate(&self, limits: &Limits) -> Result<(), Error> {
                    let ($vc, $vl) = (self, limits);
                    $validate
                }
            }

            impl From<$name> for Command {
                fn from(c: $name) -> Self {
                    Command::$name(c)
                }
            }
        )*

        /// One request, whatever protocol it arrived on: one variant per declared command, for the
        /// paths that carry commands whose type is only known at run time (the TCP wire, batches).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command {
            $( $(#[$doc])* $name($name), )*
        }

        /// The name of every command, without its arguments: what protocols match exhaustively to
        /// say how they reach each one (a new command fails to compile there until it is mapped).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CommandName {
            $( #[doc = concat!("`", $label, "`")] $name, )*
        }

        impl CommandName {
            /// Every command, in declaration order.
            pub const ALL: &'static [CommandName] = &[$(CommandName::$name),*];

            /// The command's name (as in logs and metrics).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$name => $label, )*
                }
            }

            /// The command's class.
            pub fn class(self) -> Class {
                match self {
                    $( Self::$name => Class::$class, )*
                }
            }

            /// The command's binary TCP kind.
            pub fn kind(self) -> u8 {
                match self {
                    $( Self::$name => crate::wire::kind::$kind, )*
                }
            }
        }

        impl Command {
            /// Which command this is.
            pub fn command_name(&self) -> CommandName {
                match self {
                    $( Self::$name(_) => CommandName::$name, )*
                }
            }

            /// The keys the command reads or writes.
            pub fn keys(&self) -> Keys<'_> {
                match self {
                    $( Self::$name(c) => c.keys(), )*
                }
            }

            /// Checks every key, field, value and count against `limits`; the engine calls this
            /// before it touches anything, so an invalid command changes nothing.
            pub fn validate(&self, limits: &Limits) -> Result<(), Error> {
                match self {
                    $( Self::$name(c) => c.validate(limits), )*
                }
            }
        }
    };
}

commands! {
    /// Round trip without touching data.
    Ping = "ping", PING, Connection -> Pong {}
    keys |_c| Keys::None,
    validate |_c, _l| Ok(());

    /// Read a string key.
    Get = "get", GET, Read -> Option<Entry> {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Write a string key, if `condition` holds, with its TTL as `expiry` says.
    Put = "put", PUT, Write -> PutOutcome {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// What happens to the key's TTL.
        expiry: Expiry,
        /// When the write applies.
        condition: PutCondition,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.value(&c.value)?;
        check_expiry(c.expiry)
    };

    /// Write a string key like [`Put`] and answer the value it held before (whether or not the
    /// write applied); a key of another type is WRONGTYPE and nothing is written.
    GetSet = "get_set", SET, Write -> Option<Entry> {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// What happens to the key's TTL.
        expiry: Expiry,
        /// When the write applies.
        condition: PutCondition,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.value(&c.value)?;
        check_expiry(c.expiry)
    };

    /// Remove a key of any type; whether it existed.
    Delete = "delete", DELETE, Write -> bool {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Remove a key of any type only if it exists with exactly `version`, atomically; false when
    /// the key is missing or its version differs, and then nothing changed.
    DeleteIf = "delete_if", DELETE_IF, Write -> bool {
        /// The key.
        key: Bytes,
        /// The version the key must have.
        version: u64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Whether a key exists.
    Exists = "exists", EXISTS, Read -> bool {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Add `delta` to an integer (a missing key counts as 0); the new value.
    Incr = "incr", INCR, Write -> i64 {
        /// The key.
        key: Bytes,
        /// The signed amount.
        delta: i64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Change a key's TTL: `Persist` clears it, `In` and `At` set it (a time already past
    /// removes the key); whether anything applied (false when missing, or persisting a key
    /// without TTL).
    Expire = "expire", EXPIRE, Write -> bool {
        /// The key.
        key: Bytes,
        /// The new TTL (`Keep` is refused).
        expiry: Expiry,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        match c.expiry {
            Expiry::Keep => Err(Error::InvalidArgument("an expire needs a TTL, a deadline or persist".into())),
            Expiry::In(0) => Err(Error::InvalidArgument("invalid expire time".into())),
            _ => Ok(()),
        }
    };

    /// Remaining TTL in ms: -2 when missing, -1 when none.
    Ttl = "ttl", TTL, Read -> i64 {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// One page of keys starting with `prefix`.
    Scan = "scan", SCAN, Read -> ScanPage {
        /// The prefix; empty for all keys.
        prefix: Bytes,
        /// Page size; 0 for the configured default.
        limit: u32,
        /// Empty to start, else the previous page's `next_cursor`.
        cursor: Bytes,
    }
    keys |c| Keys::Prefix(&c.prefix),
    validate |c, l| {
        if c.prefix.len() > l.max_key_len {
            return Err(Error::KeyTooLarge { what: "prefix", len: c.prefix.len(), max: l.max_key_len });
        }
        l.scan_page(c.limit).map(drop)
    };

    /// Operations applied in order, one result each.
    Batch = "batch", BATCH, Batch -> Vec<Result<Reply, Error>> {
        /// The operations; no nested batches.
        ops: Vec<Command>,
    }
    keys |c| Keys::Batch(&c.ops),
    validate |c, l| {
        l.count("batch length", c.ops.len())?;
        for op in &c.ops {
            if matches!(op, Command::Batch(_) | Command::Txn(_) | Command::Eval(_)) {
                return Err(Error::InvalidArgument(
                    "a batch cannot contain a batch, a transaction or a script".into(),
                ));
            }
            op.validate(l)?;
        }
        Ok(())
    };

    /// Set a hash field; whether the field is new.
    HashSet = "hash_set", HASH_SET, Write -> bool {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.name("field", &c.field)?;
        l.value(&c.value)
    };

    /// Read a hash field.
    HashGet = "hash_get", HASH_GET, Read -> Option<Bytes> {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.name("field", &c.field)
    };

    /// Remove a hash field; whether it existed.
    HashDelete = "hash_delete", HASH_DELETE, Write -> bool {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.name("field", &c.field)
    };

    /// Read every field of a hash.
    HashGetAll = "hash_get_all", HASH_GET_ALL, Read -> Vec<(Bytes, Bytes)> {
        /// The hash's key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Push values at one end of a list; the new length.
    ListPush = "list_push", LIST_PUSH, Write -> i64 {
        /// The list's key.
        key: Bytes,
        /// Which end.
        end: ListEnd,
        /// The values, pushed one after another.
        values: Vec<Bytes>,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        if c.values.is_empty() {
            return Err(Error::InvalidArgument("a push needs at least one value".into()));
        }
        l.count("values in one push", c.values.len())?;
        c.values.iter().try_for_each(|v| l.value(v))
    };

    /// Pop up to `count` values (0 counts as 1) from one end.
    ListPop = "list_pop", LIST_POP, Write -> Vec<Bytes> {
        /// The list's key.
        key: Bytes,
        /// Which end.
        end: ListEnd,
        /// How many at most.
        count: u32,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Values from `start` to `stop` inclusive, negatives from the end.
    ListRange = "list_range", LIST_RANGE, Read -> Vec<Bytes> {
        /// The list's key.
        key: Bytes,
        /// First index.
        start: i64,
        /// Last index.
        stop: i64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// The number of keys.
    KeyCount = "key_count", KEY_COUNT, Read -> i64 {}
    keys |_c| Keys::All,
    validate |_c, _l| Ok(());

    /// Read and remove a string key; the value before removal.
    GetDel = "get_del", GET_DEL, Write -> Option<Entry> {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Read a string key and change its TTL (`Keep` changes nothing).
    GetEx = "get_ex", GET_EX, Write -> Option<Entry> {
        /// The key.
        key: Bytes,
        /// The new TTL.
        expiry: Expiry,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        check_expiry(c.expiry)
    };

    /// Append to a string (a missing key counts as empty); the new length.
    Append = "append", APPEND, Write -> i64 {
        /// The key.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.value(&c.value)
    };

    /// Add a decimal floating-point amount to a number held as a string; the new value's text.
    IncrFloat = "incr_float", INCR_FLOAT, Write -> Bytes {
        /// The key.
        key: Bytes,
        /// The amount as decimal text (finite), as the client sent it.
        delta: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        parse_f64(&c.delta).map(drop)
    };

    /// Write several string keys, clearing their TTLs; with `only_if_none_exist`, nothing is
    /// written if any key exists. Whether the keys were written.
    MultiPut = "multi_put", MULTI_PUT, Write -> bool {
        /// Key/value pairs, applied in order (a repeated key ends with its last value).
        pairs: Vec<(Bytes, Bytes)>,
        /// MSETNX semantics.
        only_if_none_exist: bool,
    }
    keys |c| Keys::Pairs(&c.pairs),
    validate |c, l| {
        if c.pairs.is_empty() {
            return Err(Error::InvalidArgument("a multi-put needs at least one pair".into()));
        }
        l.count("pairs in one multi-put", c.pairs.len())?;
        c.pairs.iter().try_for_each(|(k, v)| {
            l.key(k)?;
            l.value(v)
        })
    };

    /// Move a key's value (and TTL) to another key, replacing it (always true); `NotFound` when
    /// `from` does not exist.
    Rename = "rename", RENAME, Write -> bool {
        /// The source key.
        from: Bytes,
        /// The destination key.
        to: Bytes,
    }
    keys |c| Keys::Two(&c.from, &c.to),
    validate |c, l| {
        l.key(&c.from)?;
        l.key(&c.to)
    };

    /// Compare, then run one branch atomically (etcd's Txn; Redis's EXEC is one whose compares
    /// are the WATCHed keys' versions): every compare is evaluated on the keys as they are, then
    /// `success` runs if all hold and `failure` otherwise, as one group that no reader sees in
    /// part and that is logged as one record. See [`crate::txn`].
    Txn = "txn", TXN, Write -> TxnOutcome {
        /// The conditions, all of which must hold for `success` to run.
        compares: Vec<Compare>,
        /// Operations run when every compare holds.
        success: Vec<Command>,
        /// Operations run otherwise.
        failure: Vec<Command>,
    }
    keys |c| Keys::Txn(c),
    validate |c, l| c.check(l);

    /// Run a Lua script (Redis's EVAL and EVALSHA) as one atomic group over the keys it declares:
    /// it may touch no other key, nothing it writes is seen before it ends, and a script that
    /// fails or is stopped writes nothing. See [`crate::script`].
    Eval = "eval", EVAL, Write -> ScriptValue {
        /// The script's text, or the SHA-1 of a cached one.
        script: ScriptSource,
        /// The keys it may touch (Lua's `KEYS`).
        keys: Vec<Bytes>,
        /// Its arguments (Lua's `ARGV`).
        args: Vec<Bytes>,
    }
    keys |c| Keys::Many(&c.keys),
    validate |c, l| c.check(l);

    /// Send a message to a pub/sub channel (channels are separate from keys); how many
    /// subscriptions received it (channel subscribers plus matching patterns, as Redis counts).
    Publish = "publish", PUBLISH, PubSub -> i64 {
        /// The channel (at most `max_key_len` bytes).
        channel: Bytes,
        /// The message (at most `max_value_len` bytes).
        message: Bytes,
    }
    keys |c| Keys::Channel(&c.channel),
    validate |c, l| {
        if c.channel.len() > l.max_key_len {
            return Err(Error::KeyTooLarge { what: "channel", len: c.channel.len(), max: l.max_key_len });
        }
        l.value(&c.message)
    };

    /// A key's type, `None` when it does not exist.
    Type = "type", TYPE, Read -> Option<KeyType> {
        /// The key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Remove every key; how many were removed.
    Flush = "flush", FLUSH, Write -> i64 {}
    keys |_c| Keys::All,
    validate |_c, _l| Ok(());

    /// A random live key, or none when empty.
    RandomKey = "random_key", RANDOM_KEY, Read -> Option<Bytes> {}
    keys |_c| Keys::All,
    validate |_c, _l| Ok(());

    /// Add `delta` to an integer hash field (missing counts as 0); the new value.
    HashIncr = "hash_incr", HASH_INCR, Write -> i64 {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The signed amount.
        delta: i64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.name("field", &c.field)
    };

    /// Set a hash field only when it does not exist; whether it was set.
    HashSetIfAbsent = "hash_set_if_absent", HASH_SET_IF_ABSENT, Write -> bool {
        /// The hash's key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.name("field", &c.field)?;
        l.value(&c.value)
    };

    /// Number of fields in a hash (0 when missing).
    HashLen = "hash_len", HASH_LEN, Read -> i64 {
        /// The hash's key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Length of a list (0 when missing).
    ListLen = "list_len", LIST_LEN, Read -> i64 {
        /// The list's key.
        key: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Replace the element at `index` (negative from the end); always true. `NotFound` when the
    /// key is missing, `InvalidArgument` when the index is out of range.
    ListSet = "list_set", LIST_SET, Write -> bool {
        /// The list's key.
        key: Bytes,
        /// The index.
        index: i64,
        /// The new value.
        value: Bytes,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| {
        l.key(&c.key)?;
        l.value(&c.value)
    };

    /// The bytes of a string from `start` to `end` inclusive, negatives counting from the end, as
    /// Redis's GETRANGE clamps them; empty when the key is missing or the range is.
    GetRange = "get_range", GET_RANGE, Read -> Bytes {
        /// The key.
        key: Bytes,
        /// First byte offset.
        start: i64,
        /// Last byte offset (inclusive).
        end: i64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);

    /// Keep only the elements from `start` to `stop` inclusive (Redis LTRIM); an empty range
    /// removes the key. Always true.
    ListTrim = "list_trim", LIST_TRIM, Write -> bool {
        /// The list's key.
        key: Bytes,
        /// First index kept.
        start: i64,
        /// Last index kept.
        stop: i64,
    }
    keys |c| Keys::One(&c.key),
    validate |c, l| l.key(&c.key);
}
