//! The REST frontend (axum): routes under `/v1`, health, stats, metrics, the OpenAPI document and
//! an index of them at `/`, decoded into [`Command`]s and applied by the shared engine.
//!
//! [`router`] builds the whole application (tests drive it with `oneshot`); [`serve`] runs it on a
//! listener until the shutdown token is cancelled. Tower layers, outermost first: tracing, CORS (only
//! with `--cors-origins`), JSON response compression, then [`guard`]: load shedding (503
//! `BUSY`) at the concurrency limit and the request timeout (503 `TIMEOUT`). Bodies are read up to
//! a limit derived from `max_value_len` (413).
//! Every error, including unknown routes (404) and wrong methods (405), is the JSON error body.
//! Watching and pub/sub ([`watch`]: SSE, [`ws`]: WebSocket) are long-lived responses that pass
//! the same layers: the guard only bounds producing their headers, and compression skips them.

mod admin;
mod batch;
mod cluster;
mod error;
mod events;
mod extract;
mod guard;
mod hash_list;
mod keys;
mod kv;
mod reach;
mod watch;
mod ws;

pub use reach::reach;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context as TaskContext, Poll};

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::routing::{delete, get, post, put};
use nanodb_protocol::{Error, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{debug, info, warn};
use utoipa::{OpenApi, ToSchema};

pub use error::{AppError, status_of};

use self::guard::GuardLayer;
use super::{Context, Run};
use crate::stats::{ConnectionGuard, Protocol, Stats};

/// The response header carrying a key's remaining time to live, in milliseconds (only present
/// when the key expires).
pub const TTL_HEADER: HeaderName = HeaderName::from_static("x-ttl-ms");

/// JSON bodies (batches) may be this much larger than `max_value_len`: base64 grows a value by a
/// third, and a batch carries keys and framing too.
const JSON_BODY_SLACK: usize = 1 << 20;

/// What every handler shares: one `Arc` clone per request.
#[derive(Debug)]
pub struct Shared {
    ctx: Context,
    /// Largest request body read, in bytes (also the largest WebSocket message).
    body_limit: usize,
    /// Open event streams (SSE and WebSocket), at most `max_streams`.
    streams: Arc<AtomicUsize>,
}

/// The router's state.
pub type AppState = Arc<Shared>;

impl Shared {
    /// Applies one command, records it in the stats under [`Protocol::Http`], and returns once
    /// its effect may be acknowledged under the fsync policy.
    pub async fn exec<C: Run>(&self, cmd: C) -> Result<C::Output, Error> {
        self.ctx.run(Protocol::Http, cmd).await
    }
}

/// Documents a raw binary body in the OpenAPI document (`Vec<u8>` would read as an array of
/// integers).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BinaryBody(pub Vec<u8>);

/// The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "NanoDB REST API",
        description = "Keys and values are bytes: keys are percent-encoded path segments, values raw bodies. Errors are {\"error\": {\"code\", \"message\"}} with the codes shared by every NanoDB protocol."
    ),
    paths(
        kv::get,
        kv::put,
        kv::delete,
        kv::incr,
        kv::incr_float,
        kv::append,
        kv::get_range,
        kv::get_set,
        kv::get_del,
        kv::get_ex,
        kv::scan,
        kv::multi_put,
        keys::exists,
        keys::ttl,
        keys::key_type,
        keys::expire,
        keys::rename,
        keys::key_count,
        keys::random_key,
        keys::flush,
        batch::batch,
        hash_list::hash_get_all,
        hash_list::hash_get,
        hash_list::hash_set,
        hash_list::hash_delete,
        hash_list::hash_incr,
        hash_list::list_range,
        hash_list::list_push,
        hash_list::list_pop,
        hash_list::list_set,
        hash_list::list_trim,
        admin::index,
        admin::healthz,
        cluster::status,
        admin::readyz,
        admin::stats,
        admin::metrics,
        admin::openapi,
        watch::watch,
        watch::subscribe,
        watch::publish,
        ws::ws,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        extract::Encoding,
        hash_list::End,
        batch::BatchOp,
        batch::BatchResult,
        batch::FloatArg,
        kv::KeyTypeJson,
        kv::ExpiryJson,
        kv::PairJson,
        kv::MultiPutJson,
        events::EventJson,
        events::KeyEventJson,
        events::MessageJson,
        events::LaggedJson,
        watch::ReceiversJson
    ))
)]
pub struct ApiDoc;

