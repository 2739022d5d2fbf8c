//! Request extractors that turn HTTP into command fields, with every rejection answered as an
//! [`AppError`] (JSON), never axum's plain-text rejections.
//!
//! Keys are bytes: a path segment is percent-decoded to bytes, not to a `String`, so any key
//! (`/` as `%2F`, spaces, non-UTF-8) is reachable. The router matches on the raw path, so a
//! `%2F` never splits a segment.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use base64::Engine as _;
use bytes::Bytes;
use nanodb_protocol::{ErrorCode, PutCondition};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::AppError;

/// The `I`th segment of the raw path, percent-decoded to bytes (`/v1/kv/{key}` is segment 3,
/// `/v1/hash/{key}/{field}`'s field is segment 4).
#[derive(Debug)]
pub struct Seg<const I: usize>(pub Bytes);

/// Percent-decodes one raw path segment to bytes (malformed escapes are kept literally).
pub fn decode_segment(raw: &str) -> Bytes {
    if !raw.contains('%') {
        return Bytes::copy_from_slice(raw.as_bytes());
    }
    // Decoding only shrinks, so one allocation of the raw length suffices.
    let mut decoded = Vec::with_capacity(raw.len());
    decoded.extend(percent_decode_str(raw));
    Bytes::from(decoded)
}

impl<S: Send + Sync, const I: usize> FromRequestParts<S> for Seg<I> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        // The router only sends requests here whose path has this segment.
        match parts.uri.path().split('/').nth(I) {
            Some(raw) => Ok(Self(decode_segment(raw))),
            None => Err(AppError::invalid("path segment missing")),
        }
    }
}

/// The value of query parameter `name` percent-decoded to bytes, `None` when absent (the first
/// one counts when repeated). For parameters that carry a key (`?to=` on a rename): serde's query
/// parsing decodes to text and would lose non-UTF-8 bytes. As in any query string, `+` is a space
/// (a plus is `%2B`), so form encoders (`reqwest`'s `.query()`, `curl --data-urlencode -G`) work.
pub fn query_bytes(query: Option<&str>, name: &str) -> Option<Bytes> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name)
            .then(|| if v.contains('+') { decode_segment(&v.replace('+', " ")) } else { decode_segment(v) })
    })
}

/// Whether the client asked for JSON (`Accept: application/json`) rather than the raw value.
#[derive(Debug, Clone, Copy)]
pub struct WantsJson(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for WantsJson {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let json = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        Ok(Self(json))
    }
}

/// Query parameters, with a 400 JSON error saying which parameter was wrong.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Q<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Self(t))
            .map_err(|r| AppError::invalid(r.body_text()))
    }
}

/// The request body as a value to store: read up to the body limit (413 beyond it, or at once when
/// `Content-Length` says so), then copied into an allocation of its own size, so a stored value
/// never pins the connection's read buffer it arrived in.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let raw = read_body(req, state.body_limit).await?;
        Ok(Self(Bytes::copy_from_slice(&raw)))
    }
}

/// Reads a whole body of at most `limit` bytes.
async fn read_body(req: Request, limit: usize) -> Result<Bytes, AppError> {
    let too_large = || {
        AppError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ValueTooLarge,
            format!("request body exceeds {limit} bytes (twice max_value_len, plus 1 MiB for JSON)"),
        )
    };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            AppError::malformed(format!("cannot read the request body: {inner}"))
        }
    })
}

/// A JSON body, parsed whatever its `Content-Type` (curl users forget it); bad JSON is a 400
/// saying where.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let bytes = read_body(req, state.body_limit).await?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| AppError::malformed(format!("request body is not valid JSON for this route: {e}")))
    }
}

/// The write condition from `If-Match` / `If-None-Match`: `If-None-Match: *` creates only,
/// `If-Match: *` replaces only, `If-Match: "<version>"` replaces only that version.
#[derive(Debug, Clone, Copy)]
pub struct Precondition(pub PutCondition);

