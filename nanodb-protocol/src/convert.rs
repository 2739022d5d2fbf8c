//! Conversions from the generated gRPC request messages ([`crate::pb`]) into the protocol-neutral
//! [`Command`].
//!
//! They live here, beside both types, because Rust's orphan rule forbids `impl TryFrom<pb::X> for
//! Command` anywhere else, and because a Rust client builds the same messages. They validate only
//! what the protobuf encoding cannot express (unknown enum numbers, a missing `oneof`); sizes,
//! emptiness and counts are [`Command::validate`]'s job, done once by the engine.

use crate::cmd;
use crate::command::{Command, Expiry, ListEnd, PutCondition};
use crate::error::Error;
use crate::pb;

fn put_condition(condition: i32, expected_version: u64) -> Result<PutCondition, Error> {
    match pb::PutCondition::try_from(condition) {
        Ok(pb::PutCondition::Unspecified) => Ok(PutCondition::Always),
        Ok(pb::PutCondition::IfAbsent) => Ok(PutCondition::IfAbsent),
        Ok(pb::PutCondition::IfPresent) => Ok(PutCondition::IfPresent),
        Ok(pb::PutCondition::IfVersion) => Ok(PutCondition::IfVersion(expected_version)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown put condition {condition}; expected 0 (unspecified) to 3 (if-version)"
        ))),
    }
}

fn compare(c: pb::Compare) -> Result<crate::txn::Compare, Error> {
    use crate::txn::{CompareOp, CompareTarget};
    use pb::compare::Target;
    let op = match pb::CompareOp::try_from(c.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Equal,
        Ok(pb::CompareOp::NotEqual) => CompareOp::NotEqual,
        Ok(pb::CompareOp::Less) => CompareOp::Less,
        Ok(pb::CompareOp::Greater) => CompareOp::Greater,
        Err(_) => {
            return Err(Error::InvalidArgument(format!("unknown compare op {}; expected 0 to 3", c.op)));
        }
    };
    let target = match c.target {
        Some(Target::Version(v)) => CompareTarget::Version(v),
        Some(Target::Value(v)) => CompareTarget::Value(v),
        Some(Target::Exists(e)) => CompareTarget::Exists(e),
        None => {
            return Err(Error::InvalidArgument("a compare must set one of version, value, exists".into()));
        }
    };
    Ok(crate::txn::Compare { key: c.key, op, target })
}

fn list_end(end: i32) -> Result<ListEnd, Error> {
    match pb::ListEnd::try_from(end) {
        Ok(pb::ListEnd::Front) => Ok(ListEnd::Front),
        Ok(pb::ListEnd::Back) => Ok(ListEnd::Back),
        Err(_) => {
            Err(Error::InvalidArgument(format!("unknown list end {end}; expected 0 (front) or 1 (back)")))
        }
    }
}

/// The optional `Expiry` of a request: its choice when set, else `unset` (the older field's TTL,
/// or the command's default).
fn expiry_or(e: Option<pb::Expiry>, unset: Expiry) -> Result<Expiry, Error> {
    e.map_or(Ok(unset), Expiry::try_from)
}

impl TryFrom<pb::Expiry> for Expiry {
    type Error = Error;

    /// Exactly one choice, and `persist` or `keep` only as `true` (a `false` would say nothing).
    fn try_from(e: pb::Expiry) -> Result<Self, Error> {
        use pb::expiry::Kind;
        match e.kind {
            Some(Kind::Persist(true)) => Ok(Expiry::Persist),
            Some(Kind::Keep(true)) => Ok(Expiry::Keep),
            Some(Kind::InMs(ms)) => Ok(Expiry::In(ms)),
            Some(Kind::AtMs(ms)) => Ok(Expiry::At(ms)),
            Some(Kind::Persist(false) | Kind::Keep(false)) => {
                Err(Error::InvalidArgument("expiry.persist and expiry.keep must be true when set".into()))
            }
            None => {
                Err(Error::InvalidArgument("an expiry must set one of persist, keep, in_ms, at_ms".into()))
            }
        }
    }
}

