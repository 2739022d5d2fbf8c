//! Small in-process servers answering the documented interfaces of frontends that are not on this
//! branch (gRPC, REST) and of Redis (RESP), backed by one in-memory map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The stubs' shared store and request counter.
#[derive(Default, Debug)]
pub struct Store {
    pub map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    pub requests: AtomicU64,
}

impl Store {
    pub fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.map.lock().expect("lock").get(k).cloned()
    }
    pub fn set(&self, k: &[u8], v: &[u8]) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.map.lock().expect("lock").insert(k.to_vec(), v.to_vec());
    }
    /// `None` when the value is not an integer (the key is left alone).
    pub fn incr(&self, k: &[u8], by: i64) -> Option<i64> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut m = self.map.lock().expect("lock");
        let n = match m.get(k) {
            None => by,
            Some(v) => std::str::from_utf8(v).ok()?.parse::<i64>().ok()? + by,
        };
        m.insert(k.to_vec(), n.to_string().into_bytes());
        Some(n)
    }
    pub fn len(&self) -> usize {
        self.map.lock().expect("lock").len()
    }
}

/// A pause the RESP stub takes once, after answering `after` requests.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub after: u64,
    pub pause: Duration,
}

/// Parses one RESP array of bulk strings from `buf`, if complete.
fn parse_command(buf: &mut BytesMut) -> Option<Vec<Vec<u8>>> {
    fn line(b: &[u8], at: usize) -> Option<(usize, usize)> {
        let p = b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&b[at + 1..at + p]).ok()?.parse().ok()?;
        Some((n, at + p + 2))
    }
    let (n, mut at) = line(buf, 0)?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, start) = line(buf, at)?;
        if buf.len() < start + len + 2 {
            return None;
        }
        parts.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    buf.advance(at);
    Some(parts)
}

