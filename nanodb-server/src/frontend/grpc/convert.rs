//! The gRPC side of the command model: each command's typed output -> its response message
//! ([`Respond`], one impl per command, used by its RPC and by a batch operation of its kind), a
//! batch's dynamic [`Reply`]s back to typed outputs (`nanodb_protocol::FromReply`), and the one mapping of
//! [`Error`] to a [`tonic::Status`].
//!
//! Requests become typed commands through the `TryFrom` impls in `nanodb_protocol::convert` (they
//! must live beside both types).

use nanodb_protocol::pb;
use nanodb_protocol::{
    CommandName, Entry, Error, ErrorCode, FromReply, KeyType, Pong, Reply, ScanEntry, ScriptValue,
    TypedCommand, cmd,
};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tracing::error;

/// Metadata key carrying the stable NanoDB error code name (`VALUE_TOO_LARGE`, `WRONGTYPE`, ...),
/// for clients that need more than the gRPC code.
pub const ERROR_CODE_METADATA: &str = "nanodb-error-code";

/// The gRPC code for a NanoDB error code.
///
/// Size and count limits are `INVALID_ARGUMENT`, not `RESOURCE_EXHAUSTED`: the request can never
/// succeed as sent, and keeping `RESOURCE_EXHAUSTED` for load shedding (as tonic's own shedding
/// does) tells a client unambiguously that retrying later may help.
pub fn code(c: ErrorCode) -> Code {
    match c {
        ErrorCode::InvalidArgument
        | ErrorCode::KeyTooLarge
        | ErrorCode::ValueTooLarge
        | ErrorCode::LimitExceeded
        | ErrorCode::NotAnInteger
        | ErrorCode::Malformed
        | ErrorCode::FrameTooLarge
        | ErrorCode::UnsupportedVersion
        | ErrorCode::HandshakeRequired => Code::InvalidArgument,
        ErrorCode::WrongType | ErrorCode::ConditionFailed => Code::FailedPrecondition,
        ErrorCode::Overflow => Code::OutOfRange,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::TooManyConnections | ErrorCode::Busy | ErrorCode::OutOfMemory => Code::ResourceExhausted,
        ErrorCode::ShuttingDown | ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::NoAuth | ErrorCode::WrongPass => Code::Unauthenticated,
        ErrorCode::NoPerm => Code::PermissionDenied,
    }
}

/// The one mapping of a NanoDB error to a gRPC status: the code from [`code`], the error's message
/// (what was wrong and the limit that applied), and the stable code name in the
/// [`ERROR_CODE_METADATA`] trailer. Internal errors carry no detail (it is in the server log).
pub fn status(e: &Error) -> Status {
    let c = e.code();
    let mut md = MetadataMap::new();
    md.insert(ERROR_CODE_METADATA, MetadataValue::from_static(c.as_str()));
    let message = match c {
        ErrorCode::Internal => "internal error".to_string(),
        _ => e.to_string(),
    };
    let grpc = match e {
        Error::Script(message) => script_code(message),
        _ => code(c),
    };
    Status::with_metadata(grpc, message, md)
}

/// The gRPC code of a script's error, from the Redis prefix its message starts with (the stable
/// NanoDB code of every script error is `INVALID_ARGUMENT`; the message says which it was):
/// `NOSCRIPT` (the SHA-1 is not cached: send the source) is `NOT_FOUND`, `BUSY` (ran past
/// `--script-timeout-ms`) `DEADLINE_EXCEEDED`, `TRYAGAIN` (in a cluster, other writes kept changing
/// its keys) and a script killed by SCRIPT KILL `ABORTED` (retry the call), and the script's own
/// errors (compiling, raised, past `--script-max-memory`) `INVALID_ARGUMENT`: as sent, the script
/// fails again.
pub fn script_code(message: &str) -> Code {
    match message.split(' ').next() {
        Some("NOSCRIPT") => Code::NotFound,
        Some("BUSY") => Code::DeadlineExceeded,
        Some("TRYAGAIN") => Code::Aborted,
        _ if message.contains("was killed by SCRIPT KILL") => Code::Aborted,
        _ => Code::InvalidArgument,
    }
}

/// How a command's typed output becomes its gRPC response message: one impl per command gRPC
/// serves, used by its RPC and by a batch operation of its kind alike (so the two cannot differ).
pub trait Respond: TypedCommand {
    /// The response message.
    type Response;
    /// The response carrying `out`.
    fn respond(out: Self::Output) -> Self::Response;
}

/// `Cmd => Response |out| body;` implements [`Respond`] for `cmd::Cmd`.
macro_rules! respond {
    ($($cmd:ident => $resp:ident |$o:pat_param| $body:expr;)*) => {$(
        impl Respond for cmd::$cmd {
            type Response = pb::$resp;

            fn respond($o: Self::Output) -> pb::$resp {
                $body
            }
        }
    )*};
}

