//! The harness's clients: NanoDB's binary TCP protocol (the protocol crate's [`ClientCodec`]), raw
//! RESP2, and the one HTTP call it needs (`GET /v1/cluster`). Each does one request at a time under
//! a timeout; any failure (I/O, timeout, an error reply) leaves the outcome of a write unknown,
//! and the caller drops the connection, so a late reply can never be matched to the next request.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use nanodb_protocol::wire::{self, PROTOCOL_VERSION};
use nanodb_protocol::{
    ClientCodec, Command, Compare, Entry, Expiry, PutCondition, Reply, Request, Response, TxnOutcome, cmd,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

/// Keys per SCAN page: large, since in a cluster every page is a linearizable read (a round to
/// the leader), and within the server's default `max_scan_page` (10,000).
const SCAN_PAGE: u32 = 5_000;

/// The largest RESP bulk string or HTTP body the harness accepts (its values are tiny).
const MAX_REPLY: usize = 4 << 20;

/// Connects with a timeout and TCP_NODELAY.
async fn connect(addr: &str, limit: Duration) -> anyhow::Result<TcpStream> {
    let s = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A binary-protocol connection after HELLO.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    codec: ClientCodec,
    rbuf: BytesMut,
    next_id: u32,
    limit: Duration,
}

impl TcpClient {
    /// Connects and does the handshake, all within `limit`.
    pub async fn connect(addr: &str, limit: Duration) -> anyhow::Result<Self> {
        let stream = connect(addr, limit).await?;
        let mut c = Self { stream, codec: ClientCodec::default(), rbuf: BytesMut::new(), next_id: 1, limit };
        match c.request(Request::Hello { version: PROTOCOL_VERSION }).await? {
            Response::Hello { .. } => Ok(c),
            other => bail!("unexpected HELLO reply from {addr}: {other:?}"),
        }
    }

    async fn request(&mut self, req: Request) -> anyhow::Result<Response> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = BytesMut::new();
        wire::encode_request(id, &req, &mut out).map_err(|e| anyhow!("encode: {e}"))?;
        let limit = self.limit;
        timeout(limit, async {
            self.stream.write_all(&out).await?;
            loop {
                if let Some((got, resp)) = self.codec.decode(&mut self.rbuf)? {
                    if got != id {
                        bail!("reply for request {got}, expected {id}");
                    }
                    return Ok(resp);
                }
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    bail!("connection closed");
                }
            }
        })
        .await
        .map_err(|_| anyhow!("timed out after {limit:?}"))?
    }

    async fn command(&mut self, c: Command) -> anyhow::Result<Reply> {
        match self.request(Request::Command(c)).await? {
            Response::Reply(r) => Ok(r),
            Response::Error(e) => bail!("error reply: {e}"),
            other => bail!("unexpected response {other:?}"),
        }
    }

    /// An unconditional write without TTL.
    pub async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let c = cmd::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        };
        match self.command(Command::Put(c)).await? {
            Reply::Put { applied: true, .. } => Ok(()),
            other => bail!("unexpected PUT reply {other:?}"),
        }
    }

    /// The value of `key`, `None` when absent.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Bytes>> {
        Ok(self.entry(key).await?.map(|e| e.value))
    }

    /// The value and version of `key`, `None` when absent.
    pub async fn entry(&mut self, key: &str) -> anyhow::Result<Option<Entry>> {
        match self.command(Command::Get(cmd::Get { key: Bytes::copy_from_slice(key.as_bytes()) })).await? {
            Reply::Value(v) => Ok(v),
            other => bail!("unexpected GET reply {other:?}"),
        }
    }

    /// Writes every pair as one atomic group (MSET).
    pub async fn multi_put(&mut self, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let pairs = pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        match self.command(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false })).await? {
            Reply::Bool(true) => Ok(()),
            other => bail!("unexpected MULTI_PUT reply {other:?}"),
        }
    }

    /// An etcd-style transaction (the TXN request): `success` runs if every compare holds,
    /// `failure` otherwise, as one atomic group.
    pub async fn txn(
        &mut self,
        compares: Vec<Compare>,
        success: Vec<Command>,
        failure: Vec<Command>,
    ) -> anyhow::Result<TxnOutcome> {
        match self.command(Command::Txn(cmd::Txn { compares, success, failure })).await? {
            Reply::Txn(t) => Ok(t),
            other => bail!("unexpected TXN reply {other:?}"),
        }
    }

    /// The values of `keys` read together, as one atomic group (a transaction of gets).
    pub async fn read_together(&mut self, keys: &[String]) -> anyhow::Result<Vec<Option<Bytes>>> {
        let gets = keys
            .iter()
            .map(|k| Command::Get(cmd::Get { key: Bytes::copy_from_slice(k.as_bytes()) }))
            .collect();
        let t = self.txn(Vec::new(), gets, Vec::new()).await?;
        if !t.succeeded || t.results.len() != keys.len() {
            bail!("a transaction of {} gets answered {t:?}", keys.len());
        }
        t.results
            .into_iter()
            .map(|r| match r {
                Ok(Reply::Value(v)) => Ok(v.map(|e| e.value)),
                other => bail!("unexpected GET result in a transaction: {other:?}"),
            })
            .collect()
    }

    /// Every key starting with `prefix` and its value, page by page.
    pub async fn scan(&mut self, prefix: &str) -> anyhow::Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        let mut cursor = Bytes::new();
        loop {
            let c = cmd::Scan { prefix: Bytes::copy_from_slice(prefix.as_bytes()), limit: SCAN_PAGE, cursor };
            match self.command(Command::Scan(c)).await? {
                Reply::Scan { entries, next_cursor } => {
                    out.extend(entries.into_iter().map(|e| (e.key, e.value)));
                    if next_cursor.is_empty() {
                        return Ok(out);
                    }
                    cursor = next_cursor;
                }
                other => bail!("unexpected SCAN reply {other:?}"),
            }
        }
    }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespReply {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` bulk, `None` for `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` array, `None` for `*-1` (an EXEC whose WATCHed keys changed).
    Array(Option<Vec<RespReply>>),
}

/// The most elements a RESP array may announce (the harness reads tens).
const MAX_ARRAY: usize = 4096;

/// A raw RESP2 connection.
#[derive(Debug)]
pub struct RespClient {
    stream: TcpStream,
    rbuf: BytesMut,
    limit: Duration,
}

impl RespClient {
    /// Connects within `limit`.
    pub async fn connect(addr: &str, limit: Duration) -> anyhow::Result<Self> {
        Ok(Self { stream: connect(addr, limit).await?, rbuf: BytesMut::new(), limit })
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<RespReply> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let limit = self.limit;
        timeout(limit, async {
            self.stream.write_all(&out).await?;
            loop {
                if let Some(r) = parse_resp(&mut self.rbuf)? {
                    return Ok(r);
                }
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    bail!("connection closed");
                }
            }
        })
        .await
        .map_err(|_| anyhow!("timed out after {limit:?}"))?
    }

    /// `SET key value`, which must answer `+OK`.
    pub async fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        match self.call(&[b"SET", key.as_bytes(), value.as_bytes()]).await? {
            RespReply::Simple(s) if s == "OK" => Ok(()),
            RespReply::Error(e) => bail!("error reply: {e}"),
            other => bail!("unexpected SET reply {other:?}"),
        }
    }

    /// `GET key`.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.call(&[b"GET", key.as_bytes()]).await? {
            RespReply::Bulk(v) => Ok(v),
            RespReply::Error(e) => bail!("error reply: {e}"),
            other => bail!("unexpected GET reply {other:?}"),
        }
    }
}

/// Decodes one reply from the front of `buf`, or `None` if it is not all there yet.
pub fn parse_resp(buf: &mut BytesMut) -> anyhow::Result<Option<RespReply>> {
    match parse_at(buf, 0)? {
        Some((reply, end)) => {
            buf.advance(end);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// Decodes the reply starting at `at`: the reply and where it ends, or `None` if incomplete.
fn parse_at(buf: &[u8], at: usize) -> anyhow::Result<Option<(RespReply, usize)>> {
    let rest = &buf[at..];
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > MAX_REPLY {
            bail!("RESP line longer than {MAX_REPLY} bytes");
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&rest[1..eol]).context("RESP line is not UTF-8")?;
    let next = at + eol + 2;
    let reply = match rest.first() {
        Some(b'+') => RespReply::Simple(line.to_string()),
        Some(b'-') => RespReply::Error(line.to_string()),
        Some(b':') => RespReply::Int(line.parse().context("RESP integer")?),
        Some(b'$') => {
            let n: i64 = line.parse().context("RESP bulk length")?;
            if n < 0 {
                return Ok(Some((RespReply::Bulk(None), next)));
            }
            let n = usize::try_from(n)?;
            if n > MAX_REPLY {
                bail!("RESP bulk of {n} bytes exceeds {MAX_REPLY}");
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            let data = Bytes::copy_from_slice(&buf[next..next + n]);
            return Ok(Some((RespReply::Bulk(Some(data)), next + n + 2)));
        }
        Some(b'*') => {
            let n: i64 = line.parse().context("RESP array length")?;
            if n < 0 {
                return Ok(Some((RespReply::Array(None), next)));
            }
            let n = usize::try_from(n)?;
            if n > MAX_ARRAY {
                bail!("RESP array of {n} elements exceeds {MAX_ARRAY}");
            }
            let (mut items, mut end) = (Vec::with_capacity(n), next);
            for _ in 0..n {
                let Some((item, after)) = parse_at(buf, end)? else { return Ok(None) };
                items.push(item);
                end = after;
            }
            return Ok(Some((RespReply::Array(Some(items)), end)));
        }
        other => bail!("unexpected RESP reply type {other:?}"),
    };
    Ok(Some((reply, next)))
}

/// `GET path` over HTTP/1.1 (connection closed after), answering the status and body.
pub async fn http_get(addr: &str, path: &str, limit: Duration) -> anyhow::Result<(u16, String)> {
    timeout(limit, async {
        let mut s = connect(addr, limit).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut s).take(MAX_REPLY as u64).read_to_end(&mut raw).await?;
        let text = String::from_utf8(raw).context("HTTP reply is not UTF-8")?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no HTTP header end"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad HTTP status line"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked { dechunk(body)? } else { body.to_string() };
        Ok((status, body))
    })
    .await
    .map_err(|_| anyhow!("GET {path} on {addr}: timed out"))?
}

/// Joins an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse_only_when_complete() {
        let mut b = BytesMut::from(&b"+OK\r\n$3\r\nabc\r\n$-1\r\n-TRYAGAIN no leader\r\n$5\r\nab"[..]);
        assert_eq!(parse_resp(&mut b).ok().flatten(), Some(RespReply::Simple("OK".into())));
        assert_eq!(parse_resp(&mut b).ok().flatten(), Some(RespReply::Bulk(Some(Bytes::from("abc")))));
        assert_eq!(parse_resp(&mut b).ok().flatten(), Some(RespReply::Bulk(None)));
        assert_eq!(parse_resp(&mut b).ok().flatten(), Some(RespReply::Error("TRYAGAIN no leader".into())));
        assert_eq!(parse_resp(&mut b).ok().flatten(), None, "a partial bulk waits");
        let mut arrays = BytesMut::from(&b"*2\r\n+OK\r\n$1\r\nx\r\n*-1\r\n*2\r\n:1\r\n"[..]);
        let ok_x =
            RespReply::Array(Some(vec![RespReply::Simple("OK".into()), RespReply::Bulk(Some("x".into()))]));
        assert_eq!(parse_resp(&mut arrays).ok().flatten(), Some(ok_x));
        assert_eq!(parse_resp(&mut arrays).ok().flatten(), Some(RespReply::Array(None)));
        assert_eq!(parse_resp(&mut arrays).ok().flatten(), None, "a partial array waits");
        assert_eq!(arrays.len(), 8, "and consumes nothing");
        let mut huge = BytesMut::from(&b"$99999999999\r\n"[..]);
        assert!(parse_resp(&mut huge).is_err(), "a bulk over the limit is refused before allocating");
    }

    #[test]
    fn chunked_bodies_join() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").ok().as_deref(), Some("abcde"));
        assert!(dechunk("9\r\nab").is_err());
    }
}
