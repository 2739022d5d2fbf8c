//! Binary TCP framing and the tokio-util codecs for both ends of a connection.
//!
//! A frame is `u32 length | u8 kind | u32 request id | body`, big-endian, where `length` counts
//! everything after itself. The decoder checks `length` against the configured maximum *before*
//! buffering or reserving anything, so a hostile length prefix costs nothing. An incomplete frame is
//! `Ok(None)` (wait for more bytes), never an error. See `PROTOCOL.md` for the full format.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::Command;
use crate::error::Error;
use crate::wire::{self, Request, Response};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of `kind` and `request id`: the smallest legal value of the length prefix.
pub const MIN_FRAME_LEN: usize = 5;
/// The default largest frame, length prefix excluded: room for a maximum-size put
/// (4 MiB value + 64 KiB key, see [`crate::Limits`]) with headroom for batches.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// One undecoded frame: its kind, the client's request id and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds (see [`crate::wire::kind`]).
    pub kind: u8,
    /// Chosen by the client, echoed in the reply.
    pub id: u32,
    /// The body, not yet decoded.
    pub body: Bytes,
}

/// A failure of the byte stream itself: after one, the stream cannot be resynchronised and the
/// connection must be closed. (A bad *body* is not a stream error: see [`ServerCodec`].)
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes (max_frame_len)")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer announced a frame too short to hold its header.
    #[error("frame length {len} is shorter than the 5-byte header")]
    TooShort {
        /// The announced length.
        len: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A request has no wire form (an expire with `Keep`, say); nothing was written.
    #[error("cannot send the request: {0}")]
    Unencodable(Error),
}

impl FrameError {
    /// The protocol error to report to the peer before closing, if any.
    pub fn to_error(&self) -> Option<Error> {
        match *self {
            Self::TooLarge { len, max } => Some(Error::FrameTooLarge { len, max }),
            Self::TooShort { len } => {
                Some(Error::Malformed(format!("frame length {len} is shorter than the 5-byte header")))
            }
            Self::Io(_) | Self::Unencodable(_) => None,
        }
    }
}

/// Splits a byte stream into [`Frame`]s and writes frames, with a maximum frame length.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_frame_len` (length prefix excluded).
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len: max_frame_len.max(MIN_FRAME_LEN) }
    }

    /// The configured limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Starts a frame in `dst`: writes a placeholder length, the kind and the id, and returns the
    /// position to pass to [`FrameCodec::finish`] once the body is written.
    pub fn begin(dst: &mut BytesMut, kind: u8, id: u32) -> usize {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(kind);
        dst.put_u32(id);
        start
    }

    /// Patches the length prefix of the frame begun at `start`.
    pub fn finish(dst: &mut BytesMut, start: usize) {
        let len = (dst.len() - start - LEN_PREFIX) as u32;
        dst[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    }
}

/// The size of the frame that starts `src`, length prefix included, read from its length prefix
/// and checked against `max_frame_len` (length prefix excluded) before anything is buffered for
/// it: `Ok(None)` while `src` holds fewer than the 4 bytes of the prefix, a stream error when the
/// length is over the limit or shorter than the header. `src` may hold less than the frame (the
/// caller waits for the rest: the size is safe to reserve) or more (the next frames).
///
/// The one reading of the length prefix: [`FrameCodec`] decodes with it, and a server that parses
/// frames from its own buffer can too.
pub fn frame_size(src: &[u8], max_frame_len: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = src.first_chunk::<LEN_PREFIX>() else { return Ok(None) };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max_frame_len {
        return Err(FrameError::TooLarge { len, max: max_frame_len });
    }
    if len < MIN_FRAME_LEN {
        return Err(FrameError::TooShort { len });
    }
    Ok(Some(LEN_PREFIX + len))
}

/// The kind and request id of the frame that starts `src`, or `None` when `src` is shorter than
/// the 9 bytes of a header (a frame [`frame_size`] sized, once whole, never is); the body follows.
pub fn frame_header(src: &[u8]) -> Option<(u8, u32)> {
    let header = src.first_chunk::<{ LEN_PREFIX + MIN_FRAME_LEN }>()?;
    Some((header[4], u32::from_be_bytes([header[5], header[6], header[7], header[8]])))
}

/// Bytes of the whole header: length prefix, kind and request id.
pub const HEADER_LEN: usize = LEN_PREFIX + MIN_FRAME_LEN;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(total) = frame_size(src, self.max_frame_len)? else { return Ok(None) };
        let len = total - LEN_PREFIX;
        if src.len() < total {
            // Safe to reserve: `len` was checked against the limit above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let kind = src.get_u8();
        let id = src.get_u32();
        let body = src.split_to(len - MIN_FRAME_LEN).freeze();
        Ok(Some(Frame { kind, id, body }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = MIN_FRAME_LEN + frame.body.len();
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge { len, max: self.max_frame_len });
        }
        dst.reserve(LEN_PREFIX + len);
        dst.put_u32(len as u32);
        dst.put_u8(frame.kind);
        dst.put_u32(frame.id);
        dst.put_slice(&frame.body);
        Ok(())
    }
}

/// The server's codec: decodes requests, encodes responses.
///
/// Decoding yields `(id, Result<Request, Error>)`: a frame whose body does not decode is reported
/// with its id so the server can answer it with an error frame and carry on with the next frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCodec {
    frames: FrameCodec,
}

impl ServerCodec {
    /// A server codec with the given frame limit.
    pub fn new(max_frame_len: usize) -> Self {
        Self { frames: FrameCodec::new(max_frame_len) }
    }

