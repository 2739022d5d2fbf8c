//! The gRPC side of the command model: [`Reply`] -> response messages, and the one mapping of
//! [`Error`] to a [`tonic::Status`].
//!
//! Requests become [`nanodb_protocol::Command`]s through the `TryFrom` impls in
//! `nanodb_protocol::convert` (they must live beside both types).

use nanodb_protocol::pb;
use nanodb_protocol::{Entry, Error, ErrorCode, KeyType, Reply, ScanEntry};
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
        ErrorCode::TooManyConnections | ErrorCode::Busy => Code::ResourceExhausted,
        ErrorCode::ShuttingDown | ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::Internal => Code::Internal,
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
    Status::with_metadata(code(c), message, md)
}

/// A reply of the wrong kind for the command: an engine bug. Logged; the client sees INTERNAL.
pub fn unexpected(op: &'static str, reply: &Reply) -> Status {
    error!(op, ?reply, "grpc: the engine answered with a reply of the wrong kind");
    status(&Error::Internal)
}

/// `GetResponse` for a present or missing key.
pub fn get_response(entry: Option<Entry>) -> pb::GetResponse {
    match entry {
        Some(Entry { value, version, ttl_ms }) => pb::GetResponse { found: true, value, version, ttl_ms },
        None => pb::GetResponse { found: false, ..Default::default() },
    }
}

/// One scan entry.
pub fn key_value(e: ScanEntry) -> pb::KeyValue {
    let key_type = match e.key_type {
        Some(KeyType::String) => pb::KeyType::String,
        Some(KeyType::Hash) => pb::KeyType::Hash,
        Some(KeyType::List) => pb::KeyType::List,
        None => pb::KeyType::Unspecified,
    };
    pb::KeyValue { key: e.key, value: e.value, version: e.version, ttl_ms: e.ttl_ms, r#type: key_type as i32 }
}

/// A list length as the proto's unsigned field (the engine never reports a negative one).
pub fn length(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The kind of a batch operation, kept beside it so its reply can be encoded as the matching
/// `OperationResult` (a delete and an expire both reply with a bool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `Operation.get`.
    Get,
    /// `Operation.put`.
    Put,
    /// `Operation.delete`.
    Delete,
    /// `Operation.incr`.
    Incr,
    /// `Operation.expire`.
    Expire,
}

impl OpKind {
    /// The kind of an operation; `None` when no operation is set (the conversion rejects those).
    pub fn of(op: &pb::Operation) -> Option<Self> {
        use pb::operation::Op;
        Some(match op.op.as_ref()? {
            Op::Get(_) => Self::Get,
            Op::Put(_) => Self::Put,
            Op::Delete(_) => Self::Delete,
            Op::Incr(_) => Self::Incr,
            Op::Expire(_) => Self::Expire,
        })
    }
}

/// One batch result: the outcome matching the operation's kind, or its error in the stable form.
pub fn operation_result(kind: OpKind, result: Result<Reply, Error>) -> pb::OperationResult {
    use pb::operation_result::Result as R;
    let r = match (kind, result) {
        (_, Err(e)) => R::Error(error_message(&e)),
        (OpKind::Get, Ok(Reply::Value(entry))) => R::Get(get_response(entry)),
        (OpKind::Put, Ok(Reply::Put { applied, version })) => R::Put(pb::PutResponse { applied, version }),
        (OpKind::Delete, Ok(Reply::Bool(deleted))) => R::Delete(pb::DeleteResponse { deleted }),
        (OpKind::Incr, Ok(Reply::Int(value))) => R::Incr(pb::IncrResponse { value }),
        (OpKind::Expire, Ok(Reply::Bool(applied))) => R::Expire(pb::ExpireResponse { applied }),
        (_, Ok(other)) => {
            let s = unexpected("batch", &other);
            R::Error(pb::Error { code: ErrorCode::Internal.as_str().into(), message: s.message().into() })
        }
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
    }
}
