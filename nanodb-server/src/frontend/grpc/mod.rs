//! The gRPC frontend (tonic): `nanodb.v1.KV`, `nanodb.v1.Admin` and `nanodb.v1.Auth` from `proto/nanodb/v1`, plus
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
//! - Event loops: connections are served on gRPC's own event loops (`--grpc-threads`, default 1;
//!   see [`super::event_loops`]), one tonic server per loop; 0 serves them on the shared runtime.
//! - Shutdown: when `ctx.shutdown` fires, health turns `NOT_SERVING`, the listener stops and
//!   connections drain (HTTP/2 GOAWAY; in-flight calls finish).

mod auth;
mod cluster;
mod convert;
mod reach;
mod service;
mod watch;

pub use reach::reach;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use nanodb_protocol::pb::{
    self, admin_server::AdminServer, auth_server::AuthServer, cluster_server::ClusterServer,
    kv_server::KvServer,
};
use nanodb_protocol::{Error, Limits};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Sender;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
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

pub use cluster::ClusterService;
pub use convert::{ERROR_CODE_METADATA, code, status};
pub use service::{AdminService, AuthService, KvService};

use super::Context;
use super::conn::{Activity, BusyLayer, ConnActivity, Idle, MaybeTls};
use super::event_loops::EventLoops;
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
const SERVICES: [&str; 4] = ["nanodb.v1.KV", "nanodb.v1.Admin", "nanodb.v1.Auth", "nanodb.v1.Cluster"];

/// Serves gRPC on `listener` until `ctx.shutdown` fires, then drains.
pub async fn serve(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>) {
    let limit = message_limit(&ctx.config.limits);
    let kv = KvServer::new(KvService::new(ctx.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit.saturating_mul(RESPONSE_FACTOR));
    let auth_service = AuthServer::new(AuthService::new(ctx.clone()));
    let admin = AdminServer::new(AdminService::new(ctx.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let cluster = ClusterServer::new(ClusterService::new(ctx.clone()));

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

    let loops = match EventLoops::start("grpc", ctx.config.grpc_threads, ctx.config.grpc_idle_poll) {
        Ok(loops) => loops,
        Err(e) => {
            error!(error = %e, "grpc: cannot start the event loops; gRPC is off");
            return;
        }
    };

    // NOT_SERVING first, so health watchers hear it before connections get their GOAWAY (when
    // `drain` fires).
    let drain = CancellationToken::new();
    let shutdown = {
        let (token, drain) = (ctx.shutdown.clone(), drain.clone());
        async move {
            token.cancelled().await;
            for name in SERVICES.into_iter().chain([""]) {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
            debug!("grpc: draining");
            drain.cancel();
        }
    };

    let in_flight = ctx.config.max_in_flight;
    let router = tonic::transport::Server::builder()
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
        // Credentials before the message is decoded; a pass-through with auth off.
        .layer(auth::AuthLayer::new(ctx.auth.enabled().then(|| ctx.auth.clone())))
        .add_service(kv)
        .add_service(admin)
        .add_service(auth_service)
        .add_service(cluster)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);

    // One tonic server per event loop, fed with that loop's share of the connections: tonic
    // spawns each connection (and hyper each HTTP/2 stream) where its server runs, and drains
    // them all before the server's future ends. `--grpc-threads 0`: one server on the shared
    // runtime, as before the loops.
    let route = match loops.active() {
        None => {
            let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
            let server =
                router.serve_with_incoming_shutdown(ReceiverStream::new(rx), drain.cancelled_owned());
            ctx.tasks.spawn(async move { report(server.await) });
            Route::Shared(tx)
        }
        Some(loops) => Route::Loops(
            loops,
            (0..loops.len())
                .map(|i| {
                    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
                    let server = router.clone().serve_with_incoming_shutdown(
                        ReceiverStream::new(rx),
                        drain.clone().cancelled_owned(),
                    );
                    loops.spawn_on(i, async move { report(server.await) });
                    tx
                })
                .collect(),
        ),
    };
    tokio::join!(accept(listener, ctx, tls, route), shutdown);
    // The loops' servers have drained their connections when their futures end.
    loops.stop().await;
}

/// Accepted connections queued for a tonic server before it takes them.
const ACCEPT_QUEUE: usize = 64;

/// Logs how a tonic server ended.
fn report(result: Result<(), tonic::transport::Error>) {
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

/// Where accepted connections go: the one tonic server on the shared runtime, or the server of
/// the event loop each is placed on (round robin).
enum Route<'a> {
    Shared(Sender<io::Result<Conn>>),
    Loops(&'a EventLoops, Vec<Sender<io::Result<Conn>>>),
}

/// Accepts connections until shutdown, with TCP_NODELAY set, counted in the stats, and refused
/// (closed at once) beyond `max_connections`. With `tls`, each handshake runs in a task of its own
/// (on the connection's event loop, if any), so a client that stalls its handshake holds up
/// nobody; connections are handed to tonic as they complete.
async fn accept(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>, route: Route<'_>) {
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
                match (&route, &tls) {
                    (Route::Shared(tx), None) => {
                        if tx.send(Ok(Conn::new(MaybeTls::Plain(stream), open, &ctx))).await.is_err() {
                            break;
                        }
                    }
                    (Route::Shared(tx), Some(tls)) => {
                        let (tx, tls, ctx) = (tx.clone(), tls.clone(), ctx.clone());
                        ctx.tasks.clone().spawn(hand_over(stream, peer, open, ctx, Some(tls), tx));
                    }
                    (Route::Loops(loops, txs), tls) => {
                        let i = loops.next();
                        let (tx, tls, ctx) = (txs[i].clone(), tls.clone(), ctx.clone());
                        loops.spawn_socket(i, "grpc", stream, peer, move |stream| {
                            hand_over(stream, peer, open, ctx, tls, tx)
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

/// Completes a connection's TLS handshake (with `tls`) and hands the connection to its tonic
/// server.
async fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    open: ConnectionGuard,
    ctx: Context,
    tls: Option<Arc<Tls>>,
    tx: Sender<io::Result<Conn>>,
) {
    let stream = match tls {
        None => MaybeTls::Plain(stream),
        Some(tls) => {
            match crate::tls::accept(tls.acceptor(Alpn::Grpc), stream, peer, &ctx, "gRPC port").await {
                Some(s) => MaybeTls::Tls(Box::new(s)),
                None => return,
            }
        }
    };
    let _ = tx.send(Ok(Conn::new(stream, open, &ctx))).await;
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
