//! Authentication for the REST API: a layer that resolves the caller from the `Authorization`
//! header before anything reads the body, and [`Call`], the extractor every handler takes, which
//! carries that caller to `Context::run`.
//!
//! The layer exists only when auth is on; without it [`Call`] finds no caller in the request and
//! takes the registry's default (everything, with auth off): no work per request. `/healthz` and
//! `/readyz` stay open. The header is read by `Auth::caller_for`, shared with gRPC: `Basic` (a
//! user and password) or `Bearer` (a signed token from [`issue_token`], `POST /v1/auth/token`).

use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use nanodb_protocol::Error;
use tower::{Layer, Service};

use super::{AppError, AppState, Run, Shared};
use crate::auth::header::{Credentials, credentials};
use crate::auth::{Auth, Caller, Need};
use crate::feed::Topic;
use crate::stats::Protocol;

/// The routes that answer without credentials (load balancers' and orchestrators' probes).
fn open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The authentication layer (installed only with auth on): 401 with `WWW-Authenticate` for
/// missing or wrong credentials, before the body is read; otherwise the caller goes into the
/// request's extensions for [`Call`]. A plain tower layer rather than `axum::middleware::from_fn`:
/// no boxed future and no state clone per request.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    /// A layer authenticating against `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> Service<Request> for AuthService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if open(req.uri().path()) {
            return Either::Right(self.inner.call(req));
        }
        let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
        match self.auth.caller_for(Protocol::Http, header) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Ok(AppError::from(e).into_response()))),
        }
    }
}

/// What a handler gets: the shared state and the request's caller.
#[derive(Debug, Clone)]
pub struct Call {
    shared: AppState,
    /// Who sent the request.
    pub caller: Caller,
}

impl Deref for Call {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl FromRequestParts<AppState> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // No caller means no authentication layer: auth is off (or, fail closed, not
        // authenticated).
        let caller = match parts.extensions.remove::<Caller>() {
            Some(c) => c,
            None => state.ctx.auth.new_caller(Protocol::Http),
        };
        Ok(Self { shared: state.clone(), caller })
    }
}

impl Call {
    /// Applies one command as this request's caller, records it in the stats under
    /// [`Protocol::Http`], and returns once its effect may be acknowledged under the fsync
    /// policy.
    pub async fn exec<C: Run>(&self, cmd: C) -> Result<C::Output, Error> {
        self.shared.ctx.run(&self.caller, cmd).await
    }

    /// Whether this caller may watch or subscribe to `topic`.
    pub fn authorize_topic(&self, topic: &Topic) -> Result<(), AppError> {
        Ok(self.shared.ctx.authorize(&self.caller, Need::of_topic(topic))?)
    }

    /// Whether this caller may run an admin operation (`what` names it in the refusal).
    pub fn authorize_admin(&self, what: &'static str) -> Result<(), AppError> {
        Ok(self.shared.ctx.authorize(&self.caller, Need::Admin(what))?)
    }

    /// Whether this caller is authenticated at all (what reading server-wide figures needs).
    pub fn authorize_any(&self) -> Result<(), AppError> {
        Ok(self.shared.ctx.authorize(&self.caller, Need::Authenticated)?)
    }
}

/// A token's answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    /// The token, for `Authorization: Bearer <token>` (and gRPC's `authorization` metadata).
    pub token: String,
    /// When it stops being valid, in Unix milliseconds.
    pub expires_at_ms: u64,
    /// The user it was issued to.
    pub user: String,
}

/// Exchanges Basic credentials for a signed token that works on every node sharing the token
/// secret until it expires (`--token-ttl`) or its user changes. A token cannot renew itself: the
/// request must carry the password.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    responses(
        (status = 200, description = "A token", body = TokenBody),
        (status = 400, description = "Authentication is off, or the credentials were not Basic", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = super::error::ErrorBody)))]
pub async fn issue_token(s: Call, headers: axum::http::HeaderMap) -> Result<Response, AppError> {
    if !s.ctx.auth.enabled() {
        return Err(crate::auth::tokens_off().into());
    }
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !matches!(credentials(header), Credentials::Basic(_)) {
        return Err(Error::InvalidArgument(
            "a token is issued for Basic credentials (user and password), not for a token".into(),
        )
        .into());
    }
    let principal = s.caller.principal().cloned().ok_or(Error::NoAuth)?;
    let (token, expires_at_ms) = s.ctx.auth.issue_token(&principal)?;
    let body = TokenBody { token, expires_at_ms, user: principal.name().to_string() };
    Ok(super::error::json_response(axum::http::StatusCode::OK, &body))
}
