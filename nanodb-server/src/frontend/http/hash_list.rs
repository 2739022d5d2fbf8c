//! Hashes and lists over REST, in the style of `/v1/kv`: raw bodies in, raw bodies out for single
//! values, JSON (UTF-8 or base64 per value) for collections.
//!
//! - `GET /v1/hash/{key}`: every field (`?len=true`: how many); `GET|PUT|DELETE
//!   /v1/hash/{key}/{field}`: one field (`PUT` with `If-None-Match: *`: only a new one);
//!   `POST /v1/hash/{key}/{field}/incr?by=N`.
//! - `GET /v1/list/{key}?start&stop`: a range (`?len=true`: the length); `POST
//!   /v1/list/{key}?end=back|front`: push the raw body as one value; `POST
//!   /v1/list/{key}/pop?end&count`: pop values; `PUT /v1/list/{key}/{index}`: replace one;
//!   `POST /v1/list/{key}/trim?start&stop`: keep a range.
//!
//! The segment after a hash's key is a field, and a field may be any bytes, `len` included: so a
//! hash's own operations never take a word there (its length is `?len=true` on the hash, its
//! increment a segment after the field). A list's segment after the key is an index, an integer,
//! so the words `pop` and `trim` there shadow no index; its length is `?len=true` like a hash's,
//! so that what works on one collection works on the other.

use axum::body::Body as AxBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use nanodb_protocol::cmd;
use nanodb_protocol::{ListEnd, PutCondition};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::BinaryBody;
use super::Call;
use super::error::{AppError, ErrorBody, json_response};
use super::extract::{Body, Encoding, Precondition, Q, Seg, encode_bytes};
use super::kv::{IncrParams, IntJson};

/// One value in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValueJson {
    /// The value (UTF-8 text, or base64 when `encoding` says so).
    pub value: String,
    /// How `value` is written.
    pub encoding: Encoding,
}

impl ValueJson {
    pub(super) fn new(b: &[u8]) -> Self {
        let (value, encoding) = encode_bytes(b);
        Self { value, encoding }
    }
}

/// One field of a hash in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldJson {
    /// The field name (UTF-8 text, or base64 when `field_encoding` says so).
    pub field: String,
    /// How `field` is written.
    pub field_encoding: Encoding,
    /// The value (UTF-8 text, or base64 when `encoding` says so).
    pub value: String,
    /// How `value` is written.
    pub encoding: Encoding,
}

/// Every field of a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct HashJson {
    /// The fields, in no particular order.
    pub fields: Vec<FieldJson>,
}

/// Whether a hash set created its field.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedJson {
    /// True when the field is new.
    pub created: bool,
}

/// A list's values.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListJson {
    /// The values, in list order.
    pub values: Vec<ValueJson>,
}

impl HashJson {
    pub(super) fn new(pairs: &[(Bytes, Bytes)]) -> Self {
        let fields = pairs
            .iter()
            .map(|(f, v)| {
                let (field, field_encoding) = encode_bytes(f);
                let (value, encoding) = encode_bytes(v);
                FieldJson { field, field_encoding, value, encoding }
            })
            .collect();
        Self { fields }
    }
}

/// A length: a list's after a push, a hash's or a list's with `?len=true`, a string's after an
/// append.
#[derive(Debug, Serialize, ToSchema)]
pub struct LengthJson {
    /// The length (fields of a hash, values of a list, bytes of a string).
    pub length: i64,
}

/// `?len=true` on a hash or a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LenParams {
    /// Answer only the length, `{"length": N}` (0 when the key is missing).
    #[serde(default)]
    pub len: bool,
}

/// A hash's fields, or with `?len=true` how many.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HashAnswer {
    /// Every field.
    Fields(HashJson),
    /// How many fields (`?len=true`).
    Length(LengthJson),
}

/// Reads every field of a hash (404 when the hash is missing), or with `?len=true` how many it
/// has (0 when missing).
#[utoipa::path(get, path = "/v1/hash/{key}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded; any bytes"), LenParams),
    responses(
        (status = 200, description = "The fields; with len=true, {\"length\": N}", body = HashAnswer),
        (status = 404, description = "No such hash (not with len=true)", body = ErrorBody),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
    ))]
pub async fn hash_get_all(s: Call, Seg(key): Seg<3>, Q(p): Q<LenParams>) -> Result<Response, AppError> {
    if p.len {
        let length = s.exec(cmd::HashLen { key }).await?;
        return Ok(json_response(StatusCode::OK, &HashAnswer::Length(LengthJson { length })));
    }
    let pairs = s.exec(cmd::HashGetAll { key }).await?;
    if pairs.is_empty() {
        // The engine removes emptied hashes, so no fields means no hash.
        return Err(AppError::not_found());
    }
    Ok(json_response(StatusCode::OK, &HashAnswer::Fields(HashJson::new(&pairs))))
}

