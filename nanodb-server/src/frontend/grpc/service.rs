//! The `nanodb.v1.KV` and `nanodb.v1.Admin` service implementations: each RPC converts its request
//! into its typed command, runs it with `Context::run`, and encodes the typed output.

use std::time::Instant;

use nanodb_protocol::pb::{self, admin_server::Admin, kv_server::Kv};
use nanodb_protocol::{Error, TypedCommand, cmd};
use tonic::{Request, Response, Status};

use super::convert::{OpKind, get_response, key_value, length, operation_result, status};
use super::watch::{self, EventStream};
use crate::frontend::{Context, Run};
use crate::stats::{Protocol, resident_memory_bytes};

/// Serves `nanodb.v1.KV` from the shared engine.
#[derive(Debug, Clone)]
pub struct KvService {
    ctx: Context,
    /// Open `Watch` and `Subscribe` streams, at most `max_streams`.
    streams: watch::Streams,
}

impl KvService {
    /// A KV service over the context's engine.
    pub fn new(ctx: Context) -> Self {
        Self { ctx, streams: watch::Streams::default() }
    }
}

/// Converts `msg` into the typed command `C`, runs it, and returns its typed output once its effect
/// may be acknowledged under the fsync policy (a message that does not convert is recorded as a
/// failed `C`). The hot path: one engine call, two clock reads, a few relaxed atomics (and no
/// await without a write).
async fn run<C, M>(ctx: &Context, msg: M) -> Result<<C as Run>::Output, Status>
where
    C: TypedCommand + Run + TryFrom<M, Error = Error>,
{
    let result = match C::try_from(msg) {
        Ok(cmd) => ctx.run(Protocol::Grpc, cmd).await,
        Err(e) => {
            ctx.stats.record(Protocol::Grpc, C::NAME, false, std::time::Duration::ZERO);
            Err(e)
        }
    };
    result.map_err(|e| status(&e))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let entry = run::<cmd::Get, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(get_response(entry)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let out = run::<cmd::Put, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::PutResponse { applied: out.applied, version: out.version }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let deleted = run::<cmd::Delete, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn incr(&self, request: Request<pb::IncrRequest>) -> Result<Response<pb::IncrResponse>, Status> {
        let value = run::<cmd::Incr, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::IncrResponse { value }))
    }

    async fn expire(
        &self,
        request: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        let applied = run::<cmd::Expire, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::ExpireResponse { applied }))
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let page = run::<cmd::Scan, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::ScanResponse {
            entries: page.entries.into_iter().map(key_value).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let msg = request.into_inner();
        // An operation without a kind fails the conversion below, before anything runs.
        let kinds: Vec<OpKind> = msg.ops.iter().filter_map(OpKind::of).collect();
        let results = run::<cmd::Batch, _>(&self.ctx, msg).await?;
        if results.len() != kinds.len() {
            return Err(status(&Error::Internal));
        }
        Ok(Response::new(pb::BatchResponse {
            results: kinds.into_iter().zip(results).map(|(k, r)| operation_result(k, r)).collect(),
        }))
    }

    async fn hash_set(
        &self,
        request: Request<pb::HashSetRequest>,
    ) -> Result<Response<pb::HashSetResponse>, Status> {
        let created = run::<cmd::HashSet, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::HashSetResponse { created }))
    }

    async fn hash_get(
        &self,
        request: Request<pb::HashGetRequest>,
    ) -> Result<Response<pb::HashGetResponse>, Status> {
        let value = run::<cmd::HashGet, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::HashGetResponse { found: value.is_some(), value: value.unwrap_or_default() }))
    }

    async fn hash_delete(
        &self,
        request: Request<pb::HashDeleteRequest>,
    ) -> Result<Response<pb::HashDeleteResponse>, Status> {
        let deleted = run::<cmd::HashDelete, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::HashDeleteResponse { deleted }))
    }

    async fn hash_get_all(
        &self,
        request: Request<pb::HashGetAllRequest>,
    ) -> Result<Response<pb::HashGetAllResponse>, Status> {
        let pairs = run::<cmd::HashGetAll, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::HashGetAllResponse {
            fields: pairs.into_iter().map(|(field, value)| pb::HashField { field, value }).collect(),
        }))
    }

    async fn list_push(
        &self,
        request: Request<pb::ListPushRequest>,
    ) -> Result<Response<pb::ListPushResponse>, Status> {
        let n = run::<cmd::ListPush, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::ListPushResponse { length: length(n) }))
    }

    async fn list_pop(
        &self,
        request: Request<pb::ListPopRequest>,
    ) -> Result<Response<pb::ListPopResponse>, Status> {
        let values = run::<cmd::ListPop, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::ListPopResponse { values }))
    }

    async fn list_range(
        &self,
        request: Request<pb::ListRangeRequest>,
    ) -> Result<Response<pb::ListRangeResponse>, Status> {
        let values = run::<cmd::ListRange, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::ListRangeResponse { values }))
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
        let n = run::<cmd::Publish, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::PublishResponse { receivers: n.max(0).unsigned_abs() }))
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
        run::<cmd::Ping, _>(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(pb::PingResponse {}))
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
