//! Before a run: does the target speak the protocol asked for? One short exchange on a connection
//! of its own (tcp: HELLO, resp: PING, http: `GET /v1/kv/…`, grpc: the HTTP/2 preface and then one
//! `Get` call), read with a deadline. A target that answers in another protocol, closes the
//! connection or stays silent fails the run at once with one line ([`Mismatch`]) naming the
//! target, the protocol tried and, when the answer (or the port) tells, the flag that fits,
//! instead of thousands of failed requests.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use nanodb_protocol::wire::{self, PROTOCOL_VERSION};
use nanodb_protocol::{ClientCodec, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::{connect_error, resp};
use crate::cli::Protocol;

/// How long the target may take to answer the probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The key the http and grpc probes read (a miss is as good an answer as a hit).
const PROBE_KEY: &str = "__nano_bench_probe";

/// Characters of a text answer quoted in an error, and bytes of a binary one.
const QUOTED_TEXT: usize = 60;
const QUOTED_BYTES: usize = 16;

/// The target answered, but not in the protocol tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// HOST:PORT.
    pub target: String,
    /// The protocol tried.
    pub tried: Protocol,
    /// What the target did, e.g. `it answered PING with "HTTP/1.1 400 Bad Request"`.
    pub evidence: String,
    /// The protocols the answer (or the port) suggests, likeliest first; never `tried`.
    pub guess: Vec<Protocol>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried = self.tried;
        write!(
            f,
            "{} probably speaks another protocol than {} ({}): ",
            self.target,
            tried.name(),
            self.evidence
        )?;
        match self.guess.split_first() {
            Some((g, rest)) => {
                write!(f, "try --protocol {}", g.name())?;
                for other in rest {
                    write!(f, " (or {})", other.name())?;
                }
                write!(
                    f,
                    ", or a --target that speaks {} (NanoDB's default is {})",
                    tried.title(),
                    tried.default_target()
                )
            }
            None => write!(
                f,
                "check --protocol (tcp, grpc, http or resp) and --target (NanoDB's {} default is {})",
                tried.name(),
                tried.default_target()
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// The protocol whose answer `bytes` starts with, if it is one nano-bench knows.
pub fn recognise(bytes: &[u8]) -> Option<Protocol> {
    if matches!(ClientCodec::default().decode(&mut BytesMut::from(bytes)), Ok(Some(_))) {
        return Some(Protocol::Tcp);
    }
    // an HTTP/2 server opens with a SETTINGS frame (type 4) on stream 0, its length a multiple of 6
    if let [l0, l1, l2, 4, _, 0, 0, 0, 0, ..] = *bytes
        && u32::from_be_bytes([0, l0, l1, l2]).is_multiple_of(6)
    {
        return Some(Protocol::Grpc);
    }
    if bytes.starts_with(b"HTTP/") {
        return Some(Protocol::Http);
    }
    if matches!(resp::parse(bytes), Ok(Some(_))) {
        return Some(Protocol::Resp);
    }
    None
}

/// The protocol NanoDB serves by default on `target`'s port, if that is not `tried`'s.
fn by_port(target: &str, tried: Protocol) -> Option<Protocol> {
    let port: u16 = target.rsplit_once(':')?.1.parse().ok()?;
    Protocol::ALL.into_iter().find(|p| *p != tried && p.default_port() == port)
}

/// What to suggest instead of `tried` after `answer` (and `hints` from the exchange): what the
/// answer looks like, with the protocol NanoDB serves on the target's port first when it fits.
fn guesses(answer: &[u8], hints: &[Protocol], tried: Protocol, target: &str) -> Vec<Protocol> {
    let mut all = hints.to_vec();
    match recognise(answer) {
        // NanoDB's gRPC port answers HTTP/1.1 too (with an error), as does its REST port
        Some(Protocol::Http) => all.extend([Protocol::Http, Protocol::Grpc]),
        Some(p) => all.push(p),
        None => {}
    }
    let mut out: Vec<Protocol> = Vec::new();
    for p in all {
        if p != tried && !out.contains(&p) {
            out.push(p);
        }
    }
    if let Some(p) = by_port(target, tried)
        && (out.is_empty() || out.contains(&p))
    {
        out.retain(|x| *x != p);
        out.insert(0, p);
    }
    out
}

/// An answer as a person reads it: what it is when nano-bench knows the protocol's binary form,
/// else a [`quote`].
fn describe(bytes: &[u8]) -> String {
    match recognise(bytes) {
        Some(Protocol::Tcp) => "a NanoDB binary-protocol frame".into(),
        Some(Protocol::Grpc) => "an HTTP/2 SETTINGS frame".into(),
        _ => quote(bytes),
    }
}

/// `bytes` as a short quote: its first line when it is text, else hex.
fn quote(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    if !line.is_empty() && line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let text = String::from_utf8_lossy(line);
        let cut: String = text.chars().take(QUOTED_TEXT).collect();
        let more = if cut.len() < text.len() { "…" } else { "" };
        format!("{:?}{more}", cut)
    } else {
        let head = &bytes[..bytes.len().min(QUOTED_BYTES)];
        let more = if bytes.len() > QUOTED_BYTES { " …" } else { "" };
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}{more}", hex.join(" "))
    }
}

/// What the answer so far says.
enum Verdict {
    /// It speaks the protocol.
    Fits,
    /// It does not: why, and which protocols that suggests (besides what the answer looks like).
    Foreign(String, Vec<Protocol>),
    /// Too short to tell.
    More,
}

/// Checks that `target` speaks `protocol`, within [`PROBE_TIMEOUT`]. A refused connection is the
/// usual `cannot connect to …` error; any other failure is a [`Mismatch`].
pub async fn check(protocol: Protocol, target: &str) -> anyhow::Result<()> {
    check_within(protocol, target, PROBE_TIMEOUT).await
}

/// [`check`] with another deadline.
pub async fn check_within(protocol: Protocol, target: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut greeting = BytesMut::new();
    let what = match protocol {
        Protocol::Tcp => {
            wire::encode_request(0, &Request::Hello { version: PROTOCOL_VERSION }, &mut greeting)?;
            "HELLO"
        }
        Protocol::Resp => {
            greeting.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            "PING"
        }
        Protocol::Http => {
            let req = format!("GET /v1/kv/{PROBE_KEY} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            greeting.extend_from_slice(req.as_bytes());
            "a GET"
        }
        Protocol::Grpc => {
            // the client connection preface, then an empty SETTINGS frame
            greeting.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0");
            "the HTTP/2 preface"
        }
    };
    let judge = |buf: &[u8]| -> Verdict {
        match protocol {
            Protocol::Tcp => match ClientCodec::default().decode(&mut BytesMut::from(buf)) {
                // any frame will do: the connection's own HELLO reports a refused version
                Ok(Some(_)) => Verdict::Fits,
                Ok(None) => Verdict::More,
                Err(_) => Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new()),
            },
            Protocol::Resp => match resp::parse(buf) {
                Ok(Some(_)) => Verdict::Fits,
                Ok(None) => Verdict::More,
                Err(_) => Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new()),
            },
            Protocol::Http => http_verdict(buf, what),
            Protocol::Grpc => match *buf {
                [_, _, _, 4, _, 0, 0, 0, 0, ..] => Verdict::Fits,
                [_, _, _, _, _, _, _, _, _, ..] => {
                    Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new())
                }
                _ => Verdict::More,
            },
        }
    };
    let mismatch = |(evidence, hints): (String, Vec<Protocol>), answer: &[u8]| {
        let guess = guesses(answer, &hints, protocol, target);
        anyhow::Error::new(Mismatch { target: target.to_string(), tried: protocol, evidence, guess })
    };

    let mut stream =
        TcpStream::connect(target).await.map_err(|e| connect_error(protocol.name(), target, e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let sent = stream.write_all(&greeting).await;
    loop {
        match judge(&buf) {
            Verdict::Fits => break,
            Verdict::Foreign(evidence, hints) => return Err(mismatch((evidence, hints), &buf)),
            Verdict::More => {}
        }
        let mut chunk = [0u8; 1024];
        let evidence = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(_elapsed) if buf.is_empty() => {
                format!("no answer to {what} within {} s", timeout.as_secs_f64())
            }
            Err(_elapsed) => {
                format!(
                    "an incomplete answer to {what} after {} s: {}",
                    timeout.as_secs_f64(),
                    describe(&buf)
                )
            }
            // a write refused (reset) or a read that ends or fails: the peer hung up on the greeting
            Ok(_) if buf.is_empty() => match &sent {
                Err(e) => format!("it dropped the connection on {what}: {e}"),
                Ok(()) => format!("it closed the connection without answering {what}"),
            },
            Ok(_) => format!("it answered {what} with {} and closed the connection", describe(&buf)),
        };
        return Err(mismatch((evidence, Vec::new()), &buf));
    }
    if protocol == Protocol::Grpc {
        drop(stream);
        grpc_call(target, timeout).await.map_err(|e| mismatch(e, b""))?;
    }
    Ok(())
}

