//! The `nanodb.v1.KV` and `nanodb.v1.Admin` service implementations: each RPC converts its request
//! into its typed command, runs it with `Context::run`, and encodes the typed output as the
//! command's [`Respond`] impl says (a batch encodes each operation's result the same way).

use std::time::Instant;

use nanodb_protocol::pb::{self, admin_server::Admin, auth_server::Auth, kv_server::Kv};
use nanodb_protocol::{Error, TypedCommand, cmd};
use tonic::{Request, Response, Status};

use super::convert::{OpKind, Respond, operation_result, status};
use super::watch::{self, EventStream};
use crate::auth::{Caller, Need};
use crate::frontend::{Context, Run};
use crate::stats::Protocol;

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
async fn run<C, M>(ctx: &Context, caller: &Caller, msg: M) -> Result<<C as Run>::Output, Status>
where
    C: TypedCommand + Run + TryFrom<M, Error = Error>,
{
    let result = match C::try_from(msg) {
        Ok(cmd) => ctx.run(caller, cmd).await,
        Err(e) => {
            ctx.stats.record(Protocol::Grpc, C::NAME, false, std::time::Duration::ZERO);
            Err(e)
        }
    };
    result.map_err(|e| status(&e))
}

/// Who sent `request`: what the authentication layer ([`super::auth`]) resolved from its
/// metadata, or, without that layer (auth off), the registry's default.
pub(super) fn caller<M>(ctx: &Context, request: &Request<M>) -> Caller {
    match request.extensions().get::<Caller>() {
        Some(c) => c.clone(),
        None => ctx.auth.new_caller(Protocol::Grpc),
    }
}

/// A unary RPC of command `C`: [`run`], then its response as [`Respond`] encodes it.
async fn call<C, M>(ctx: &Context, request: Request<M>) -> Result<Response<C::Response>, Status>
where
    C: Respond + Run<Output = <C as TypedCommand>::Output> + TryFrom<M, Error = Error>,
{
    let caller = caller(ctx, &request);
    let out = run::<C, M>(ctx, &caller, request.into_inner()).await?;
    Ok(Response::new(C::respond(out)))
}

/// `impl Kv for KvService`: the methods that are one command each, `method => Cmd(Request) ->
/// Response` (each runs `cmd::Cmd` through [`call`]), then the others as written. The impl is
/// generated whole so that `async_trait` sees the generated methods.
macro_rules! kv_service {
    (unary { $($method:ident => $cmd:ident ($req:ident) -> $resp:ident;)* } $($rest:tt)*) => {
        #[tonic::async_trait]
        impl Kv for KvService {
            $(
                async fn $method(&self, request: Request<pb::$req>) -> Result<Response<pb::$resp>, Status> {
                    call::<cmd::$cmd, _>(&self.ctx, request).await
                }
            )*
            $($rest)*
        }
    };
}

