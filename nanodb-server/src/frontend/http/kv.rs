//! String keys over REST: `GET/HEAD/PUT/DELETE /v1/kv/{key}`, `POST /v1/kv/{key}/incr`,
//! `GET /v1/kv` (scan pages) and `POST /v1/batch`.
//!
//! The raw path (`GET` without `Accept: application/json`) is kept lean: the value's `Bytes` become
//! the body without a copy, and only the ETag (and TTL when set) are added.

use axum::body::Body as AxBody;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nanodb_protocol::{Command, Entry, Error, Expiry, KeyType, PutCondition, Reply, cmd};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AppError, ErrorBody, json_response};
use super::extract::{
    Body, Encoding, JsonBody, Precondition, Q, Seg, WantsJson, decode_bytes, decode_cursor, encode_bytes,
    encode_cursor,
};
use super::{AppState, BinaryBody, TTL_HEADER};

/// A string value as JSON (`Accept: application/json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryJson {
    /// The key (UTF-8 text, or base64 when `key_encoding` says so).
    pub key: String,
    /// How `key` is written.
    pub key_encoding: Encoding,
    /// The value (UTF-8 text, or base64 when `encoding` says so).
    pub value: String,
    /// How `value` is written.
    pub encoding: Encoding,
    /// The key's version (also its ETag).
    pub version: u64,
    /// Milliseconds until the key expires; null when it does not.
    pub ttl_ms: Option<i64>,
}

impl EntryJson {
    fn new(key: &[u8], e: &Entry) -> Self {
        let (key, key_encoding) = encode_bytes(key);
        let (value, encoding) = encode_bytes(&e.value);
        let ttl_ms = (e.ttl_ms >= 0).then_some(e.ttl_ms);
        Self { key, key_encoding, value, encoding, version: e.version, ttl_ms }
    }
}

/// The version a write produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionJson {
    /// The key's new version (also returned as the ETag).
    pub version: u64,
}

/// An integer result.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntJson {
    /// The value after the operation.
    pub value: i64,
}

fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value; `from_maybe_shared` takes the buffer
    // without copying it again.
    HeaderValue::from_maybe_shared(Bytes::from(format!("\"{version}\"")))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Reads a string key: the raw value, or JSON with `Accept: application/json`.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded (`/` as %2F); any bytes")),
    responses(
        (status = 200, description = "The raw value; ETag is the version, X-TTL-Ms the remaining TTL when the key expires",
            content((BinaryBody = "application/octet-stream"), (EntryJson = "application/json"))),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list", body = ErrorBody),
    ))]
pub async fn get(State(s): State<AppState>, Seg(key): Seg<3>, WantsJson(json): WantsJson) -> Response {
    // The key is kept (a refcount, not a copy) only when the JSON body repeats it.
    let (key, json_key) = if json { (key.clone(), Some(key)) } else { (key, None) };
    let entry = match s.exec(cmd::Get { key }).await {
        Ok(Some(e)) => e,
        Ok(None) => return AppError::not_found().into_response(),
        Err(e) => return AppError::from(e).into_response(),
    };
    let mut r = if let Some(key) = json_key {
        json_response(StatusCode::OK, &EntryJson::new(&key, &entry))
    } else {
        let mut r = Response::new(AxBody::from(entry.value));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        r
    };
    r.headers_mut().insert(header::ETAG, etag(entry.version));
    if entry.ttl_ms >= 0 {
        r.headers_mut().insert(TTL_HEADER, HeaderValue::from(entry.ttl_ms));
    }
    r
}

/// `?ttl_ms=N` on a PUT.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// Time to live in milliseconds; absent or 0 for none (a PUT clears any previous TTL).
    #[serde(default)]
    pub ttl_ms: u64,
}

/// Writes a string key; the body is the value, byte for byte.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), PutParams,
        ("If-Match" = Option<String>, Header, description = "`*`: replace only; `\"<version>\"`: replace only that version"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only")),
    request_body(content = BinaryBody, content_type = "application/octet-stream", description = "The value, byte for byte"),
    responses(
        (status = 201, description = "Created", body = VersionJson),
        (status = 200, description = "Replaced", body = VersionJson),
        (status = 400, description = "Bad parameter or header", body = ErrorBody),
        (status = 412, description = "If-Match / If-None-Match did not hold", body = ErrorBody),
        (status = 413, description = "Key or value over its limit", body = ErrorBody),
    ))]
pub async fn put(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Precondition(condition): Precondition,
    Q(params): Q<PutParams>,
    Body(value): Body,
) -> Result<Response, AppError> {
    let put = cmd::Put { key, value, expiry: Expiry::from_put_ttl_ms(params.ttl_ms), condition };
    let outcome = s.exec(put).await?;
    if !outcome.applied {
        return Err(AppError::from(match condition {
            PutCondition::IfAbsent => Error::ConditionFailed("the key exists (If-None-Match: *)".into()),
            _ if outcome.version == 0 => Error::ConditionFailed("the key does not exist (If-Match)".into()),
            _ => Error::ConditionFailed(format!("the key's version is {} (If-Match)", outcome.version)),
        }));
    }
    // The engine says whether this write created the key, at the instant it applied it.
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut r = json_response(status, &VersionJson { version: outcome.version });
    r.headers_mut().insert(header::ETAG, etag(outcome.version));
    Ok(r)
}

