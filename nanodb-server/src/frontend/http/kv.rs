//! String keys over REST: `GET/HEAD/PUT/DELETE /v1/kv/{key}`, the string commands as suffixes of
//! the key (`POST /v1/kv/{key}/incr`, `/incr-float`, `/append`, `/getset`, `/getdel`, `/getex`),
//! `GET /v1/kv` (scan pages) and `POST /v1/kv` (several keys at once).
//!
//! A key is one whole path segment (`/` travels as `%2F`), so a suffix after it never shadows a
//! key. Routes that answer a string value answer it like `GET`: the raw value with its ETag and
//! TTL, or JSON with `Accept: application/json`; the raw path is kept lean: the value's `Bytes`
//! become the body without a copy.

use axum::body::Body as AxBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nanodb_protocol::{Entry, Error, Expiry, KeyType, PutCondition, ScanEntry, cmd};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Call;
use super::error::{AppError, ErrorBody, json_response};
use super::extract::{
    Body, Encoding, JsonBody, Precondition, Q, Seg, WantsJson, decode_bytes, decode_cursor, encode_bytes,
    encode_cursor,
};
use super::hash_list::LengthJson;
use super::{BinaryBody, TTL_HEADER};

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
    pub(super) fn new(key: &[u8], e: &Entry) -> Self {
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

pub(super) fn etag(version: u64) -> HeaderValue {
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
pub async fn get(s: Call, Seg(key): Seg<3>, WantsJson(json): WantsJson) -> Response {
    // The key is kept (a refcount, not a copy) only when the JSON body repeats it.
    let (key, json_key) = if json { (key.clone(), Some(key)) } else { (key, None) };
    match s.exec(cmd::Get { key }).await {
        Ok(Some(e)) => entry_response(json_key, e),
        Ok(None) => AppError::not_found().into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// A string value as `GET` answers it: the raw value with its ETag (and `X-TTL-Ms` when it
/// expires), or [`EntryJson`] when `json_key` holds the key (the client sent `Accept:
/// application/json`).
fn entry_response(json_key: Option<Bytes>, entry: Entry) -> Response {
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
    s: Call,
    Seg(key): Seg<3>,
    Precondition(condition): Precondition,
    Q(params): Q<PutParams>,
    Body(value): Body,
) -> Result<Response, AppError> {
    let put = cmd::Put { key, value, expiry: Expiry::from_put_ttl_ms(params.ttl_ms), condition };
    let outcome = s.exec(put).await?;
    if !outcome.applied {
        return Err(condition_failed(condition, outcome.version));
    }
    // The engine says whether this write created the key, at the instant it applied it.
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut r = json_response(status, &VersionJson { version: outcome.version });
    r.headers_mut().insert(header::ETAG, etag(outcome.version));
    Ok(r)
}

/// Why a write under `condition` did not apply to a key whose version is `version` (0: missing).
fn condition_failed(condition: PutCondition, version: u64) -> AppError {
    AppError::from(match condition {
        PutCondition::IfAbsent => Error::ConditionFailed("the key exists (If-None-Match: *)".into()),
        _ if version == 0 => Error::ConditionFailed("the key does not exist (If-Match)".into()),
        _ => Error::ConditionFailed(format!("the key's version is {version} (If-Match)")),
    })
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
    s: Call,
    Seg(key): Seg<3>,
    Precondition(condition): Precondition,
) -> Result<StatusCode, AppError> {
    let (deleted, conditional) = match condition {
        PutCondition::Always => (s.exec(cmd::Delete { key }).await?, false),
        PutCondition::IfPresent => (s.exec(cmd::Delete { key }).await?, true),
        PutCondition::IfVersion(version) => (s.exec(cmd::DeleteIf { key, version }).await?, true),
        PutCondition::IfAbsent => return Err(AppError::invalid("If-None-Match is not supported on DELETE")),
    };
    match (deleted, conditional) {
        (true, _) => Ok(StatusCode::NO_CONTENT),
        (false, true) => Err(AppError::condition_failed("If-Match did not hold")),
        (false, false) => Err(AppError::not_found()),
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

pub(super) fn one() -> i64 {
    1
}

/// Adds `by` to an integer value (a missing key counts as 0).
#[utoipa::path(post, path = "/v1/kv/{key}/incr", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), IncrParams),
    responses(
        (status = 200, description = "The new value", body = IntJson),
        (status = 409, description = "Not an integer, overflow, or not a string key", body = ErrorBody),
    ))]
pub async fn incr(s: Call, Seg(key): Seg<3>, Q(p): Q<IncrParams>) -> Result<Response, AppError> {
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
pub async fn scan(s: Call, Q(p): Q<ScanParams>) -> Result<Response, AppError> {
    let cursor = decode_cursor(&p.cursor)?;
    let scan = cmd::Scan { prefix: Bytes::from(p.prefix.into_bytes()), limit: p.limit, cursor };
    let page = s.exec(scan).await?;
    Ok(json_response(StatusCode::OK, &ScanPage::new(page, p.keys_only)?))
}

impl ScanPage {
    /// The JSON form of an engine page (also a batch's `scan` result).
    pub(super) fn new(page: nanodb_protocol::ScanPage, keys_only: bool) -> Result<Self, AppError> {
        let items = page.entries.iter().map(|e| ScanItem::new(e, keys_only)).collect::<Result<_, _>>()?;
        let next_cursor = (!page.next_cursor.is_empty()).then(|| encode_cursor(&page.next_cursor));
        Ok(Self { items, next_cursor })
    }
}

impl ScanItem {
    fn new(e: &ScanEntry, keys_only: bool) -> Result<Self, AppError> {
        // The engine types every entry; only a TCP-decoded entry lacks one.
        let key_type = e.key_type.ok_or_else(|| AppError::internal("scan entry without a type"))?;
        let (key, key_encoding) = encode_bytes(&e.key);
        let (value, encoding) = if keys_only { (None, None) } else { Some(encode_bytes(&e.value)).unzip() };
        Ok(Self {
            key,
            key_encoding,
            key_type: key_type.into(),
            value,
            encoding,
            version: e.version,
            ttl_ms: (e.ttl_ms >= 0).then_some(e.ttl_ms),
        })
    }
}

/// `?ttl_ms=N` or `?keep_ttl=true` on a getset.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetSetParams {
    /// Time to live in milliseconds of the new value; absent or 0 for none (as on PUT).
    #[serde(default)]
    pub ttl_ms: u64,
    /// Keep the key's current TTL instead (not with `ttl_ms`).
    #[serde(default)]
    pub keep_ttl: bool,
}

/// Writes a string key like PUT and answers the value it replaced.
#[utoipa::path(post, path = "/v1/kv/{key}/getset", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), GetSetParams,
        ("If-Match" = Option<String>, Header, description = "`*`: replace only; `\"<version>\"`: replace only that version"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only")),
    request_body(content = BinaryBody, content_type = "application/octet-stream", description = "The new value, byte for byte"),
    responses(
        (status = 200, description = "Written; the previous value as GET answers it (raw, its ETag and X-TTL-Ms; JSON with Accept: application/json)",
            content((BinaryBody = "application/octet-stream"), (EntryJson = "application/json"))),
        (status = 204, description = "Written; the key did not exist"),
        (status = 400, description = "Bad parameter or header", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list (nothing written)", body = ErrorBody),
        (status = 412, description = "If-Match / If-None-Match did not hold (nothing written)", body = ErrorBody),
        (status = 413, description = "Key or value over its limit", body = ErrorBody),
    ))]
pub async fn get_set(
    s: Call,
    Seg(key): Seg<3>,
    Precondition(condition): Precondition,
    Q(p): Q<GetSetParams>,
    WantsJson(json): WantsJson,
    Body(value): Body,
) -> Result<Response, AppError> {
    let expiry = write_expiry_of(p.ttl_ms, p.keep_ttl)?;
    let json_key = json.then(|| key.clone());
    let previous = s.exec(cmd::GetSet { key, value, expiry, condition }).await?;
    // The engine applied the write exactly when the condition held for the value it answers.
    let version = previous.as_ref().map_or(0, |e| e.version);
    if !condition.holds(previous.is_some(), version) {
        return Err(condition_failed(condition, version));
    }
    Ok(match previous {
        Some(e) => entry_response(json_key, e),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Reads a string key and removes it.
#[utoipa::path(post, path = "/v1/kv/{key}/getdel", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    responses(
        (status = 200, description = "Removed; the value as GET answers it",
            content((BinaryBody = "application/octet-stream"), (EntryJson = "application/json"))),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list (nothing removed)", body = ErrorBody),
    ))]
pub async fn get_del(s: Call, Seg(key): Seg<3>, WantsJson(json): WantsJson) -> Result<Response, AppError> {
    let json_key = json.then(|| key.clone());
    let entry = s.exec(cmd::GetDel { key }).await?.ok_or_else(AppError::not_found)?;
    Ok(entry_response(json_key, entry))
}

/// A new time to live: exactly one of `ttl_ms`, `at_ms` or `persist: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiryJson {
    /// Expire this many milliseconds from now (> 0).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Expire at this Unix time in milliseconds (> 0; a time already past removes the key).
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// `true`: remove the TTL.
    #[serde(default)]
    pub persist: bool,
}

impl ExpiryJson {
    /// The one [`Expiry`] this body names; the command model then checks its value.
    pub(super) fn expiry(&self) -> Result<Expiry, AppError> {
        expiry_of(self.ttl_ms, self.at_ms, self.persist)
    }
}

/// The TTL of a write that can keep the current one (GETSET's query and the batch's `get_set`):
/// `ttl_ms` as on PUT (0 for none), or `keep_ttl`, not both.
pub(super) fn write_expiry_of(ttl_ms: u64, keep_ttl: bool) -> Result<Expiry, AppError> {
    match (ttl_ms, keep_ttl) {
        (ms, false) => Ok(Expiry::from_put_ttl_ms(ms)),
        (0, true) => Ok(Expiry::Keep),
        (_, true) => Err(AppError::invalid("send ttl_ms or keep_ttl, not both")),
    }
}

/// Exactly one of a relative TTL, an absolute deadline or persist (the expire body, and the
/// batch's `expire` and `get_ex` operations).
pub(super) fn expiry_of(ttl_ms: Option<u64>, at_ms: Option<u64>, persist: bool) -> Result<Expiry, AppError> {
    match (ttl_ms, at_ms, persist) {
        (Some(ms), None, false) => Ok(Expiry::In(ms)),
        (None, Some(ms), false) => Ok(Expiry::At(ms)),
        (None, None, true) => Ok(Expiry::Persist),
        _ => Err(AppError::invalid("give exactly one of ttl_ms, at_ms or \"persist\": true")),
    }
}

/// Reads a string key and changes its TTL.
#[utoipa::path(post, path = "/v1/kv/{key}/getex", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    request_body(content = ExpiryJson, description = "The new TTL: exactly one of ttl_ms, at_ms, persist"),
    responses(
        (status = 200, description = "The value as GET answers it, with its new TTL",
            content((BinaryBody = "application/octet-stream"), (EntryJson = "application/json"))),
        (status = 400, description = "Not exactly one of ttl_ms, at_ms, persist; or a zero time", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list", body = ErrorBody),
    ))]
pub async fn get_ex(
    s: Call,
    Seg(key): Seg<3>,
    WantsJson(json): WantsJson,
    JsonBody(body): JsonBody<ExpiryJson>,
) -> Result<Response, AppError> {
    let expiry = body.expiry()?;
    let json_key = json.then(|| key.clone());
    let entry = s.exec(cmd::GetEx { key, expiry }).await?.ok_or_else(AppError::not_found)?;
    Ok(entry_response(json_key, entry))
}

/// Appends the body to a string (a missing key counts as empty).
#[utoipa::path(post, path = "/v1/kv/{key}/append", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    request_body(content = BinaryBody, content_type = "application/octet-stream", description = "The bytes to append"),
    responses(
        (status = 200, description = "The value's new length in bytes", body = LengthJson),
        (status = 409, description = "The key holds a hash or a list", body = ErrorBody),
        (status = 413, description = "Key, body or resulting value over its limit", body = ErrorBody),
    ))]