/// Implements `TryFrom<pb::$msg> for cmd::$cmd` with `|$m| body`, and the same into [`Command`].
macro_rules! command_from {
    ($($msg:ident => $cmd:ident |$m:ident| $body:expr;)*) => {$(
        impl TryFrom<pb::$msg> for cmd::$cmd {
            type Error = Error;

            fn try_from($m: pb::$msg) -> Result<Self, Error> {
                Ok($body)
            }
        }

        impl TryFrom<pb::$msg> for Command {
            type Error = Error;

            fn try_from(m: pb::$msg) -> Result<Self, Error> {
                cmd::$cmd::try_from(m).map(Command::from)
            }
        }
    )*};
}

command_from! {
    GetRequest => Get |m| cmd::Get { key: m.key };
    PutRequest => Put |m| cmd::Put {
        condition: put_condition(m.condition, m.expected_version)?,
        key: m.key,
        value: m.value,
        expiry: expiry_or(m.expiry, Expiry::from_put_ttl_ms(m.ttl_ms))?,
    };
    DeleteRequest => Delete |m| cmd::Delete { key: m.key };
    IncrRequest => Incr |m| cmd::Incr { key: m.key, delta: m.delta };
    ExpireRequest => Expire |m| cmd::Expire {
        expiry: expiry_or(m.expiry, Expiry::from_expire_ttl_ms(m.ttl_ms))?,
        key: m.key,
    };
    ScanRequest => Scan |m| cmd::Scan { prefix: m.prefix, limit: m.limit, cursor: m.cursor };
    HashSetRequest => HashSet |m| cmd::HashSet { key: m.key, field: m.field, value: m.value };
    HashGetRequest => HashGet |m| cmd::HashGet { key: m.key, field: m.field };
    HashDeleteRequest => HashDelete |m| cmd::HashDelete { key: m.key, field: m.field };
    HashGetAllRequest => HashGetAll |m| cmd::HashGetAll { key: m.key };
    ListPushRequest => ListPush |m| cmd::ListPush { end: list_end(m.end)?, key: m.key, values: m.values };
    ListPopRequest => ListPop |m| cmd::ListPop { end: list_end(m.end)?, key: m.key, count: m.count };
    ListRangeRequest => ListRange |m| cmd::ListRange { key: m.key, start: m.start, stop: m.stop };
    GetSetRequest => GetSet |m| cmd::GetSet {
        condition: put_condition(m.condition, m.expected_version)?,
        expiry: expiry_or(m.expiry, Expiry::Persist)?,
        key: m.key,
        value: m.value,
    };
    DeleteIfRequest => DeleteIf |m| cmd::DeleteIf { key: m.key, version: m.version };
    ExistsRequest => Exists |m| cmd::Exists { key: m.key };
    TtlRequest => Ttl |m| cmd::Ttl { key: m.key };
    KeyCountRequest => KeyCount |_m| cmd::KeyCount {};
    GetDelRequest => GetDel |m| cmd::GetDel { key: m.key };
    GetExRequest => GetEx |m| cmd::GetEx { expiry: expiry_or(m.expiry, Expiry::Keep)?, key: m.key };
    AppendRequest => Append |m| cmd::Append { key: m.key, value: m.value };
    // The delta as the shortest text that reads back as the same double (no exponent); a NaN or
    // an infinity becomes text that validation refuses.
    IncrFloatRequest => IncrFloat |m| cmd::IncrFloat { key: m.key, delta: m.delta.to_string().into() };
    MultiPutRequest => MultiPut |m| cmd::MultiPut {
        pairs: m.pairs.into_iter().map(|p| (p.key, p.value)).collect(),
        only_if_none_exist: m.if_none_exist,
    };
    RenameRequest => Rename |m| cmd::Rename { from: m.from, to: m.to };
    TypeRequest => Type |m| cmd::Type { key: m.key };
    FlushRequest => Flush |_m| cmd::Flush {};
    RandomKeyRequest => RandomKey |_m| cmd::RandomKey {};
    HashIncrRequest => HashIncr |m| cmd::HashIncr { key: m.key, field: m.field, delta: m.delta };
    HashSetIfAbsentRequest => HashSetIfAbsent |m| {
        cmd::HashSetIfAbsent { key: m.key, field: m.field, value: m.value }
    };
    HashLenRequest => HashLen |m| cmd::HashLen { key: m.key };
    ListLenRequest => ListLen |m| cmd::ListLen { key: m.key };
    ListSetRequest => ListSet |m| cmd::ListSet { key: m.key, index: m.index, value: m.value };
    ListTrimRequest => ListTrim |m| cmd::ListTrim { key: m.key, start: m.start, stop: m.stop };
    GetRangeRequest => GetRange |m| cmd::GetRange { key: m.key, start: m.start, end: m.end };
    PingRequest => Ping |_m| cmd::Ping {};
    PublishRequest => Publish |m| cmd::Publish { channel: m.channel, message: m.message };
    TxnRequest => Txn |m| cmd::Txn {
        // Bounded by the message size limit; counts are checked by validation.
        compares: m.compares.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: m.success.into_iter().map(Command::try_from).collect::<Result<_, _>>()?,
        failure: m.failure.into_iter().map(Command::try_from).collect::<Result<_, _>>()?,
    };
    EvalRequest => Eval |m| cmd::Eval {
        script: match m.script {
            Some(pb::eval_request::Script::Source(text)) => crate::ScriptSource::Text(text),
            // The SHA-1's form (40 hex digits) is checked by validation, as for EVALSHA.
            Some(pb::eval_request::Script::Sha1(sha)) => crate::ScriptSource::Sha(sha.into()),
            None => return Err(Error::InvalidArgument("a script request sets one of source, sha1".into())),
        },
        keys: m.keys,
        args: m.args,
    };
    BatchRequest => Batch |m| cmd::Batch {
        // The count is checked by validation; converting first is bounded by the message size
        // limit the transport already enforced.
        ops: m.ops.into_iter().map(Command::try_from).collect::<Result<_, _>>()?,
    };
}

