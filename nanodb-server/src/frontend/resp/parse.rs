//! The RESP2 request parser: arrays of bulk strings (what clients send) and inline commands (what a
//! person types into telnet), as a tokio-util [`Decoder`].
//!
//! Check-then-parse: a first pass walks the buffered bytes without consuming or allocating and
//! either finds a whole command, reports "incomplete" (`Ok(None)`), or finds a protocol error.
//! Only a whole command is split off the buffer, and its arguments are `Bytes` slices of it (no
//! copies). Array and bulk lengths are checked against the configured limits before anything is
//! reserved, so a hostile header cannot make the server allocate.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Longest inline command line, as in Redis (64 KiB).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// A RESP protocol error: the stream cannot be resynchronised, so the connection is closed after
/// `-ERR Protocol error: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl From<std::io::Error> for ProtocolError {
    /// Required by [`Decoder`]; the connection loop does its own I/O, so this only carries text.
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// Decodes commands as argument lists.
#[derive(Debug, Clone)]
pub struct RespDecoder {
    max_bulk_len: usize,
    max_args: usize,
    /// The configured limits, while [`RespDecoder::unauthenticated`] narrows them.
    configured: (usize, usize),
    /// Whether the connection has yet to authenticate (the narrow limits apply).
    unauthenticated: bool,
    /// Scratch for argument offsets found by the check pass; reused across commands.
    spans: Vec<(usize, usize)>,
}

impl RespDecoder {
    /// A decoder refusing bulk strings longer than `max_bulk_len` and arrays of more than
    /// `max_args` elements.
    pub fn new(max_bulk_len: usize, max_args: usize) -> Self {
        Self {
            max_bulk_len,
            max_args,
            configured: (max_bulk_len, max_args),
            unauthenticated: false,
            spans: Vec::new(),
        }
    }

    /// Before authentication a connection may send at most [`UNAUTHENTICATED_MAX_ARGS`]
    /// arguments of at most [`UNAUTHENTICATED_MAX_BULK`] bytes each (Redis's answer to
    /// CVE-2021-32675: an anonymous client must not make the server buffer much); `false`
    /// restores the configured limits.
    pub fn unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
        let (bulk, args) = self.configured;
        (self.max_bulk_len, self.max_args) = if on {
            (bulk.min(UNAUTHENTICATED_MAX_BULK), args.min(UNAUTHENTICATED_MAX_ARGS))
        } else {
            (bulk, args)
        };
    }

    /// Whether the narrow limits of an unauthenticated connection apply.
    pub fn is_unauthenticated(&self) -> bool {
        self.unauthenticated
    }

    fn refused(&self, what: &str) -> ProtocolError {
        ProtocolError(format!(
            "{} {what} length",
            if self.unauthenticated { "unauthenticated" } else { "invalid" }
        ))
    }
}

/// Most arguments in one command before authentication.
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// Longest bulk string before authentication.
pub const UNAUTHENTICATED_MAX_BULK: usize = 16 * 1024;

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Longest length header accepted: 18 digits (anything longer is beyond every limit anyway).
const MAX_LEN_DIGITS: usize = 18;

/// Reads a `[-]<digits>\r\n` length starting at `from`, as Redis does: `Ok(None)` when the
/// buffer ends first, `Err(())` when it is not a well-formed length. Digits are bounded, so an
/// incomplete header can never make the decoder buffer more than a few bytes.
fn read_len(buf: &[u8], from: usize) -> Result<Option<(i64, usize)>, ()> {
    let mut i = from;
    let Some(&first) = buf.get(i) else { return Ok(None) };
    let neg = first == b'-';
    if neg {
        i += 1;
    }
    let start = i;
    let mut n: i64 = 0;
    while let Some(&c) = buf.get(i) {
        match c {
            b'0'..=b'9' if i - start < MAX_LEN_DIGITS => {
                n = n * 10 + i64::from(c - b'0');
                i += 1;
            }
            b'\r' if i > start => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((if neg { -n } else { n }, i + 2))),
                    Some(_) => Err(()),
                };
            }
            _ => return Err(()),
        }
    }
    Ok(None)
}

impl Decoder for RespDecoder {
    type Item = Vec<Bytes>;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut args = Vec::new();
        Ok(self.decode_into(src, &mut args)?.then_some(args))
    }
}

