//! The `nanodb.v1.KV` and `nanodb.v1.Admin` service implementations: each RPC converts its request
//! into a [`Command`], runs it on the engine, records it, and encodes the [`Reply`].

use std::time::Instant;

use nanodb_protocol::pb::{self, admin_server::Admin, kv_server::Kv};
use nanodb_protocol::{Command, Error, Reply};
use tonic::{Request, Response, Status};

use super::convert::{OpKind, get_response, key_value, length, operation_result, status, unexpected};
use super::watch::{self, EventStream};
use crate::frontend::Context;
use crate::stats::{Protocol, resident_memory_bytes};

/// Serves `nanodb.v1.KV` from the shared engine.
#[derive(Debug, Clone)]
pub struct KvService {
    ctx: Context,
    /// Open `Watch` and `Subscribe` streams, at most `max_connections`.
    streams: watch::Streams,
}

impl KvService {
    /// A KV service over the context's engine.
    pub fn new(ctx: Context) -> Self {
        Self { ctx, streams: watch::Streams::default() }
    }
}

/// Converts `msg`, executes it, records it under its command name (`op` when the message does
/// not convert), and returns once its effect may be acknowledged under the fsync policy. The hot
/// path: one engine call, two clock reads, a few relaxed atomics (and no await without a write).
async fn run<M>(ctx: &Context, op: &'static str, msg: M) -> Result<Reply, Status>
where
    Command: TryFrom<M, Error = Error>,
{
    let result = match Command::try_from(msg) {
        Ok(cmd) => ctx.run(Protocol::Grpc, cmd).await,
        Err(e) => {
            ctx.stats.record(Protocol::Grpc, op, false, std::time::Duration::ZERO);
            Err(e)
        }
    };
    result.map_err(|e| status(&e))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        match run(&self.ctx, "get", request.into_inner()).await? {
            Reply::Value(entry) => Ok(Response::new(get_response(entry))),
            other => Err(unexpected("get", &other)),
        }
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        match run(&self.ctx, "put", request.into_inner()).await? {
            Reply::Put { applied, version } => Ok(Response::new(pb::PutResponse { applied, version })),
            other => Err(unexpected("put", &other)),
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        match run(&self.ctx, "delete", request.into_inner()).await? {
            Reply::Bool(deleted) => Ok(Response::new(pb::DeleteResponse { deleted })),
            other => Err(unexpected("delete", &other)),
        }
    }

    async fn incr(&self, request: Request<pb::IncrRequest>) -> Result<Response<pb::IncrResponse>, Status> {
        match run(&self.ctx, "incr", request.into_inner()).await? {
            Reply::Int(value) => Ok(Response::new(pb::IncrResponse { value })),
            other => Err(unexpected("incr", &other)),
        }
    }

    async fn expire(
        &self,
        request: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        match run(&self.ctx, "expire", request.into_inner()).await? {
            Reply::Bool(applied) => Ok(Response::new(pb::ExpireResponse { applied })),
            other => Err(unexpected("expire", &other)),
        }
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        match run(&self.ctx, "scan", request.into_inner()).await? {
            Reply::Scan { entries, next_cursor } => Ok(Response::new(pb::ScanResponse {
                entries: entries.into_iter().map(key_value).collect(),
                next_cursor,
            })),
            other => Err(unexpected("scan", &other)),
        }
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let msg = request.into_inner();
        // An operation without a kind fails the conversion below, before anything runs.
        let kinds: Vec<OpKind> = msg.ops.iter().filter_map(OpKind::of).collect();
        match run(&self.ctx, "batch", msg).await? {
            Reply::Batch(results) if results.len() == kinds.len() => Ok(Response::new(pb::BatchResponse {
                results: kinds.into_iter().zip(results).map(|(k, r)| operation_result(k, r)).collect(),
            })),
            other => Err(unexpected("batch", &other)),
        }
    }

    async fn hash_set(
        &self,
        request: Request<pb::HashSetRequest>,
    ) -> Result<Response<pb::HashSetResponse>, Status> {
        match run(&self.ctx, "hash_set", request.into_inner()).await? {
            Reply::Bool(created) => Ok(Response::new(pb::HashSetResponse { created })),
            other => Err(unexpected("hash_set", &other)),
        }
    }

    async fn hash_get(
        &self,
        request: Request<pb::HashGetRequest>,
    ) -> Result<Response<pb::HashGetResponse>, Status> {
        match run(&self.ctx, "hash_get", request.into_inner()).await? {
            Reply::Bytes(value) => Ok(Response::new(pb::HashGetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
            })),
            other => Err(unexpected("hash_get", &other)),
        }
    }

    async fn hash_delete(
        &self,
        request: Request<pb::HashDeleteRequest>,
    ) -> Result<Response<pb::HashDeleteResponse>, Status> {
        match run(&self.ctx, "hash_delete", request.into_inner()).await? {
            Reply::Bool(deleted) => Ok(Response::new(pb::HashDeleteResponse { deleted })),
            other => Err(unexpected("hash_delete", &other)),
        }
    }

    async fn hash_get_all(
        &self,
        request: Request<pb::HashGetAllRequest>,
    ) -> Result<Response<pb::HashGetAllResponse>, Status> {
        match run(&self.ctx, "hash_get_all", request.into_inner()).await? {
            Reply::Pairs(pairs) => Ok(Response::new(pb::HashGetAllResponse {
                fields: pairs.into_iter().map(|(field, value)| pb::HashField { field, value }).collect(),
            })),
            other => Err(unexpected("hash_get_all", &other)),
        }
    }

    async fn list_push(
        &self,
        request: Request<pb::ListPushRequest>,
    ) -> Result<Response<pb::ListPushResponse>, Status> {
        match run(&self.ctx, "list_push", request.into_inner()).await? {
            Reply::Int(n) => Ok(Response::new(pb::ListPushResponse { length: length(n) })),
            other => Err(unexpected("list_push", &other)),
        }
    }

    async fn list_pop(
        &self,
        request: Request<pb::ListPopRequest>,
    ) -> Result<Response<pb::ListPopResponse>, Status> {
        match run(&self.ctx, "list_pop", request.into_inner()).await? {
            Reply::List(values) => Ok(Response::new(pb::ListPopResponse { values })),
            other => Err(unexpected("list_pop", &other)),
        }
    }

    async fn list_range(
        &self,
        request: Request<pb::ListRangeRequest>,
    ) -> Result<Response<pb::ListRangeResponse>, Status> {
        match run(&self.ctx, "list_range", request.into_inner()).await? {
            Reply::List(values) => Ok(Response::new(pb::ListRangeResponse { values })),
            other => Err(unexpected("list_range", &other)),
        }
    }

    type WatchStream = EventStream<pb::WatchEvent>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let started = Instant::now();
        let result = watch::watch(&self.ctx, &self.streams, request.into_inner());
        self.ctx.stats.record(Protocol::Grpc, "watch", result.is_ok(), started.elapsed());
        Ok(Response::new(result?))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        match run(&self.ctx, "publish", request.into_inner()).await? {
            Reply::Int(n) => Ok(Response::new(pb::PublishResponse { receivers: n.max(0) as u64 })),
            other => Err(unexpected("publish", &other)),
        }
    }

    type SubscribeStream = EventStream<pb::SubscribeMessage>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let started = Instant::now();
        let result = watch::subscribe(&self.ctx, &self.streams, request.into_inner());
        self.ctx.stats.record(Protocol::Grpc, "subscribe", result.is_ok(), started.elapsed());
        Ok(Response::new(result?))
    }
}

