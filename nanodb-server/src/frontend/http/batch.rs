//! `POST /v1/batch`: every data command as a JSON operation, applied in order, one result each;
//! `POST /v1/txn`: compares, then the `success` or `failure` operations (in the same JSON) applied
//! atomically as one engine group.
//!
//! An operation's `op` is its command's name (the coverage table's, `get_set`, `hash_len`, ...);
//! `encoding` applies to its key and every other byte string it carries. Results are encoded in
//! one place, [`result_json`], from the dynamic reply and the operation's [`CommandName`]: the
//! reply's variant says its shape, the name says what it means where one shape carries several
//! meanings (bytes are a field's value, a type's name, a random key or a number's text). Every
//! reply has a form, so no operation can answer "no JSON form".

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use nanodb_protocol::{Command, CommandName, Error, Expiry, Keys, PutCondition, Reply, cmd};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Call;
use super::error::{AppError, ErrorBody, ErrorDetail, json_response};
use super::extract::{Encoding, JsonBody, decode_bytes, decode_cursor};
use super::hash_list::{End, HashJson, ListJson, ValueJson};
use super::keys::KeyJson;
use super::kv::{EntryJson, PairJson, ScanPage, decode_pairs, expiry_of, one, write_expiry_of};

/// A floating-point amount: decimal text (`"1.5"`, kept exactly as sent) or a JSON number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FloatArg {
    /// Decimal text.
    Text(String),
    /// A number.
    #[schema(value_type = f64)]
    Number(serde_json::Number),
}

impl FloatArg {
    fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(t) => Bytes::from(t.into_bytes()),
            Self::Number(n) => Bytes::from(n.to_string().into_bytes()),
        }
    }
}