pub async fn append(s: Call, Seg(key): Seg<3>, Body(value): Body) -> Result<Response, AppError> {
    let length = s.exec(cmd::Append { key, value }).await?;
    Ok(json_response(StatusCode::OK, &LengthJson { length }))
}

/// `?start=N&end=M` on a range read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First byte offset; negative counts from the end (-1 is the last byte).
    pub start: i64,
    /// Last byte offset, inclusive; negative counts from the end; past the end stops at the last.
    pub end: i64,
}

/// Reads bytes `start..=end` of a string (Redis GETRANGE): the raw bytes, empty when the key is
/// missing or the range holds none.
#[utoipa::path(get, path = "/v1/kv/{key}/range", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), RangeParams),
    responses(
        (status = 200, description = "The bytes of the range, raw", content_type = "application/octet-stream", body = BinaryBody),
        (status = 400, description = "A missing or non-integer offset", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list", body = ErrorBody),
    ))]
pub async fn get_range(s: Call, Seg(key): Seg<3>, Q(p): Q<RangeParams>) -> Result<Response, AppError> {
    let bytes = s.exec(cmd::GetRange { key, start: p.start, end: p.end }).await?;
    let mut r = Response::new(AxBody::from(bytes));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(r)
}

/// `?by=X` on a floating-point increment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncrFloatParams {
    /// The amount, as decimal text (`1.5`, `-2`, `3e2`; finite).
    pub by: String,
}