/// `TryFrom<pb::Operation> for Command`: each kind of operation (the oneof's variants, named as
/// the commands they carry) converts as its RPC's request does.
macro_rules! operation_from {
    ($($kind:ident),* $(,)?) => {
        impl TryFrom<pb::Operation> for Command {
            type Error = Error;

            fn try_from(op: pb::Operation) -> Result<Self, Error> {
                use pb::operation::Op;
                match op.op {
                    $( Some(Op::$kind(m)) => m.try_into(), )*
                    None => Err(Error::InvalidArgument("a batch operation has no operation set".into())),
                }
            }
        }
    };
}

operation_from! {
    Get, Put, GetSet, Delete, DeleteIf, Exists, Incr, Expire, Ttl, Scan, HashSet, HashGet, HashDelete,
    HashGetAll, ListPush, ListPop, ListRange, KeyCount, GetDel, GetEx, Append, IncrFloat, MultiPut,
    Rename, Type, Flush, RandomKey, HashIncr, HashSetIfAbsent, HashLen, ListLen, ListSet, ListTrim,
    GetRange,
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn put_conditions_map_and_unknown_values_are_invalid() {
        let put = |condition, expected_version| pb::PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ttl_ms: 7,
            condition,
            expected_version,
            expiry: None,
        };
        let cond = |m| match Command::try_from(m) {
            Ok(Command::Put(cmd::Put { condition, expiry: Expiry::In(7), .. })) => Ok(condition),
            Ok(other) => panic!("not a put: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(cond(put(0, 9)), Ok(PutCondition::Always));
        assert_eq!(cond(put(1, 0)), Ok(PutCondition::IfAbsent));
        assert_eq!(cond(put(2, 0)), Ok(PutCondition::IfPresent));
        assert_eq!(cond(put(3, 9)), Ok(PutCondition::IfVersion(9)));
        let err = cond(put(4, 0)).expect_err("unknown condition");
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains('4')), "{err}");
    }

    #[test]
    fn an_expiry_overrides_the_older_ttl_fields_and_must_choose() {
        use pb::expiry::Kind;
        let e = |kind| Some(pb::Expiry { kind: Some(kind) });
        let put = |ttl_ms, expiry| pb::PutRequest {
            key: Bytes::from_static(b"k"),
            ttl_ms,
            expiry,
            ..Default::default()
        };
        let put_expiry = |m| cmd::Put::try_from(m).map(|c| c.expiry);
        // Without one, ttl_ms works as it always did.
        assert_eq!(put_expiry(put(0, None)), Ok(Expiry::Persist));
        assert_eq!(put_expiry(put(5, None)), Ok(Expiry::In(5)));
        // With one, it wins over ttl_ms.
        assert_eq!(put_expiry(put(5, e(Kind::Keep(true)))), Ok(Expiry::Keep));
        assert_eq!(put_expiry(put(5, e(Kind::Persist(true)))), Ok(Expiry::Persist));
        assert_eq!(put_expiry(put(0, e(Kind::InMs(9)))), Ok(Expiry::In(9)));
        assert_eq!(put_expiry(put(0, e(Kind::AtMs(1_700_000_000_000)))), Ok(Expiry::At(1_700_000_000_000)));
        // A choice that says nothing, or none at all, is refused.
        for bad in [e(Kind::Keep(false)), e(Kind::Persist(false)), Some(pb::Expiry { kind: None })] {
            assert!(matches!(put_expiry(put(0, bad)), Err(Error::InvalidArgument(_))), "{bad:?}");
        }

        let expire = |ttl_ms, expiry| pb::ExpireRequest { key: Bytes::from_static(b"k"), ttl_ms, expiry };
        let expire_expiry = |m| cmd::Expire::try_from(m).map(|c| c.expiry);
        assert_eq!(expire_expiry(expire(-1, None)), Ok(Expiry::Persist));
        assert_eq!(expire_expiry(expire(0, None)), Ok(Expiry::At(0)));
        assert_eq!(expire_expiry(expire(-1, e(Kind::InMs(7)))), Ok(Expiry::In(7)));
    }

    #[test]
    fn list_ends_and_batches() {
        let push = pb::ListPushRequest { key: Bytes::from_static(b"l"), end: 1, values: vec![Bytes::new()] };
        assert!(matches!(
            Command::try_from(push),
            Ok(Command::ListPush(cmd::ListPush { end: ListEnd::Back, .. }))
        ));
        let pop = pb::ListPopRequest { key: Bytes::from_static(b"l"), end: -1, count: 1 };
        assert!(matches!(Command::try_from(pop), Err(Error::InvalidArgument(_))));

        let get = pb::Operation {
            op: Some(pb::operation::Op::Get(pb::GetRequest { key: Bytes::from_static(b"k") })),
        };
        let batch = pb::BatchRequest { ops: vec![get.clone(), get] };
        assert!(matches!(Command::try_from(batch), Ok(Command::Batch(cmd::Batch { ops })) if ops.len() == 2));
        let ops = vec![
            pb::Operation { op: Some(pb::operation::Op::Flush(pb::FlushRequest {})) },
            pb::Operation {
                op: Some(pb::operation::Op::GetSet(pb::GetSetRequest {
                    key: Bytes::from_static(b"k"),
                    ..Default::default()
                })),
            },
        ];
        assert!(matches!(
            Command::try_from(pb::BatchRequest { ops }),
            Ok(Command::Batch(cmd::Batch { ops }))
                if matches!(&ops[..], [Command::Flush(_), Command::GetSet(cmd::GetSet { expiry: Expiry::Persist, .. })])
        ));
        let empty = pb::BatchRequest { ops: vec![pb::Operation { op: None }] };
        assert!(matches!(Command::try_from(empty), Err(Error::InvalidArgument(_))));
    }
}