/// Reads one hash field as the raw value.
#[utoipa::path(get, path = "/v1/hash/{key}/{field}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded"),
        ("field" = String, Path, description = "The field, percent-encoded")),
    responses(
        (status = 200, description = "The raw value", body = BinaryBody, content_type = "application/octet-stream"),
        (status = 404, description = "No such hash or field", body = ErrorBody),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
    ))]
pub async fn hash_get(s: Call, Seg(key): Seg<3>, Seg(field): Seg<4>) -> Result<Response, AppError> {
    match s.exec(cmd::HashGet { key, field }).await? {
        Some(v) => {
            let mut r = Response::new(AxBody::from(v));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            Ok(r)
        }
        None => Err(AppError::not_found()),
    }
}

/// Sets one hash field; the body is the value, byte for byte. `If-None-Match: *` sets it only
/// when the field does not exist (HSETNX).
#[utoipa::path(put, path = "/v1/hash/{key}/{field}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded"),
        ("field" = String, Path, description = "The field, percent-encoded"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if the field does not exist")),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "The field is new", body = CreatedJson),
        (status = 200, description = "The field was replaced", body = CreatedJson),
        (status = 400, description = "If-Match (fields have no versions) or a bad If-None-Match", body = ErrorBody),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
        (status = 412, description = "If-None-Match: * and the field exists (nothing written)", body = ErrorBody),
        (status = 413, description = "Over a size limit", body = ErrorBody),
    ))]
pub async fn hash_set(
    s: Call,
    Seg(key): Seg<3>,
    Seg(field): Seg<4>,
    Precondition(condition): Precondition,
    Body(value): Body,
) -> Result<Response, AppError> {
    let created = match condition {
        PutCondition::Always => s.exec(cmd::HashSet { key, field, value }).await?,
        PutCondition::IfAbsent => {
            if !s.exec(cmd::HashSetIfAbsent { key, field, value }).await? {
                return Err(AppError::condition_failed("the field exists (If-None-Match: *)"));
            }
            true
        }
        PutCondition::IfPresent | PutCondition::IfVersion(_) => {
            return Err(AppError::invalid("If-Match is not supported on hash fields"));
        }
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, &CreatedJson { created }))
}

/// Adds `by` to an integer hash field (a missing field counts as 0).
#[utoipa::path(post, path = "/v1/hash/{key}/{field}/incr", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded"),
        ("field" = String, Path, description = "The field, percent-encoded"), IncrParams),
    responses(
        (status = 200, description = "The field's new value", body = IntJson),
        (status = 409, description = "Not an integer, overflow, or the key is not a hash", body = ErrorBody),
    ))]
pub async fn hash_incr(
    s: Call,
    Seg(key): Seg<3>,
    Seg(field): Seg<4>,
    Q(p): Q<IncrParams>,
) -> Result<Response, AppError> {
    let value = s.exec(cmd::HashIncr { key, field, delta: p.by }).await?;
    Ok(json_response(StatusCode::OK, &IntJson { value }))
}

/// Removes one hash field.
#[utoipa::path(delete, path = "/v1/hash/{key}/{field}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded"),
        ("field" = String, Path, description = "The field, percent-encoded")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such hash or field", body = ErrorBody),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
    ))]
pub async fn hash_delete(s: Call, Seg(key): Seg<3>, Seg(field): Seg<4>) -> Result<StatusCode, AppError> {
    if s.exec(cmd::HashDelete { key, field }).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found())
    }
}

/// Which end of a list.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// The head (Redis's left).
    Front,
    /// The tail (Redis's right).
    #[default]
    Back,
}

impl From<End> for ListEnd {
    fn from(e: End) -> Self {
        match e {
            End::Front => ListEnd::Front,
            End::Back => ListEnd::Back,
        }
    }
}

/// Where to push.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushParams {
    /// `back` (default) or `front`.
    #[serde(default)]
    pub end: End,
}

/// Pushes the body, byte for byte, as one value.
#[utoipa::path(post, path = "/v1/list/{key}", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"), PushParams),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The list's new length", body = LengthJson),
        (status = 409, description = "The key is not a list", body = ErrorBody),
        (status = 413, description = "Over a size limit", body = ErrorBody),
    ))]
pub async fn list_push(
    s: Call,
    Seg(key): Seg<3>,
    Q(p): Q<PushParams>,
    Body(value): Body,
) -> Result<Response, AppError> {
    let length = s.exec(cmd::ListPush { key, end: p.end.into(), values: vec![value] }).await?;
    Ok(json_response(StatusCode::OK, &LengthJson { length }))
}