/// A string entry's fields as the `found`, `value`, `version`, `ttl_ms` every string read answers
/// (zero values when the key is missing).
macro_rules! entry_response {
    ($resp:ident, $entry:expr) => {
        match $entry {
            Some(Entry { value, version, ttl_ms }) => pb::$resp { found: true, value, version, ttl_ms },
            None => pb::$resp { found: false, ..Default::default() },
        }
    };
}

respond! {
    Ping => PingResponse |Pong| pb::PingResponse {};
    Get => GetResponse |e| get_response(e);
    Put => PutResponse |o| pb::PutResponse { applied: o.applied, version: o.version };
    GetSet => GetSetResponse |e| entry_response!(GetSetResponse, e);
    Delete => DeleteResponse |deleted| pb::DeleteResponse { deleted };
    DeleteIf => DeleteIfResponse |deleted| pb::DeleteIfResponse { deleted };
    Exists => ExistsResponse |exists| pb::ExistsResponse { exists };
    Incr => IncrResponse |value| pb::IncrResponse { value };
    Expire => ExpireResponse |applied| pb::ExpireResponse { applied };
    // The engine's -2 (missing) becomes `found = false`; -1 (no expiry) stays.
    Ttl => TtlResponse |ms| match ms {
        -2 => pb::TtlResponse { found: false, ttl_ms: 0 },
        ttl_ms => pb::TtlResponse { found: true, ttl_ms },
    };
    Scan => ScanResponse |page| pb::ScanResponse {
        entries: page.entries.into_iter().map(key_value).collect(),
        next_cursor: page.next_cursor,
    };
    HashSet => HashSetResponse |created| pb::HashSetResponse { created };
    HashGet => HashGetResponse |v| pb::HashGetResponse { found: v.is_some(), value: v.unwrap_or_default() };
    HashDelete => HashDeleteResponse |deleted| pb::HashDeleteResponse { deleted };
    HashGetAll => HashGetAllResponse |pairs| pb::HashGetAllResponse {
        fields: pairs.into_iter().map(|(field, value)| pb::HashField { field, value }).collect(),
    };
    ListPush => ListPushResponse |n| pb::ListPushResponse { length: length(n) };
    ListPop => ListPopResponse |values| pb::ListPopResponse { values };
    ListRange => ListRangeResponse |values| pb::ListRangeResponse { values };
    KeyCount => KeyCountResponse |n| pb::KeyCountResponse { count: length(n) };
    GetDel => GetDelResponse |e| entry_response!(GetDelResponse, e);
    GetEx => GetExResponse |e| entry_response!(GetExResponse, e);
    Append => AppendResponse |n| pb::AppendResponse { length: length(n) };
    IncrFloat => IncrFloatResponse |value| pb::IncrFloatResponse { value };
    MultiPut => MultiPutResponse |applied| pb::MultiPutResponse { applied };
    // Always true: a missing source is NOT_FOUND.
    Rename => RenameResponse |_| pb::RenameResponse {};
    Publish => PublishResponse |n| pb::PublishResponse { receivers: length(n) };
    Type => TypeResponse |t| pb::TypeResponse { found: t.is_some(), r#type: key_type(t) as i32 };
    Flush => FlushResponse |n| pb::FlushResponse { removed: length(n) };
    RandomKey => RandomKeyResponse |k| pb::RandomKeyResponse { found: k.is_some(), key: k.unwrap_or_default() };
    HashIncr => HashIncrResponse |value| pb::HashIncrResponse { value };
    HashSetIfAbsent => HashSetIfAbsentResponse |created| pb::HashSetIfAbsentResponse { created };
    HashLen => HashLenResponse |n| pb::HashLenResponse { length: length(n) };
    ListLen => ListLenResponse |n| pb::ListLenResponse { length: length(n) };
    // Always true: a missing list is NOT_FOUND, an index out of range INVALID_ARGUMENT.
    ListSet => ListSetResponse |_| pb::ListSetResponse {};
    ListTrim => ListTrimResponse |_| pb::ListTrimResponse {};
    GetRange => GetRangeResponse |value| pb::GetRangeResponse { value };
    Eval => EvalResponse |v| pb::EvalResponse { value: Some(script_value(v)) };
}

/// A script's reply as the flat `ScriptValue` message (one message per nesting level).
pub fn script_value(v: ScriptValue) -> pb::ScriptValue {
    use pb::ScriptValueKind as K;
    let of = |kind: K| pb::ScriptValue { kind: kind as i32, ..Default::default() };
    match v {
        ScriptValue::Nil => of(K::Nil),
        ScriptValue::Int(integer) => pb::ScriptValue { integer, ..of(K::Integer) },
        ScriptValue::Bulk(bulk) => pb::ScriptValue { bulk, ..of(K::Bulk) },
        ScriptValue::Status(text) => pb::ScriptValue { text, ..of(K::Status) },
        ScriptValue::Error(text) => pb::ScriptValue { text, ..of(K::Error) },
        ScriptValue::Array(items) => {
            pb::ScriptValue { items: items.into_iter().map(script_value).collect(), ..of(K::Array) }
        }
    }
}

/// `GetResponse` for a present or missing key.
pub fn get_response(entry: Option<Entry>) -> pb::GetResponse {
    entry_response!(GetResponse, entry)
}

/// A key type as the proto enum; `UNSPECIFIED` for none.
fn key_type(t: Option<KeyType>) -> pb::KeyType {
    match t {
        Some(KeyType::String) => pb::KeyType::String,
        Some(KeyType::Hash) => pb::KeyType::Hash,
        Some(KeyType::List) => pb::KeyType::List,
        None => pb::KeyType::Unspecified,
    }
}

/// One scan entry.
pub fn key_value(e: ScanEntry) -> pb::KeyValue {
    let t = key_type(e.key_type);
    pb::KeyValue { key: e.key, value: e.value, version: e.version, ttl_ms: e.ttl_ms, r#type: t as i32 }
}

/// A count or length as the proto's unsigned field (the engine never reports a negative one).
pub fn length(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The response of command `C` to the dynamic reply a batch gave one of its operations.
fn respond_to<C: Respond>(reply: Reply) -> Result<C::Response, Reply>
where
    C::Output: FromReply,
{
    C::Output::from_reply(reply).map(C::respond)
}

/// Declares the kinds of batch operation: each is a variant of `Operation.op` and of
/// `OperationResult.result` and the command it carries, all three named alike.
macro_rules! op_kinds {
    ($($kind:ident),* $(,)?) => {
        /// The kind of a batch operation, kept beside it so its reply can be encoded as the
        /// matching `OperationResult` (several kinds reply with a bool).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum OpKind {
            $( #[doc = concat!("`Operation.", stringify!($kind), "`.")] $kind, )*
        }

        impl OpKind {
            /// Every kind, in declaration order.
            #[cfg(test)]
            const ALL: &[OpKind] = &[$(Self::$kind),*];

            /// The command an operation of this kind runs.
            fn command(self) -> CommandName {
                match self {
                    $( Self::$kind => CommandName::$kind, )*
                }
            }

            /// The kind of an operation; `None` when no operation is set (the conversion rejects
            /// those).
            pub fn of(op: &pb::Operation) -> Option<Self> {
                use pb::operation::Op;
                Some(match op.op.as_ref()? {
                    $( Op::$kind(_) => Self::$kind, )*
                })
            }

            /// A successful operation's result: its reply as the kind's typed output, encoded
            /// as the kind's RPC encodes it; the reply back if its shape is not the kind's.
            fn outcome(self, reply: Reply) -> Result<pb::operation_result::Result, Reply> {
                use pb::operation_result::Result as R;
                Ok(match self {
                    $( Self::$kind => R::$kind(respond_to::<cmd::$kind>(reply)?), )*
                })
            }
        }
    };
}

op_kinds! {
    Get, Put, GetSet, Delete, DeleteIf, Exists, Incr, Expire, Ttl, Scan, HashSet, HashGet, HashDelete,
    HashGetAll, ListPush, ListPop, ListRange, KeyCount, GetDel, GetEx, Append, IncrFloat, MultiPut,
    Rename, Type, Flush, RandomKey, HashIncr, HashSetIfAbsent, HashLen, ListLen, ListSet, ListTrim,
    GetRange,
}

/// One batch result: the outcome matching the operation's kind, or its error in the stable form.
/// A reply whose shape is not its kind's would be an engine bug: the one place it is caught, it
/// is logged and the operation reported as INTERNAL.
pub fn operation_result(kind: OpKind, result: Result<Reply, Error>) -> pb::OperationResult {
    use pb::operation_result::Result as R;
    let r = match result.map(|reply| kind.outcome(reply)) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reply)) => {
            error!(
                op = kind.command().as_str(),
                ?reply,
                "grpc: the engine answered with a reply of the wrong kind"
            );
            R::Error(error_message(&Error::Internal))
        }
        Err(e) => R::Error(error_message(&e)),
    };
    pb::OperationResult { result: Some(r) }
}

