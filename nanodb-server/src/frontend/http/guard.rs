//! Load shedding, the concurrency limit and the request timeout, in one tower layer.
//!
//! Why not `HandleErrorLayer` + `load_shed` + `GlobalConcurrencyLimitLayer` + `timeout`: that
//! stack costs a boxed future, a boxed semaphore future and several atomic operations per request,
//! all to answer "is there room?" and "is it late?". Here the room is one atomic counter (a
//! request over the limit is answered at once with 503 `BUSY`, never queued) and the deadline is
//! tokio's `Timeout`, whose timer is only registered if the handler actually waits (reading a slow
//! body), so a GET served in one poll never touches the timer wheel. Both answers are the JSON
//! error body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use nanodb_protocol::Error;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::error::AppError;

/// Bounds requests in flight to `max` (shedding the rest) and each to `timeout`.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    in_flight: Arc<AtomicUsize>,
    max: usize,
    timeout: Duration,
}

impl GuardLayer {
    /// At most `max` requests in flight across every clone of this layer, each within `timeout`.
    pub fn new(max: usize, timeout: Duration) -> Self {
        Self { in_flight: Arc::new(AtomicUsize::new(0)), max, timeout }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, in_flight: self.in_flight.clone(), max: self.max, timeout: self.timeout }
    }
}

/// The service [`GuardLayer`] produces.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
    max: usize,
    timeout: Duration,
}

/// A place among a bounded number (requests in flight, open streams); given back on drop.
#[derive(Debug)]
pub struct CountedPlace(Arc<AtomicUsize>);

impl CountedPlace {
    /// Takes one of `max` places counted by `counter`, or `None` when all are taken (for what
    /// is bounded apart from requests: the open event streams, which outlive their request).
    pub fn try_take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::Relaxed) >= max {
            counter.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(counter.clone()))
    }
}

impl Drop for CountedPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(slot) = CountedPlace::try_take(&self.in_flight, self.max) else { return GuardFuture::Shed };
        GuardFuture::Run { fut: tokio::time::timeout(self.timeout, self.inner.call(req)), slot }
    }
}

pin_project! {
    /// The response of a guarded request.
    #[project = GuardProj]
    #[derive(Debug)]
    pub enum GuardFuture<F> {
        /// Over the limit: 503 `BUSY` at once.
        Shed,
        /// Running within its deadline.
        Run { #[pin] fut: tokio::time::Timeout<F>, slot: CountedPlace },
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Shed => Poll::Ready(Ok(AppError::from(Error::Busy).into_response())),
            GuardProj::Run { fut, .. } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(response)) => Poll::Ready(response),
                Poll::Ready(Err(_elapsed)) => Poll::Ready(Ok(AppError::from(Error::Timeout).into_response())),
            },
        }
    }
}