/// A RESP2 server for GET/SET/INCR/PING, stalling once if asked.
pub async fn resp(stall: Option<Stall>) -> (SocketAddr, Arc<Store>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store = Arc::new(Store::default());
    let st = store.clone();
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (store, stalled) = (st.clone(), stalled.clone());
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(4096);
                let mut out = Vec::new();
                loop {
                    while let Some(cmd) = parse_command(&mut buf) {
                        let name = cmd[0].to_ascii_uppercase();
                        match (&name[..], cmd.len()) {
                            (b"PING", _) => out.extend_from_slice(b"+PONG\r\n"),
                            (b"GET", 2) => match store.get(&cmd[1]) {
                                Some(v) => {
                                    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                                    out.extend_from_slice(&v);
                                    out.extend_from_slice(b"\r\n");
                                }
                                None => out.extend_from_slice(b"$-1\r\n"),
                            },
                            (b"SET", 3) => {
                                store.set(&cmd[1], &cmd[2]);
                                out.extend_from_slice(b"+OK\r\n");
                            }
                            (b"INCR", 2) => match store.incr(&cmd[1], 1) {
                                Some(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
                                None => {
                                    out.extend_from_slice(b"-ERR value is not an integer or out of range\r\n")
                                }
                            },
                            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
                        }
                        if let Some(s) = stall
                            && store.requests.load(Ordering::Relaxed) >= s.after
                            && !stalled.swap(true, Ordering::Relaxed)
                        {
                            tokio::time::sleep(s.pause).await;
                        }
                    }
                    if !out.is_empty() {
                        if sock.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    match sock.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, store)
}

/// A REST server with NanoDB's documented routes.
pub async fn http() -> (SocketAddr, Arc<Store>) {
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    #[derive(serde::Deserialize)]
    struct By {
        by: i64,
    }
    async fn get_key(State(s): State<Arc<Store>>, Path(k): Path<String>) -> Result<Vec<u8>, StatusCode> {
        s.get(k.as_bytes()).ok_or(StatusCode::NOT_FOUND)
    }
    async fn put_key(State(s): State<Arc<Store>>, Path(k): Path<String>, body: Bytes) -> StatusCode {
        s.set(k.as_bytes(), &body);
        StatusCode::NO_CONTENT
    }
    async fn incr_key(
        State(s): State<Arc<Store>>,
        Path(k): Path<String>,
        Query(q): Query<By>,
    ) -> Result<String, StatusCode> {
        s.incr(k.as_bytes(), q.by).map(|n| n.to_string()).ok_or(StatusCode::BAD_REQUEST)
    }
    let store = Arc::new(Store::default());
    let app = axum::Router::new()
        .route("/v1/kv/{key}", get(get_key).put(put_key))
        .route("/v1/kv/{key}/incr", post(incr_key))
        .with_state(store.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, store)
}

/// A gRPC `nanodb.v1.KV` server implementing Get, Put, Incr and Watch.
pub async fn grpc() -> (SocketAddr, Arc<Store>) {
    grpc_dropping(None).await
}

/// [`grpc`] whose Watch streams silently skip the `drop_nth` Put event (0-based), if given: a
/// change feed that loses an event without saying so.
pub async fn grpc_dropping(drop_nth: Option<u64>) -> (SocketAddr, Arc<Store>) {
    use nanodb_protocol::pb::kv_server::{Kv, KvServer};
    use nanodb_protocol::pb::*;
    use tonic::{Request, Response, Status};

    #[derive(Debug)]
    struct Stub(Arc<Store>, tokio::sync::broadcast::Sender<(Bytes, Bytes)>, Option<u64>);
    type R<T> = Result<Response<T>, Status>;
    fn no<T>() -> R<T> {
        Err(Status::unimplemented("stub"))
    }
    #[tonic::async_trait]
    impl Kv for Stub {
        async fn get(&self, r: Request<GetRequest>) -> R<GetResponse> {
            let v = self.0.get(&r.get_ref().key);
            Ok(Response::new(GetResponse {
                found: v.is_some(),
                value: v.map(Bytes::from).unwrap_or_default(),
                ..Default::default()
            }))
        }
        async fn put(&self, r: Request<PutRequest>) -> R<PutResponse> {
            self.0.set(&r.get_ref().key, &r.get_ref().value);
            // no receiver is fine: nobody watches
            let _ = self.1.send((r.get_ref().key.clone(), r.get_ref().value.clone()));
            Ok(Response::new(PutResponse { applied: true, version: 1 }))
        }
        async fn incr(&self, r: Request<IncrRequest>) -> R<IncrResponse> {
            match self.0.incr(&r.get_ref().key, r.get_ref().delta) {
                Some(value) => Ok(Response::new(IncrResponse { value })),
                None => Err(Status::failed_precondition("not an integer")),
            }
        }
        async fn delete(&self, _: Request<DeleteRequest>) -> R<DeleteResponse> {
            no()
        }
        async fn expire(&self, _: Request<ExpireRequest>) -> R<ExpireResponse> {
            no()
        }
        async fn scan(&self, _: Request<ScanRequest>) -> R<ScanResponse> {
            no()
        }
        async fn batch(&self, _: Request<BatchRequest>) -> R<BatchResponse> {
            no()
        }
        async fn txn(&self, _: Request<TxnRequest>) -> R<TxnResponse> {
            no()
        }
        async fn eval(&self, _: Request<EvalRequest>) -> R<EvalResponse> {
            no()
        }
        async fn hash_set(&self, _: Request<HashSetRequest>) -> R<HashSetResponse> {
            no()
        }
        async fn hash_get(&self, _: Request<HashGetRequest>) -> R<HashGetResponse> {
            no()
        }
        async fn hash_delete(&self, _: Request<HashDeleteRequest>) -> R<HashDeleteResponse> {
            no()
        }
        async fn hash_get_all(&self, _: Request<HashGetAllRequest>) -> R<HashGetAllResponse> {
            no()
        }
        async fn list_push(&self, _: Request<ListPushRequest>) -> R<ListPushResponse> {
            no()
        }
        async fn list_pop(&self, _: Request<ListPopRequest>) -> R<ListPopResponse> {
            no()
        }
        async fn list_range(&self, _: Request<ListRangeRequest>) -> R<ListRangeResponse> {
            no()
        }
        async fn get_set(&self, _: Request<GetSetRequest>) -> R<GetSetResponse> {
            no()
        }
        async fn delete_if(&self, _: Request<DeleteIfRequest>) -> R<DeleteIfResponse> {
            no()
        }
        async fn exists(&self, _: Request<ExistsRequest>) -> R<ExistsResponse> {
            no()
        }
        async fn ttl(&self, _: Request<TtlRequest>) -> R<TtlResponse> {
            no()
        }
        async fn key_count(&self, _: Request<KeyCountRequest>) -> R<KeyCountResponse> {
            no()
        }
        async fn get_del(&self, _: Request<GetDelRequest>) -> R<GetDelResponse> {
            no()
        }
        async fn get_ex(&self, _: Request<GetExRequest>) -> R<GetExResponse> {
            no()
        }
        async fn append(&self, _: Request<AppendRequest>) -> R<AppendResponse> {
            no()
        }
        async fn incr_float(&self, _: Request<IncrFloatRequest>) -> R<IncrFloatResponse> {
            no()
        }
        async fn multi_put(&self, _: Request<MultiPutRequest>) -> R<MultiPutResponse> {
            no()
        }
        async fn rename(&self, _: Request<RenameRequest>) -> R<RenameResponse> {
            no()
        }
        async fn r#type(&self, _: Request<TypeRequest>) -> R<TypeResponse> {
            no()
        }
        async fn flush(&self, _: Request<FlushRequest>) -> R<FlushResponse> {
            no()
        }
        async fn random_key(&self, _: Request<RandomKeyRequest>) -> R<RandomKeyResponse> {
            no()
        }
        async fn hash_incr(&self, _: Request<HashIncrRequest>) -> R<HashIncrResponse> {
            no()
        }
        async fn hash_set_if_absent(&self, _: Request<HashSetIfAbsentRequest>) -> R<HashSetIfAbsentResponse> {
            no()
        }
        async fn hash_len(&self, _: Request<HashLenRequest>) -> R<HashLenResponse> {
            no()
        }
        async fn list_len(&self, _: Request<ListLenRequest>) -> R<ListLenResponse> {
            no()
        }
        async fn list_set(&self, _: Request<ListSetRequest>) -> R<ListSetResponse> {
            no()
        }
        async fn list_trim(&self, _: Request<ListTrimRequest>) -> R<ListTrimResponse> {
            no()
        }
        async fn get_range(&self, _: Request<GetRangeRequest>) -> R<GetRangeResponse> {
            no()
        }
        type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchEvent, Status>> + Send>>;
        async fn watch(&self, r: Request<WatchRequest>) -> R<Self::WatchStream> {
            let WatchRequest { key, prefix, include_values } = r.into_inner();
            let (rx, drop_nth) = (self.1.subscribe(), self.2);
            let events = futures::stream::unfold((rx, 0u64), move |(mut rx, mut n)| {
                let key = key.clone();
                async move {
                    loop {
                        // a lagged stub receiver ends the stream: the client sees it end early
                        let (k, v) = rx.recv().await.ok()?;
                        if !(k == key || (prefix && k.starts_with(&key))) {
                            continue;
                        }
                        n += 1;
                        if drop_nth == Some(n - 1) {
                            continue;
                        }
                        let e = WatchEvent {
                            r#type: WatchEventType::Put as i32,
                            key: k,
                            has_value: include_values,
                            value: if include_values { v } else { Bytes::new() },
                            version: n,
                            op: "set".into(),
                            dropped: 0,
                        };
                        return Some((Ok(e), (rx, n)));
                    }
                }
            });
            Ok(Response::new(Box::pin(events)))
        }
        async fn publish(&self, _: Request<PublishRequest>) -> R<PublishResponse> {
            no()
        }
        type SubscribeStream = futures::stream::Empty<Result<SubscribeMessage, Status>>;
        async fn subscribe(&self, _: Request<SubscribeRequest>) -> R<Self::SubscribeStream> {
            no()
        }
    }
    let store = Arc::new(Store::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events, _) = tokio::sync::broadcast::channel(1 << 16);
    let svc = KvServer::new(Stub(store.clone(), events, drop_nth));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (addr, store)
}

/// An etcd v3 `etcdserverpb.KV` server implementing Range (one key) and Put, from the trimmed
/// etcd protos nano-bench compiles: what `--protocol etcd` speaks to a real etcd.
pub async fn etcd() -> (SocketAddr, Arc<Store>) {
    use nano_bench::client::etcd::pb::etcdserverpb::kv_server::{Kv, KvServer};
    use nano_bench::client::etcd::pb::etcdserverpb::*;
    use nano_bench::client::etcd::pb::mvccpb::KeyValue;
    use tonic::{Request, Response, Status};

    #[derive(Debug)]
    struct Stub(Arc<Store>);
    #[tonic::async_trait]
    impl Kv for Stub {
        async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
            let r = r.get_ref();
            if !r.range_end.is_empty() {
                return Err(Status::invalid_argument("the stub reads single keys"));
            }
            let kvs: Vec<KeyValue> = self
                .0
                .get(&r.key)
                .map(|v| KeyValue {
                    key: r.key.clone(),
                    value: Bytes::from(v),
                    version: 1,
                    ..Default::default()
                })
                .into_iter()
                .collect();
            Ok(Response::new(RangeResponse { count: kvs.len() as i64, kvs, ..Default::default() }))
        }
        async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            self.0.set(&r.get_ref().key, &r.get_ref().value);
            Ok(Response::new(PutResponse::default()))
        }
    }
    let store = Arc::new(Store::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = KvServer::new(Stub(store.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (addr, store)
}
