//! Another protocol's client on a port that speaks its own (the binary TCP protocol, RESP): a
//! browser or curl on the TCP port, a gRPC client on the RESP port, redis-cli on the TCP port, a TLS
//! client on either. Such a client is recognised from its first bytes, told where to go in its own
//! protocol where that is possible, and closed; the connection is logged once, at debug level, so
//! a load generator pointed at the wrong port does not write a log line per connection.
//!
//! Only the first bytes of a connection are examined, and only where they are not the port's own
//! protocol anyway (the TCP port looks after its first frame failed to decode; the RESP port looks
//! at its first read), so well-behaved clients pay nothing.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use nanodb_protocol::{Response, ServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use super::resp::parse::{MAX_INLINE_LEN, RespDecoder};
use crate::config::{Config, ListenAddr};

/// A protocol recognised from a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// An HTTP/1.x request line (`GET / HTTP/1.1`).
    Http1,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`): gRPC, or HTTP/2 with prior knowledge.
    Http2,
    /// A TLS record carrying a handshake (a ClientHello).
    Tls,
    /// A RESP array (`*<n>\r\n`), what Redis clients send.
    Resp,
    /// A length-prefixed frame of NanoDB's binary TCP protocol (its first byte, the top of the
    /// length, is 0 for any frame under 16 MiB).
    NanoTcp,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.x",
            Self::Http2 => "HTTP/2",
            Self::Tls => "TLS",
            Self::Resp => "RESP",
            Self::NanoTcp => "NanoDB binary TCP",
        })
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HTTP_METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

/// The protocol `first` (a connection's first bytes) clearly belongs to, if any of the above.
pub fn identify(first: &[u8]) -> Option<Foreign> {
    let n = first.len().min(H2_PREFACE.len());
    if n >= 4 && first[..n] == H2_PREFACE[..n] {
        return Some(Foreign::Http2);
    }
    if HTTP_METHODS.iter().any(|m| first.starts_with(m)) {
        // The request line must say HTTP/1.x: `GET key` typed into telnet on the RESP port is RESP.
        let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
        return line.windows(7).any(|w| w == b" HTTP/1").then_some(Foreign::Http1);
    }
    match first {
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => Some(Foreign::Tls),
        [b'*', digit, ..] if digit.is_ascii_digit() => Some(Foreign::Resp),
        [0, _, _, _, _, ..] => Some(Foreign::NanoTcp),
        _ => None,
    }
}

/// Where a listener is: "on port 8080 (--http-addr)"; "on the --http-addr port" when its port is
/// chosen at start (0); "off on this server (--http-addr)".
fn place(addr: &ListenAddr, flag: &str) -> String {
    match addr {
        ListenAddr::Off => format!("off on this server ({flag})"),
        ListenAddr::On(a) => match a.rsplit_once(':') {
            Some((_, port)) if port != "0" => format!("on port {port} ({flag})"),
            _ => format!("on the {flag} port"),
        },
    }
}

/// One line saying which port this is and where the client's protocol is served.
pub fn redirect(config: &Config, this_port: &str, foreign: Foreign) -> String {
    let elsewhere = match foreign {
        Foreign::Http1 | Foreign::Http2 => format!(
            "the REST API is {} and gRPC {}",
            place(&config.http_addr, "--http-addr"),
            place(&config.grpc_addr, "--grpc-addr")
        ),
        Foreign::Resp => format!("the Redis protocol is {}", place(&config.resp_addr, "--resp-addr")),
        Foreign::NanoTcp => {
            format!("the binary TCP protocol is {}", place(&config.tcp_addr, "--tcp-addr"))
        }
        Foreign::Tls => "this server runs without TLS (start it with --tls-cert and --tls-key)".to_string(),
    };
    format!("this is NanoDB's {this_port}, which does not speak {foreign}; {elsewhere}")
}

/// An HTTP/1.1 400 response carrying `text` as plain text.
pub fn http1_response(text: &str) -> Vec<u8> {
    let body = format!("{text}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A binary-protocol error frame (request id 0) carrying `text`.
pub fn tcp_error_frame(text: String) -> Vec<u8> {
    let mut out = BytesMut::new();
    let error = Response::Error(nanodb_protocol::Error::Malformed(text));
    match ServerCodec::default().encode((0, error), &mut out) {
        Ok(()) => out.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The server's side of an HTTP/2 connection that ends at once: an empty SETTINGS frame (the
/// server preface), then GOAWAY with PROTOCOL_ERROR and `text` as its debug data, which HTTP/2
/// clients report or log.
pub fn http2_goaway(text: &str) -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const PROTOCOL_ERROR: u32 = 0x1;
    let mut out = Vec::with_capacity(9 + 9 + 8 + text.len());
    let frame_header = |out: &mut Vec<u8>, len: usize, kind: u8| {
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]); // 24-bit length
        out.push(kind);
        out.push(0); // flags
        out.extend_from_slice(&0u32.to_be_bytes()); // stream 0: the connection
    };
    frame_header(&mut out, 0, SETTINGS);
    let debug = &text.as_bytes()[..text.len().min(1024)];
    frame_header(&mut out, 8 + debug.len(), GOAWAY);
    out.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none was processed
    out.extend_from_slice(&PROTOCOL_ERROR.to_be_bytes());
    out.extend_from_slice(debug);
    out
}

/// Most bytes read (and dropped) from the client after the answer, and for how long.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER: Duration = Duration::from_secs(1);

/// Writes `answer`, ends the sending side, and reads what the client still sends (bounded in
/// bytes and time) before the socket is dropped. Closing with unread input makes the kernel send
/// a reset, which can destroy the answer before the client has read it. Errors are ignored: the
/// client is gone, and nothing is owed to it.
pub async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, answer: &[u8]) {
    let _ = tokio::time::timeout(LINGER, async {
        if !answer.is_empty() {
            stream.write_all(answer).await?;
        }
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Most commands a Redis client on the wrong port gets answered, and how long it may stay idle.
const RESP_MAX_ANSWERS: usize = 64;
const RESP_IDLE: Duration = Duration::from_secs(10);

/// Answers every command a Redis client sends with `-ERR <text>`, then closes: after the commands
/// of [`RESP_MAX_ANSWERS`], [`RESP_IDLE`] without one, or bytes that are not RESP. Closing after
/// the first answer would lose it for most clients: redis-cli and the client libraries send setup
/// commands first (`COMMAND DOCS`, `CLIENT SETINFO`) and ignore their errors, so the user's first
/// command would find the connection closed and report only that.
pub async fn answer_resp_commands<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    first: &[u8],
    text: &str,
    shutdown: &CancellationToken,
) {
    let reply = format!("-ERR {text}\r\n");
    let mut decoder = RespDecoder::new(MAX_INLINE_LEN, 1024);
    let mut buf = BytesMut::from(first);
    let mut args = Vec::new();
    let mut answered = 0;
    'conversation: while answered < RESP_MAX_ANSWERS {
        let mut out = Vec::new();
        loop {
            match decoder.decode_into(&mut buf, &mut args) {
                Ok(true) if answered < RESP_MAX_ANSWERS => {
                    out.extend_from_slice(reply.as_bytes());
                    answered += 1;
                }
                Ok(true) => break,
                Ok(false) => break,
                Err(_) => {
                    let _ = tokio::time::timeout(LINGER, stream.write_all(&out)).await;
                    break 'conversation;
                }
            }
        }
        if tokio::time::timeout(LINGER, stream.write_all(&out)).await.map_or(true, |r| r.is_err()) {
            return;
        }
        if answered >= RESP_MAX_ANSWERS || buf.len() > 2 * MAX_INLINE_LEN {
            break;
        }
        let read = tokio::select! {
            () = shutdown.cancelled() => break,
            read = tokio::time::timeout(RESP_IDLE, stream.read_buf(&mut buf)) => read,
        };
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            break;
        }
    }
    answer_and_close(stream, b"").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_recognised_only_when_clear() {
        assert_eq!(identify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(Foreign::Http1));
        assert_eq!(identify(b"POST /v1/kv/a HTTP/1.0\r\n"), Some(Foreign::Http1));
        assert_eq!(identify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"), Some(Foreign::Http2));
        assert_eq!(identify(b"PRI "), Some(Foreign::Http2));
        assert_eq!(identify(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), Some(Foreign::Tls));
        assert_eq!(identify(b"*1\r\n$4\r\nPING\r\n"), Some(Foreign::Resp));
        let hello = [0, 0, 0, 11, 0x01, 0, 0, 0, 0, b'N', b'A', b'N', b'O', 0, 1];
        assert_eq!(identify(&hello), Some(Foreign::NanoTcp));
        // Inline RESP commands, and what is too short to tell, are nobody's.
        for ours in [&b"GET key\r\n"[..], b"PING\r\n", b"GET / HTTP", b"GET ", b"*", b"\0\0", b"", b"PR"] {
            assert_eq!(identify(ours), None, "{:?}", String::from_utf8_lossy(ours));
        }
    }

    #[test]
    fn redirects_name_the_port_and_where_to_go() {
        let config = Config::default();
        assert_eq!(
            redirect(&config, "binary TCP port", Foreign::Http1),
            "this is NanoDB's binary TCP port, which does not speak HTTP/1.x; the REST API is on port \
             8080 (--http-addr) and gRPC on port 50051 (--grpc-addr)"
        );
        let off = Config { resp_addr: ListenAddr::Off, ..Config::default() };
        let text = redirect(&off, "x", Foreign::Resp);
        assert!(text.ends_with("the Redis protocol is off on this server (--resp-addr)"), "{text}");
        let any = Config { tcp_addr: ListenAddr::On("127.0.0.1:0".into()), ..Config::default() };
        let text = redirect(&any, "x", Foreign::NanoTcp);
        assert!(text.ends_with("the binary TCP protocol is on the --tcp-addr port"), "{text}");
    }

    #[test]
    fn the_http2_answer_is_a_settings_frame_then_goaway_with_the_text() {
        let out = http2_goaway("go elsewhere");
        assert_eq!(&out[..9], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0], "empty SETTINGS on stream 0");
        let goaway = &out[9..];
        assert_eq!(&goaway[..3], &[0, 0, 8 + 12], "GOAWAY length");
        assert_eq!(goaway[3], 0x7);
        assert_eq!(&goaway[9..17], &[0, 0, 0, 0, 0, 0, 0, 1], "last stream 0, PROTOCOL_ERROR");
        assert_eq!(&goaway[17..], b"go elsewhere");
    }
}
