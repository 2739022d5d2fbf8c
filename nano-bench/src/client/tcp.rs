//! NanoDB's binary TCP protocol: HELLO, then request frames written straight into one reusable
//! buffer (no `Command` built, nothing allocated per request) and replies decoded with the
//! protocol crate's [`ClientCodec`], checked against the request ids in flight.

use std::collections::VecDeque;

use bytes::Buf;
use bytes::{BufMut, Bytes, BytesMut};
use nanodb_protocol::frame::{DEFAULT_MAX_FRAME_LEN, FrameCodec, LEN_PREFIX, MIN_FRAME_LEN};
use nanodb_protocol::wire::{self, PROTOCOL_VERSION, kind};
use nanodb_protocol::{ClientCodec, Command, Expiry, PutCondition, Reply, Request, Response, cmd};
use tokio_util::codec::Decoder;

use super::{ClientError, Conn, Outcome, Wire, connect_error, probe};
use crate::cli::Protocol;
use crate::workload::Op;

/// A binary-protocol connection that has done its HELLO.
#[derive(Debug)]
pub struct TcpConn {
    wire: Wire,
    codec: ClientCodec,
    next_id: u32,
    in_flight: VecDeque<u32>,
}

/// Appends a length-prefixed byte string.
fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u32(b.len() as u32);
    dst.put_slice(b);
}

/// Writes the request frame for `op` on `key` (PROTOCOL.md layouts, as in `wire::encode_request`).
pub fn encode(dst: &mut BytesMut, id: u32, op: Op, key: &[u8], value: &[u8]) {
    match op {
        Op::Get => {
            let start = FrameCodec::begin(dst, kind::GET, id);
            put_bytes(dst, key);
            FrameCodec::finish(dst, start);
        }
        Op::Set => {
            let start = FrameCodec::begin(dst, kind::PUT, id);
            put_bytes(dst, key);
            put_bytes(dst, value);
            dst.put_u64(0); // no TTL
            dst.put_u8(0); // unconditional
            dst.put_u64(0); // expected version (unused)
            FrameCodec::finish(dst, start);
        }
        Op::Incr => {
            let start = FrameCodec::begin(dst, kind::INCR, id);
            put_bytes(dst, key);
            dst.put_i64(1);
            FrameCodec::finish(dst, start);
        }
        Op::Txn => {
            // Rare enough a request to go through the protocol crate's encoder.
            let put = |s: &&[u8]| {
                Command::Put(cmd::Put {
                    key: [key, s].concat().into(),
                    value: Bytes::copy_from_slice(value),
                    expiry: Expiry::Persist,
                    condition: PutCondition::Always,
                })
            };
            let txn = cmd::Txn {
                compares: vec![],
                success: crate::workload::TXN_SUFFIXES.iter().map(put).collect(),
                failure: vec![],
            };
            // A TXN of three puts always has a wire form.
            let _ = wire::encode_request(id, &Request::Command(Command::Txn(txn)), dst);
        }
    }
}

impl TcpConn {
    /// Connects and does the HELLO handshake.
    pub async fn connect(target: &str, tls: Option<&super::tls::TlsClient>) -> anyhow::Result<Self> {
        Self::connect_as(target, tls, None).await
    }

    /// [`TcpConn::connect`], then `AUTH` as `credentials` when given.
    pub async fn connect_as(
        target: &str,
        tls: Option<&super::tls::TlsClient>,
        credentials: Option<&super::Credentials>,
    ) -> anyhow::Result<Self> {
        let mut conn = Self::hello(target, tls).await?;
        if let Some(c) = credentials {
            conn.auth(target, c).await?;
        }
        Ok(conn)
    }

    /// Sends `AUTH` (request id 0, before any benchmark request) and waits for its answer.
    async fn auth(&mut self, target: &str, c: &super::Credentials) -> anyhow::Result<()> {
        let request = Request::Auth {
            user: bytes::Bytes::copy_from_slice(c.user.as_bytes()),
            password: nanodb_protocol::wire::Password(bytes::Bytes::copy_from_slice(c.password.as_bytes())),
        };
        wire::encode_request(0, &request, &mut self.wire.wbuf)
            .map_err(|e| connect_error("tcp", target, e.to_string()))?;
        self.flush().await?;
        loop {
            if let Some((_, resp)) = self.codec.decode(&mut self.wire.rbuf)? {
                return match resp {
                    Response::Reply(_) => Ok(()),
                    Response::Error(e) => anyhow::bail!("{target} (tcp) refused AUTH as {}: {e}", c.user),
                    other => anyhow::bail!("{target} (tcp) answered AUTH with {other:?}"),
                };
            }
            if self.wire.fill().await.is_err() {
                anyhow::bail!("{target} (tcp) closed the connection during AUTH");
            }
        }
    }