/// Removes a key of any type; `If-Match` makes it conditional.
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"),
        ("If-Match" = Option<String>, Header, description = "`*` or `\"<version>\"`: delete only if it matches")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 412, description = "If-Match did not hold", body = ErrorBody),
    ))]
pub async fn delete(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Precondition(condition): Precondition,
) -> Result<StatusCode, AppError> {
    let (cmd, conditional) = match condition {
        PutCondition::Always => (Command::Delete(cmd::Delete { key }), false),
        PutCondition::IfPresent => (Command::Delete(cmd::Delete { key }), true),
        PutCondition::IfVersion(version) => (Command::DeleteIf(cmd::DeleteIf { key, version }), true),
        PutCondition::IfAbsent => return Err(AppError::invalid("If-None-Match is not supported on DELETE")),
    };
    match s.exec(cmd).await? {
        Reply::Bool(true) => Ok(StatusCode::NO_CONTENT),
        Reply::Bool(false) if conditional => Err(AppError::condition_failed("If-Match did not hold")),
        _ => Err(AppError::not_found()),
    }
}

/// `?by=N` on an increment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncrParams {
    /// The signed amount; 1 when absent.
    #[serde(default = "one")]
    pub by: i64,
}

fn one() -> i64 {
    1
}

/// Adds `by` to an integer value (a missing key counts as 0).
#[utoipa::path(post, path = "/v1/kv/{key}/incr", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), IncrParams),
    responses(
        (status = 200, description = "The new value", body = IntJson),
        (status = 409, description = "Not an integer, overflow, or not a string key", body = ErrorBody),
    ))]
pub async fn incr(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Q(p): Q<IncrParams>,
) -> Result<Response, AppError> {
    let value = s.exec(cmd::Incr { key, delta: p.by }).await?;
    Ok(json_response(StatusCode::OK, &IntJson { value }))
}

/// Scan parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScanParams {
    /// Only keys starting with this (UTF-8) prefix; empty for all.
    #[serde(default)]
    pub prefix: String,
    /// Page size; absent or 0 for the server's default (`--default-scan-page`).
    #[serde(default)]
    pub limit: u32,
    /// The previous page's `next_cursor`; absent for the first page.
    #[serde(default)]
    pub cursor: String,
    /// Only list keys and versions, not values.
    #[serde(default)]
    pub keys_only: bool,
}

/// A key's type, named as Redis's TYPE names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyTypeJson {
    /// A string (integers written by incr included).
    String,
    /// A hash (read it with `GET /v1/hash/{key}`).
    Hash,
    /// A list (read it with `GET /v1/list/{key}`).
    List,
}

impl From<KeyType> for KeyTypeJson {
    fn from(t: KeyType) -> Self {
        match t {
            KeyType::String => Self::String,
            KeyType::Hash => Self::Hash,
            KeyType::List => Self::List,
        }
    }
}

/// One key of a scan page.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanItem {
    /// The key (UTF-8 text, or base64 when `key_encoding` says so).
    pub key: String,
    /// How `key` is written.
    pub key_encoding: Encoding,
    /// The key's type, also with `keys_only`.
    #[serde(rename = "type")]
    pub key_type: KeyTypeJson,
    /// The value of a string key (empty for hashes and lists: see `type`); absent with `keys_only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is written; absent with `keys_only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The key's version.
    pub version: u64,
    /// Milliseconds until the key expires; null when it does not.
    pub ttl_ms: Option<i64>,
}

/// One page of a scan.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanPage {
    /// The keys of this page.
    pub items: Vec<ScanItem>,
    /// Pass as `cursor` for the next page; null when the scan is complete.
    pub next_cursor: Option<String>,
}

/// Lists keys page by page; every key present for the whole scan is visited exactly once.
#[utoipa::path(get, path = "/v1/kv", tag = "kv", params(ScanParams),
    responses(
        (status = 200, description = "A page", body = ScanPage),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
    ))]
pub async fn scan(State(s): State<AppState>, Q(p): Q<ScanParams>) -> Result<Response, AppError> {
    let cursor = decode_cursor(&p.cursor)?;
    let scan = cmd::Scan { prefix: Bytes::from(p.prefix.into_bytes()), limit: p.limit, cursor };
    let nanodb_protocol::ScanPage { entries, next_cursor: next } = s.exec(scan).await?;
    let items = entries
        .into_iter()
        .map(|e| {
            // The engine types every entry; only a TCP-decoded entry lacks one.
            let key_type = e.key_type.ok_or_else(|| AppError::internal("scan entry without a type"))?;
            let (key, key_encoding) = encode_bytes(&e.key);
            let (value, encoding) =
                if p.keys_only { (None, None) } else { Some(encode_bytes(&e.value)).unzip() };
            Ok(ScanItem {
                key,
                key_encoding,
                key_type: key_type.into(),
                value,
                encoding,
                version: e.version,
                ttl_ms: (e.ttl_ms >= 0).then_some(e.ttl_ms),
            })
        })
        .collect::<Result<_, AppError>>()?;
    let next_cursor = (!next.is_empty()).then(|| encode_cursor(&next));
    Ok(json_response(StatusCode::OK, &ScanPage { items, next_cursor }))
}

