//! A binary-protocol connection's two buffers: [`Frames`], the bytes read and the frames they
//! complete, and [`Out`], the replies and pushes encoded for the next write.
//!
//! Frames are cut from the read buffer as `nanodb-protocol`'s codec cuts them (its
//! [`frame_size`] reads and checks the length prefix, before anything is reserved for the
//! frame), but without a codec around them: the connection parses every whole frame of a read in
//! one pass. Replies are encoded straight into the output buffer, the commonest (a GET's value,
//! a PUT's outcome) from the command's typed result without a [`Response`] built for it; every
//! reply is checked against the peer's frame limit as the codec checks it, an oversized one
//! becoming a `FRAME_TOO_LARGE` error frame.
//!
//! A batch's replies are encoded before the log has made its writes durable (the connection
//! waits once, before writing the batch). The start of every reply to a write is kept, so that
//! if the log fails those replies are re-encoded as the log's error while the reads keep theirs.

use bytes::{Buf, Bytes, BytesMut};
use nanodb_protocol::frame::{HEADER_LEN, LEN_PREFIX, frame_header, frame_size};
use nanodb_protocol::wire;
use nanodb_protocol::{Entry, Error, FrameError, PutOutcome, Reply, Response};

/// Read buffer capacity kept free for a read; grows to a frame's size only when a large frame
/// comes (its size checked against the limit first).
pub(super) const READ_BUFFER: usize = 16 * 1024;
/// An output buffer grown past this (a large range or scan) is given back after the write.
const KEEP_WRITE_CAPACITY: usize = 1024 * 1024;

/// The bytes read and not yet parsed, and the frame limit in force.
#[derive(Debug)]
pub(super) struct Frames {
    buf: BytesMut,
    max_frame_len: usize,
}

/// A frame decoded, before its request runs: its id, and the request or why its body is bad.
pub(super) type Item = (u32, Result<nanodb_protocol::Request, Error>);

/// One whole frame cut from the read buffer: kind, request id, body.
pub(super) type RawFrame = (u8, u32, Bytes);

impl Frames {
    pub(super) fn new(max_frame_len: usize) -> Self {
        Self { buf: BytesMut::with_capacity(READ_BUFFER), max_frame_len: frame_limit(max_frame_len) }
    }

    /// Changes the frame limit for the frames parsed next (narrowed until a connection
    /// authenticates).
    pub(super) fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = frame_limit(max_frame_len);
    }

    /// The bytes read and not parsed (a foreign client's first bytes, for the sniffer).
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer to read into, with room for a read: at least a quarter of [`READ_BUFFER`],
    /// and the whole of a frame whose length prefix has arrived (within the limit, checked by
    /// [`Frames::next_raw`] before it reserves).
    pub(super) fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_BUFFER / 4 {
            self.buf.reserve(READ_BUFFER);
        }
        &mut self.buf
    }

    /// The next whole frame in the buffer, cut out of it; `Ok(None)` when the buffer holds none
    /// (room for the rest of a partial frame is reserved, its length within the limit). A stream
    /// error leaves the buffer as it was.
    pub(super) fn next_raw(&mut self) -> Result<Option<RawFrame>, FrameError> {
        let Some(size) = frame_size(&self.buf, self.max_frame_len)? else { return Ok(None) };
        if self.buf.len() < size {
            // Safe to reserve: `frame_size` checked the length against the limit.
            self.buf.reserve(size - self.buf.len());
            return Ok(None);
        }
        let Some((kind, id)) = frame_header(&self.buf) else { return Ok(None) };
        self.buf.advance(HEADER_LEN);
        Ok(Some((kind, id, self.buf.split_to(size - HEADER_LEN).freeze())))
    }

    /// The next whole frame decoded as `ServerCodec` decodes it: the request, or the error that
    /// answers a body that does not decode, with its id.
    pub(super) fn next(&mut self) -> Result<Option<Item>, FrameError> {
        Ok(self.next_raw()?.map(|(kind, id, body)| (id, wire::decode_request(kind, body))))
    }

    /// Whether bytes of an incomplete frame are buffered (a client that closes then left a
    /// broken stream).
    pub(super) fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// As `FrameCodec::new`: a limit below a header's length could never be met.
fn frame_limit(max_frame_len: usize) -> usize {
    max_frame_len.max(nanodb_protocol::frame::MIN_FRAME_LEN)
}

/// Replies and pushes waiting to be written, with what the log must make durable first.
#[derive(Debug)]
pub(super) struct Out {
    buf: BytesMut,
    /// Where each reply to a write (log position above 0) starts in `buf`, in order.
    writes: Vec<usize>,
    /// The highest log position behind a reply in `buf`.
    position: u64,
    /// Frames encoded since the last write.
    frames: usize,
    /// The largest reply frame (length prefix excluded): the connection's frame limit.
    limit: usize,
}