    async fn hello(target: &str, tls: Option<&super::tls::TlsClient>) -> anyhow::Result<Self> {
        let mut conn = Self {
            wire: Wire::connect("tcp", target, tls).await?,
            codec: ClientCodec::default(),
            next_id: 1,
            in_flight: VecDeque::with_capacity(1024),
        };
        wire::encode_request(0, &Request::Hello { version: PROTOCOL_VERSION }, &mut conn.wire.wbuf)
            .map_err(|e| connect_error("tcp", target, e.to_string()))?;
        conn.flush().await?;
        loop {
            if let Some((id, resp)) = conn.codec.decode(&mut conn.wire.rbuf)? {
                if let Response::Error(e) = &resp
                    && let Some(m) = probe::wrong_port(Protocol::Tcp, target, "HELLO", &e.to_string())
                {
                    // another protocol's NanoDB port says so in an error frame
                    return Err(m.into());
                }
                return match resp {
                    Response::Hello { .. } if id == 0 => Ok(conn),
                    other => Err(connect_error("tcp", target, format!("unexpected HELLO reply {other:?}"))),
                };
            }
            if conn.wire.fill().await.is_err() {
                anyhow::bail!("{target} (tcp) closed the connection during HELLO: is it a NanoDB TCP port?");
            }
        }
    }

    fn classify(&mut self, id: u32, resp: Response) -> Result<Outcome, ClientError> {
        match self.in_flight.pop_front() {
            Some(want) if want == id => {}
            want => return Err(ClientError::Protocol(format!("reply for request {id}, expected {want:?}"))),
        }
        Ok(match resp {
            Response::Reply(Reply::Value(None)) => Outcome::Miss,
            Response::Reply(_) => Outcome::Ok,
            Response::Error(e) => Outcome::Error(format!("tcp {:?}", e.code())),
            Response::Hello { .. } => return Err(ClientError::Protocol("HELLO reply to a command".into())),
            // The bench never subscribes, so a pushed frame is a server fault.
            Response::Push(_) => {
                return Err(ClientError::Protocol("push on an unsubscribed connection".into()));
            }
        })
    }
}

impl Conn for TcpConn {
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        encode(&mut self.wire.wbuf, id, op, key, value);
        self.in_flight.push_back(id);
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        self.wire.flush().await
    }

    async fn recv(&mut self) -> Result<Outcome, ClientError> {
        loop {
            if let Some(r) = self.try_recv() {
                return r;
            }
            self.wire.fill().await?;
        }
    }

    fn try_recv(&mut self) -> Option<Result<Outcome, ClientError>> {
        // The replies the workloads get are classified from their frame's header and first body
        // byte and skipped, without building a `Response` (as the resp client skims its replies);
        // anything else (errors, pushes, other kinds) goes through the codec and is checked whole.
        if let Some((len, kind, id, first)) = peek_frame(&self.wire.rbuf)
            && let Some(outcome) = skim(kind, first)
        {
            self.wire.rbuf.advance(LEN_PREFIX + len);
            return Some(match self.in_flight.pop_front() {
                Some(want) if want == id => Ok(outcome),
                want => Err(ClientError::Protocol(format!("reply for request {id}, expected {want:?}"))),
            });
        }
        match self.codec.decode(&mut self.wire.rbuf) {
            Ok(Some((id, resp))) => Some(self.classify(id, resp)),
            Ok(None) => None,
            Err(e) => Some(Err(ClientError::Protocol(e.to_string()))),
        }
    }
}

