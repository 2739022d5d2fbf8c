//! The REST error form: [`AppError`], and the one mapping from [`nanodb_protocol::Error`] to an
//! HTTP status and the JSON body `{"error": {"code": "NOT_FOUND", "message": "..."}}`.
//!
//! Codes are the shared [`ErrorCode`] names, the same on every protocol. Internal faults are logged
//! where they happen and reach the client only as `INTERNAL` / "internal error".

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nanodb_protocol::{Error, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to an HTTP client: a status, a stable code and a message.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: ErrorCode,
    message: Cow<'static, str>,
}

/// The error body every failing route returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A code shared with the other protocols, and a message saying what was wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The stable code, e.g. `NOT_FOUND`, `CONDITION_FAILED`, `WRONGTYPE`.
    pub code: &'static str,
    /// What was wrong; limits name their setting.
    pub message: String,
}

/// The HTTP status for each error code: the one place this protocol decides it.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument
        | ErrorCode::Malformed
        | ErrorCode::LimitExceeded
        | ErrorCode::UnsupportedVersion
        | ErrorCode::HandshakeRequired => StatusCode::BAD_REQUEST,
        ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::FrameTooLarge => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ErrorCode::WrongType | ErrorCode::NotAnInteger | ErrorCode::Overflow => StatusCode::CONFLICT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::ConditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorCode::TooManyConnections
        | ErrorCode::ShuttingDown
        | ErrorCode::Unavailable
        | ErrorCode::Timeout
        | ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NoAuth | ErrorCode::WrongPass => StatusCode::UNAUTHORIZED,
        ErrorCode::NoPerm => StatusCode::FORBIDDEN,
        // Not 503: retrying does not help until memory is freed or the limit raised.
        ErrorCode::OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
    }
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        let code = e.code();
        Self { status: status_of(code), code, message: Cow::Owned(e.to_string()) }
    }
}

impl AppError {
    /// A bad query parameter, header or path.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_status(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
    }

    /// A body that is not the JSON the route expects.
    pub fn malformed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_status(StatusCode::BAD_REQUEST, ErrorCode::Malformed, message)
    }

    /// A missing key or field.
    pub fn not_found() -> Self {
        Error::NotFound.into()
    }

    /// A failed `If-Match` / `If-None-Match`.
    pub fn condition_failed(message: impl Into<String>) -> Self {
        Error::ConditionFailed(message.into()).into()
    }

    /// A fault inside the server: `detail` goes to the log, the client sees "internal error".
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "http: internal error");
        Error::Internal.into()
    }

    /// An HTTP-level condition with no engine error of its own (unknown route, wrong method).
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.as_str(), message: self.message.to_string() } }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // Internal faults were logged with their detail by `AppError::internal`; busy, timeout and
        // shutting-down answers are expected under load and stay at debug.
        if self.status.is_server_error() {
            tracing::debug!(status = %self.status, code = %self.code, message = %self.message, "http: request failed");
        }
        let mut response = json_response(self.status, &self.body());
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would succeed.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Unavailable (no cluster leader), busy, shutting down: all worth retrying shortly.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The challenges every 401 carries: both schemes the server takes.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"nanodb\", Bearer realm=\"nanodb\"";

/// The body answered if a response cannot be serialised: still the JSON error form.
const INTERNAL_BODY: &[u8] = b"{\"error\":{\"code\":\"INTERNAL\",\"message\":\"internal error\"}}\n";

/// A JSON response, ending with a newline (so `curl` output ends its line, like every text
/// tool's). Serialising our own plain structs cannot fail, but if it did the client gets the
/// JSON `INTERNAL` error rather than a panic.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            (status, Body::from(bytes))
        }
        Err(e) => {
            tracing::error!(error = %e, "http: cannot serialise a response");
            (StatusCode::INTERNAL_SERVER_ERROR, Body::from(INTERNAL_BODY))
        }
    };
    let mut r = Response::new(bytes);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_status() {
        for code in ErrorCode::ALL {
            let s = status_of(code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
        assert_eq!(status_of(ErrorCode::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::WrongType), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorCode::ConditionFailed), StatusCode::PRECONDITION_FAILED);
        assert_eq!(status_of(ErrorCode::ValueTooLarge), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status_of(ErrorCode::Busy), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_fallback_body_is_the_json_error_form() {
        let j: serde_json::Value = serde_json::from_slice(INTERNAL_BODY).expect("JSON");
        assert_eq!(j["error"]["code"], "INTERNAL");
        assert!(INTERNAL_BODY.ends_with(b"}\n"));
    }

    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        let e = AppError::internal("secret: partition 7 poisoned");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = e.body();
        assert_eq!(body.error.code, "INTERNAL");
        assert!(!body.error.message.contains("secret"), "{}", body.error.message);
    }
}