    /// Changes the frame limit for what is decoded next (the server narrows it until a
    /// connection authenticates).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.frames = FrameCodec::new(max_frame_len);
    }

    /// The frame limit in force.
    pub fn max_frame_len(&self) -> usize {
        self.frames.max_frame_len()
    }
}

impl Decoder for ServerCodec {
    type Item = (u32, Result<Request, Error>);
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        Ok(self.frames.decode(src)?.map(|f| (f.id, wire::decode_request(f.kind, f.body))))
    }
}

impl Encoder<(u32, Response)> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, (id, response): (u32, Response), dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        wire::encode_response(id, &response, dst);
        let len = dst.len() - start - LEN_PREFIX;
        if len > self.frames.max_frame_len {
            // A reply too large for the peer's limit (e.g. a huge list range) becomes an error
            // frame instead: the connection stays usable.
            dst.truncate(start);
            let err = Error::FrameTooLarge { len, max: self.frames.max_frame_len };
            wire::encode_response(id, &Response::Error(err), dst);
        }
        Ok(())
    }
}

/// The client's codec: encodes requests, decodes responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCodec {
    frames: FrameCodec,
}

impl ClientCodec {
    /// A client codec with the given frame limit (learn the server's from the HELLO reply).
    pub fn new(max_frame_len: usize) -> Self {
        Self { frames: FrameCodec::new(max_frame_len) }
    }
}

impl Decoder for ClientCodec {
    type Item = (u32, Response);
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        let Some(f) = self.frames.decode(src)? else { return Ok(None) };
        let response = wire::decode_response(f.kind, f.body).map_err(|e| {
            FrameError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
        })?;
        Ok(Some((f.id, response)))
    }
}

impl Encoder<(u32, Request)> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, (id, request): (u32, Request), dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        wire::encode_request(id, &request, dst).map_err(FrameError::Unencodable)?;
        let len = dst.len() - start - LEN_PREFIX;
        if len > self.frames.max_frame_len {
            dst.truncate(start);
            return Err(FrameError::TooLarge { len, max: self.frames.max_frame_len });
        }
        Ok(())
    }
}

impl Encoder<(u32, Command)> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, (id, cmd): (u32, Command), dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode((id, Request::Command(cmd)), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;
    use crate::command::Expiry;
    use crate::command::{PutCondition, Reply};

    fn put(k: &str, v: &[u8]) -> Command {
        Command::Put(cmd::Put {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        })
    }

    #[test]
    fn request_round_trips_through_both_codecs() {
        let mut client = ClientCodec::default();
        let mut server = ServerCodec::default();
        let mut buf = BytesMut::new();
        client.encode((7, put("k", b"\x00\xffv")), &mut buf).expect("encode");
        client.encode((8, Request::Hello { version: 1 }), &mut buf).expect("encode");
        let (id, req) = server.decode(&mut buf).expect("decode").expect("frame");
        assert_eq!(id, 7);
        assert_eq!(req, Ok(Request::Command(put("k", b"\x00\xffv"))));
        let (id, req) = server.decode(&mut buf).expect("decode").expect("frame");
        assert_eq!((id, req), (8, Ok(Request::Hello { version: 1 })));
        assert!(buf.is_empty());
        assert!(server.decode(&mut buf).expect("decode").is_none());
    }

    #[test]
    fn partial_input_waits_at_every_split_point() {
        let mut client = ClientCodec::default();
        let mut whole = BytesMut::new();
        client.encode((1, put("key", b"value")), &mut whole).expect("encode");
        for cut in 0..whole.len() {
            let mut server = ServerCodec::default();
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(server.decode(&mut buf).expect("no error on partial").is_none(), "cut {cut}");
            buf.extend_from_slice(&whole[cut..]);
            let (id, req) = server.decode(&mut buf).expect("decode").expect("complete");
            assert_eq!((id, req), (1, Ok(Request::Command(put("key", b"value")))));
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_u8(0x10);
        let cap_before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (u32::MAX as usize, 1024)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap_before, "nothing reserved for the claimed size");
    }

    #[test]
    fn too_short_length_is_a_stream_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 1, 2][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooShort { len: 2 })));
    }

    #[test]
    fn garbage_body_is_a_per_frame_error_with_its_id() {
        let mut server = ServerCodec::default();
        let mut buf = BytesMut::new();
        // kind GET, id 42, body claims a 100-byte key but holds 2 bytes
        let start = FrameCodec::begin(&mut buf, wire::kind::GET, 42);
        buf.put_u32(100);
        buf.put_slice(b"ab");
        FrameCodec::finish(&mut buf, start);
        // unknown kind, id 43
        let start = FrameCodec::begin(&mut buf, 0x7e, 43);
        FrameCodec::finish(&mut buf, start);
        let (id, req) = server.decode(&mut buf).expect("stream ok").expect("frame");
        assert_eq!(id, 42);
        assert!(matches!(req, Err(Error::Malformed(_))), "{req:?}");
        let (id, req) = server.decode(&mut buf).expect("stream ok").expect("frame");
        assert_eq!(id, 43);
        assert!(matches!(req, Err(Error::Malformed(_))), "{req:?}");
    }

    #[test]
    fn oversized_reply_becomes_an_error_frame() {
        let mut server = ServerCodec::new(64);
        let mut client = ClientCodec::new(1024);
        let mut buf = BytesMut::new();
        let big = Response::Reply(Reply::List(vec![Bytes::from(vec![1u8; 100])]));
        server.encode((5, big), &mut buf).expect("encode");
        let (id, resp) = client.decode(&mut buf).expect("decode").expect("frame");
        assert_eq!(id, 5);
        match resp {
            Response::Error(e) => assert_eq!(e.code(), crate::ErrorCode::FrameTooLarge),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
}