impl<S: Send + Sync> FromRequestParts<S> for Precondition {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let header_str = |name: HeaderName| {
            parts
                .headers
                .get(&name)
                .map(|v| {
                    v.to_str().map(str::trim).map_err(|_| AppError::invalid(format!("{name} is not ASCII")))
                })
                .transpose()
        };
        let if_match = header_str(header::IF_MATCH)?;
        let if_none_match = header_str(header::IF_NONE_MATCH)?;
        let condition = match (if_match, if_none_match) {
            (None, None) => PutCondition::Always,
            (Some(_), Some(_)) => {
                return Err(AppError::invalid("send If-Match or If-None-Match, not both"));
            }
            (None, Some("*")) => PutCondition::IfAbsent,
            (None, Some(_)) => return Err(AppError::invalid("If-None-Match supports only *")),
            (Some("*"), None) => PutCondition::IfPresent,
            (Some(tag), None) => PutCondition::IfVersion(parse_etag(tag)?),
        };
        Ok(Self(condition))
    }
}

/// `"<version>"` (quotes optional) to the version.
pub fn parse_etag(tag: &str) -> Result<u64, AppError> {
    let inner = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    inner
        .parse()
        .map_err(|_| AppError::invalid(format!("If-Match must be * or an ETag \"<version>\", got {tag}")))
}

/// How a byte string travels in JSON: as text when it is UTF-8, otherwise base64.
pub fn encode_bytes(b: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_owned(), Encoding::Utf8),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(b), Encoding::Base64),
    }
}

/// Decodes a JSON string in `encoding` back to bytes.
pub fn decode_bytes(s: &str, encoding: Encoding, what: &str) -> Result<Bytes, AppError> {
    match encoding {
        Encoding::Utf8 => Ok(Bytes::copy_from_slice(s.as_bytes())),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(|e| AppError::invalid(format!("{what} is not valid base64: {e}"))),
    }
}

/// A scan cursor as it travels in URLs: URL-safe base64 without padding.
pub fn encode_cursor(c: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c)
}

/// A cursor from a URL back to the engine's bytes.
pub fn decode_cursor(c: &str) -> Result<Bytes, AppError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map(Bytes::from)
        .map_err(|_| AppError::invalid("cursor is not a cursor this server returned"))
}

/// How a value (or key) is written in a JSON string.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The string is the bytes, as UTF-8 text.
    #[default]
    Utf8,
    /// The string is standard base64 (with padding) of the bytes.
    Base64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_to_bytes() {
        assert_eq!(decode_segment("a%2Fb"), Bytes::from_static(b"a/b"));
        assert_eq!(decode_segment("sp%20ace"), Bytes::from_static(b"sp ace"));
        assert_eq!(decode_segment("%FF%00x"), Bytes::from_static(b"\xff\x00x"));
        assert_eq!(decode_segment("caf%C3%A9"), Bytes::from("café"));
        assert_eq!(decode_segment("100%"), Bytes::from_static(b"100%"), "a bad escape stays literal");
    }

    #[test]
    fn etags_and_encodings() {
        assert_eq!(parse_etag("\"42\"").ok(), Some(42));
        assert_eq!(parse_etag("42").ok(), Some(42));
        assert!(parse_etag("W/\"42\"").is_err());
        assert_eq!(encode_bytes(b"hi"), ("hi".into(), Encoding::Utf8));
        let (s, e) = encode_bytes(b"\xff\x00");
        assert_eq!(e, Encoding::Base64);
        assert_eq!(decode_bytes(&s, e, "value").ok(), Some(Bytes::from_static(b"\xff\x00")));
        assert!(decode_bytes("!!", Encoding::Base64, "value").is_err());
        let c = encode_cursor(b"\x00\x01/+");
        assert_eq!(
            query_bytes(Some("a=1&to=x%2Fy+z%2B%FF&to=2"), "to"),
            Some(Bytes::from_static(b"x/y z+\xff"))
        );
        assert_eq!(query_bytes(Some("to"), "to"), Some(Bytes::new()), "present without a value");
        assert_eq!(query_bytes(Some("tox=1"), "to"), None);
        assert_eq!(query_bytes(None, "to"), None);
        assert_eq!(decode_cursor(&c).ok(), Some(Bytes::from_static(b"\x00\x01/+")));
    }
}
