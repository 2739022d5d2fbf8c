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
pub(crate) mod auth;
mod batch;
mod cluster;
mod error;
mod eval;
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::routing::{delete, get, post, put};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nanodb_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::debug;
use utoipa::{OpenApi, ToSchema};

pub use error::{AppError, status_of};

use self::guard::GuardLayer;
use super::conn::{Activity, Idle, Tracked};
use super::event_loops::EventLoops;
use super::{Context, Run};
use crate::stats::Protocol;
use crate::tls::{Alpn, Tls};

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
    /// Where upgraded WebSockets, which outlive their HTTP connection, take a token: the event
    /// loops' tracker, so the loops they run on outlive them (see [`serve`]).
    upgraded: TaskTracker,
}

/// The router's state.
pub type AppState = Arc<Shared>;

pub use self::auth::Call;

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
        batch::txn,
        eval::eval,
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
        cluster::add_member,
        cluster::remove_member,
        admin::readyz,
        admin::stats,
        admin::metrics,
        admin::openapi,
        watch::watch,
        watch::subscribe,
        watch::publish,
        ws::ws,
        auth::issue_token,
    ),
    components(schemas(
        auth::TokenBody,
        cluster::MemberJson,
        cluster::MembersJson,
        error::ErrorBody,
        error::ErrorDetail,
        extract::Encoding,
        hash_list::End,
        batch::BatchOp,
        batch::BatchResult,
        batch::FloatArg,
        batch::TxnBody,
        batch::TxnJson,
        batch::CompareJson,
        batch::CompareOpJson,
        eval::EvalBody,
        eval::EvalJson,
        eval::ScriptValueJson,
        eval::ScriptKindJson,
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
    router_with(ctx, TaskTracker::new())
}

/// [`router`], its upgraded WebSockets tracked by `upgraded` too.
fn router_with(ctx: Context, upgraded: TaskTracker) -> Router {
    let config = ctx.config.clone();
    let body_limit = config.limits.max_value_len.saturating_mul(2).saturating_add(JSON_BODY_SLACK);
    let auth_on = ctx.auth.enabled();
    let state: AppState = Arc::new(Shared { ctx, body_limit, streams: Arc::default(), upgraded });
    let layers = ServiceBuilder::new()
        // 5xx are logged where they arise (internal faults at error level); at the default level a
        // shed or timed-out request under overload must not add a log line each.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
        .option_layer(cors(&config.cors_origins))
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(256).and(is_json)))
        .layer(GuardLayer::new(config.max_in_flight, config.request_timeout))
        // Credentials before any body is read; absent with auth off.
        .option_layer(auth_on.then(|| auth::AuthLayer::new(state.ctx.auth.clone())));

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
        .route("/v1/txn", post(batch::txn))
        .route("/v1/eval", post(eval::eval))
        .route("/v1/auth/token", post(auth::issue_token))
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
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
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
/// connections close. Connections are accepted by the shared [`super::accept_loop`] (the
/// `--max-connections` places) and served by hyper directly on REST's event loops
/// (`--http-threads`; 0: the shared runtime), over TLS when `tls` is given (the handshake in the
/// connection's task). A connection's HTTP/2 streams and an upgraded WebSocket are tasks of
/// their own, spawned where the connection runs (hyper's and axum's `tokio::spawn`): on its loop.
pub async fn serve(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>) {
    let loops = match EventLoops::start("http", ctx.config.http_threads, ctx.config.http_idle_poll) {
        Ok(loops) => loops,
        Err(e) => {
            tracing::error!(error = %e, "http: cannot start the event loops; REST is off");
            return;
        }
    };
    let app = router_with(ctx.clone(), loops.tracker());
    let max = ctx.config.max_connections;
    let (conn_ctx, tls_serve) = (ctx.clone(), tls.clone());
    let serve_one = move |stream: TcpStream, peer: SocketAddr| {
        let (ctx, tls, app) = (conn_ctx.clone(), tls_serve.clone(), app.clone());
        async move {
            let _open = ctx.stats.connection(Protocol::Http);
            match tls {
                None => connection(stream, &ctx, app).await,
                Some(tls) => {
                    let acceptor = tls.acceptor(Alpn::Http);
                    if let Some(stream) =
                        crate::tls::accept(acceptor, stream, peer, &ctx, "REST API port").await
                    {
                        connection(stream, &ctx, app).await;
                    }
                }
            }
        }
    };
    let refuse_ctx = ctx.clone();
    let refuse = move |stream| refuse(stream, max, refuse_ctx.clone(), tls.clone());
    super::accept_loop(listener, ctx, "http", serve_one, refuse, loops.active()).await;
    // Connections drain, then WebSockets close (they hold tokens of the loops' tracker).
    loops.stop().await;
}

/// Serves one connection (HTTP/1.1 or HTTP/2, WebSocket upgrades included) with the limits of
/// the configuration: the header-read deadline (slowloris), the HTTP/2 stream and header limits,
/// keepalive pings, and `--idle-timeout`. On shutdown, in-flight requests finish and the
/// connection closes (HTTP/2: GOAWAY).
async fn connection<IO>(io: IO, ctx: &Context, app: Router)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let idle = ctx.config.idle_timeout;
    let io = TokioIo::new(Idle::new(io, activity.clone(), idle));
    let service = hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let busy = idle.map(|_| activity.begin());
        let response = tower::ServiceExt::oneshot(app.clone(), req);
        async move { response.await.map(|r| r.map(|body| Tracked::new(body, busy))) }
    });
    let builder = http_builder(&ctx.config);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http: connection ended on an error");
    }
}

/// hyper's connection builder with NanoDB's limits, for REST (gRPC sets the same on tonic).
fn http_builder(config: &crate::config::Config) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.http_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
        .max_header_list_size(config.http2_max_header_bytes)
        .keep_alive_interval(HTTP2_KEEPALIVE)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    builder
}

/// HTTP/2 limits that are not flags (gRPC and REST): streams a client may open and reset before
/// the server handles them (the rapid-reset attack, CVE-2023-44487; hyper's default, made
/// explicit), and the keepalive PING that finds dead peers.
pub(crate) const HTTP2_MAX_PENDING_RESETS: usize = 20;
pub(crate) const HTTP2_KEEPALIVE: Duration = Duration::from_secs(60);
pub(crate) const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Answers a connection over `--max-connections` with one 503 and closes it (over TLS after the
/// handshake, on a TLS port).
async fn refuse(stream: TcpStream, max: usize, ctx: Context, tls: Option<Arc<Tls>>) {
    async fn tell<S: AsyncWrite + Unpin>(mut stream: S, max: usize) {
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
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
    match tls {
        None => tell(stream, max).await,
        Some(tls) => {
            let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let acceptor = tls.acceptor(Alpn::Http);
            if let Some(stream) = crate::tls::accept(acceptor, stream, peer, &ctx, "REST API port").await {
                tell(stream, max).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