/// One operation of a batch: `op` is the command's name; `encoding` applies to its key, field,
/// value(s) and prefix.
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
    /// Write a string key like `put` and answer the value it held before (whether or not the
    /// write applied).
    GetSet {
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
        /// Keep the key's TTL (not with `ttl_ms`).
        #[serde(default)]
        keep_ttl: bool,
        /// Write only if the key does not exist.
        #[serde(default)]
        if_absent: bool,
        /// Write only over this version.
        #[serde(default)]
        if_version: Option<u64>,
    },
    /// Remove a key of any type.
    Delete {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Remove a key only if it has exactly this version.
    DeleteIf {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// The version the key must have.
        version: u64,
    },
    /// Whether a key exists.
    Exists {
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
    /// Add a decimal amount to a number held as a string.
    IncrFloat {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// The amount.
        by: FloatArg,
    },
    /// Append to a string.
    Append {
        /// The key.
        key: String,
        /// The bytes to append.
        value: String,
        /// How `key` and `value` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Set or clear a key's TTL: exactly one of `ttl_ms`, `at_ms`, `persist: true`.
    Expire {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// Expire this many ms from now.
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// Expire at this Unix time in ms.
        #[serde(default)]
        at_ms: Option<u64>,
        /// Remove the TTL.
        #[serde(default)]
        persist: bool,
    },
    /// A key's remaining TTL.
    Ttl {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// A key's type.
    Type {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Read and remove a string key.
    GetDel {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Read a string key and change its TTL: exactly one of `ttl_ms`, `at_ms`, `persist: true`.
    GetEx {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// Expire this many ms from now.
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// Expire at this Unix time in ms.
        #[serde(default)]
        at_ms: Option<u64>,
        /// Remove the TTL.
        #[serde(default)]
        persist: bool,
    },
    /// Write several string keys (each pair has its own `encoding`).
    MultiPut {
        /// The pairs, written in order.
        pairs: Vec<PairJson>,
        /// Write nothing if any of the keys exists.
        #[serde(default)]
        if_absent: bool,
    },
    /// Move a key to `to`.
    Rename {
        /// The key.
        key: String,
        /// The new key.
        to: String,
        /// How `key` and `to` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// One page of keys.
    Scan {
        /// Only keys starting with this; empty for all.
        #[serde(default)]
        prefix: String,
        /// How `prefix` is written.
        #[serde(default)]
        encoding: Encoding,
        /// Page size; 0 for the server's default.
        #[serde(default)]
        limit: u32,
        /// The previous page's `next_cursor`; empty for the first page.
        #[serde(default)]
        cursor: String,
    },
    /// The number of keys.
    KeyCount {},
    /// A random key.
    RandomKey {},
    /// Remove every key.
    Flush {},
    /// Set a hash field.
    HashSet {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// How `key`, `field` and `value` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Set a hash field only if it does not exist.
    HashSetIfAbsent {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// How `key`, `field` and `value` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Read a hash field.
    HashGet {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// How `key` and `field` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Remove a hash field.
    HashDelete {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// How `key` and `field` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Read every field of a hash.
    HashGetAll {
        /// The hash's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Add to an integer hash field.
    HashIncr {
        /// The hash's key.
        key: String,
        /// The field.
        field: String,
        /// How `key` and `field` are written.
        #[serde(default)]
        encoding: Encoding,
        /// The amount; 1 when absent.
        #[serde(default = "one")]
        by: i64,
    },
    /// The number of fields of a hash.
    HashLen {
        /// The hash's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Push values at one end of a list.
    ListPush {
        /// The list's key.
        key: String,
        /// The values, pushed one after another.
        values: Vec<String>,
        /// How `key` and `values` are written.
        #[serde(default)]
        encoding: Encoding,
        /// `back` (default) or `front`.
        #[serde(default)]
        end: End,
    },
    /// Pop values from one end of a list.
    ListPop {
        /// The list's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// `back` (default) or `front`.
        #[serde(default)]
        end: End,
        /// How many at most; 1 when absent.
        #[serde(default)]
        count: u32,
    },
    /// Read a range of a list.
    ListRange {
        /// The list's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// First index; 0 when absent.
        #[serde(default)]
        start: i64,
        /// Last index, inclusive; -1 when absent.
        #[serde(default = "minus_one")]
        stop: i64,
    },
    /// The length of a list.
    ListLen {
        /// The list's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Replace the value at an index.
    ListSet {
        /// The list's key.
        key: String,
        /// The index; negative counts from the end.
        index: i64,
        /// The new value.
        value: String,
        /// How `key` and `value` are written.
        #[serde(default)]
        encoding: Encoding,
    },
    /// Keep only a range of a list.
    ListTrim {
        /// The list's key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// First index kept.
        start: i64,
        /// Last index kept, inclusive.
        stop: i64,
    },
    /// Bytes `start..=end` of a string.
    GetRange {
        /// The key.
        key: String,
        /// How `key` is written.
        #[serde(default)]
        encoding: Encoding,
        /// First byte offset; negative counts from the end.
        start: i64,
        /// Last byte offset, inclusive.
        end: i64,
    },
}

fn minus_one() -> i64 {
    -1
}

/// A put's or getset's condition from its `if_absent` / `if_version` fields.
fn condition(if_absent: bool, if_version: Option<u64>) -> Result<PutCondition, AppError> {
    match (if_absent, if_version) {
        (false, None) => Ok(PutCondition::Always),
        (true, None) => Ok(PutCondition::IfAbsent),
        (false, Some(v)) => Ok(PutCondition::IfVersion(v)),
        (true, Some(_)) => Err(AppError::invalid("if_absent and if_version exclude each other")),
    }
}

impl BatchOp {
    /// The command, its byte strings decoded; `max_count` bounds a multi-put's pairs before they
    /// are decoded.
    fn into_command(self, max_count: usize) -> Result<Command, AppError> {
        let b = |s: &str, e, what| decode_bytes(s, e, what);
        Ok(match self {
            Self::Get { key, encoding: e } => cmd::Get { key: b(&key, e, "key")? }.into(),
            Self::Put { key, value, encoding: e, ttl_ms, if_absent, if_version } => cmd::Put {
                key: b(&key, e, "key")?,
                value: b(&value, e, "value")?,
                expiry: Expiry::from_put_ttl_ms(ttl_ms),
                condition: condition(if_absent, if_version)?,
            }
            .into(),
            Self::GetSet { key, value, encoding: e, ttl_ms, keep_ttl, if_absent, if_version } => {
                cmd::GetSet {
                    key: b(&key, e, "key")?,
                    value: b(&value, e, "value")?,
                    expiry: write_expiry_of(ttl_ms, keep_ttl)?,
                    condition: condition(if_absent, if_version)?,
                }
                .into()
            }
            Self::Delete { key, encoding: e } => cmd::Delete { key: b(&key, e, "key")? }.into(),
            Self::DeleteIf { key, encoding: e, version } => {
                cmd::DeleteIf { key: b(&key, e, "key")?, version }.into()
            }
            Self::Exists { key, encoding: e } => cmd::Exists { key: b(&key, e, "key")? }.into(),
            Self::Incr { key, encoding: e, by } => cmd::Incr { key: b(&key, e, "key")?, delta: by }.into(),
            Self::IncrFloat { key, encoding: e, by } => {
                cmd::IncrFloat { key: b(&key, e, "key")?, delta: by.into_bytes() }.into()
            }
            Self::Append { key, value, encoding: e } => {
                cmd::Append { key: b(&key, e, "key")?, value: b(&value, e, "value")? }.into()
            }
            Self::Expire { key, encoding: e, ttl_ms, at_ms, persist } => {
                cmd::Expire { key: b(&key, e, "key")?, expiry: expiry_of(ttl_ms, at_ms, persist)? }.into()
            }
            Self::Ttl { key, encoding: e } => cmd::Ttl { key: b(&key, e, "key")? }.into(),
            Self::Type { key, encoding: e } => cmd::Type { key: b(&key, e, "key")? }.into(),
            Self::GetDel { key, encoding: e } => cmd::GetDel { key: b(&key, e, "key")? }.into(),
            Self::GetEx { key, encoding: e, ttl_ms, at_ms, persist } => {
                cmd::GetEx { key: b(&key, e, "key")?, expiry: expiry_of(ttl_ms, at_ms, persist)? }.into()
            }
            Self::MultiPut { pairs, if_absent } => {
                cmd::MultiPut { pairs: decode_pairs(pairs, max_count)?, only_if_none_exist: if_absent }.into()
            }
            Self::Rename { key, to, encoding: e } => {
                cmd::Rename { from: b(&key, e, "key")?, to: b(&to, e, "to")? }.into()
            }
            Self::Scan { prefix, encoding: e, limit, cursor } => {
                cmd::Scan { prefix: b(&prefix, e, "prefix")?, limit, cursor: decode_cursor(&cursor)? }.into()
            }
            Self::KeyCount {} => cmd::KeyCount {}.into(),
            Self::RandomKey {} => cmd::RandomKey {}.into(),
            Self::Flush {} => cmd::Flush {}.into(),
            Self::HashSet { key, field, value, encoding: e } => cmd::HashSet {
                key: b(&key, e, "key")?,
                field: b(&field, e, "field")?,
                value: b(&value, e, "value")?,
            }
            .into(),
            Self::HashSetIfAbsent { key, field, value, encoding: e } => cmd::HashSetIfAbsent {
                key: b(&key, e, "key")?,
                field: b(&field, e, "field")?,
                value: b(&value, e, "value")?,
            }
            .into(),
            Self::HashGet { key, field, encoding: e } => {
                cmd::HashGet { key: b(&key, e, "key")?, field: b(&field, e, "field")? }.into()
            }
            Self::HashDelete { key, field, encoding: e } => {
                cmd::HashDelete { key: b(&key, e, "key")?, field: b(&field, e, "field")? }.into()
            }
            Self::HashGetAll { key, encoding: e } => cmd::HashGetAll { key: b(&key, e, "key")? }.into(),
            Self::HashIncr { key, field, encoding: e, by } => {
                cmd::HashIncr { key: b(&key, e, "key")?, field: b(&field, e, "field")?, delta: by }.into()
            }
            Self::HashLen { key, encoding: e } => cmd::HashLen { key: b(&key, e, "key")? }.into(),
            Self::ListPush { key, values, encoding: e, end } => {
                if values.len() > max_count {
                    let e = Error::LimitExceeded {
                        what: "values in one push",
                        len: values.len(),
                        max: max_count,
                        setting: "max_batch_len",
                    };
                    return Err(e.into());
                }
                let values = values.iter().map(|v| b(v, e, "value")).collect::<Result<_, _>>()?;
                cmd::ListPush { key: b(&key, e, "key")?, end: end.into(), values }.into()
            }
            Self::ListPop { key, encoding: e, end, count } => {
                cmd::ListPop { key: b(&key, e, "key")?, end: end.into(), count }.into()
            }
            Self::ListRange { key, encoding: e, start, stop } => {
                cmd::ListRange { key: b(&key, e, "key")?, start, stop }.into()
            }
            Self::ListLen { key, encoding: e } => cmd::ListLen { key: b(&key, e, "key")? }.into(),
            Self::ListSet { key, index, value, encoding: e } => {
                cmd::ListSet { key: b(&key, e, "key")?, index, value: b(&value, e, "value")? }.into()
            }
            Self::ListTrim { key, encoding: e, start, stop } => {
                cmd::ListTrim { key: b(&key, e, "key")?, start, stop }.into()
            }
            Self::GetRange { key, encoding: e, start, end } => {
                cmd::GetRange { key: b(&key, e, "key")?, start, end }.into()
            }
        })
    }
}

/// The result of one batch operation: `{"ok": ...}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    /// The operation's answer, in the shape its route answers (see the README's batch table):
    /// an entry or null (get, get_set, get_del, get_ex), `{"applied","version"}` (put),
    /// `{"value"}` (incr, hash_incr, incr_float, key_count, flush), `{"length"}` (list_push,
    /// append, hash_len, list_len), `{"exists"}`, `{"type"}` or null, `{"applied"}` (expire),
    /// `{"created"}` (hash_set, hash_set_if_absent), `{"ttl_ms"}` or null (ttl),
    /// `{"key","key_encoding"}` or null (random_key), `{"value","encoding"}` or null (hash_get),
    /// `{"fields"}` or null (hash_get_all), `{"values"}` (list_range, list_pop), a scan page, and
    /// a bare boolean where the route answers only with a status (delete, rename, list_set...).
    #[schema(value_type = serde_json::Value)]
    Ok(OkJson),
    /// Why the operation failed; the others still ran.
    Error(ErrorDetail),
}

/// Every answer a batch operation can give, as JSON (untagged: each variant is its own shape).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OkJson {
    /// Nothing there (a missing key, field or hash).
    Null,
    /// A yes/no answer.
    Bool(bool),
    /// Text: a type's name, a number's text, `PONG`.
    Text(String),
    /// A string key's value and metadata.
    Entry(EntryJson),
    /// A put's outcome.
    Put {
        /// False when the condition did not hold.
        applied: bool,
        /// The version now.
        version: u64,
    },
    /// A number as its route answers it (`{"value": N}`: incr, counts, a float's text).
    Number {
        /// The number (an integer, or a float's decimal text).
        value: serde_json::Value,
    },
    /// A length as its route answers it (`{"length": N}`: push, append, hash and list lengths).
    Length {
        /// The length.
        length: i64,
    },
    /// Whether a key exists, as `GET /v1/kv/{key}/exists` answers it.
    Exists {
        /// Whether it exists.
        exists: bool,
    },
    /// A key's type, as `GET /v1/kv/{key}/type` answers it.
    Type {
        /// `string`, `hash` or `list`.
        r#type: String,
    },
    /// Whether an expire applied, as `POST /v1/kv/{key}/expire` answers it.
    Applied {
        /// Whether it applied.
        applied: bool,
    },
    /// Whether a hash field is new, as `PUT /v1/hash/{key}/{field}` answers it.
    Created {
        /// Whether the field is new.
        created: bool,
    },
    /// How many subscriptions a message reached, as `POST /v1/publish/{channel}` answers it.
    Receivers {
        /// How many.
        receivers: i64,
    },
    /// A key's TTL (null: none).
    Ttl {
        /// Milliseconds left, or null.
        ttl_ms: Option<i64>,
    },
    /// A key.
    Key(KeyJson),
    /// One value.
    Value(ValueJson),
    /// A hash's fields.
    Hash(HashJson),
    /// A list's values.
    List(ListJson),
    /// A page of keys.
    Scan(ScanPage),
    /// A nested batch's results (the command model refuses nested batches; encoded all the same).
    Batch(Vec<BatchResult>),
    /// What a transaction did, as `POST /v1/txn` answers it.
    Txn(TxnJson),
}

/// What a transaction did: which branch ran and one result per operation of that branch.
#[derive(Debug, Serialize, ToSchema)]
pub struct TxnJson {
    /// True when every compare held and the `success` operations ran; false when `failure` ran.
    pub succeeded: bool,
    /// One result per operation of the branch that ran, in order.
    #[schema(no_recursion)]
    pub results: Vec<BatchResult>,
}

/// Encodes one result of a batch: what operation `name` on `key` answered.
fn batch_result(name: CommandName, key: Option<&[u8]>, r: Result<Reply, Error>) -> BatchResult {
    match r.map_err(AppError::from).and_then(|reply| result_json(name, key, reply)) {
        Ok(ok) => BatchResult::Ok(ok),
        Err(e) => BatchResult::Error(e.body().error),
    }
}

/// The JSON form of every reply: the one place a batch's dynamic replies become JSON. It fails
/// only for a scan entry without a type, which the engine never produces.
fn result_json(name: CommandName, key: Option<&[u8]>, reply: Reply) -> Result<OkJson, AppError> {
    Ok(match reply {
        Reply::Pong => OkJson::Text("PONG".into()),
        Reply::Value(None) => OkJson::Null,
        Reply::Value(Some(e)) => OkJson::Entry(EntryJson::new(key.unwrap_or_default(), &e)),
        Reply::Put { applied, version } => OkJson::Put { applied, version },
        // Each answer has its route's shape (what the route wraps a scalar in, the batch does too);
        // only answers a route gives as a status (204, 404) are a bare true or false.
        Reply::Bool(b) => match name {
            CommandName::Exists => OkJson::Exists { exists: b },
            CommandName::Expire => OkJson::Applied { applied: b },
            CommandName::HashSet | CommandName::HashSetIfAbsent => OkJson::Created { created: b },
            _ => OkJson::Bool(b),
        },
        Reply::Int(n) => match name {
            // TTL's integers: -2 missing, -1 no TTL (REST's null), else milliseconds left.
            CommandName::Ttl if n == -2 => OkJson::Null,
            CommandName::Ttl => OkJson::Ttl { ttl_ms: (n >= 0).then_some(n) },
            CommandName::ListPush | CommandName::Append | CommandName::HashLen | CommandName::ListLen => {
                OkJson::Length { length: n }
            }
            CommandName::Publish => OkJson::Receivers { receivers: n },
            _ => OkJson::Number { value: n.into() },
        },
        Reply::Bytes(None) => OkJson::Null,
        Reply::Bytes(Some(b)) => match name {
            // A type travels as its name, `none` when the key is missing.
            CommandName::Type if b == "none" => OkJson::Null,
            // A type's name and a number's text are ASCII.
            CommandName::Type => OkJson::Type { r#type: String::from_utf8_lossy(&b).into_owned() },
            CommandName::IncrFloat => {
                OkJson::Number { value: String::from_utf8_lossy(&b).into_owned().into() }
            }
            CommandName::RandomKey => OkJson::Key(KeyJson::new(&b)),
            _ => OkJson::Value(ValueJson::new(&b)),
        },
        Reply::Scan { entries, next_cursor } => {
            OkJson::Scan(ScanPage::new(nanodb_protocol::ScanPage { entries, next_cursor }, false)?)
        }
        // The engine removes emptied hashes: no fields is no hash, as GET /v1/hash/{key} says.
        Reply::Pairs(pairs) if pairs.is_empty() => OkJson::Null,
        Reply::Pairs(pairs) => OkJson::Hash(HashJson::new(&pairs)),
        Reply::List(values) => OkJson::List(ListJson::new(&values)),
        Reply::Batch(results) => {
            OkJson::Batch(results.into_iter().map(|r| batch_result(CommandName::Batch, None, r)).collect())
        }
        // A batch or a transaction cannot hold a script (validation refuses it).
        Reply::Script(_) => return Err(AppError::from(Error::Internal)),
        Reply::Txn(t) => OkJson::Txn(TxnJson {
            succeeded: t.succeeded,
            results: t.results.into_iter().map(|r| batch_result(CommandName::Batch, None, r)).collect(),
        }),
    })
}

/// Applies operations in order; one result each, in the same order.
#[utoipa::path(post, path = "/v1/batch", tag = "kv",
    request_body(content = Vec<BatchOp>, description = "Operations, applied in order"),
    responses(
        (status = 200, description = "One result per operation", body = Vec<BatchResult>),
        (status = 400, description = "Bad JSON, an invalid operation, or more than max_batch_len operations", body = ErrorBody),
        (status = 413, description = "A key or value over its limit (nothing applied)", body = ErrorBody),
    ))]
pub async fn batch(s: Call, JsonBody(ops): JsonBody<Vec<BatchOp>>) -> Result<Response, AppError> {
    let max = s.ctx.engine.limits().max_batch_len;
    if ops.len() > max {
        // Refuse before decoding every operation; the engine would refuse it anyway.
        return Err(Error::LimitExceeded {
            what: "batch length",
            len: ops.len(),
            max,
            setting: "max_batch_len",
        }
        .into());
    }
    let cmds = ops.into_iter().map(|op| op.into_command(max)).collect::<Result<Vec<_>, _>>()?;
    // What each result's encoding needs: the command's name, and the key an entry repeats.
    let meta: Vec<(CommandName, Option<Bytes>)> = cmds
        .iter()
        .map(|c| {
            let key = match c.keys() {
                Keys::One(k) => Some(k.clone()),
                _ => None,
            };
            (c.command_name(), key)
        })
        .collect();
    let results = s.exec(cmd::Batch { ops: cmds }).await?;
    let out: Vec<BatchResult> =
        meta.into_iter().zip(results).map(|((name, key), r)| batch_result(name, key.as_deref(), r)).collect();
    Ok(json_response(StatusCode::OK, &out))
}

/// How a transaction's compare relates the key's state to its target.
#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareOpJson {
    /// Equal (the default).
    #[default]
    Equal,
    /// Not equal.
    NotEqual,
    /// Less than (versions numerically, values bytewise).
    Less,
    /// Greater than.
    Greater,
}

/// One condition of a transaction: exactly one of `version`, `value` and `exists`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareJson {
    /// The key compared.
    pub key: String,
    /// How `key` and `value` are written.
    #[serde(default)]
    pub encoding: Encoding,
    /// The relation (`equal` when left out).
    #[serde(default)]
    pub op: CompareOpJson,
    /// The key's version (0: the key does not exist).
    #[serde(default)]
    pub version: Option<u64>,
    /// The key's string value (a missing key or one of another type never compares).
    #[serde(default)]
    pub value: Option<String>,
    /// Whether the key exists (with `equal` or `not_equal`).
    #[serde(default)]
    pub exists: Option<bool>,
}

impl CompareJson {
    fn into_compare(self) -> Result<nanodb_protocol::Compare, AppError> {
        use nanodb_protocol::{CompareOp, CompareTarget};
        let target = match (self.version, self.value, self.exists) {
            (Some(v), None, None) => CompareTarget::Version(v),
            (None, Some(v), None) => CompareTarget::Value(decode_bytes(&v, self.encoding, "value")?),
            (None, None, Some(e)) => CompareTarget::Exists(e),
            _ => {
                return Err(Error::InvalidArgument(
                    "a compare sets exactly one of version, value, exists".into(),
                )
                .into());
            }
        };
        let op = match self.op {
            CompareOpJson::Equal => CompareOp::Equal,
            CompareOpJson::NotEqual => CompareOp::NotEqual,
            CompareOpJson::Less => CompareOp::Less,
            CompareOpJson::Greater => CompareOp::Greater,
        };
        Ok(nanodb_protocol::Compare { key: decode_bytes(&self.key, self.encoding, "key")?, op, target })
    }
}

/// A transaction: compares, then the operations to apply if all hold and those to apply otherwise.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    /// The conditions, evaluated before any operation runs.
    #[serde(default)]
    pub compare: Vec<CompareJson>,
    /// Operations applied when every compare holds (only operations on named keys).
    #[serde(default)]
    pub success: Vec<BatchOp>,
    /// Operations applied otherwise.
    #[serde(default)]
    pub failure: Vec<BatchOp>,
}

/// The command name and repeated key of each operation, for encoding its result.
fn result_meta(cmds: &[Command]) -> Vec<(CommandName, Option<Bytes>)> {
    cmds.iter()
        .map(|c| {
            let key = match c.keys() {
                Keys::One(k) => Some(k.clone()),
                _ => None,
            };
            (c.command_name(), key)
        })
        .collect()
}

/// Compares, then the `success` or `failure` operations, applied atomically: no reader on any
/// protocol sees part of them, and they are logged as one record.
#[utoipa::path(post, path = "/v1/txn", tag = "kv",
    request_body(content = TxnBody, description = "Compares and the two branches of operations"),
    responses(
        (status = 200, description = "Which branch ran, and one result per operation of it", body = TxnJson),
        (status = 400, description = "Bad JSON, a bad compare, an operation a transaction cannot hold, or more than max_batch_len compares or operations", body = ErrorBody),
        (status = 413, description = "A key or value over its limit (nothing applied)", body = ErrorBody),
    ))]
pub async fn txn(s: Call, JsonBody(body): JsonBody<TxnBody>) -> Result<Response, AppError> {
    let max = s.ctx.engine.limits().max_batch_len;
    for (what, len) in
        [("compares", body.compare.len()), ("success", body.success.len()), ("failure", body.failure.len())]
    {
        if len > max {
            // Refuse before decoding every operation; the engine would refuse it anyway.
            return Err(Error::LimitExceeded { what, len, max, setting: "max_batch_len" }.into());
        }
    }
    let compares = body.compare.into_iter().map(CompareJson::into_compare).collect::<Result<Vec<_>, _>>()?;
    let success = body.success.into_iter().map(|op| op.into_command(max)).collect::<Result<Vec<_>, _>>()?;
    let failure = body.failure.into_iter().map(|op| op.into_command(max)).collect::<Result<Vec<_>, _>>()?;
    let (success_meta, failure_meta) = (result_meta(&success), result_meta(&failure));
    let outcome = s.exec(cmd::Txn { compares, success, failure }).await?;
    let meta = if outcome.succeeded { success_meta } else { failure_meta };
    let results = meta
        .into_iter()
        .zip(outcome.results)
        .map(|((name, key), r)| batch_result(name, key.as_deref(), r))
        .collect();
    Ok(json_response(StatusCode::OK, &TxnJson { succeeded: outcome.succeeded, results }))
}
