//! The per-connection stream layer of the HTTP frontends (REST and gRPC): the plain-or-TLS
//! stream, and `--idle-timeout` for connections that hyper drives.
//!
//! Idleness is "no byte received and no request in flight for the timeout": [`Activity`] counts
//! the requests in flight (a guard taken when a request starts, released when its response body
//! is done or dropped, so an SSE stream, a WebSocket or a gRPC watch never counts as idle) and
//! the time of the latest read; [`Idle`] wraps the connection's stream and ends it (end of file,
//! which hyper takes as the client leaving) once idle past the timeout. Without a timeout both are
//! passthroughs, except that each read with bytes tells the event loop's poller there was work
//! ([`super::event_loops::idle_poll::note_work`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;

/// A connection's requests in flight and latest read.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    busy: AtomicUsize,
    /// Milliseconds from `start` to the latest read or finished request.
    last_ms: AtomicU64,
}

impl Activity {
    /// A connection that starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { start: Instant::now(), busy: AtomicUsize::new(0), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started: the connection is not idle until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection becomes idle past `timeout`, if nothing happens meanwhile; `None`
    /// while a request is in flight.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout)
    }
}

/// A request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's [`Activity`] and addresses, as gRPC's connect info: tonic puts it in every
/// request's extensions, where [`BusyLayer`] finds it. The activity is `None` without
/// `--idle-timeout` (then requests are not counted at all).
#[derive(Debug, Clone)]
pub struct ConnActivity {
    /// The connection's activity, when counted.
    pub activity: Option<Arc<Activity>>,
    /// Its addresses, put back in each request as tonic's own `TcpConnectInfo` so that
    /// `tonic::Request::remote_addr` keeps working.
    pub tcp: tonic::transport::server::TcpConnectInfo,
}

/// A connection's stream that ends once the connection has been idle for `timeout`.
#[derive(Debug)]
pub struct Idle<IO> {
    io: IO,
    activity: Arc<Activity>,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<IO> Idle<IO> {
    /// Wraps `io`; `timeout` `None` for never.
    pub fn new(io: IO, activity: Arc<Activity>, timeout: Option<Duration>) -> Self {
        Self { io, activity, timeout, sleep: None }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Whether the connection has been idle past the timeout; otherwise arms the timer to wake
    /// the reader when it might be.
    fn expired(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let Some(timeout) = self.timeout else { return false };
        loop {
            let now = Instant::now();
            let deadline = match self.activity.deadline(timeout) {
                Some(at) if at <= now => return true,
                Some(at) => at,
                // A request in flight: look again a timeout from now.
                None => now + timeout,
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    // Bytes came in: on an event loop, keep polling for the next ones for a
                    // moment (a thread-local counter; nothing on the shared runtime).
                    super::event_loops::idle_poll::note_work();
                    if self.timeout.is_some() {
                        self.activity.touch();
                    }
                }
                Poll::Ready(r)
            }
            // Idle past the timeout: end of file, and hyper closes the connection.
            Poll::Pending if self.expired(cx) => {
                tracing::debug!("idle connection closed (--idle-timeout)");
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it is done or dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B> Tracked<B> {
    /// `inner`, holding `busy` (if any) until its end.
    pub fn new(inner: B, busy: Option<Busy>) -> Self {
        Self { inner, busy }
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.busy = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts each request as in flight on its connection (found as [`ConnActivity`] in the
/// request's extensions) until its response body ends: for tonic, which serves the connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusyLayer;

impl<S> tower::Layer<S> for BusyLayer {
    type Service = BusyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BusyService { inner }
    }
}

/// See [`BusyLayer`].
#[derive(Debug, Clone)]
pub struct BusyService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for BusyService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = BusyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let mut busy = None;
        if let Some(conn) = req.extensions().get::<ConnActivity>().cloned() {
            busy = conn.activity.as_ref().map(Activity::begin);
            req.extensions_mut().insert(conn.tcp);
        }
        BusyFuture { inner: self.inner.call(req), busy }
    }
}

pin_project_lite::pin_project! {
    /// See [`BusyLayer`].
    pub struct BusyFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, ResBody, E> std::future::Future for BusyFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<Tracked<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(result.map(|r| r.map(|body| Tracked::new(body, busy))))
    }
}

/// An accepted connection of a listener that may speak TLS: one type for tonic's incoming stream.
#[derive(Debug)]
pub enum MaybeTls {
    /// Plaintext.
    Plain(TcpStream),
    /// After the TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
