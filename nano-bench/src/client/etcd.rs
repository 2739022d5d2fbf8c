//! etcd v3 over gRPC (`--protocol etcd`): `KV/Put` for writes and `KV/Range` (one key,
//! linearizable, etcd's default) for reads, with the client generated from the trimmed etcd protos
//! in `proto/`. It works like [`super::grpc`]: users share `--connections` HTTP/2 channels and keep
//! up to `--pipeline` calls in flight each. One endpoint: point `--target` at the leader, or at any
//! member (a follower forwards writes and asks the leader for reads, as in production).

use std::pin::Pin;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tonic::transport::{Channel, Endpoint};

use super::{ClientError, Conn, Outcome, connect_error, probe};
use crate::workload::Op;

/// The generated etcd types (packages `etcdserverpb` and `mvccpb`, as etcd names them).
pub mod pb {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    /// `mvccpb`: the key-value record.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// `etcdserverpb`: the KV service (Range and Put only).
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::{PutRequest, RangeRequest};

type Call = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Opens one HTTP/2 channel eagerly and makes one `Range` on it, so that a refused target, or one
/// that is not etcd (a NanoDB gRPC port answers UNIMPLEMENTED for `etcdserverpb.KV`), fails before
/// the run with one clear line.
pub async fn channel(target: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| connect_error("etcd", target, e))?
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| connect_error("etcd", target, probe::chain(&e)))?;
    let mut client = KvClient::new(channel.clone());
    let range = client
        .range(RangeRequest { key: Bytes::from_static(probe::PROBE_KEY.as_bytes()), ..Default::default() });
    match tokio::time::timeout(probe::PROBE_TIMEOUT, range).await {
        Ok(Ok(_)) => Ok(channel),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Err(connect_error(
            "etcd",
            target,
            "it does not serve etcdserverpb.KV/Range (not an etcd v3 gRPC endpoint: etcd listens on 2379)",
        )),
        Ok(Err(s)) => {
            Err(connect_error("etcd", target, format!("the first Range failed: {}", probe::chain(&s))))
        }
        Err(_) => Err(connect_error(
            "etcd",
            target,
            format!("no answer to a Range within {:?}", probe::PROBE_TIMEOUT),
        )),
    }
}

/// One user's handle on a shared channel.
pub struct EtcdConn {
    client: KvClient<Channel>,
    calls: FuturesOrdered<Call>,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn").field("in_flight", &self.calls.len()).finish()
    }
}

fn status_kind(s: &tonic::Status) -> Outcome {
    Outcome::Error(format!("etcd {:?}", s.code()))
}

impl EtcdConn {
    /// A handle on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { client: KvClient::new(channel), calls: FuturesOrdered::new() }
    }
}

impl Conn for EtcdConn {
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes) {
        let mut client = self.client.clone();
        let key = Bytes::copy_from_slice(key);
        let call: Call = match op {
            Op::Get => Box::pin(async move {
                match client.range(RangeRequest { key, ..Default::default() }).await {
                    Ok(r) if !r.get_ref().kvs.is_empty() => Outcome::Ok,
                    Ok(_) => Outcome::Miss,
                    Err(s) => status_kind(&s),
                }
            }),
            Op::Set => {
                let req = PutRequest { key, value: value.clone(), ..Default::default() };
                Box::pin(async move {
                    match client.put(req).await {
                        Ok(_) => Outcome::Ok,
                        Err(s) => status_kind(&s),
                    }
                })
            }
            // refused by BenchArgs::validate; answered as an error should it ever get here
            Op::Incr => Box::pin(async { Outcome::Error("etcd has no INCR".into()) }),
            Op::Txn => Box::pin(async { Outcome::Error("nano-bench's etcd client has no Txn".into()) }),
        };
        self.calls.push_back(call);
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(())
    }

    async fn recv(&mut self) -> Result<Outcome, ClientError> {
        self.calls.next().await.ok_or_else(|| ClientError::Protocol("no call in flight".into()))
    }

    fn try_recv(&mut self) -> Option<Result<Outcome, ClientError>> {
        if self.calls.is_empty() {
            return None;
        }
        self.calls.next().now_or_never().flatten().map(Ok)
    }
}
