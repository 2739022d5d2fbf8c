//! gRPC (`nanodb.v1.KV`) with the generated tonic client. Users share `--connections` HTTP/2
//! channels; each user keeps up to `--pipeline` calls in flight as concurrent streams, collected
//! in request order.

use std::pin::Pin;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use nanodb_protocol::pb::kv_client::KvClient;
use nanodb_protocol::pb::{
    GetRequest, IncrRequest, Operation, PutRequest, TxnRequest, operation, operation_result,
};
use tonic::transport::{Channel, Endpoint};

use super::{ClientError, Conn, Outcome, connect_error, probe};
use crate::cli::Protocol;
use crate::workload::Op;

type Call = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Opens one HTTP/2 channel over TLS (ALPN h2), eagerly, so a refused target or a failed
/// handshake fails before the run.
pub async fn tls_channel(target: &str, tls: &super::tls::TlsClient) -> anyhow::Result<Channel> {
    let (tls, addr) = (tls.clone(), target.to_string());
    let connector = tower::service_fn(move |_: http::Uri| {
        let (tls, addr) = (tls.clone(), addr.clone());
        async move {
            let stream = super::tls::Stream::connect(&addr, Some(&tls), super::tls::Alpn::H2)
                .await
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // The scheme only fills HTTP/2's :scheme; the connector does the TLS.
    Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| connect_error("grpc", target, e))?
        .connect_with_connector(connector)
        .await
        .map_err(|e| connect_error("grpc", target, probe::chain(&e)))
}

/// Opens one HTTP/2 channel, eagerly, so a refused target fails before the run; and one `Get`
/// on it, so that a NanoDB port of another protocol, which accepts the connection and then sends
/// GOAWAY saying which port it is, fails here too with its explanation ([`probe::wrong_port`]).
/// Any other answer to that `Get` (even none within [`probe::PROBE_TIMEOUT`]) is left to the
/// run, as before.
pub async fn channel(target: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| connect_error("grpc", target, e))?
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| {
        let msg = probe::chain(&e);
        match probe::wrong_port(Protocol::Grpc, target, "the HTTP/2 preface", &msg) {
            Some(m) => m.into(),
            None => connect_error("grpc", target, msg),
        }
    })?;
    let mut client = KvClient::new(channel.clone());
    let get = client.get(GetRequest { key: Bytes::from_static(probe::PROBE_KEY.as_bytes()) });
    match tokio::time::timeout(probe::PROBE_TIMEOUT, get).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => {
            if let Some(m) = probe::wrong_port(Protocol::Grpc, target, "a gRPC call", &probe::chain(&status))
            {
                return Err(m.into());
            }
            // A transport failure (the connection closed under the call, racing the server's
            // GOAWAY text) says nothing either way: ask the raw probe, which reads that text. If
            // it is inconclusive too (hyper can lose a GOAWAY's text when the connection closes
            // first), a channel whose first call failed in transport serves no run anyway.
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled => {
                    probe::check_greeting(Protocol::Grpc, target).await?;
                    let why = format!("the first call failed: {}", probe::chain(&status));
                    return Err(connect_error("grpc", target, why));
                }
                // An answer that is not gRPC (an HTTP server's 404, say): the caller judges it.
                tonic::Code::Unknown | tonic::Code::Internal => {
                    probe::check_greeting(Protocol::Grpc, target).await?;
                }
                _ => {}
            }
        }
        Err(_) => probe::check_greeting(Protocol::Grpc, target).await?,
    }
    Ok(channel)
}

/// One user's handle on a shared channel.
pub struct GrpcConn {
    client: KvClient<Channel>,
    calls: FuturesOrdered<Call>,
    /// `authorization` metadata for every call (`--password`).
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl std::fmt::Debug for GrpcConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConn").field("in_flight", &self.calls.len()).finish()
    }
}

fn status_kind(s: &tonic::Status) -> Outcome {
    Outcome::Error(format!("grpc {:?}", s.code()))
}

impl GrpcConn {
    /// A handle on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { client: KvClient::new(channel), calls: FuturesOrdered::new(), authorization: None }
    }

    /// A handle on `channel` whose calls carry `authorization: Basic ...` for `credentials`.
    pub fn with_credentials(
        channel: Channel,
        credentials: Option<&super::Credentials>,
    ) -> anyhow::Result<Self> {
        let authorization = credentials.map(|c| c.basic().parse()).transpose()?;
        Ok(Self { authorization, ..Self::new(channel) })
    }

    /// `msg` as a request, with the credentials' metadata when there are any.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(a) = &self.authorization {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }
}

impl Conn for GrpcConn {
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes) {
        let mut client = self.client.clone();
        let key = Bytes::copy_from_slice(key);
        let call: Call = match op {
            Op::Get => {
                let req = self.request(GetRequest { key });
                Box::pin(async move {
                    match client.get(req).await {
                        Ok(r) if r.get_ref().found => Outcome::Ok,
                        Ok(_) => Outcome::Miss,
                        Err(s) => status_kind(&s),
                    }
                })
            }
            Op::Set => {
                let req = self.request(PutRequest { key, value: value.clone(), ..Default::default() });
                Box::pin(async move {
                    match client.put(req).await {
                        Ok(_) => Outcome::Ok,
                        Err(s) => status_kind(&s),
                    }
                })
            }
            Op::Txn => {
                let success = crate::workload::TXN_SUFFIXES
                    .iter()
                    .map(|s| Operation {
                        op: Some(operation::Op::Put(PutRequest {
                            key: [&key[..], s].concat().into(),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let req = self.request(TxnRequest { compares: vec![], success, failure: vec![] });
                Box::pin(async move {
                    match client.txn(req).await {
                        Ok(r) => {
                            let r = r.get_ref();
                            let failed = r
                                .results
                                .iter()
                                .any(|o| matches!(o.result, Some(operation_result::Result::Error(_))));
                            if r.succeeded && !failed {
                                Outcome::Ok
                            } else {
                                Outcome::Error("grpc txn operation failed".into())
                            }
                        }
                        Err(s) => status_kind(&s),
                    }
                })
            }
            Op::Incr => {
                let req = self.request(IncrRequest { key, delta: 1 });
                Box::pin(async move {
                    match client.incr(req).await {
                        Ok(_) => Outcome::Ok,
                        Err(s) => status_kind(&s),
                    }
                })
            }
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