/// The whole REST application over `ctx`'s engine, with its tower layers.
///
/// The layers are applied in one `Router::layer` call: axum boxes every route once per call, and
/// each box costs an allocation per request.
pub fn router(ctx: Context) -> Router {
    let config = ctx.config.clone();
    let body_limit = config.limits.max_value_len.saturating_mul(2).saturating_add(JSON_BODY_SLACK);
    let state: AppState = Arc::new(Shared { ctx, body_limit, streams: Arc::default() });
    let layers = ServiceBuilder::new()
        // 5xx are logged where they arise (internal faults at error level); at the default level a
        // shed or timed-out request under overload must not add a log line each.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
        .option_layer(cors(&config.cors_origins))
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(256).and(is_json)))
        .layer(GuardLayer::new(config.max_in_flight, config.request_timeout));

    Router::new()
        // A key is one whole segment, so the words after it never shadow a key; see hash_list.rs
        // for why hashes and lists take their lengths as `?len=true`.
        .route("/v1/kv", get(kv::scan).post(kv::multi_put))
        .route("/v1/kv/{key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/kv/{key}/incr", post(kv::incr))
        .route("/v1/kv/{key}/incr-float", post(kv::incr_float))
        .route("/v1/kv/{key}/append", post(kv::append))
        .route("/v1/kv/{key}/range", get(kv::get_range))
        .route("/v1/kv/{key}/getset", post(kv::get_set))
        .route("/v1/kv/{key}/getdel", post(kv::get_del))
        .route("/v1/kv/{key}/getex", post(kv::get_ex))
        .route("/v1/kv/{key}/exists", get(keys::exists))
        .route("/v1/kv/{key}/ttl", get(keys::ttl))
        .route("/v1/kv/{key}/type", get(keys::key_type))
        .route("/v1/kv/{key}/expire", post(keys::expire))
        .route("/v1/kv/{key}/rename", post(keys::rename))
        .route("/v1/keyspace", delete(keys::flush))
        .route("/v1/keyspace/count", get(keys::key_count))
        .route("/v1/keyspace/random", get(keys::random_key))
        .route("/v1/batch", post(batch::batch))
        .route("/v1/hash/{key}", get(hash_list::hash_get_all))
        .route(
            "/v1/hash/{key}/{field}",
            get(hash_list::hash_get).put(hash_list::hash_set).delete(hash_list::hash_delete),
        )
        .route("/v1/hash/{key}/{field}/incr", post(hash_list::hash_incr))
        .route("/v1/list/{key}", get(hash_list::list_range).post(hash_list::list_push))
        .route("/v1/list/{key}/pop", post(hash_list::list_pop))
        .route("/v1/list/{key}/trim", post(hash_list::list_trim))
        .route("/v1/list/{key}/{index}", put(hash_list::list_set))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/subscribe/{channel}", get(watch::subscribe))
        .route("/v1/publish/{channel}", post(watch::publish))
        .route("/v1/ws", get(ws::ws))
        .route("/", get(admin::index))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/v1/stats", get(admin::stats))
        .route("/v1/cluster", get(cluster::status))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(admin::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layers)
        .with_state(state)
}

/// Compress JSON only: raw values are the client's bytes, often already compressed.
fn is_json(_: StatusCode, _: Version, headers: &HeaderMap, _: &axum::http::Extensions) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// CORS from `--cors-origins`: off when empty, any origin for `*`, else exactly those origins.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH, header::ACCEPT])
            .expose_headers([header::ETAG, TTL_HEADER]),
    )
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidArgument,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Serves the REST API on `listener` until shutdown; in-flight requests finish, idle keep-alive
/// connections close.
pub async fn serve(listener: TcpListener, ctx: Context) {
    let app = router(ctx.clone());
    let listener = CountedListener {
        inner: listener,
        stats: ctx.stats.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(ctx.config.max_connections)),
        max: ctx.config.max_connections,
    };
    let shutdown = ctx.shutdown.clone().cancelled_owned();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        warn!(error = %e, "http: server stopped on error");
    }
    debug!("http: listener stopped");
}

/// A TCP listener whose connections count themselves in the stats while open, at most
/// `--max-connections` at once like every protocol's: one over the limit is answered 503 with the
/// JSON error body and closed, never handed to the router.
struct CountedListener {
    inner: TcpListener,
    stats: Arc<Stats>,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl axum::serve::Listener for CountedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                        debug!(peer = %addr, max = self.max, "http: connection refused, at max_connections");
                        tokio::spawn(refuse(stream, self.max));
                        continue;
                    };
                    let guard = self.stats.connection(Protocol::Http);
                    return (CountedStream { inner: stream, _open: guard, _slot: slot }, addr);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    info!(error = %e, "http: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Answers a connection over `--max-connections` with one 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"error\":{{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"too many connections; the limit is {max} (--max-connections)\"}}}}\n"
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not read is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}

/// A connection that holds its stats guard and its place among `--max-connections`.
struct CountedStream {
    inner: TcpStream,
    _open: ConnectionGuard,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