impl RespDecoder {
    /// [`Decoder::decode`] into a caller-owned vector (cleared first), so a connection reuses one
    /// argument vector for every command; whether a command was decoded.
    pub fn decode_into(&mut self, src: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
        args.clear();
        loop {
            if src.is_empty() {
                return Ok(false);
            }
            self.spans.clear();
            let consumed = if src[0] == b'*' {
                match self.check_multibulk(src)? {
                    Some(n) => n,
                    None => return Ok(false),
                }
            } else {
                match check_inline(src, &mut self.spans)? {
                    // The argument limit holds for inline commands too (found by fuzz/resp_parse).
                    Some(_) if self.spans.len() > self.max_args => {
                        return err("too many arguments in inline request");
                    }
                    Some(n) => n,
                    None => return Ok(false),
                }
            };
            let frame = src.split_to(consumed).freeze();
            if self.spans.is_empty() {
                // An empty line or `*0`/`*-1`: nothing to run, as in Redis.
                continue;
            }
            args.extend(self.spans.iter().map(|&(a, b)| frame.slice(a..b)));
            return Ok(true);
        }
    }

    /// Checks `*<n>\r\n` followed by n bulk strings; returns the bytes the command spans.
    fn check_multibulk(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let (n, mut pos) = match read_len(buf, 1) {
            Ok(Some((n, next))) if n <= self.max_args as i64 => (n, next),
            Ok(None) => return Ok(None),
            _ => return Err(self.refused("multibulk")),
        };
        if n <= 0 {
            return Ok(Some(pos));
        }
        self.spans.reserve(n.min(1024) as usize);
        for _ in 0..n {
            let Some(&c) = buf.get(pos) else { return Ok(None) };
            if c != b'$' {
                return err(format!("expected '$', got '{}'", char::from(c).escape_default()));
            }
            let (len, start) = match read_len(buf, pos + 1) {
                Ok(Some((l, next))) if l >= 0 && l as u64 <= self.max_bulk_len as u64 => (l as usize, next),
                Ok(None) => return Ok(None),
                _ => return Err(self.refused("bulk")),
            };
            let stop = start + len;
            if buf.len() < stop + 2 {
                return Ok(None);
            }
            if &buf[stop..stop + 2] != b"\r\n" {
                return err("bulk string not terminated by CRLF");
            }
            self.spans.push((start, stop));
            pos = stop + 2;
        }
        Ok(Some(pos))
    }
}

