//! Key-level commands that apply to a key of any type, as suffixes of `/v1/kv/{key}` (`GET
//! /exists`, `/ttl`, `/type`; `POST /expire`, `/rename?to=`), and keyspace-wide ones under
//! `/v1/keyspace`, a path that holds no key (`GET /count`, `GET /random`, `DELETE` to flush).

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use nanodb_protocol::cmd;

use super::Call;
use super::error::{AppError, ErrorBody, json_response};
use super::extract::{Encoding, JsonBody, Seg, encode_bytes, query_bytes};
use super::kv::{ExpiryJson, IntJson, KeyTypeJson};

/// Whether a key exists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExistsJson {
    /// True when the key exists (of any type).
    pub exists: bool,
}

/// A key's remaining time to live.
#[derive(Debug, Serialize, ToSchema)]
pub struct TtlJson {
    /// Milliseconds until the key expires; null when it does not.
    pub ttl_ms: Option<i64>,
}

/// A key's type.
#[derive(Debug, Serialize, ToSchema)]
pub struct TypeJson {
    /// `string`, `hash` or `list`.
    #[serde(rename = "type")]
    pub key_type: KeyTypeJson,
}

/// Whether a write applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedJson {
    /// False when nothing changed.
    pub applied: bool,
}

/// A key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyJson {
    /// The key (UTF-8 text, or base64 when `key_encoding` says so).
    pub key: String,
    /// How `key` is written.
    pub key_encoding: Encoding,
}

impl KeyJson {
    pub(super) fn new(k: &[u8]) -> Self {
        let (key, key_encoding) = encode_bytes(k);
        Self { key, key_encoding }
    }
}

/// Whether a key of any type exists.
#[utoipa::path(get, path = "/v1/kv/{key}/exists", tag = "keys",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    responses((status = 200, description = "Whether it exists (a missing key is an answer, not a 404)", body = ExistsJson)))]
pub async fn exists(s: Call, Seg(key): Seg<3>) -> Result<Response, AppError> {
    let exists = s.exec(cmd::Exists { key }).await?;
    Ok(json_response(StatusCode::OK, &ExistsJson { exists }))
}

/// A key's remaining time to live (any type).
#[utoipa::path(get, path = "/v1/kv/{key}/ttl", tag = "keys",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    responses(
        (status = 200, description = "Milliseconds left, null when the key does not expire", body = TtlJson),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
pub async fn ttl(s: Call, Seg(key): Seg<3>) -> Result<Response, AppError> {
    // The command model's answer: -2 missing, -1 no TTL, else milliseconds left.
    let ttl_ms = match s.exec(cmd::Ttl { key }).await? {
        -2 => return Err(AppError::not_found()),
        ms => (ms >= 0).then_some(ms),
    };
    Ok(json_response(StatusCode::OK, &TtlJson { ttl_ms }))
}

/// A key's type.
#[utoipa::path(get, path = "/v1/kv/{key}/type", tag = "keys",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    responses(
        (status = 200, description = "The type", body = TypeJson),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
pub async fn key_type(s: Call, Seg(key): Seg<3>) -> Result<Response, AppError> {
    let t = s.exec(cmd::Type { key }).await?.ok_or_else(AppError::not_found)?;
    Ok(json_response(StatusCode::OK, &TypeJson { key_type: t.into() }))
}

/// Sets or clears a key's TTL (any type).
#[utoipa::path(post, path = "/v1/kv/{key}/expire", tag = "keys",
    params(("key" = String, Path, description = "The whole key, percent-encoded; any bytes")),
    request_body(content = ExpiryJson, description = "Exactly one of ttl_ms, at_ms, persist: true"),
    responses(
        (status = 200, description = "Whether anything changed: false when the key is missing, or persisting a key without TTL; a deadline already past removes the key", body = AppliedJson),
        (status = 400, description = "Bad JSON, not exactly one of ttl_ms, at_ms, persist, or ttl_ms 0", body = ErrorBody),
    ))]
pub async fn expire(
    s: Call,
    Seg(key): Seg<3>,
    JsonBody(body): JsonBody<ExpiryJson>,
) -> Result<Response, AppError> {
    let applied = s.exec(cmd::Expire { key, expiry: body.expiry()? }).await?;
    Ok(json_response(StatusCode::OK, &AppliedJson { applied }))
}

/// Moves a key (any type, with its TTL) to `?to=`, replacing whatever that key held.
#[utoipa::path(post, path = "/v1/kv/{key}/rename", tag = "keys",
    params(("key" = String, Path, description = "The key to move, percent-encoded; any bytes"),
        ("to" = String, Query, description = "The new key, percent-encoded (`+` is a space, `%2B` a plus); any bytes")),
    responses(
        (status = 204, description = "Renamed"),
        (status = 400, description = "`to` missing or empty", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 413, description = "A key over its limit", body = ErrorBody),
    ))]
pub async fn rename(s: Call, Seg(from): Seg<3>, uri: Uri) -> Result<StatusCode, AppError> {
    let to = query_bytes(uri.query(), "to").ok_or_else(|| AppError::invalid("give the new key as ?to="))?;
    s.exec(cmd::Rename { from, to }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The number of keys (of every type).
#[utoipa::path(get, path = "/v1/keyspace/count", tag = "keys",
    responses((status = 200, description = "How many keys", body = IntJson)))]
pub async fn key_count(s: Call) -> Result<Response, AppError> {
    let value = s.exec(cmd::KeyCount {}).await?;
    Ok(json_response(StatusCode::OK, &IntJson { value }))
}

/// A random key.
#[utoipa::path(get, path = "/v1/keyspace/random", tag = "keys",
    responses(
        (status = 200, description = "A key, chosen at random", body = KeyJson),
        (status = 404, description = "There are no keys", body = ErrorBody),
    ))]
pub async fn random_key(s: Call) -> Result<Response, AppError> {
    let key = s.exec(cmd::RandomKey {}).await?.ok_or_else(AppError::not_found)?;
    Ok(json_response(StatusCode::OK, &KeyJson::new(&key)))
}

/// Removes every key (FLUSHALL).
#[utoipa::path(delete, path = "/v1/keyspace", tag = "keys",
    responses((status = 200, description = "How many keys were removed", body = IntJson)))]
pub async fn flush(s: Call) -> Result<Response, AppError> {
    let value = s.exec(cmd::Flush {}).await?;
    Ok(json_response(StatusCode::OK, &IntJson { value }))
}