/// One operation of a batch; `encoding` applies to its key and value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOp {
    /// Read a string key.
    Get {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Write a string key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// How `key` and `value` are written.
        #[serde(default)]
        encoding: Encoding,
        /// Time to live in ms; 0 for none.
        #[serde(default)]
        ttl_ms: u64,
        /// Create only.
        #[serde(default)]
        if_absent: bool,
        /// Replace only this version.
        #[serde(default)]
        if_version: Option<u64>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Add to an integer.
    Incr {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// The amount; 1 when absent.
        #[serde(default = "one")]
        by: i64,
    },
    /// Whether a key exists.
    Exists {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
}

impl BatchOp {
    fn into_command(self) -> Result<Command, AppError> {
        let key = |k: &str, e| decode_bytes(k, e, "key");
        Ok(match self {
            Self::Get { key: k, encoding } => Command::Get(cmd::Get { key: key(&k, encoding)? }),
            Self::Put { key: k, value, encoding, ttl_ms, if_absent, if_version } => {
                let condition = match (if_absent, if_version) {
                    (false, None) => PutCondition::Always,
                    (true, None) => PutCondition::IfAbsent,
                    (false, Some(v)) => PutCondition::IfVersion(v),
                    (true, Some(_)) => {
                        return Err(AppError::invalid("if_absent and if_version exclude each other"));
                    }
                };
                Command::Put(cmd::Put {
                    key: key(&k, encoding)?,
                    value: decode_bytes(&value, encoding, "value")?,
                    expiry: Expiry::from_put_ttl_ms(ttl_ms),
                    condition,
                })
            }
            Self::Delete { key: k, encoding } => Command::Delete(cmd::Delete { key: key(&k, encoding)? }),
            Self::Incr { key: k, encoding, by } => {
                Command::Incr(cmd::Incr { key: key(&k, encoding)?, delta: by })
            }
            Self::Exists { key: k, encoding } => Command::Exists(cmd::Exists { key: key(&k, encoding)? }),
        })
    }
}

/// The result of one batch operation: `{"ok": ...}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    /// The operation's answer: an entry or null (get), `{"applied","version"}` (put), a boolean
    /// (delete, exists) or an integer (incr).
    #[schema(value_type = Object)]
    Ok(serde_json::Value),
    /// Why the operation failed; the others still ran.
    Error(super::error::ErrorDetail),
}

fn batch_result(key: Option<Bytes>, r: Result<Reply, Error>) -> BatchResult {
    use serde_json::{Value, json};
    match r {
        Ok(Reply::Value(Some(e))) => {
            let entry = EntryJson::new(key.as_deref().unwrap_or_default(), &e);
            BatchResult::Ok(serde_json::to_value(entry).unwrap_or(Value::Null))
        }
        Ok(Reply::Value(None)) => BatchResult::Ok(Value::Null),
        Ok(Reply::Put { applied, version }) => {
            BatchResult::Ok(json!({"applied": applied, "version": version}))
        }
        Ok(Reply::Bool(b)) => BatchResult::Ok(Value::Bool(b)),
        Ok(Reply::Int(i)) => BatchResult::Ok(Value::from(i)),
        // A REST batch holds only the operations above, which answer only these shapes.
        Ok(other) => {
            BatchResult::Error(AppError::internal(format!("no JSON form for {other:?}")).body().error)
        }
        Err(e) => BatchResult::Error(AppError::from(e).body().error),
    }
}

/// Applies operations in order; one result each, in the same order.
#[utoipa::path(post, path = "/v1/batch", tag = "kv",
    request_body(content = Vec<BatchOp>, description = "Operations, applied in order"),
    responses(
        (status = 200, description = "One result per operation", body = Vec<BatchResult>),
        (status = 400, description = "Bad JSON or an invalid operation", body = ErrorBody),
    ))]
pub async fn batch(
    State(s): State<AppState>,
    JsonBody(ops): JsonBody<Vec<BatchOp>>,
) -> Result<Response, AppError> {
    if ops.len() > s.ctx.engine.limits().max_batch_len {
        // Refuse before decoding every operation; the engine would refuse it anyway.
        return Err(Error::LimitExceeded {
            what: "batch length",
            len: ops.len(),
            max: s.ctx.engine.limits().max_batch_len,
            setting: "max_batch_len",
        }
        .into());
    }
    let cmds = ops.into_iter().map(BatchOp::into_command).collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<Option<Bytes>> = cmds
        .iter()
        .map(|c| if let Command::Get(cmd::Get { key }) = c { Some(key.clone()) } else { None })
        .collect();
    let results = s.exec(cmd::Batch { ops: cmds }).await?;
    let out: Vec<BatchResult> = keys.into_iter().zip(results).map(|(k, r)| batch_result(k, r)).collect();
    Ok(json_response(StatusCode::OK, &out))
}