kv_service! {
    unary {
        get => Get(GetRequest) -> GetResponse;
        put => Put(PutRequest) -> PutResponse;
        get_set => GetSet(GetSetRequest) -> GetSetResponse;
        delete => Delete(DeleteRequest) -> DeleteResponse;
        delete_if => DeleteIf(DeleteIfRequest) -> DeleteIfResponse;
        exists => Exists(ExistsRequest) -> ExistsResponse;
        incr => Incr(IncrRequest) -> IncrResponse;
        expire => Expire(ExpireRequest) -> ExpireResponse;
        ttl => Ttl(TtlRequest) -> TtlResponse;
        scan => Scan(ScanRequest) -> ScanResponse;
        hash_set => HashSet(HashSetRequest) -> HashSetResponse;
        hash_get => HashGet(HashGetRequest) -> HashGetResponse;
        hash_delete => HashDelete(HashDeleteRequest) -> HashDeleteResponse;
        hash_get_all => HashGetAll(HashGetAllRequest) -> HashGetAllResponse;
        list_push => ListPush(ListPushRequest) -> ListPushResponse;
        list_pop => ListPop(ListPopRequest) -> ListPopResponse;
        list_range => ListRange(ListRangeRequest) -> ListRangeResponse;
        key_count => KeyCount(KeyCountRequest) -> KeyCountResponse;
        get_del => GetDel(GetDelRequest) -> GetDelResponse;
        get_ex => GetEx(GetExRequest) -> GetExResponse;
        append => Append(AppendRequest) -> AppendResponse;
        incr_float => IncrFloat(IncrFloatRequest) -> IncrFloatResponse;
        multi_put => MultiPut(MultiPutRequest) -> MultiPutResponse;
        rename => Rename(RenameRequest) -> RenameResponse;
        r#type => Type(TypeRequest) -> TypeResponse;
        flush => Flush(FlushRequest) -> FlushResponse;
        random_key => RandomKey(RandomKeyRequest) -> RandomKeyResponse;
        hash_incr => HashIncr(HashIncrRequest) -> HashIncrResponse;
        hash_set_if_absent => HashSetIfAbsent(HashSetIfAbsentRequest) -> HashSetIfAbsentResponse;
        hash_len => HashLen(HashLenRequest) -> HashLenResponse;
        list_len => ListLen(ListLenRequest) -> ListLenResponse;
        list_set => ListSet(ListSetRequest) -> ListSetResponse;
        list_trim => ListTrim(ListTrimRequest) -> ListTrimResponse;
        get_range => GetRange(GetRangeRequest) -> GetRangeResponse;
        publish => Publish(PublishRequest) -> PublishResponse;
        eval => Eval(EvalRequest) -> EvalResponse;
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let caller = caller(&self.ctx, &request);
        let msg = request.into_inner();
        // An operation without a kind fails the conversion below, before anything runs.
        let kinds: Vec<OpKind> = msg.ops.iter().filter_map(OpKind::of).collect();
        let results = run::<cmd::Batch, _>(&self.ctx, &caller, msg).await?;
        if results.len() != kinds.len() {
            return Err(status(&Error::Internal));
        }
        Ok(Response::new(pb::BatchResponse {
            results: kinds.into_iter().zip(results).map(|(k, r)| operation_result(k, r)).collect(),
        }))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = caller(&self.ctx, &request);
        let msg = request.into_inner();
        // Each branch's kinds, to encode the results of whichever ran; an operation without a
        // kind fails the conversion below, before anything runs.
        let success: Vec<OpKind> = msg.success.iter().filter_map(OpKind::of).collect();
        let failure: Vec<OpKind> = msg.failure.iter().filter_map(OpKind::of).collect();
        let outcome = run::<cmd::Txn, _>(&self.ctx, &caller, msg).await?;
        let kinds = if outcome.succeeded { success } else { failure };
        if outcome.results.len() != kinds.len() {
            return Err(status(&Error::Internal));
        }
        Ok(Response::new(pb::TxnResponse {
            succeeded: outcome.succeeded,
            results: kinds.into_iter().zip(outcome.results).map(|(k, r)| operation_result(k, r)).collect(),
        }))
    }

    type WatchStream = EventStream<pb::WatchEvent>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let started = Instant::now();
        let caller = caller(&self.ctx, &request);
        let result = watch::watch(&self.ctx, &caller, &self.streams, request.into_inner());
        self.ctx.stats.record(Protocol::Grpc, "watch", result.is_ok(), started.elapsed());
        Ok(Response::new(result?))
    }

    type SubscribeStream = EventStream<pb::SubscribeMessage>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let started = Instant::now();
        let caller = caller(&self.ctx, &request);
        let result = watch::subscribe(&self.ctx, &caller, &self.streams, request.into_inner());
        self.ctx.stats.record(Protocol::Grpc, "subscribe", result.is_ok(), started.elapsed());
        Ok(Response::new(result?))
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
        call::<cmd::Ping, _>(&self.ctx, request).await
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        self.ctx.authorize(&caller(&self.ctx, &request), Need::Authenticated).map_err(|e| status(&e))?;
        let started = Instant::now();
        let response = crate::frontend::report::stats_report(&self.ctx).await;
        self.ctx.stats.record(Protocol::Grpc, "stats", true, started.elapsed());
        Ok(Response::new(response))
    }
}

/// Serves `nanodb.v1.Auth`: passwords for tokens. Open to callers without credentials (the
/// request carries them), so failures are counted and logged like any failed authentication.
#[derive(Debug, Clone)]
pub struct AuthService {
    ctx: Context,
}

impl AuthService {
    /// An auth service over the context's users.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let auth = &self.ctx.auth;
        if !auth.enabled() {
            return Err(status(&crate::auth::tokens_off()));
        }
        let peer = request.remote_addr();
        let pb::AuthenticateRequest { user, password } = request.into_inner();
        let user = if user.is_empty() { "default".to_string() } else { user };
        let principal = auth.authenticate(&user, password.as_bytes()).map_err(|e| {
            auth.record_failure(Protocol::Grpc, &user, peer);
            status(&Error::from(e))
        })?;
        let (token, expires_at_ms) = auth.issue_token(&principal).map_err(|e| status(&e))?;
        Ok(Response::new(pb::AuthenticateResponse {
            token,
            expires_at_ms,
            user: principal.name().to_string(),
        }))
    }
}
