//! REST over HTTP/1.1 keep-alive (hyper's connection API on one socket per user):
//! `GET /v1/kv/{key}` (404 is a miss), `PUT /v1/kv/{key}` with the raw value as body,
//! `POST /v1/kv/{key}/incr?by=1`. One request at a time per connection.

use std::pin::Pin;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::{ClientError, Conn, Outcome, connect_error};
use crate::workload::Op;

type Call = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One HTTP/1.1 keep-alive connection.
pub struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
    queued: Option<Request<Full<Bytes>>>,
    calls: FuturesOrdered<Call>,
    path: String,
    /// `Authorization: Basic ...` for every request (`--password`).
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConn").field("in_flight", &self.calls.len()).finish()
    }
}

/// Appends `key` percent-encoded as one path segment.
pub fn push_segment(dst: &mut String, key: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b) {
            dst.push(b as char);
        } else {
            dst.push('%');
            dst.push(HEX[usize::from(b >> 4)] as char);
            dst.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

impl HttpConn {
    /// Connects; the connection task runs until the connection closes.
    pub async fn connect(target: &str, tls: Option<&super::tls::TlsClient>) -> anyhow::Result<Self> {
        Self::connect_as(target, tls, None).await
    }

    /// [`HttpConn::connect`], every request then carrying `Authorization: Basic` for
    /// `credentials` when given.
    pub async fn connect_as(
        target: &str,
        tls: Option<&super::tls::TlsClient>,
        credentials: Option<&super::Credentials>,
    ) -> anyhow::Result<Self> {
        let authorization = credentials.map(|c| HeaderValue::from_str(&c.basic())).transpose()?;
        let stream = super::tls::Stream::connect(target, tls, super::tls::Alpn::Http1)
            .await
            .map_err(|e| connect_error("http", target, format!("{e:#}")))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // a connection error surfaces as a failed request on the sender side
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: HeaderValue::from_str(target)?,
            queued: None,
            calls: FuturesOrdered::new(),
            path: String::with_capacity(128),
            authorization,
        })
    }
}

async fn outcome(
    fut: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
    get: bool,
) -> Outcome {
    match fut.await {
        Ok(resp) => {
            let status = resp.status();
            // read the whole body so the connection can be reused
            if let Err(e) = resp.into_body().collect().await {
                return Outcome::Error(format!(
                    "http body: {}",
                    if e.is_closed() { "closed" } else { "error" }
                ));
            }
            if status.is_success() {
                Outcome::Ok
            } else if get && status == StatusCode::NOT_FOUND {
                Outcome::Miss
            } else {
                Outcome::Error(format!("http {}", status.as_u16()))
            }
        }
        Err(e) => Outcome::Error(if e.is_closed() || e.is_canceled() {
            "http connection closed".into()
        } else {
            "http transport error".into()
        }),
    }
}

/// `POST /v1/txn`'s body for [`Op::Txn`]: three puts, no compares. A key or value that is not
/// UTF-8 makes the operation travel as base64, as the REST API reads it.
fn txn_body(key: &[u8], value: &Bytes) -> Bytes {
    use base64::Engine as _;
    let ops: Vec<serde_json::Value> = crate::workload::TXN_SUFFIXES
        .iter()
        .map(|s| {
            let k = [key, s].concat();
            match (std::str::from_utf8(&k), std::str::from_utf8(value)) {
                (Ok(k), Ok(v)) => serde_json::json!({ "op": "put", "key": k, "value": v }),
                _ => {
                    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
                    serde_json::json!({ "op": "put", "key": b64(&k), "value": b64(value), "encoding": "base64" })
                }
            }
        })
        .collect();
    Bytes::from(serde_json::json!({ "success": ops }).to_string())
}

impl Conn for HttpConn {
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes) {
        self.path.clear();
        self.path.push_str("/v1/kv/");
        push_segment(&mut self.path, key);
        let (method, body) = match op {
            Op::Get => (Method::GET, Bytes::new()),
            Op::Set => (Method::PUT, value.clone()),
            Op::Incr => {
                self.path.push_str("/incr?by=1");
                (Method::POST, Bytes::new())
            }
            Op::Txn => {
                self.path.clear();
                self.path.push_str("/v1/txn");
                (Method::POST, txn_body(key, value))
            }
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        // the path is built from percent-encoded segments, so it always parses
        *req.uri_mut() = self.path.parse().unwrap_or_default();
        req.headers_mut().insert(header::HOST, self.host.clone());
        if let Some(a) = &self.authorization {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        self.queued = Some(req);
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        let Some(req) = self.queued.take() else { return Ok(()) };
        let get = req.method() == Method::GET;
        if self.sender.ready().await.is_err() {
            return Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into()));
        }
        let fut = self.sender.send_request(req);
        self.calls.push_back(Box::pin(outcome(fut, get)));
        Ok(())
    }

    async fn recv(&mut self) -> Result<Outcome, ClientError> {
        self.calls.next().await.ok_or_else(|| ClientError::Protocol("no request in flight".into()))
    }

    fn try_recv(&mut self) -> Option<Result<Outcome, ClientError>> {
        if self.calls.is_empty() {
            return None;
        }
        self.calls.next().now_or_never().flatten().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_one_path_segment() {
        let mut s = String::new();
        push_segment(&mut s, b"key:0001");
        push_segment(&mut s, b"a/b c\xff");
        assert_eq!(s, "key:0001a%2Fb%20c%FF");
    }
}
