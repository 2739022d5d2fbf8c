//! Before a run: does the target speak the protocol asked for? One short exchange on a connection
//! of its own (tcp: HELLO, resp: PING, http: `GET /v1/kv/…`, grpc: the HTTP/2 preface and then one
//! `Get` call), read with a deadline. A target that answers in another protocol, closes the
//! connection or stays silent fails the run at once with one line ([`Mismatch`]) naming the
//! target, the protocol tried and, when the answer (or the port) tells, the flag that fits,
//! instead of thousands of failed requests.
//!
//! NanoDB's binary TCP and RESP ports answer another protocol's client in that client's protocol
//! (`-ERR this is NanoDB's binary TCP port, …`, an error frame, an HTTP 400, an HTTP/2 GOAWAY):
//! well-formed answers, so each probe also looks for that explanation ([`explanation`]) and, when
//! it is there, quotes it. The clients' own handshakes do the same ([`wrong_port`]).

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use nanodb_protocol::wire::{self, PROTOCOL_VERSION};
use nanodb_protocol::{ClientCodec, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::{connect_error, resp};
use crate::cli::Protocol;

/// How long the target may take to answer the probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The key the http and grpc probes read (a miss is as good an answer as a hit).
pub(crate) const PROBE_KEY: &str = "__nano_bench_probe";

/// Characters of a text answer quoted in an error, and bytes of a binary one.
const QUOTED_TEXT: usize = 60;
const QUOTED_BYTES: usize = 16;

/// How a NanoDB port's answer to another protocol's client begins (the server's
/// `frontend::sniff::redirect`): "this is NanoDB's binary TCP port, which does not speak RESP; the
/// Redis protocol is on port 6379 (--resp-addr)".
const WRONG_PORT: &str = "this is NanoDB's ";

/// Most characters of a target's own explanation quoted.
const QUOTED_EXPLANATION: usize = 300;

/// Most body bytes of an HTTP error awaited for an explanation.
const HTTP_BODY_LIMIT: usize = 16 * 1024;

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
    /// The target's own explanation, when it said it is another protocol's port (one line, as
    /// [`explanation`] cut it): quoted instead of the evidence.
    pub said: Option<String>,
}