/// `(body length with kind and id, kind, request id, first body byte)` of the whole frame at the
/// start of `buf`, if one is there and within the default frame limit; else `None` (the codec
/// then waits for more bytes or reports the framing error).
fn peek_frame(buf: &[u8]) -> Option<(usize, u8, u32, Option<u8>)> {
    let header = buf.get(..LEN_PREFIX + MIN_FRAME_LEN)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(MIN_FRAME_LEN..=DEFAULT_MAX_FRAME_LEN).contains(&len) || buf.len() < LEN_PREFIX + len {
        return None;
    }
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let first = (len > MIN_FRAME_LEN).then(|| buf[LEN_PREFIX + MIN_FRAME_LEN]);
    Some((len, header[4], id, first))
}

/// The outcome of a reply of `kind` whose body starts with `first`, for the kinds the workloads'
/// requests are answered with; `None` for anything that must be decoded whole.
fn skim(kind: u8, first: Option<u8>) -> Option<Outcome> {
    match (kind, first) {
        (kind::R_VALUE, Some(0)) => Some(Outcome::Miss),
        (kind::R_VALUE, Some(1)) | (kind::R_PUT | kind::R_INT | kind::R_TXN, Some(_)) => Some(Outcome::Ok),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use nanodb_protocol::Expiry;
    use nanodb_protocol::cmd;
    use nanodb_protocol::{Command, PutCondition, ServerCodec};

    use super::*;

    /// Skimming a reply gives the outcome decoding it whole gives, and leaves to the codec what it
    /// cannot classify from the header.
    #[test]
    fn skimmed_replies_match_the_decoded_ones() {
        use nanodb_protocol::{Entry, Error, TxnOutcome};
        let value = Entry { value: Bytes::from_static(b"v"), version: 3, ttl_ms: -1 };
        let replies = [
            Response::Reply(Reply::Value(Some(value))),
            Response::Reply(Reply::Value(None)),
            Response::Reply(Reply::Put { applied: true, version: 4 }),
            Response::Reply(Reply::Int(7)),
            Response::Reply(Reply::Txn(TxnOutcome { succeeded: false, results: vec![] })),
            Response::Error(Error::WrongType),
            Response::Reply(Reply::Bool(true)),
        ];
        for (i, reply) in replies.into_iter().enumerate() {
            let id = i as u32 + 1;
            let mut buf = BytesMut::new();
            wire::encode_response(id, &reply, &mut buf);
            let decoded = {
                let mut codec = ClientCodec::default();
                let mut copy = buf.clone();
                let (got_id, resp) = codec.decode(&mut copy).expect("decodes").expect("whole");
                assert_eq!(got_id, id);
                match resp {
                    Response::Reply(Reply::Value(None)) => Outcome::Miss,
                    Response::Reply(_) => Outcome::Ok,
                    _ => Outcome::Error("error".into()),
                }
            };
            let (len, kind, got_id, first) = peek_frame(&buf).expect("a whole frame");
            assert_eq!((LEN_PREFIX + len, got_id), (buf.len(), id));
            match skim(kind, first) {
                Some(outcome) => assert_eq!(outcome, decoded, "{reply:?}"),
                None => assert!(matches!(reply, Response::Error(_) | Response::Reply(Reply::Bool(_)))),
            }
            // A frame cut short is left for more bytes.
            assert!(peek_frame(&buf[..buf.len() - 1]).is_none());
        }
    }

    /// The hand-packed frames must be exactly what the protocol crate decodes.
    #[test]
    fn frames_decode_as_the_intended_commands() {
        let mut buf = BytesMut::new();
        encode(&mut buf, 1, Op::Get, b"k1", b"");
        encode(&mut buf, 2, Op::Set, b"k2", b"val");
        encode(&mut buf, 3, Op::Incr, b"k3", b"");
        let mut server = ServerCodec::default();
        let key = |k: &'static [u8]| Bytes::from_static(k);
        let want = [
            (1, Command::Get(cmd::Get { key: key(b"k1") })),
            (
                2,
                Command::Put(cmd::Put {
                    key: key(b"k2"),
                    value: key(b"val"),
                    expiry: Expiry::Persist,
                    condition: PutCondition::Always,
                }),
            ),
            (3, Command::Incr(cmd::Incr { key: key(b"k3"), delta: 1 })),
        ];
        for (id, cmd) in want {
            let got = server.decode(&mut buf).expect("stream ok").expect("a frame");
            assert_eq!(got, (id, Ok(Request::Command(cmd))));
        }
        assert!(buf.is_empty());
    }
}
