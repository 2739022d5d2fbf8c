//! The gRPC frontend (tonic): `nanodb.v1.KV` and `nanodb.v1.Admin` from `proto/nanodb/v1`, plus
//! the standard health service, server reflection (v1 and v1alpha) and grpc-web, on one port.
//!
//! Policy, all from configuration:
//! - Message size: requests and responses up to [`message_limit`] (one maximal key, field and value
//!   plus headroom); a larger message is refused by tonic with `OUT_OF_RANGE`.
//! - Deadlines: a client's `grpc-timeout` is honoured, capped by `request_timeout` (tonic reports an
//!   expired server-side deadline as `CANCELLED`, "Timeout expired").
//! - Load: at most `max_connections` connections and `max_in_flight` requests in flight; a request
//!   over the limit is shed at once with `RESOURCE_EXHAUSTED` instead of queuing.
//! - gzip: requests may be gzip-compressed; responses are when the client accepts it.
//! - Connections: over TLS with `--tls-cert` (ALPN `h2`, and `http/1.1` for grpc-web), handshakes
//!   in tasks of their own; HTTP/2 streams, pending resets and header lists bounded, keepalive
//!   PINGs; closed when idle past `--idle-timeout` (never while a call or stream is open).
//! - Shutdown: when `ctx.shutdown` fires, health turns `NOT_SERVING`, the listener stops and
//!   connections drain (HTTP/2 GOAWAY; in-flight calls finish).

mod convert;
mod reach;
mod service;
mod watch;

