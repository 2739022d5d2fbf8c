//! A tonic server whose `nanodb.v1.KV/Get` answers a fixed 64-byte value: the gRPC ceiling.
//! `proto/noop.proto` is the Get of `proto/nanodb/v1/kv.proto`: same path, same messages.
use tonic::{Request, Response, Status, transport::Server};

mod pb {
    tonic::include_proto!("nanodb.v1");
}
use pb::kv_server::{Kv, KvServer};
use pb::{GetRequest, GetResponse};

struct Noop;

#[tonic::async_trait]
impl Kv for Noop {
    async fn get(&self, _req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Ok(Response::new(GetResponse { found: true, value: vec![b'v'; 64], version: 1, ttl_ms: -1 }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50151".into());
    let addr = arg.parse().map_err(|e| format!("grpc-noop: {arg:?} is not HOST:PORT: {e}"))?;
    Server::builder().tcp_nodelay(true).add_service(KvServer::new(Noop)).serve(addr).await?;
    Ok(())
}
