//! A small RESP2 client for `GET`, `SET` and `INCR`: commands are encoded straight into one reusable
//! buffer, replies are parsed in place from the read buffer (no copies, nothing allocated unless the
//! server answers with an error). Works against NanoDB's RESP port and against Redis itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{ClientError, Conn, Outcome, Wire, probe};
use crate::cli::Protocol;
use crate::workload::Op;

/// Deepest array nesting accepted in a reply.
const MAX_DEPTH: usize = 8;

/// A RESP2 connection.
#[derive(Debug)]
pub struct RespConn {
    wire: Wire,
    in_flight: usize,
    /// Replies per request: 1, or [`TXN_REPLIES`] for MULTI ... EXEC (a run's requests are all
    /// of one kind, so the last push says it for every request in flight).
    replies: usize,
}

/// What MULTI, three SETs and EXEC answer: `+OK`, three `+QUEUED`, EXEC's array.
const TXN_REPLIES: usize = 5;

fn put_len(dst: &mut BytesMut, prefix: u8, n: usize) {
    dst.put_u8(prefix);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[i..]);
    dst.put_slice(b"\r\n");
}

fn put_bulk(dst: &mut BytesMut, b: &[u8]) {
    put_len(dst, b'$', b.len());
    dst.put_slice(b);
    dst.put_slice(b"\r\n");
}

/// Appends the command for `op` as a RESP array of bulk strings.
pub fn encode(dst: &mut BytesMut, op: Op, key: &[u8], value: &[u8]) {
    match op {
        Op::Get => {
            dst.put_slice(b"*2\r\n$3\r\nGET\r\n");
            put_bulk(dst, key);
        }
        Op::Set => {
            dst.put_slice(b"*3\r\n$3\r\nSET\r\n");
            put_bulk(dst, key);
            put_bulk(dst, value);
        }
        Op::Incr => {
            dst.put_slice(b"*2\r\n$4\r\nINCR\r\n");
            put_bulk(dst, key);
        }
        Op::Txn => {
            dst.put_slice(b"*1\r\n$5\r\nMULTI\r\n");
            for suffix in crate::workload::TXN_SUFFIXES {
                dst.put_slice(b"*3\r\n$3\r\nSET\r\n");
                put_len(dst, b'$', key.len() + suffix.len());
                dst.put_slice(key);
                dst.put_slice(suffix);
                dst.put_slice(b"\r\n");
                put_bulk(dst, value);
            }
            dst.put_slice(b"*1\r\n$4\r\nEXEC\r\n");
        }
    }
}

/// What a parsed reply was, as far as the benchmark cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `+...`, `:...`, a bulk string or an array.
    Value,
    /// `$-1` or `*-1`.
    Nil,
    /// `-KIND message`: the kind (first word).
    Error(String),
}

/// The index of the `\r` ending the line that starts at `from`: `Ok(None)` while incomplete, an
/// error for a `\r` not followed by `\n` (RESP2 header lines never contain one).
fn line(buf: &[u8], from: usize) -> Result<Option<usize>, String> {
    let Some(rest) = buf.get(from..) else { return Ok(None) };
    // header lines are short: a plain scan beats anything clever
    let Some(p) = rest.iter().position(|&b| b == b'\r') else { return Ok(None) };
    match rest.get(p + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(from + p)),
        Some(_) => Err("CR without LF in a reply header".into()),
    }
}

fn int(bytes: &[u8]) -> Result<i64, String> {
    let (neg, digits) = match bytes.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(format!("bad integer {:?}", String::from_utf8_lossy(bytes)));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(format!("bad integer {:?}", String::from_utf8_lossy(bytes)));
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if neg { -n } else { n })
}

/// Parses one reply at the start of `buf`: `Ok(None)` when incomplete, else the reply and the
/// bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Parsed, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Parsed, usize)>, String> {
    let Some(&tag) = buf.get(at) else { return Ok(None) };
    let Some(cr) = line(buf, at + 1)? else { return Ok(None) };
    let head = &buf[at + 1..cr];
    let after = cr + 2;
    match tag {
        b'+' => Ok(Some((Parsed::Value, after - at))),
        b':' => int(head).map(|_| Some((Parsed::Value, after - at))),
        b'-' => {
            let kind = head.split(|&c| c == b' ').next().unwrap_or_default();
            Ok(Some((Parsed::Error(String::from_utf8_lossy(kind).into_owned()), after - at)))
        }
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Parsed::Nil, after - at)));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            Ok(Some((Parsed::Value, end + 2 - at)))
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Parsed::Nil, after - at)));
            }
            if depth >= MAX_DEPTH {
                return Err("reply nested too deeply".into());
            }
            let mut pos = after;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((_, used)) => pos += used,
                    None => return Ok(None),
                }
            }
            Ok(Some((Parsed::Value, pos - at)))
        }
        other => Err(format!("unexpected reply type byte 0x{other:02x}")),
    }
}

impl RespConn {
    /// Connects (RESP2 needs no handshake) and checks the peer answers PING.
    pub async fn connect(target: &str, tls: Option<&super::tls::TlsClient>) -> anyhow::Result<Self> {
        Self::connect_as(target, tls, None).await
    }