/// A floating-point result.
#[derive(Debug, Serialize, ToSchema)]
pub struct FloatJson {
    /// The value after the operation, as the text now stored (what `GET` returns): exact, where
    /// a JSON number could be re-rounded by a client's parser.
    pub value: String,
}

/// Adds a decimal amount to a number held as a string (a missing key counts as 0).
#[utoipa::path(post, path = "/v1/kv/{key}/incr-float", tag = "kv",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes"), IncrFloatParams),
    responses(
        (status = 200, description = "The new value, as stored", body = FloatJson),
        (status = 400, description = "`by` or the stored value is not a finite number", body = ErrorBody),
        (status = 409, description = "The key holds a hash or a list", body = ErrorBody),
    ))]
pub async fn incr_float(s: Call, Seg(key): Seg<3>, Q(p): Q<IncrFloatParams>) -> Result<Response, AppError> {
    let text = s.exec(cmd::IncrFloat { key, delta: Bytes::from(p.by.into_bytes()) }).await?;
    // The engine formats a finite f64: ASCII digits, sign, point and exponent.
    let value = String::from_utf8_lossy(&text).into_owned();
    Ok(json_response(StatusCode::OK, &FloatJson { value }))
}

/// A key and a value (`encoding` applies to both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairJson {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// How `key` and `value` are written.
    #[serde(default)]
    pub encoding: Encoding,
}

