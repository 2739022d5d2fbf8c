//! `POST /v1/eval`: a Lua script (Redis's EVAL and EVALSHA) as JSON, its reply as a JSON tree.
//!
//! The request names the script by its `source` or by the `sha1` of a cached one, with its `keys`
//! and `args`; `encoding` applies to every byte string it carries (source, keys, args), as an
//! operation's does in `/v1/batch`. The reply is [`ScriptValueJson`]: one flat object per level,
//! `kind` saying which field carries it, byte strings encoded as every REST reply encodes them
//! (UTF-8 text, or base64 with `encoding: base64` when the bytes are not UTF-8).

use axum::http::StatusCode;
use axum::response::Response;
use nanodb_protocol::{Error, ScriptSource, ScriptValue, cmd};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Call;
use super::error::{AppError, ErrorBody, json_response};
use super::extract::{Encoding, JsonBody, decode_bytes, encode_bytes};

/// A script to run and what it gets: exactly one of `source` and `sha1`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalBody {
    /// The Lua source (EVAL); the server caches it under its SHA-1.
    #[serde(default)]
    pub source: Option<String>,
    /// The lowercase hex SHA-1 of a cached source (EVALSHA); an unknown one is 404 with a message
    /// starting `NOSCRIPT`, and the client sends the source instead.
    #[serde(default)]
    pub sha1: Option<String>,
    /// The keys the script may touch (Lua's `KEYS`): they are what permissions check.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The script's arguments (Lua's `ARGV`).
    #[serde(default)]
    pub args: Vec<String>,
    /// How `source`, `keys` and `args` are written.
    #[serde(default)]
    pub encoding: Encoding,
}

/// Which field of a [`ScriptValueJson`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScriptKindJson {
    /// Null: Lua `nil` or `false`.
    Nil,
    /// `integer` (a Lua number, truncated; `true` is 1).
    Integer,
    /// `value` in `encoding`.
    Bulk,
    /// `text`: a table `{ok = ...}`.
    Status,
    /// `text`: a table `{err = ...}` inside an array (at top level it is the script's error,
    /// answered as an error response).
    Error,
    /// `items`: a Lua table up to its first nil.
    Array,
}

/// What a script returned, as Redis converts a Lua value into a reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptValueJson {
    /// Which field carries the value.
    pub kind: ScriptKindJson,
    /// The integer, for `integer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integer: Option<i64>,
    /// The bytes, for `bulk` (UTF-8 text, or base64 when `encoding` says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is written, for `bulk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The text, for `status` and `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The elements, for `array`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub items: Option<Vec<ScriptValueJson>>,
}

impl ScriptValueJson {
    fn of(kind: ScriptKindJson) -> Self {
        Self { kind, integer: None, value: None, encoding: None, text: None, items: None }
    }

    /// The JSON form of a script's reply.
    pub fn new(v: ScriptValue) -> Self {
        match v {
            ScriptValue::Nil => Self::of(ScriptKindJson::Nil),
            ScriptValue::Int(n) => Self { integer: Some(n), ..Self::of(ScriptKindJson::Integer) },
            ScriptValue::Bulk(b) => {
                let (value, encoding) = encode_bytes(&b);
                Self { value: Some(value), encoding: Some(encoding), ..Self::of(ScriptKindJson::Bulk) }
            }
            ScriptValue::Status(t) => Self { text: Some(t), ..Self::of(ScriptKindJson::Status) },
            ScriptValue::Error(t) => Self { text: Some(t), ..Self::of(ScriptKindJson::Error) },
            ScriptValue::Array(items) => Self {
                items: Some(items.into_iter().map(Self::new).collect()),
                ..Self::of(ScriptKindJson::Array)
            },
        }
    }
}

/// A script's reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalJson {
    /// The converted return value.
    pub value: ScriptValueJson,
}

/// The HTTP status of a script's error, from the Redis prefix its message starts with (its code is
/// `INVALID_ARGUMENT` on every protocol): `NOSCRIPT` is 404 (send the source), `BUSY` (ran past
/// `--script-timeout-ms`) 503 as a timeout is, `TRYAGAIN` (in a cluster, other writes kept
/// changing its keys) 409, the script's own errors 400.
fn script_error(e: Error) -> AppError {
    let status = match &e {
        Error::Script(m) if m.starts_with("NOSCRIPT") => Some(StatusCode::NOT_FOUND),
        Error::Script(m) if m.starts_with("BUSY") => Some(StatusCode::SERVICE_UNAVAILABLE),
        Error::Script(m) if m.starts_with("TRYAGAIN") => Some(StatusCode::CONFLICT),
        _ => None,
    };
    match status {
        Some(status) => AppError::with_status(status, e.code(), e.to_string()),
        None => e.into(),
    }
}

/// Runs a Lua script as one atomic group over the keys it declares: it may touch no other key, no
/// reader on any protocol sees part of what it writes, and a script that fails, runs past its
/// limits or is killed writes nothing.
#[utoipa::path(post, path = "/v1/eval", tag = "kv",
    request_body(content = EvalBody, description = "The script (source or sha1), its keys and arguments"),
    responses(
        (status = 200, description = "The script's converted reply", body = EvalJson),
        (status = 400, description = "Bad JSON, both or neither of source and sha1, a script that does not compile or raised an error (the message names the line), touched an undeclared key, or allocated past --script-max-memory; nothing written", body = ErrorBody),
        (status = 403, description = "The caller may not read and write every declared key", body = ErrorBody),
        (status = 404, description = "NOSCRIPT: no cached script has this sha1", body = ErrorBody),
        (status = 409, description = "TRYAGAIN (cluster mode): other writes kept changing the script's keys while it ran; nothing written, retry", body = ErrorBody),
        (status = 413, description = "A key, argument or source over its limit", body = ErrorBody),
        (status = 503, description = "The script ran past --script-timeout-ms (nothing written), or writes are unavailable", body = ErrorBody),
    ))]
pub async fn eval(s: Call, JsonBody(body): JsonBody<EvalBody>) -> Result<Response, AppError> {
    let max = s.ctx.engine.limits().max_batch_len;
    for (what, len) in [("keys of one script", body.keys.len()), ("arguments of one script", body.args.len())]
    {
        if len > max {
            // Refuse before decoding them all; validation would refuse it anyway.
            return Err(Error::LimitExceeded { what, len, max, setting: "max_batch_len" }.into());
        }
    }
    let enc = body.encoding;
    let script = match (body.source, body.sha1) {
        (Some(source), None) => ScriptSource::Text(decode_bytes(&source, enc, "source")?),
        (None, Some(sha)) => ScriptSource::Sha(sha.into()),
        _ => return Err(Error::InvalidArgument("a script sets exactly one of source, sha1".into()).into()),
    };
    let keys = body.keys.iter().map(|k| decode_bytes(k, enc, "key")).collect::<Result<_, _>>()?;
    let args = body.args.iter().map(|a| decode_bytes(a, enc, "arg")).collect::<Result<_, _>>()?;
    let value = s.exec(cmd::Eval { script, keys, args }).await.map_err(script_error)?;
    Ok(json_response(StatusCode::OK, &EvalJson { value: ScriptValueJson::new(value) }))
}