/// An HTTP/1.1 answer to `GET /v1/kv/{key}` fits when a key-value store could have sent it: not a
/// gRPC response (gRPC servers that take HTTP/1.1 answer that), not a refusal of the request itself
/// (400, 415, 505: what NanoDB's gRPC port answers a plain GET).
fn http_verdict(buf: &[u8], what: &str) -> Verdict {
    let head = &buf[..buf.len().min(5)];
    if !b"HTTP/".starts_with(head) {
        return Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new());
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Verdict::More };
    let headers = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if headers.lines().any(|l| l.starts_with("content-type:") && l.contains("application/grpc")) {
        return Verdict::Foreign(format!("it answered {what} with a gRPC response"), vec![Protocol::Grpc]);
    }
    let status = headers.split(' ').nth(1).unwrap_or_default();
    if ["400", "415", "505"].contains(&status) {
        return Verdict::Foreign(
            format!("it answered GET /v1/kv/{PROBE_KEY} with {}", quote(buf)),
            vec![Protocol::Grpc],
        );
    }
    Verdict::Fits
}

/// One `nanodb.v1.KV/Get` over a tonic channel: the answer must be gRPC (`content-type:
/// application/grpc`), whatever its status. On failure: what happened, and what it suggests.
async fn grpc_call(target: &str, timeout: Duration) -> Result<(), (String, Vec<Protocol>)> {
    use tonic::codegen::Service;

    let channel = super::grpc::channel(target).await.map_err(|e| (format!("{e:#}"), Vec::new()))?;
    // GetRequest { key } (field 1, bytes) in one length-prefixed gRPC message
    let mut msg = vec![0x0a, PROBE_KEY.len() as u8];
    msg.extend_from_slice(PROBE_KEY.as_bytes());
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{target}/nanodb.v1.KV/Get"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(frame))))
        .map_err(|e| (format!("cannot build the probe request: {e}"), Vec::new()))?;
    let mut ch = channel;
    let call = async {
        futures::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
        ch.call(req).await
    };
    let resp = match tokio::time::timeout(timeout, call).await {
        Err(_elapsed) => {
            return Err((format!("no answer to a gRPC call within {} s", timeout.as_secs_f64()), Vec::new()));
        }
        Ok(Err(e)) => return Err((format!("a gRPC call failed: {}", chain(&e)), Vec::new())),
        Ok(Ok(resp)) => resp,
    };
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec());
    match content_type {
        Some(ct) if ct.starts_with(b"application/grpc") => Ok(()),
        ct => Err((
            format!(
                "it answered a gRPC call with HTTP {} and content-type {}",
                resp.status().as_u16(),
                ct.map_or("(none)".into(), |c| String::from_utf8_lossy(&c).into_owned())
            ),
            vec![Protocol::Http],
        )),
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !msg.ends_with(&s_text) {
            msg = format!("{msg}: {s_text}");
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_recognised() {
        let mut hello = BytesMut::new();
        wire::encode_response(
            0,
            &nanodb_protocol::Response::Hello { version: PROTOCOL_VERSION, max_frame_len: 1 << 20 },
            &mut hello,
        );
        assert_eq!(recognise(&hello), Some(Protocol::Tcp));
        assert_eq!(recognise(b"\0\0\x12\x04\0\0\0\0\0\0\x03\0\0\0\x64"), Some(Protocol::Grpc));
        assert_eq!(recognise(b"HTTP/1.1 400 Bad Request\r\n"), Some(Protocol::Http));
        assert_eq!(recognise(b"-ERR unknown command 'GET'\r\n"), Some(Protocol::Resp));
        assert_eq!(recognise(b"+PONG\r\n"), Some(Protocol::Resp));
        assert_eq!(recognise(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(recognise(b""), None);
    }

    #[test]
    fn guesses_put_the_ports_protocol_first_when_the_answer_allows_it() {
        let http = b"HTTP/1.1 400 Bad Request\r\n";
        assert_eq!(guesses(http, &[], Protocol::Tcp, "h:1"), [Protocol::Http, Protocol::Grpc]);
        assert_eq!(guesses(http, &[], Protocol::Tcp, "h:50051"), [Protocol::Grpc, Protocol::Http]);
        // the port does not overrule an answer that says otherwise
        assert_eq!(guesses(b"+PONG\r\n", &[], Protocol::Tcp, "h:8080"), [Protocol::Resp]);
        // silence: only the port can tell
        assert_eq!(guesses(b"", &[], Protocol::Tcp, "h:6379"), [Protocol::Resp]);
        assert_eq!(guesses(b"", &[], Protocol::Tcp, "h:7070"), []);
        assert_eq!(guesses(http, &[Protocol::Grpc], Protocol::Http, "h:1"), [Protocol::Grpc]);
    }

    #[test]
    fn ports_suggest_nanodbs_protocols() {
        assert_eq!(by_port("127.0.0.1:7070", Protocol::Resp), Some(Protocol::Tcp));
        assert_eq!(by_port("h:6379", Protocol::Http), Some(Protocol::Resp));
        assert_eq!(by_port("h:6379", Protocol::Resp), None, "not the protocol tried");
        assert_eq!(by_port("h:1234", Protocol::Tcp), None);
    }

    #[test]
    fn the_message_is_one_line_with_the_flag_to_try() {
        let m = Mismatch {
            target: "127.0.0.1:7070".into(),
            tried: Protocol::Resp,
            evidence: "it closed the connection without answering PING".into(),
            guess: vec![Protocol::Tcp],
        };
        let text = m.to_string();
        assert_eq!(
            text,
            "127.0.0.1:7070 probably speaks another protocol than resp (it closed the connection without \
             answering PING): try --protocol tcp, or a --target that speaks RESP (NanoDB's default is \
             127.0.0.1:6379)"
        );
        let m = Mismatch { guess: vec![Protocol::Http, Protocol::Grpc], ..m };
        assert!(m.to_string().contains("try --protocol http (or grpc), or"), "{m}");
        let m = Mismatch { guess: Vec::new(), ..m };
        assert!(m.to_string().contains("check --protocol"), "{m}");
        assert_eq!(quote(b"HTTP/1.1 400 Bad Request\r\nx: y"), "\"HTTP/1.1 400 Bad Request\"");
        assert_eq!(quote(b"\0\x01"), "bytes 00 01");
        assert_eq!(quote(&[b'a'; 70]), format!("\"{}\"…", "a".repeat(60)));
    }
}