pub use reach::reach;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::Stream;
use nanodb_protocol::pb::{self, admin_server::AdminServer, kv_server::KvServer};
use nanodb_protocol::{Error, Limits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::Response;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::util::MapResultLayer;
use tracing::{debug, error, warn};

pub use convert::{ERROR_CODE_METADATA, code, status};
pub use service::{AdminService, KvService};

use super::Context;
use super::conn::{Activity, BusyLayer, ConnActivity, Idle, MaybeTls};
use super::http::{HTTP2_KEEPALIVE, HTTP2_KEEPALIVE_TIMEOUT, HTTP2_MAX_PENDING_RESETS};
use crate::stats::{ConnectionGuard, Protocol};
use crate::tls::{Alpn, Tls};

/// Room for a message's framing and non-value fields (keys, versions, batch/list structure) on
/// top of the configured key and value limits.
const MESSAGE_HEADROOM: usize = 64 * 1024;

/// Responses may be this many maximal requests big (a scan page or a whole hash carries several
/// values); a larger answer fails with `OUT_OF_RANGE` instead of building an unbounded buffer.
const RESPONSE_FACTOR: usize = 4;

/// The largest request message: a maximal key, a maximal field and a maximal value, plus headroom.
pub fn message_limit(limits: &Limits) -> usize {
    limits.max_key_len.saturating_mul(2).saturating_add(limits.max_value_len).saturating_add(MESSAGE_HEADROOM)
}

/// The services names health reports on, besides the whole server ("").
const SERVICES: [&str; 2] = ["nanodb.v1.KV", "nanodb.v1.Admin"];

/// Serves gRPC on `listener` until `ctx.shutdown` fires, then drains.
pub async fn serve(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>) {
    let limit = message_limit(&ctx.config.limits);
    let kv = KvServer::new(KvService::new(ctx.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit.saturating_mul(RESPONSE_FACTOR));
    let admin = AdminServer::new(AdminService::new(ctx.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health.set_service_status(name, ServingStatus::Serving).await;
    }

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 =
        reflection().build_v1().map_err(|e| error!(error = %e, "grpc: no reflection v1")).ok();
    let reflection_v1alpha =
        reflection().build_v1alpha().map_err(|e| error!(error = %e, "grpc: no reflection v1alpha")).ok();

    // NOT_SERVING first, so health watchers hear it before connections get their GOAWAY.
    let shutdown = {
        let token = ctx.shutdown.clone();
        async move {
            token.cancelled().await;
            for name in SERVICES.into_iter().chain([""]) {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
            debug!("grpc: draining");
        }
    };

    let in_flight = ctx.config.max_in_flight;
    let result = tonic::transport::Server::builder()
        .accept_http1(true) // grpc-web from browsers arrives over HTTP/1.1
        .timeout(ctx.config.request_timeout)
        .max_concurrent_streams(ctx.config.http2_max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_RESETS))
        .http2_max_header_list_size(ctx.config.http2_max_header_bytes)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(BusyLayer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(MapResultLayer::new(shed_to_status))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(in_flight))
        .add_service(kv)
        .add_service(admin)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(connections(listener, ctx.clone(), tls), shutdown)
        .await;
    match result {
        Ok(()) => debug!("grpc: stopped"),
        Err(e) => error!(error = %e, "grpc: server failed"),
    }
}

/// Turns a request shed by the concurrency limit into a `RESOURCE_EXHAUSTED` response (rather than
/// tonic's generic per-connection message), through the one error mapping.
fn shed_to_status(
    result: Result<Response<Body>, tower::BoxError>,
) -> Result<Response<Body>, tower::BoxError> {
    match result {
        Err(e) if e.is::<Overloaded>() => Ok(status(&Error::Busy).into_http()),
        other => other,
    }
}

/// Accepted connections, with TCP_NODELAY set, counted in the stats, and refused (closed at once)
/// beyond `max_connections`. With `tls`, each handshake runs in a task of its own, so a client
/// that stalls its handshake holds up nobody; connections are handed to tonic as they complete.
fn connections(
    listener: TcpListener,
    ctx: Context,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    ctx.tasks.clone().spawn(accept(listener, ctx, tls, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept(
    listener: TcpListener,
    ctx: Context,
    tls: Option<Arc<Tls>>,
    tx: tokio::sync::mpsc::Sender<io::Result<Conn>>,
) {
    let max = i64::try_from(ctx.config.max_connections).unwrap_or(i64::MAX);
    loop {
        let accepted = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((_, peer)) if ctx.stats.connections(Protocol::Grpc) >= max => {
                warn!(%peer, max, "grpc: connection refused, at max_connections");
            }
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let open = ctx.stats.connection(Protocol::Grpc);
                match &tls {
                    None => {
                        if tx.send(Ok(Conn::new(MaybeTls::Plain(stream), open, &ctx))).await.is_err() {
                            break;
                        }
                    }
                    Some(tls) => {
                        let (tls, tx, conn_ctx) = (tls.clone(), tx.clone(), ctx.clone());
                        ctx.tasks.spawn(async move {
                            let acceptor = tls.acceptor(Alpn::Grpc);
                            let ctx = conn_ctx;
                            if let Some(s) =
                                crate::tls::accept(acceptor, stream, peer, &ctx, "gRPC port").await
                            {
                                let _ = tx.send(Ok(Conn::new(MaybeTls::Tls(Box::new(s)), open, &ctx))).await;
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "grpc: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A gRPC connection: the socket (plain or TLS, ended when idle past `--idle-timeout`), its
/// activity (requests in flight, found by [`BusyLayer`] through the connect info), and the guard
/// that counts it open until it closes.
#[derive(Debug)]
struct Conn {
    stream: Idle<MaybeTls>,
    activity: Arc<Activity>,
    /// Whether requests are counted (only `--idle-timeout` needs it).
    counted: bool,
    _open: ConnectionGuard,
}

impl Conn {
    fn new(stream: MaybeTls, open: ConnectionGuard, ctx: &Context) -> Self {
        let activity = Activity::new();
        let idle = ctx.config.idle_timeout;
        Self {
            stream: Idle::new(stream, activity.clone(), idle),
            activity,
            counted: idle.is_some(),
            _open: open,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnActivity;

    fn connect_info(&self) -> ConnActivity {
        ConnActivity {
            activity: self.counted.then(|| self.activity.clone()),
            tcp: self.stream.get_ref().tcp().connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_limit_covers_a_maximal_put() {
        let l = Limits::default();
        assert!(message_limit(&l) > l.max_value_len + l.max_key_len);
        let huge = Limits { max_key_len: usize::MAX, ..Limits::default() };
        assert_eq!(message_limit(&huge), usize::MAX, "saturates instead of overflowing");
    }
}