/// Checks one inline command line (terminated by `\n`, optionally `\r\n`) and splits it into
/// arguments: whitespace separates, and "double" or 'single' quotes group (with `\"`, `\\`, `\n`,
/// `\r`, `\t` and `\xHH` escapes inside double quotes, as redis-cli and Redis accept).
///
/// Unquoting only ever shrinks text, so arguments are rewritten in place in the buffer and the
/// spans still describe slices of the (split-off) line: no copies here either.
fn check_inline(buf: &mut BytesMut, spans: &mut Vec<(usize, usize)>) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE_LEN + 1)];
    let Some(nl) = window.iter().position(|&c| c == b'\n') else {
        if window.len() > MAX_INLINE_LEN {
            return err("too big inline request");
        }
        return Ok(None);
    };
    let line_len = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    // Arguments are rewritten in place (unquoting only ever shrinks text), so spans stay slices.
    let mut read = 0;
    let mut write = 0;
    while read < line_len {
        let c = buf[read];
        if c.is_ascii_whitespace() {
            read += 1;
            continue;
        }
        let start = write;
        if c == b'"' || c == b'\'' {
            let quote = c;
            read += 1;
            loop {
                if read >= line_len {
                    return err("unbalanced quotes in request");
                }
                let c = buf[read];
                if c == quote {
                    read += 1;
                    break;
                }
                let (byte, used) = if quote == b'"' && c == b'\\' && read + 1 < line_len {
                    let n = buf[read + 1];
                    match n {
                        b'n' => (b'\n', 2),
                        b'r' => (b'\r', 2),
                        b't' => (b'\t', 2),
                        b'b' => (8, 2),
                        b'a' => (7, 2),
                        b'x' if read + 3 < line_len
                            && buf[read + 2].is_ascii_hexdigit()
                            && buf[read + 3].is_ascii_hexdigit() =>
                        {
                            let hex = |h: u8| (h as char).to_digit(16).unwrap_or(0) as u8;
                            (hex(buf[read + 2]) * 16 + hex(buf[read + 3]), 4)
                        }
                        other => (other, 2),
                    }
                } else if quote == b'\'' && c == b'\\' && read + 1 < line_len && buf[read + 1] == b'\'' {
                    (b'\'', 2)
                } else {
                    (c, 1)
                };
                buf[write] = byte;
                write += 1;
                read += used;
            }
            // A closing quote must be followed by a space or the end, as in Redis.
            if read < line_len && !buf[read].is_ascii_whitespace() {
                return err("unbalanced quotes in request");
            }
        } else {
            while read < line_len && !buf[read].is_ascii_whitespace() {
                buf[write] = buf[read];
                write += 1;
                read += 1;
            }
        }
        spans.push((start, write));
        write += 1; // keep a separator position so spans never touch
    }
    Ok(Some(nl + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> RespDecoder {
        RespDecoder::new(1024, 8)
    }

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect()
    }

    #[test]
    fn multibulk_whole_and_pipelined() {
        let mut d = dec();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["GET", "k"]))));
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["PING"]))));
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_split_point_is_incomplete_then_whole() {
        let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nk\x00y\r\n$5\r\nv\r\nal\r\n";
        for split in 0..whole.len() {
            let mut d = dec();
            let mut buf = BytesMut::from(&whole[..split]);
            assert_eq!(d.decode(&mut buf), Ok(None), "split at {split}");
            assert_eq!(buf.len(), split, "nothing consumed while incomplete");
            buf.extend_from_slice(&whole[split..]);
            assert_eq!(d.decode(&mut buf), Ok(Some(args(&["SET", "k\0y", "v\r\nal"]))), "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn unauthenticated_connections_get_the_narrow_limits_until_they_authenticate() {
        let mut d = RespDecoder::new(1 << 20, 1000);
        d.unauthenticated(true);
        let eleven = format!("*11\r\n{}", "$1\r\nx\r\n".repeat(11));
        let mut buf = BytesMut::from(eleven.as_bytes());
        assert_eq!(d.decode(&mut buf), err("unauthenticated multibulk length"));
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(d.decode(&mut buf), err("unauthenticated bulk length"), "refused from the header alone");
        let ok = format!("*2\r\n$4\r\nAUTH\r\n$16384\r\n{}\r\n", "p".repeat(16384));
        assert!(matches!(d.decode(&mut BytesMut::from(ok.as_bytes())), Ok(Some(_))), "16 KiB is allowed");
        d.unauthenticated(false);
        let mut buf = BytesMut::from(eleven.as_bytes());
        assert!(matches!(d.decode(&mut buf), Ok(Some(a)) if a.len() == 11), "the configured limits are back");
    }

    #[test]
    fn inline_commands_obey_the_argument_limit() {
        let mut d = RespDecoder::new(64, 3);
        let mut buf = BytesMut::from(&b"SET a b\r\nSET a b c\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["SET", "a", "b"]))));
        assert_eq!(d.decode(&mut buf), err("too many arguments in inline request"));
    }

    #[test]
    fn inline_commands_split_and_unquote() {
        let mut d = dec();
        let mut buf = BytesMut::from(&b"set  k \"a b\\x41\\n\"\r\nPING\n\r\n'it\\'s'\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["set", "k", "a bA\n"]))));
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["PING"]))));
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["it's"]))), "the empty line is skipped");
        let mut buf = BytesMut::from(&b"get k"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"get \"k\n"[..]);
        assert!(d.decode(&mut buf).is_err(), "unbalanced quotes");
    }

    #[test]
    fn oversize_and_garbage_are_refused_before_allocating() {
        let cases: [&[u8]; 7] = [
            b"*9\r\n",          // more args than max_args
            b"*1\r\n$1025\r\n", // bulk above max_bulk_len, body never sent
            b"*1\r\n$99999999999999999999\r\n",
            b"*x\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$1\r\nab\r\n",
        ];
        for case in cases {
            let mut d = dec();
            let mut buf = BytesMut::from(case);
            assert!(d.decode(&mut buf).is_err(), "{:?}", String::from_utf8_lossy(case));
            assert!(d.spans.capacity() <= 1024);
        }
        let mut d = dec();
        let mut buf = BytesMut::from(&vec![b'a'; MAX_INLINE_LEN + 1][..]);
        assert_eq!(d.decode(&mut buf), err("too big inline request"));
    }

    #[test]
    fn empty_arrays_are_skipped() {
        let mut d = dec();
        let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*1\r\n$0\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&[""]))));
    }

    proptest::proptest! {
        /// Arbitrary bytes, in arbitrary chunks, never panic the decoder.
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8)) {
            let mut d = dec();
            let mut buf = BytesMut::new();
            'feed: for c in chunks {
                buf.extend_from_slice(&c);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        /// Any binary arguments, encoded as a client would and split anywhere, decode exactly.
        #[test]
        fn binary_arguments_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..8),
            split in proptest::prelude::any::<usize>(),
        ) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                wire.extend_from_slice(a);
                wire.extend_from_slice(b"\r\n");
            }
            let split = split % (wire.len() + 1);
            let mut d = dec();
            let mut buf = BytesMut::from(&wire[..split]);
            let first = d.decode(&mut buf).expect("valid");
            let got = match first {
                Some(got) => got,
                None => {
                    buf.extend_from_slice(&wire[split..]);
                    d.decode(&mut buf).expect("valid").expect("whole")
                }
            };
            let want: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
