//! What the engine does for each keyspace command: one [`Apply`] impl per declared command (see
//! `nanodb_protocol::commands`), each a call into the per-type operations (`strings.rs`,
//! `hashes.rs`, `lists.rs`, `keys.rs`, `scan.rs`). The output is the command's typed output;
//! the log position its writes reached travels in `at`.
//!
//! `Publish` and `Batch` are not here: they touch no key (the feed) or are several commands, and
//! the server's command path (`Context::run`) runs them.

use nanodb_protocol::{Error, Pong, TypedCommand, cmd};

use super::{Engine, LogPosition};

/// A keyspace command the engine applies.
pub trait Apply: TypedCommand {
    /// Applies the (validated) command, raising `at` to the log position its writes reached.
    fn apply(self, engine: &Engine, at: &mut LogPosition) -> Result<Self::Output, Error>;
}

/// `Name |c, engine, at| body;` implements [`Apply`] for `cmd::Name`.
macro_rules! apply {
    ($($name:ident |$c:pat_param, $e:ident, $at:pat_param| $body:expr;)*) => {$(
        impl Apply for cmd::$name {
            fn apply(self, $e: &Engine, $at: &mut LogPosition) -> Result<Self::Output, Error> {
                let $c = self;
                $body
            }
        }
    )*};
}

apply! {
    Ping |_, _e, _| Ok(Pong);
    Get |c, e, _| e.get(&c.key);
    Put |c, e, at| e.put(at, c.key, c.value, c.expiry, c.condition);
    GetSet |c, e, at| e.get_set(at, c.key, c.value, c.expiry, c.condition);
    Delete |c, e, at| e.delete(at, c.key);
    DeleteIf |c, e, at| e.delete_if(at, c.key, c.version);
    Exists |c, e, _| Ok(e.read(&c.key, |_| ()).is_some());
    Incr |c, e, at| e.incr(at, c.key, c.delta);
    Expire |c, e, at| e.expire(at, c.key, c.expiry);
    Ttl |c, e, _| Ok(e.ttl(&c.key));
    Scan |c, e, _| {
        let limit = e.limits().scan_page(c.limit)?;
        e.scan(&c.prefix, limit as usize, &c.cursor)
    };
    HashSet |c, e, at| e.hash_set(at, c.key, c.field, c.value);
    HashGet |c, e, _| e.hash_get(&c.key, &c.field);
    HashDelete |c, e, at| e.hash_delete(at, c.key, &c.field);
    HashGetAll |c, e, _| e.hash_get_all(&c.key);
    ListPush |c, e, at| e.list_push(at, c.key, c.end, c.values);
    ListPop |c, e, at| e.list_pop(at, c.key, c.end, c.count);
    ListRange |c, e, _| e.list_range(&c.key, c.start, c.stop);
    KeyCount |_, e, _| Ok(e.key_count() as i64);
    GetDel |c, e, at| e.get_del(at, c.key);
    GetEx |c, e, at| e.get_ex(at, c.key, c.expiry);
    Append |c, e, at| e.append(at, c.key, &c.value);
    IncrFloat |c, e, at| e.incr_float(at, c.key, &c.delta);
    MultiPut |c, e, at| e.multi_put(at, c.pairs, c.only_if_none_exist);
    Rename |c, e, at| e.rename(at, c.from, c.to);
    Type |c, e, _| Ok(e.type_of(&c.key));
    Flush |_, e, at| e.flush(at).map(|n| n as i64);
    RandomKey |_, e, _| Ok(e.random_key());
    HashIncr |c, e, at| e.hash_incr(at, c.key, c.field, c.delta);
    HashSetIfAbsent |c, e, at| e.hash_set_if_absent(at, c.key, c.field, c.value);
    HashLen |c, e, _| e.hash_len(&c.key);
    ListLen |c, e, _| e.list_len(&c.key);
    ListSet |c, e, at| e.list_set(at, c.key, c.index, c.value);
    ListTrim |c, e, at| e.list_trim(at, c.key, c.start, c.stop);
    GetRange |c, e, _| e.get_range(&c.key, c.start, c.end);
}