/// Which values to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First index (negative counts from the end); 0 when absent.
    #[serde(default)]
    pub start: i64,
    /// Last index, inclusive (negative counts from the end); -1 (the last) when absent.
    #[serde(default = "minus_one")]
    pub stop: i64,
    /// Answer only the list's length, `{"length": N}` (0 when missing; `start` and `stop` unused).
    #[serde(default)]
    pub len: bool,
}

/// A list's values, or with `?len=true` its length.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ListAnswer {
    /// The values in the range.
    Values(ListJson),
    /// The length (`?len=true`).
    Length(LengthJson),
}

fn minus_one() -> i64 {
    -1
}

/// Reads a range of a list (all of it by default), or with `?len=true` its length; a missing
/// list reads as empty.
#[utoipa::path(get, path = "/v1/list/{key}", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"), RangeParams),
    responses(
        (status = 200, description = "The values; with len=true, {\"length\": N}", body = ListAnswer),
        (status = 409, description = "The key is not a list", body = ErrorBody),
    ))]
pub async fn list_range(s: Call, Seg(key): Seg<3>, Q(p): Q<RangeParams>) -> Result<Response, AppError> {
    let answer = if p.len {
        ListAnswer::Length(LengthJson { length: s.exec(cmd::ListLen { key }).await? })
    } else {
        ListAnswer::Values(ListJson::new(
            &s.exec(cmd::ListRange { key, start: p.start, stop: p.stop }).await?,
        ))
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// What to pop.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PopParams {
    /// `back` (default) or `front`.
    #[serde(default)]
    pub end: End,
    /// How many values at most; 1 when absent.
    #[serde(default)]
    pub count: u32,
}

/// Removes and returns up to `count` values from one end.
#[utoipa::path(post, path = "/v1/list/{key}/pop", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"), PopParams),
    responses(
        (status = 200, description = "The values popped (empty when the list is missing)", body = ListJson),
        (status = 409, description = "The key is not a list", body = ErrorBody),
    ))]
pub async fn list_pop(s: Call, Seg(key): Seg<3>, Q(p): Q<PopParams>) -> Result<Response, AppError> {
    list_reply(s.exec(cmd::ListPop { key, end: p.end.into(), count: p.count }).await?)
}

fn list_reply(values: Vec<Bytes>) -> Result<Response, AppError> {
    Ok(json_response(StatusCode::OK, &ListJson::new(&values)))
}

impl ListJson {
    pub(super) fn new(values: &[Bytes]) -> Self {
        Self { values: values.iter().map(|v| ValueJson::new(v)).collect() }
    }
}

/// Replaces the value at `index` (negative counts from the end) with the body, byte for byte.
#[utoipa::path(put, path = "/v1/list/{key}/{index}", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"),
        ("index" = i64, Path, description = "The index; negative counts from the end")),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Replaced"),
        (status = 400, description = "The index is not an integer, or out of range", body = ErrorBody),
        (status = 404, description = "No such list", body = ErrorBody),
        (status = 409, description = "The key is not a list", body = ErrorBody),
        (status = 413, description = "Over a size limit", body = ErrorBody),
    ))]
pub async fn list_set(
    s: Call,
    Seg(key): Seg<3>,
    Seg(index): Seg<4>,
    Body(value): Body,
) -> Result<StatusCode, AppError> {
    let index = std::str::from_utf8(&index)
        .ok()
        .and_then(|i| i.parse::<i64>().ok())
        .ok_or_else(|| AppError::invalid("the list index must be an integer"))?;
    s.exec(cmd::ListSet { key, index, value }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The range a trim keeps.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrimParams {
    /// First index kept (negative counts from the end).
    pub start: i64,
    /// Last index kept, inclusive (negative counts from the end).
    pub stop: i64,
}

/// Keeps only the values from `start` to `stop`; an empty range removes the list.
#[utoipa::path(post, path = "/v1/list/{key}/trim", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"), TrimParams),
    responses(
        (status = 204, description = "Trimmed (also when the list is missing)"),
        (status = 400, description = "start or stop missing or not integers", body = ErrorBody),
        (status = 409, description = "The key is not a list", body = ErrorBody),
    ))]
pub async fn list_trim(s: Call, Seg(key): Seg<3>, Q(p): Q<TrimParams>) -> Result<StatusCode, AppError> {
    s.exec(cmd::ListTrim { key, start: p.start, stop: p.stop }).await?;
    Ok(StatusCode::NO_CONTENT)
}