fn feed_stats(s: &crate::feed::FeedStats) -> pb::FeedStats {
    use std::sync::atomic::Ordering::Relaxed;
    pb::FeedStats {
        subscribers: s.subscribers.load(Relaxed) as u64,
        delivered: s.delivered.load(Relaxed),
        dropped: s.dropped.load(Relaxed),
        lagged: s.lagged.load(Relaxed),
        published: s.published.load(Relaxed),
    }
}

/// Serves `nanodb.v1.Admin`.
#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: Context,
}

impl AdminService {
    /// An admin service over the context's engine and counters.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn ping(&self, request: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        match run(&self.ctx, "ping", request.into_inner()).await? {
            Reply::Pong => Ok(Response::new(pb::PingResponse {})),
            other => Err(unexpected("ping", &other)),
        }
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let started = Instant::now();
        let (ctx, stats) = (&self.ctx, &self.ctx.stats);
        let response = pb::StatsResponse {
            keys: ctx.engine.key_count() as u64,
            memory_bytes: resident_memory_bytes().unwrap_or(0),
            protocols: Protocol::ALL
                .iter()
                .map(|&p| pb::ProtocolStats { protocol: p.as_str().into(), ops: stats.ops(p) })
                .collect(),
            uptime_s: stats.uptime().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
            feed: Some(feed_stats(ctx.feed.stats())),
        };
        stats.record(Protocol::Grpc, "stats", true, started.elapsed());
        Ok(Response::new(response))
    }
}