impl PairJson {
    fn decode(self) -> Result<(Bytes, Bytes), AppError> {
        Ok((
            decode_bytes(&self.key, self.encoding, "key")?,
            decode_bytes(&self.value, self.encoding, "value")?,
        ))
    }
}

/// Several string keys to write at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultiPutJson {
    /// The keys and values, written in order (a repeated key ends with its last value).
    pub pairs: Vec<PairJson>,
}

/// Decodes the pairs of a multi-put, refusing too many before decoding any (the command model
/// would refuse them too, after the decoding).
pub(super) fn decode_pairs(pairs: Vec<PairJson>, max: usize) -> Result<Vec<(Bytes, Bytes)>, AppError> {
    if pairs.len() > max {
        let e = Error::LimitExceeded {
            what: "pairs in one multi-put",
            len: pairs.len(),
            max,
            setting: "max_batch_len",
        };
        return Err(e.into());
    }
    pairs.into_iter().map(PairJson::decode).collect()
}

/// Writes several string keys at once (replacing keys of any type), clearing their TTLs;
/// `If-None-Match: *` writes them only if none of them exists.
#[utoipa::path(post, path = "/v1/kv", tag = "kv",
    params(("If-None-Match" = Option<String>, Header, description = "`*`: write nothing if any of the keys exists")),
    request_body(content = MultiPutJson, description = "The pairs"),
    responses(
        (status = 204, description = "Every key written"),
        (status = 400, description = "Bad JSON, no pairs, more than max_batch_len pairs, or If-Match", body = ErrorBody),
        (status = 412, description = "If-None-Match: * and a key exists (nothing written)", body = ErrorBody),
        (status = 413, description = "A key or value over its limit (nothing written)", body = ErrorBody),
    ))]
pub async fn multi_put(
    s: Call,
    Precondition(condition): Precondition,
    JsonBody(body): JsonBody<MultiPutJson>,
) -> Result<StatusCode, AppError> {
    let only_if_none_exist = match condition {
        PutCondition::Always => false,
        PutCondition::IfAbsent => true,
        PutCondition::IfPresent | PutCondition::IfVersion(_) => {
            return Err(AppError::invalid("If-Match is not supported on POST /v1/kv"));
        }
    };
    let pairs = decode_pairs(body.pairs, s.ctx.engine.limits().max_batch_len)?;
    if s.exec(cmd::MultiPut { pairs, only_if_none_exist }).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::condition_failed("a key exists (If-None-Match: *)"))
    }
}