/// An error as the `Error` message of a batch result (same code name and message as [`status`]).
pub fn error_message(e: &Error) -> pb::Error {
    let s = status(e);
    pb::Error { code: e.code().as_str().into(), message: s.message().into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script's error keeps its Redis text; its gRPC code comes from the text's prefix.
    #[test]
    fn script_errors_map_by_their_prefix() {
        for (message, want) in [
            ("NOSCRIPT No matching script. Please use EVAL.", Code::NotFound),
            ("BUSY script abc ran past --script-timeout-ms (5 ms) and was stopped", Code::DeadlineExceeded),
            ("TRYAGAIN keys the script touched were changed", Code::Aborted),
            ("ERR script abc was killed by SCRIPT KILL; nothing it wrote was kept", Code::Aborted),
            ("ERR user_script:2: attempt to index local 'x' script: abc", Code::InvalidArgument),
            ("OOM script abc allocated past --script-max-memory", Code::InvalidArgument),
        ] {
            let s = status(&Error::Script(message.into()));
            assert_eq!((s.code(), s.message()), (want, message));
            assert_eq!(
                s.metadata().get(ERROR_CODE_METADATA).map(|v| v.as_bytes()),
                Some(&b"INVALID_ARGUMENT"[..])
            );
        }
    }

    #[test]
    fn every_code_maps_and_internal_leaks_nothing() {
        for c in ErrorCode::ALL {
            // Every code has a mapping, and no NanoDB error is reported as OK or UNKNOWN.
            assert!(!matches!(code(c), Code::Ok | Code::Unknown), "{c}");
        }
        let s = status(&Error::ValueTooLarge { len: 10, max: 4 });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("max_value_len") && s.message().contains('4'), "{}", s.message());
        assert_eq!(
            s.metadata().get(ERROR_CODE_METADATA).map(|v| v.to_str().ok()),
            Some(Some("VALUE_TOO_LARGE"))
        );
        assert_eq!(status(&Error::WrongType).code(), Code::FailedPrecondition);
        assert_eq!(status(&Error::NotAnInteger).code(), Code::InvalidArgument);
        assert_eq!(status(&Error::Overflow).code(), Code::OutOfRange);
        assert_eq!(status(&Error::ShuttingDown).code(), Code::Unavailable);
        assert_eq!(status(&Error::Busy).code(), Code::ResourceExhausted);
        let remote = Error::Remote { code: ErrorCode::Internal, message: "disk on fire at /dev/sda".into() };
        assert_eq!(status(&remote).message(), "internal error");
    }

    #[test]
    fn batch_results_follow_the_operation_kind() {
        let r = operation_result(OpKind::Expire, Ok(Reply::Bool(true)));
        assert_eq!(
            r.result,
            Some(pb::operation_result::Result::Expire(pb::ExpireResponse { applied: true }))
        );
        let r = operation_result(OpKind::Incr, Err(Error::NotAnInteger));
        let Some(pb::operation_result::Result::Error(e)) = r.result else { panic!("{r:?}") };
        assert_eq!(e.code, "NOT_AN_INTEGER");
        let r = operation_result(OpKind::Get, Ok(Reply::Bool(true)));
        assert!(matches!(r.result, Some(pb::operation_result::Result::Error(e)) if e.code == "INTERNAL"));
        // Kinds that answer alike are told apart by the operation, not the reply.
        let r = operation_result(OpKind::ListTrim, Ok(Reply::Bool(true)));
        assert_eq!(r.result, Some(pb::operation_result::Result::ListTrim(pb::ListTrimResponse {})));
        let r = operation_result(OpKind::Type, Ok(Some(KeyType::Hash).into()));
        let want = pb::TypeResponse { found: true, r#type: pb::KeyType::Hash as i32 };
        assert_eq!(r.result, Some(pb::operation_result::Result::Type(want)));
        let r = operation_result(OpKind::Ttl, Ok(Reply::Int(-2)));
        let want = pb::TtlResponse { found: false, ttl_ms: 0 };
        assert_eq!(r.result, Some(pb::operation_result::Result::Ttl(want)));
    }

    /// A batch can carry every data command: every command but those that are not about keys,
    /// transactions (a group of their own, which a batch does not nest) and scripts (likewise).
    #[test]
    fn every_data_command_is_a_batch_kind() {
        use std::collections::BTreeSet;
        let kinds: BTreeSet<CommandName> = OpKind::ALL.iter().map(|k| k.command()).collect();
        let data: BTreeSet<CommandName> = CommandName::ALL
            .iter()
            .copied()
            .filter(|c| {
                !matches!(
                    c,
                    CommandName::Ping
                        | CommandName::Publish
                        | CommandName::Batch
                        | CommandName::Txn
                        | CommandName::Eval
                )
            })
            .collect();
        assert_eq!(kinds, data);
    }
}
