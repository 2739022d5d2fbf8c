//! Hashes and lists over REST, in the style of `/v1/kv`: raw bodies in, raw bodies out for single
//! values, JSON (UTF-8 or base64 per value) for collections.
//!
//! - `GET /v1/hash/{key}`: every field; `GET|PUT|DELETE /v1/hash/{key}/{field}`: one field.
//! - `GET /v1/list/{key}?start&stop`: a range; `POST /v1/list/{key}?end=back|front`: push the raw
//!   body as one value; `POST /v1/list/{key}/pop?end&count`: pop values.

use axum::body::Body as AxBody;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use nanodb_protocol::ListEnd;
use nanodb_protocol::cmd;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AppError, ErrorBody, json_response};
use super::extract::{Body, Encoding, Q, Seg, encode_bytes};
use super::{AppState, BinaryBody};

/// One value in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValueJson {
    /// The value (UTF-8 text, or base64 when `encoding` says so).
    pub value: String,
    /// How `value` is written.
    pub encoding: Encoding,
}

impl ValueJson {
    fn new(b: &[u8]) -> Self {
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

/// A list's length after a push.
#[derive(Debug, Serialize, ToSchema)]
pub struct LengthJson {
    /// The new length.
    pub length: i64,
}

/// Reads every field of a hash; 404 when the hash is missing.
#[utoipa::path(get, path = "/v1/hash/{key}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded; any bytes")),
    responses(
        (status = 200, description = "The fields", body = HashJson),
        (status = 404, description = "No such hash", body = ErrorBody),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
    ))]
pub async fn hash_get_all(State(s): State<AppState>, Seg(key): Seg<3>) -> Result<Response, AppError> {
    let pairs = s.exec(cmd::HashGetAll { key }).await?;
    if pairs.is_empty() {
        // The engine removes emptied hashes, so no fields means no hash.
        return Err(AppError::not_found());
    }
    let fields = pairs
        .iter()
        .map(|(f, v)| {
            let (field, field_encoding) = encode_bytes(f);
            let (value, encoding) = encode_bytes(v);
            FieldJson { field, field_encoding, value, encoding }
        })
        .collect();
    Ok(json_response(StatusCode::OK, &HashJson { fields }))
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
pub async fn hash_get(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Seg(field): Seg<4>,
) -> Result<Response, AppError> {
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

/// Sets one hash field; the body is the value, byte for byte.
#[utoipa::path(put, path = "/v1/hash/{key}/{field}", tag = "hash",
    params(("key" = String, Path, description = "The hash's key, percent-encoded"),
        ("field" = String, Path, description = "The field, percent-encoded")),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "The field is new", body = CreatedJson),
        (status = 200, description = "The field was replaced", body = CreatedJson),
        (status = 409, description = "The key is not a hash", body = ErrorBody),
        (status = 413, description = "Over a size limit", body = ErrorBody),
    ))]
pub async fn hash_set(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Seg(field): Seg<4>,
    Body(value): Body,
) -> Result<Response, AppError> {
    let created = s.exec(cmd::HashSet { key, field, value }).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, &CreatedJson { created }))
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
pub async fn hash_delete(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Seg(field): Seg<4>,
) -> Result<StatusCode, AppError> {
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
    State(s): State<AppState>,
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
}

fn minus_one() -> i64 {
    -1
}

/// Reads a range of a list (all of it by default); a missing list reads as empty.
#[utoipa::path(get, path = "/v1/list/{key}", tag = "list",
    params(("key" = String, Path, description = "The list's key, percent-encoded"), RangeParams),
    responses(
        (status = 200, description = "The values", body = ListJson),
        (status = 409, description = "The key is not a list", body = ErrorBody),
    ))]
pub async fn list_range(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Q(p): Q<RangeParams>,
) -> Result<Response, AppError> {
    list_reply(s.exec(cmd::ListRange { key, start: p.start, stop: p.stop }).await?)
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
pub async fn list_pop(
    State(s): State<AppState>,
    Seg(key): Seg<3>,
    Q(p): Q<PopParams>,
) -> Result<Response, AppError> {
    list_reply(s.exec(cmd::ListPop { key, end: p.end.into(), count: p.count }).await?)
}

fn list_reply(values: Vec<Bytes>) -> Result<Response, AppError> {
    let values = values.iter().map(|v| ValueJson::new(v)).collect();
    Ok(json_response(StatusCode::OK, &ListJson { values }))
}
