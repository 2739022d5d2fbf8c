//! An axum server whose `GET /v1/kv/{*key}` answers a fixed 64-byte body: the HTTP ceiling.
use axum::{Router, extract::Path, routing::get};

static BODY: [u8; 64] = [b'v'; 64];

async fn get_kv(Path(_key): Path<String>) -> &'static [u8] {
    &BODY
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18080".into());
    let app = Router::new().route("/v1/kv/{*key}", get(get_kv));
    let listener =
        tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("http-noop: cannot bind {addr}: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