    /// [`RespConn::connect`], sending `AUTH` as `credentials` first when given (`AUTH password`
    /// for `default`, which servers before Redis 6 also take; `AUTH user password` otherwise).
    pub async fn connect_as(
        target: &str,
        tls: Option<&super::tls::TlsClient>,
        credentials: Option<&super::Credentials>,
    ) -> anyhow::Result<Self> {
        let mut conn = Self { wire: Wire::connect("resp", target, tls).await?, in_flight: 0, replies: 1 };
        if let Some(c) = credentials {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if c.user != "default" {
                args.push(c.user.as_bytes());
            }
            args.push(c.password.as_bytes());
            conn.wire.wbuf.put_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                conn.wire.wbuf.put_slice(format!("${}\r\n", a.len()).as_bytes());
                conn.wire.wbuf.put_slice(a);
                conn.wire.wbuf.put_slice(b"\r\n");
            }
            conn.flush().await?;
            let (parsed, used) = loop {
                match parse(&conn.wire.rbuf) {
                    Ok(Some(reply)) => break reply,
                    Ok(None) => conn.wire.fill().await?,
                    Err(e) => {
                        anyhow::bail!("{target} (resp) answered AUTH with something else than RESP: {e}")
                    }
                }
            };
            let reply = conn.wire.rbuf.split_to(used);
            if let Parsed::Error(_) = parsed {
                let line = String::from_utf8_lossy(&reply[1..reply.len() - 2]);
                anyhow::bail!("{target} (resp) refused AUTH as {}: {line}", c.user);
            }
        }
        conn.wire.wbuf.put_slice(b"*1\r\n$4\r\nPING\r\n");
        conn.flush().await?;
        let (parsed, used) = loop {
            match parse(&conn.wire.rbuf) {
                Ok(Some(reply)) => break reply,
                Ok(None) => conn.wire.fill().await?,
                Err(e) => anyhow::bail!("{target} (resp) answered PING with something else than RESP: {e}"),
            }
        };
        let reply = conn.wire.rbuf.split_to(used);
        match parsed {
            Parsed::Value => Ok(conn),
            Parsed::Nil => anyhow::bail!("{target} (resp) answered PING with nil"),
            Parsed::Error(_) => {
                // the whole `-KIND message` line: another protocol's NanoDB port says so there
                let line = String::from_utf8_lossy(&reply[1..reply.len() - 2]);
                match probe::wrong_port(Protocol::Resp, target, "PING", &line) {
                    Some(m) => Err(m.into()),
                    None => anyhow::bail!("{target} (resp) answered PING with the error {line:?}"),
                }
            }
        }
    }
}

impl Conn for RespConn {
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes) {
        encode(&mut self.wire.wbuf, op, key, value);
        self.replies = if op == Op::Txn { TXN_REPLIES } else { 1 };
        self.in_flight += 1;
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
        if self.replies > 1 {
            return self.try_recv_group();
        }
        match parse(&self.wire.rbuf) {
            Ok(None) => None,
            Ok(Some((parsed, used))) => {
                self.wire.rbuf.advance(used);
                if self.in_flight == 0 {
                    return Some(Err(ClientError::Protocol("reply with no request in flight".into())));
                }
                self.in_flight -= 1;
                Some(Ok(match parsed {
                    Parsed::Value => Outcome::Ok,
                    Parsed::Nil => Outcome::Miss,
                    Parsed::Error(kind) => Outcome::Error(format!("resp {kind}")),
                }))
            }
            Err(e) => Some(Err(ClientError::Protocol(e))),
        }
    }
}

impl RespConn {
    /// [`Conn::try_recv`] for MULTI ... EXEC: all its replies or nothing; the first error is the
    /// outcome, and a nil EXEC (the transaction was aborted) is one too.
    fn try_recv_group(&mut self) -> Option<Result<Outcome, ClientError>> {
        let mut pos = 0;
        let mut outcome = Outcome::Ok;
        for i in 0..self.replies {
            match parse_at(&self.wire.rbuf, pos, 0) {
                Ok(None) => return None,
                Ok(Some((parsed, used))) => {
                    pos += used;
                    match parsed {
                        Parsed::Error(kind) if outcome == Outcome::Ok => {
                            outcome = Outcome::Error(format!("resp {kind}"))
                        }
                        Parsed::Nil if i + 1 == self.replies && outcome == Outcome::Ok => {
                            outcome = Outcome::Error("resp EXEC aborted".into());
                        }
                        _ => {}
                    }
                }
                Err(e) => return Some(Err(ClientError::Protocol(e))),
            }
        }
        self.wire.rbuf.advance(pos);
        if self.in_flight == 0 {
            return Some(Err(ClientError::Protocol("reply with no request in flight".into())));
        }
        self.in_flight -= 1;
        Some(Ok(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_resp_arrays() {
        let mut b = BytesMut::new();
        encode(&mut b, Op::Set, b"k", b"hello");
        encode(&mut b, Op::Get, b"k", b"");
        encode(&mut b, Op::Incr, b"counter", b"");
        assert_eq!(
            &b[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n"
        );
        let mut big = BytesMut::new();
        put_len(&mut big, b'$', 1234567);
        assert_eq!(&big[..], b"$1234567\r\n");
    }

    #[test]
    fn replies_parse_and_incomplete_waits() {
        let cases: [(&[u8], Parsed); 7] = [
            (b"+OK\r\n", Parsed::Value),
            (b":42\r\n", Parsed::Value),
            (b"$5\r\nhe\r\no\r\n", Parsed::Value),
            (b"$-1\r\n", Parsed::Nil),
            (b"-WRONGTYPE Operation against a key\r\n", Parsed::Error("WRONGTYPE".into())),
            (b"*2\r\n$1\r\na\r\n:1\r\n", Parsed::Value),
            (b"*-1\r\n", Parsed::Nil),
        ];
        for (wire, want) in cases {
            assert_eq!(parse(wire), Ok(Some((want, wire.len()))), "{:?}", String::from_utf8_lossy(wire));
            for cut in 0..wire.len() {
                assert_eq!(parse(&wire[..cut]), Ok(None), "cut {cut} of {:?}", String::from_utf8_lossy(wire));
            }
        }
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b"+O\rK\r\n").is_err());
    }
}
