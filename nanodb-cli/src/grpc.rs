//! `Admin.Stats` over gRPC, for `stats` and `monitor` (the binary TCP protocol carries data
//! commands only). With --user/--password the call carries `Authorization: Basic`, with --tls it
//! runs over rustls with ALPN h2.

use base64::Engine as _;
use nanodb_protocol::pb;
use nanodb_protocol::pb::admin_client::AdminClient;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

use crate::args::Conn;
use crate::client::{CONNECT_TIMEOUT, Failure};
use nanodb_protocol::tls_client::{Alpn, Stream, target as host_port};

/// A gRPC channel to the Admin service and the credentials to send with each call.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    target: String,
}

impl Admin {
    /// Connects (lazily: the first call connects, and a broken channel reconnects by itself).
    pub fn new(conn: &Conn) -> Result<Self, Failure> {
        let target = host_port(&conn.host, conn.grpc_port);
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| Failure::Usage(format!("{target}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let tls = conn.tls_config().map_err(|e| Failure::Usage(format!("{e:#}")))?;
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                let addr = host_port(&conn.host, conn.grpc_port);
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                    let (tls, addr) = (tls.clone(), addr.clone());
                    async move {
                        let s = Stream::connect(&addr, Some(&tls), Alpn::H2)
                            .await
                            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
            }
        };
        let authorization = match &conn.password {
            None => None,
            Some(password) => {
                let user = conn.user.as_deref().unwrap_or("default");
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(
                    format!("Basic {basic}")
                        .parse()
                        .map_err(|_| Failure::Usage("the user or password cannot go in a header".into()))?,
                )
            }
        };
        Ok(Self { client: AdminClient::new(channel), authorization, target })
    }

    /// One `Admin.Stats` call.
    pub async fn stats(&mut self) -> Result<pb::StatsResponse, Failure> {
        let mut request = tonic::Request::new(pb::StatsRequest {});
        if let Some(a) = &self.authorization {
            request.metadata_mut().insert("authorization", a.clone());
        }
        match self.client.stats(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                Err(Failure::Connect(format!("gRPC {}: {}", self.target, s.message())))
            }
            Err(s) => Err(Failure::Server(nanodb_protocol::Error::Remote {
                code: nanodb_protocol::ErrorCode::Internal,
                message: format!("gRPC {:?}: {}", s.code(), s.message()),
            })),
        }
    }
}

/// One `Admin.Stats` call on a fresh channel.
pub async fn stats(conn: &Conn) -> Result<pb::StatsResponse, Failure> {
    Admin::new(conn)?.stats().await
}

/// The stats as JSON, for `nanodb-cli stats`.
pub fn stats_json(s: &pb::StatsResponse) -> Value {
    let feed = s.feed.unwrap_or_default();
    json!({
        "version": s.version,
        "uptime_s": s.uptime_s,
        "keys": s.keys,
        "memory_bytes": s.memory_bytes,
        "protocols": s.protocols.iter().map(|p| json!({
            "protocol": p.protocol, "ops": p.ops, "errors": p.errors, "connections": p.connections,
        })).collect::<Vec<_>>(),
        "feed": {
            "subscribers": feed.subscribers, "delivered": feed.delivered, "dropped": feed.dropped,
            "lagged": feed.lagged, "published": feed.published, "queued": feed.queued,
            "fullest_queue_permille": feed.fullest_queue_permille,
        },
        "log": s.log.as_ref().map(|l| json!({
            "fsync": l.fsync, "bytes_since_snapshot": l.bytes_since_snapshot,
            "last_fsync_age_ms": l.last_fsync_age_ms, "snapshot_age_ms": l.snapshot_age_ms,
        })),
        "cluster": s.cluster.as_ref().map(|c| json!({
            "node_id": c.node_id, "role": c.role, "term": c.term, "leader_id": c.leader_id,
            "commit_index": c.commit_index, "applied_index": c.applied_index,
            "peers": c.peers.iter().map(|p| json!({"id": p.id, "role": p.role, "lag": p.lag})).collect::<Vec<_>>(),
        })),
    })
}