impl Mismatch {
    /// The target said (`said`, `speaks` as [`explanation`] found them) in answer to `what` that
    /// it is the port of another protocol.
    pub fn explained(
        target: &str,
        tried: Protocol,
        what: &str,
        said: String,
        speaks: Option<Protocol>,
    ) -> Self {
        let guess = match speaks.filter(|p| *p != tried) {
            Some(p) => vec![p],
            None => by_port(target, tried).into_iter().collect(),
        };
        Self {
            target: target.to_string(),
            tried,
            evidence: format!("it answered {what} saying it does not speak {}", tried.title()),
            guess,
            said: Some(said),
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried = self.tried;
        match &self.said {
            Some(said) => write!(f, "{} says: {said}; ", self.target)?,
            None => write!(
                f,
                "{} probably speaks another protocol than {} ({}): ",
                self.target,
                tried.name(),
                self.evidence
            )?,
        }
        match self.guess.split_first() {
            Some((g, rest)) => {
                write!(f, "try --protocol {}", g.name())?;
                for other in rest {
                    write!(f, " (or {})", other.name())?;
                }
                write!(f, ", or a --target that speaks {}", tried.title())?;
                match self.said {
                    // it said where that is on this server, if anywhere: no default to contradict it
                    Some(_) => Ok(()),
                    None => write!(f, " (NanoDB's default is {})", tried.default_target()),
                }
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

/// A NanoDB port's own explanation that it speaks another protocol ("this is NanoDB's binary TCP
/// port, which does not speak RESP; …"), found anywhere in `text` (an error message, a response
/// body, GOAWAY debug data, an error chain that quotes one), cut to one printable line; and the
/// protocol that port speaks, when its name says.
pub fn explanation(text: &str) -> Option<(String, Option<Protocol>)> {
    let start = text.find(WRONG_PORT)?;
    // the sentence holds no quote, backslash or line break: where one is, a quoting around it begins
    let mut line = text[start..].chars().take_while(|c| !matches!(c, '"' | '\\' | '\r' | '\n'));
    let mut said: String = line.by_ref().filter(|c| !c.is_control()).take(QUOTED_EXPLANATION).collect();
    if line.next().is_some() {
        said.push('…');
    }
    let said = said.trim_end().to_string();
    // (trimmed, `said` may be shorter than the marker)
    let port = said.get(WRONG_PORT.len()..).unwrap_or_default().split([',', ';']).next().unwrap_or_default();
    let speaks = if port.contains("TCP") {
        Some(Protocol::Tcp)
    } else if port.contains("RESP") || port.contains("Redis") {
        Some(Protocol::Resp)
    } else if port.contains("gRPC") {
        Some(Protocol::Grpc)
    } else if port.contains("REST") || port.contains("HTTP") {
        Some(Protocol::Http)
    } else {
        None
    };
    Some((said, speaks))
}

/// The [`Mismatch`] a client reports when the answer to its handshake (`what`), or an error
/// about it, is `text` and `text` holds a NanoDB port's own [`explanation`].
pub fn wrong_port(tried: Protocol, target: &str, what: &str, text: &str) -> Option<Mismatch> {
    let (said, speaks) = explanation(text)?;
    Some(Mismatch::explained(target, tried, what, said, speaks))
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
    /// It does not, and says so itself: its [`explanation`].
    Explained(String, Option<Protocol>),
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
    exchange(protocol, target, timeout, true).await
}

/// The greeting alone, without the gRPC call that follows it for gRPC: what `grpc::channel` asks
/// when its own call failed in transport, so it learns what the port is without asking itself.
pub async fn check_greeting(protocol: Protocol, target: &str) -> anyhow::Result<()> {
    exchange(protocol, target, PROBE_TIMEOUT, false).await
}

/// Sends `protocol`'s greeting and judges the answer; for gRPC with `then_call`, also one call.
async fn exchange(
    protocol: Protocol,
    target: &str,
    timeout: Duration,
    then_call: bool,
) -> anyhow::Result<()> {
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
        Protocol::Grpc | Protocol::Etcd => {
            // the client connection preface, then an empty SETTINGS frame
            greeting.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0");
            "the HTTP/2 preface"
        }
    };
    let judge = |buf: &[u8]| -> Verdict {
        match protocol {
            Protocol::Tcp => match ClientCodec::default().decode(&mut BytesMut::from(buf)) {
                // a NanoDB port of another protocol answers a HELLO with an error frame saying so
                Ok(Some((_, Response::Error(e)))) => explained(&e.to_string()),
                // any other frame will do: the connection's own HELLO reports a refused version
                Ok(Some(_)) => Verdict::Fits,
                Ok(None) => Verdict::More,
                Err(_) => Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new()),
            },
            Protocol::Resp => match resp::parse(buf) {
                // an error reply (NOAUTH, …) is RESP, unless it says this is another protocol's port
                Ok(Some((resp::Parsed::Error(_), used))) => explained(&String::from_utf8_lossy(&buf[..used])),
                Ok(Some(_)) => Verdict::Fits,
                Ok(None) => Verdict::More,
                Err(_) => Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new()),
            },
            Protocol::Http => http_verdict(buf, what),
            Protocol::Grpc | Protocol::Etcd => h2_verdict(buf, what),
        }
    };
    let mismatch = |(evidence, hints): (String, Vec<Protocol>), answer: &[u8]| {
        // whatever came of the exchange, a target that explained itself is quoted
        if let Some(m) = wrong_port(protocol, target, what, &String::from_utf8_lossy(answer))
            .or_else(|| wrong_port(protocol, target, what, &evidence))
        {
            return anyhow::Error::new(m);
        }
        let guess = guesses(answer, &hints, protocol, target);
        anyhow::Error::new(Mismatch {
            target: target.to_string(),
            tried: protocol,
            evidence,
            guess,
            said: None,
        })
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
            Verdict::Explained(said, speaks) => {
                return Err(anyhow::Error::new(Mismatch::explained(target, protocol, what, said, speaks)));
            }
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
    if protocol == Protocol::Grpc && then_call {
        drop(stream);
        // Boxed: `grpc::channel` may ask for the greeting alone, so the future types would nest.
        Box::pin(grpc_call(target, timeout)).await.map_err(|e| mismatch(e, b""))?;
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
        // NanoDB's TCP and RESP ports say in the body of their 400 which port this is
        let body = &buf[end + 4..];
        let length: Option<usize> =
            headers.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok());
        if length.is_some_and(|n| n <= HTTP_BODY_LIMIT && body.len() < n) {
            return Verdict::More;
        }
        if let Verdict::Explained(said, speaks) = explained(&String::from_utf8_lossy(body)) {
            return Verdict::Explained(said, speaks);
        }
        return Verdict::Foreign(
            format!("it answered GET /v1/kv/{PROBE_KEY} with {}", quote(buf)),
            vec![Protocol::Grpc],
        );
    }
    Verdict::Fits
}

/// An HTTP/2 server's answer to the preface and an empty SETTINGS frame fits once it has sent its
/// own SETTINGS and then acknowledged ours. A GOAWAY instead (what NanoDB's TCP and RESP ports
/// send, with their explanation as debug data) does not.
fn h2_verdict(buf: &[u8], what: &str) -> Verdict {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const ACK: u8 = 0x1;
    match *buf {
        [_, _, _, SETTINGS, _, 0, 0, 0, 0, ..] => {}
        [_, _, _, _, _, _, _, _, _, ..] => {
            return Verdict::Foreign(format!("it answered {what} with {}", describe(buf)), Vec::new());
        }
        _ => return Verdict::More,
    }
    let mut at = 0;
    loop {
        let Some(&[l0, l1, l2, kind, flags, ..]) = buf.get(at..at + 9) else { return Verdict::More };
        let end = at + 9 + u32::from_be_bytes([0, l0, l1, l2]) as usize;
        let Some(payload) = buf.get(at + 9..end) else { return Verdict::More };
        match kind {
            SETTINGS if at > 0 && flags & ACK != 0 => return Verdict::Fits,
            GOAWAY => {
                // last stream id (4 bytes), error code (4), then debug data
                let debug = payload.get(8..).unwrap_or_default();
                return match explained(&String::from_utf8_lossy(debug)) {
                    Verdict::Explained(said, speaks) => Verdict::Explained(said, speaks),
                    _ if debug.is_empty() => {
                        Verdict::Foreign(format!("it answered {what} with GOAWAY"), Vec::new())
                    }
                    _ => Verdict::Foreign(
                        format!("it answered {what} with GOAWAY {}", quote(debug)),
                        Vec::new(),
                    ),
                };
            }
            _ => at = end,
        }
    }
}

/// [`Verdict::Explained`] when `text` holds a NanoDB port's [`explanation`], else it fits.
fn explained(text: &str) -> Verdict {
    match explanation(text) {
        Some((said, speaks)) => Verdict::Explained(said, speaks),
        None => Verdict::Fits,
    }
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
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
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
            said: None,
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

    /// What NanoDB's TCP and RESP ports answer another protocol's client (`frontend::sniff`).
    const TCP_PORT_SAYS: &str = "this is NanoDB's binary TCP port, which does not speak RESP; the Redis \
                                 protocol is on port 6379 (--resp-addr)";
    const RESP_PORT_SAYS: &str = "this is NanoDB's Redis (RESP) port, which does not speak HTTP/2; the \
                                  REST API is on port 8080 (--http-addr) and gRPC on port 50051 (--grpc-addr)";

    #[test]
    fn a_ports_own_explanation_is_found_and_names_the_ports_protocol() {
        let found = explanation;
        assert_eq!(found(TCP_PORT_SAYS), Some((TCP_PORT_SAYS.to_string(), Some(Protocol::Tcp))));
        // as an error frame's message, a RESP error line, an HTTP body, h2's quoted debug data
        let framed = format!("malformed request: {RESP_PORT_SAYS}");
        assert_eq!(found(&framed), Some((RESP_PORT_SAYS.to_string(), Some(Protocol::Resp))));
        assert_eq!(
            found(&format!("-ERR {TCP_PORT_SAYS}\r\n+PONG\r\n")).map(|f| f.0).as_deref(),
            Some(TCP_PORT_SAYS)
        );
        assert_eq!(found(&format!("{TCP_PORT_SAYS}\n")).map(|f| f.0).as_deref(), Some(TCP_PORT_SAYS));
        let h2 =
            format!("transport error: connection error received: protocol error (b\"{RESP_PORT_SAYS}\")");
        assert_eq!(found(&h2).map(|f| f.0).as_deref(), Some(RESP_PORT_SAYS));
        // one printable line of bounded length, whatever the peer sent
        let long = format!("this is NanoDB's \x07{}", "x".repeat(1000));
        let (said, p) = explanation(&long).expect("found");
        assert!(
            said.chars().count() <= QUOTED_EXPLANATION + 1 && said.ends_with('…') && !said.contains('\x07')
        );
        assert_eq!(p, None);
        assert_eq!(found("this is NanoDB's \""), Some(("this is NanoDB's".to_string(), None)));
        assert_eq!(found("-ERR unknown command 'PING'"), None);
        assert_eq!(found("malformed request: unsupported protocol version 9"), None);
    }

    #[test]
    fn an_explained_mismatch_quotes_the_target_and_suggests_its_protocol() {
        let m = wrong_port(Protocol::Resp, "127.0.0.1:7070", "PING", &format!("ERR {TCP_PORT_SAYS}"))
            .expect("explained");
        assert_eq!((m.guess.as_slice(), m.said.as_deref()), (&[Protocol::Tcp][..], Some(TCP_PORT_SAYS)));
        assert_eq!(
            m.to_string(),
            format!(
                "127.0.0.1:7070 says: {TCP_PORT_SAYS}; try --protocol tcp, or a --target that speaks RESP"
            )
        );
        // a port that names no protocol: the port number may still tell, else nothing is guessed
        let m = Mismatch::explained("h:6379", Protocol::Tcp, "HELLO", "this is NanoDB's port".into(), None);
        assert_eq!(m.guess, [Protocol::Resp]);
        let m = Mismatch::explained("h:1", Protocol::Tcp, "HELLO", "this is NanoDB's port".into(), None);
        assert!(
            m.guess.is_empty()
                && m.to_string().starts_with("h:1 says: this is NanoDB's port; check --protocol")
        );
        // the port's protocol is never the one tried
        let m = Mismatch::explained("h:1", Protocol::Tcp, "HELLO", TCP_PORT_SAYS.into(), Some(Protocol::Tcp));
        assert!(!m.guess.contains(&Protocol::Tcp));
    }

    #[test]
    fn http_refusals_are_read_to_the_end_of_their_body() {
        let body = format!("{RESP_PORT_SAYS}\n");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let cut = answer.len() - 10;
        assert!(matches!(http_verdict(&answer.as_bytes()[..cut], "a GET"), Verdict::More));
        match http_verdict(answer.as_bytes(), "a GET") {
            Verdict::Explained(said, p) => {
                assert_eq!((said.as_str(), p), (RESP_PORT_SAYS, Some(Protocol::Resp)))
            }
            _ => panic!("not explained"),
        }
        // a plain 400 is still a refusal, a 404 still fits
        let plain = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad";
        assert!(matches!(http_verdict(plain, "a GET"), Verdict::Foreign(..)));
        assert!(matches!(http_verdict(b"HTTP/1.1 404 Not Found\r\n\r\n", "a GET"), Verdict::Fits));
    }

    /// An HTTP/2 frame on stream 0.
    fn h2_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn http2_fits_once_our_settings_are_acknowledged_and_not_on_goaway() {
        let settings = h2_frame(4, 0, &[0, 3, 0, 0, 0, 100]);
        let mut fits = settings.clone();
        assert!(matches!(h2_verdict(&fits, "p"), Verdict::More), "SETTINGS alone: wait for the ACK");
        fits.extend(h2_frame(8, 0, &[0, 0, 0xff, 0])); // WINDOW_UPDATE
        let ack = h2_frame(4, 1, &[]);
        fits.extend_from_slice(&ack[..5]);
        assert!(matches!(h2_verdict(&fits, "p"), Verdict::More));
        fits.extend_from_slice(&ack[5..]);
        assert!(matches!(h2_verdict(&fits, "p"), Verdict::Fits));
        // NanoDB's answer on its TCP or RESP port (the server's `sniff::http2_goaway`): an empty
        // SETTINGS, then GOAWAY (last stream 0, PROTOCOL_ERROR) with the explanation as debug data
        let goaway_payload = |debug: &[u8]| [&[0, 0, 0, 0, 0, 0, 0, 1][..], debug].concat();
        let mut goaway = h2_frame(4, 0, &[]);
        goaway.extend(h2_frame(7, 0, &goaway_payload(TCP_PORT_SAYS.as_bytes())));
        assert!(matches!(h2_verdict(&goaway[..goaway.len() - 1], "p"), Verdict::More));
        match h2_verdict(&goaway, "p") {
            Verdict::Explained(said, p) => {
                assert_eq!((said.as_str(), p), (TCP_PORT_SAYS, Some(Protocol::Tcp)))
            }
            _ => panic!("not explained"),
        }
        let bare = [h2_frame(4, 0, &[]), h2_frame(7, 0, &goaway_payload(b""))].concat();
        assert!(matches!(h2_verdict(&bare, "p"), Verdict::Foreign(e, _) if e.ends_with("with GOAWAY")));
        let other = [h2_frame(4, 0, &[]), h2_frame(7, 0, &goaway_payload(b"bye"))].concat();
        assert!(matches!(h2_verdict(&other, "p"), Verdict::Foreign(e, _) if e.ends_with("GOAWAY \"bye\"")));
        assert!(matches!(h2_verdict(b"HTTP/1.1 400 Bad Request\r\n", "p"), Verdict::Foreign(..)));
    }
}
