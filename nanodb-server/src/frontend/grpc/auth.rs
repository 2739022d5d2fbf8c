//! Authentication for gRPC: a tower layer (installed only with auth on) that resolves the caller
//! from the `authorization` metadata (`Basic base64(user:password)`, the header HTTP uses) before
//! the message is decoded, answers `UNAUTHENTICATED` when it is missing or wrong, and hands the
//! caller to the services in the request's extensions. `Bearer <token>` takes a signed token
//! from `nanodb.v1.Auth/Authenticate` (or REST's `POST /v1/auth/token`). Health, reflection and
//! `Auth` itself stay open. The header is read by `Auth::caller_for`, as REST's is.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

use super::convert::status;
use crate::auth::Auth;
use crate::stats::Protocol;

/// The layer: see the module documentation.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Auth>>,
}

impl AuthLayer {
    /// A layer authenticating against `auth`; with `None` (auth off) it passes requests through.
    pub fn new(auth: Option<Arc<Auth>>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

/// Services that answer without credentials: health checks, reflection, and `Auth` (its request
/// carries them).
fn open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/nanodb.v1.Auth/")
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(auth) = &self.auth else { return Either::Right(self.inner.call(request)) };
        if open(request.uri().path()) {
            return Either::Right(self.inner.call(request));
        }
        let header = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        match auth.caller_for(Protocol::Grpc, header) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(e) => Either::Left(ready(Ok(status(&e).into_http()))),
        }
    }
}