/// Where replies go: the output buffer, or (in a cluster) a list still to be put in order.
pub(super) trait Replies {
    /// Appends the response to request `id`, which may be acknowledged once the log is durable
    /// up to `position` (0: at once).
    fn reply(&mut self, id: u32, response: Response, position: u64);
}

impl Replies for Vec<(u32, Response, u64)> {
    fn reply(&mut self, id: u32, response: Response, position: u64) {
        self.push((id, response, position));
    }
}

impl Replies for Out {
    fn reply(&mut self, id: u32, response: Response, position: u64) {
        self.response(id, &response, position);
    }
}

impl Out {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_BUFFER),
            writes: Vec::new(),
            position: 0,
            frames: 0,
            limit: frame_limit(limit),
        }
    }

    /// Changes the largest reply (kept equal to the connection's frame limit, as the codec did).
    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = frame_limit(limit);
    }

    /// Bytes waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Frames encoded since the last write.
    pub(super) fn frames(&self) -> usize {
        self.frames
    }

    /// The highest log position the waiting replies must wait for.
    pub(super) fn position(&self) -> u64 {
        self.position
    }

    /// The bytes to write.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Notes a reply about to start, and the log position it waits for.
    fn begin(&mut self, position: u64) -> usize {
        let start = self.buf.len();
        if position > 0 {
            self.writes.push(start);
            self.position = self.position.max(position);
        }
        self.frames += 1;
        start
    }

    /// A reply longer than the peer accepts becomes an error frame (the connection stays
    /// usable), as `ServerCodec` does.
    fn check(&mut self, start: usize, id: u32) {
        let len = self.buf.len() - start - LEN_PREFIX;
        if len > self.limit {
            self.buf.truncate(start);
            let err = Error::FrameTooLarge { len, max: self.limit };
            wire::encode_response(id, &Response::Error(err), &mut self.buf);
        }
    }

    /// Any response.
    pub(super) fn response(&mut self, id: u32, response: &Response, position: u64) {
        let start = self.begin(position);
        wire::encode_response(id, response, &mut self.buf);
        self.check(start, id);
    }

    /// A dynamic command's result.
    pub(super) fn result(&mut self, id: u32, result: Result<Reply, Error>, position: u64) {
        match result {
            Ok(reply) => self.response(id, &Response::Reply(reply), position),
            Err(e) => self.response(id, &Response::Error(e), position),
        }
    }

    /// A GET's result, the value copied once, from the engine's entry into the output.
    pub(super) fn value(&mut self, id: u32, result: Result<Option<Entry>, Error>, position: u64) {
        match result {
            Ok(entry) => {
                let start = self.begin(position);
                wire::encode_value(id, entry.as_ref(), &mut self.buf);
                self.check(start, id);
            }
            Err(e) => self.response(id, &Response::Error(e), position),
        }
    }

    /// A PUT's result.
    pub(super) fn put(&mut self, id: u32, result: Result<PutOutcome, Error>, position: u64) {
        match result {
            Ok(p) => {
                let start = self.begin(position);
                wire::encode_put(id, p.applied, p.version, &mut self.buf);
                self.check(start, id);
            }
            Err(e) => self.response(id, &Response::Error(e), position),
        }
    }

    /// The log could not make the batch's writes durable: their replies become `e` (the reads
    /// keep theirs), so that nothing acknowledges a write that may be lost.
    pub(super) fn fail_writes(&mut self, e: &Error) {
        if self.writes.is_empty() {
            return;
        }
        let capacity = self.buf.len();
        let old = std::mem::replace(&mut self.buf, BytesMut::with_capacity(capacity));
        let mut writes = std::mem::take(&mut self.writes).into_iter().peekable();
        let mut at = 0;
        while at < old.len() {
            // Frames this buffer encoded: whole, and sized by their prefix.
            let size = match frame_size(&old[at..], usize::MAX) {
                Ok(Some(size)) if at + size <= old.len() => size,
                _ => old.len() - at,
            };
            match (writes.peek(), frame_header(&old[at..])) {
                (Some(&w), Some((_, id))) if w == at => {
                    writes.next();
                    wire::encode_response(id, &Response::Error(e.clone()), &mut self.buf);
                }
                _ => self.buf.extend_from_slice(&old[at..at + size]),
            }
            at += size;
        }
        self.position = 0;
    }

    /// Empties the buffer once written, giving back one grown large.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.writes.clear();
        self.position = 0;
        self.frames = 0;
        if self.buf.capacity() > KEEP_WRITE_CAPACITY {
            self.buf = BytesMut::with_capacity(READ_BUFFER);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use nanodb_protocol::{ClientCodec, Request, ServerCodec, cmd};
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<(u32, Response)> {
        let mut client = ClientCodec::new(usize::MAX);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(frame) = client.decode(&mut buf).expect("decodes") {
            out.push(frame);
        }
        assert!(buf.is_empty(), "trailing bytes");
        out
    }

    fn entry(value: &[u8]) -> Entry {
        Entry { value: Bytes::copy_from_slice(value), version: 7, ttl_ms: -1 }
    }

    /// The fast paths write exactly what the codec writes for the same reply.
    #[test]
    fn typed_replies_are_byte_for_byte_the_codecs() {
        let mut out = Out::new(1024);
        out.value(1, Ok(Some(entry(b"v\x00\xff"))), 0);
        out.value(2, Ok(None), 0);
        out.put(3, Ok(PutOutcome { applied: true, version: 9, created: true }), 4);
        out.put(4, Err(Error::NoAuth), 0);
        out.value(5, Err(Error::WrongType), 0);
        let mut expected = BytesMut::new();
        let mut codec = ServerCodec::new(1024);
        for (id, r) in [
            (1, Response::Reply(Reply::Value(Some(entry(b"v\x00\xff"))))),
            (2, Response::Reply(Reply::Value(None))),
            (3, Response::Reply(Reply::Put { applied: true, version: 9 })),
            (4, Response::Error(Error::NoAuth)),
            (5, Response::Error(Error::WrongType)),
        ] {
            codec.encode((id, r), &mut expected).expect("encodes");
        }
        assert_eq!(out.bytes(), &expected[..]);
        assert_eq!((out.frames(), out.position()), (5, 4));
    }

    #[test]
    fn a_value_over_the_limit_becomes_an_error_frame() {
        let mut out = Out::new(64);
        out.value(9, Ok(Some(entry(&[1; 100]))), 0);
        out.value(10, Ok(Some(entry(b"small"))), 0);
        let frames = decode_all(out.bytes());
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            (9, Response::Error(e)) => assert_eq!(e.code(), nanodb_protocol::ErrorCode::FrameTooLarge),
            other => panic!("expected an error frame, got {other:?}"),
        }
        assert_eq!(frames[1], (10, Response::Reply(Reply::Value(Some(entry(b"small"))))));
    }

    #[test]
    fn a_failed_log_turns_only_the_writes_replies_into_its_error() {
        let mut out = Out::new(1 << 20);
        out.value(1, Ok(Some(entry(b"read"))), 0);
        out.put(2, Ok(PutOutcome { applied: true, version: 1, created: true }), 5);
        out.result(3, Ok(Reply::Int(3)), 6);
        out.response(0, &Response::Reply(Reply::Pong), 0);
        out.fail_writes(&Error::Internal);
        let frames = decode_all(out.bytes());
        let ids: Vec<u32> = frames.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3, 0]);
        assert_eq!(frames[0].1, Response::Reply(Reply::Value(Some(entry(b"read")))));
        assert!(matches!(frames[1].1, Response::Error(_)), "{:?}", frames[1]);
        assert!(matches!(frames[2].1, Response::Error(_)), "{:?}", frames[2]);
        assert_eq!(frames[3].1, Response::Reply(Reply::Pong));
    }

    /// A stream of pipelined requests split at every byte boundary parses into the same frames.
    #[test]
    fn frames_split_at_every_byte_come_out_whole_and_in_order() {
        let mut client = ClientCodec::default();
        let mut whole = BytesMut::new();
        let get = |k: &str| {
            Request::Command(nanodb_protocol::Command::Get(cmd::Get { key: Bytes::from(k.to_owned()) }))
        };
        client.encode((1, get("a")), &mut whole).expect("encode");
        client.encode((2, Request::Hello { version: 1 }), &mut whole).expect("encode");
        client.encode((3, get("bcd")), &mut whole).expect("encode");
        for cut in 0..=whole.len() {
            let mut frames = Frames::new(1024);
            let mut got = Vec::new();
            for part in [&whole[..cut], &whole[cut..]] {
                frames.read_buffer().put_slice(part);
                while let Some((id, request)) = frames.next().expect("no stream error") {
                    got.push((id, request.expect("decodes")));
                }
            }
            assert_eq!(
                got,
                [(1, get("a")), (2, Request::Hello { version: 1 }), (3, get("bcd"))],
                "cut {cut}"
            );
            assert!(!frames.has_partial());
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_anything_is_reserved() {
        let mut frames = Frames::new(1024);
        frames.read_buffer().put_u32(u32::MAX);
        frames.read_buffer().put_u8(0x10);
        let capacity = frames.buf.capacity();
        match frames.next_raw() {
            Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (u32::MAX as usize, 1024)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(frames.buf.capacity(), capacity, "nothing reserved for the claimed size");
        assert_eq!(frames.buffered().len(), 5, "the bytes stay for the sniffer");
    }
}
