//! The cluster's Raft types and their binary forms: what a log entry holds ([`Request`]), what
//! applying it answers ([`Response`]), what a member is ([`Member`]), and how entries are laid out
//! on disk and on the Raft port ([`encode_entry`], [`decode_entry`]).
//!
//! # Why this encoding
//! An entry carries the client's command in the binary TCP protocol's own body layout
//! (`nanodb_protocol::wire`), inside a small versioned envelope: that layout already encodes every
//! [`Command`], is fuzzed and bounds every length before allocating, and is several times smaller
//! and cheaper than JSON; a serde binary codec would have been a new dependency for no gain. The
//! rare, small messages (votes, membership, responses) travel as JSON.

use std::fmt;
use std::path::PathBuf;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nanodb_protocol::frame::{LEN_PREFIX, MIN_FRAME_LEN};
use nanodb_protocol::wire::{self, Request as WireRequest};
use nanodb_protocol::{Command, Error, Reply};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// NanoDB's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
        Entry = Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id (>= 1).
pub type NodeId = u64;

/// A member of the cluster as the membership records it: its Raft address. Its client
/// addresses are asked of the node itself (they may change across restarts); see `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `HOST:PORT` of its Raft port.
    pub raft_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft_addr)
    }
}

/// The envelope's version: a node refuses entries of a version it does not know.
const ENVELOPE_V1: u8 = 1;
const OP_COMMAND: u8 = 1;
const OP_EXPIRE: u8 = 2;
const OP_COMMANDS: u8 = 3;

/// What a log entry asks the state machine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A client command, with every relative TTL already made absolute.
    Command(Command),
    /// The leader's sweeper: remove these keys if they are expired as of the entry's time.
    Expire(Vec<Bytes>),
    /// Client commands proposed together (group commit: the writes that reached the leader
    /// while the previous entries were being made durable share one entry, one fsync per node
    /// and one replication round), applied in order, each answering for itself.
    Commands(Vec<Command>),
}

/// One log entry's application data: an operation and the leader's clock when it proposed it
/// (Unix ms), the time every node applies it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The proposing leader's clock.
    pub now_ms: u64,
    /// What to do.
    pub op: Op,
}

impl Request {
    /// The envelope: `u8 version | u64 now_ms | u8 op | body`, where a command's body is its
    /// whole binary TCP request frame (id 0), a group's `u32 count | count × such frames` and an
    /// expiry's is `u32 count | count × bytes`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u8(ENVELOPE_V1);
        dst.put_u64_le(self.now_ms);
        match &self.op {
            Op::Command(cmd) => {
                dst.put_u8(OP_COMMAND);
                wire::encode_request(0, &WireRequest::Command(cmd.clone()), dst)?;
            }
            Op::Commands(cmds) => {
                dst.put_u8(OP_COMMANDS);
                dst.put_u32_le(cmds.len() as u32);
                for cmd in cmds {
                    wire::encode_request(0, &WireRequest::Command(cmd.clone()), dst)?;
                }
            }
            Op::Expire(keys) => {
                dst.put_u8(OP_EXPIRE);
                dst.put_u32_le(keys.len() as u32);
                for k in keys {
                    dst.put_u32_le(k.len() as u32);
                    dst.put_slice(k);
                }
            }
        }
        Ok(())
    }

    /// The envelope as bytes.
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Decodes an envelope; every length is checked against what is left before use.
    pub fn decode(mut b: Bytes) -> Result<Self, Error> {
        let bad = |m: &str| Error::Malformed(format!("raft entry: {m}"));
        if b.remaining() < 10 {
            return Err(bad("shorter than its envelope"));
        }
        let version = b.get_u8();
        if version != ENVELOPE_V1 {
            return Err(bad(&format!("unknown envelope version {version}")));
        }
        let now_ms = b.get_u64_le();
        let op = match b.get_u8() {
            OP_COMMAND => {
                let cmd = decode_command_frame(&mut b)?;
                if b.has_remaining() {
                    return Err(bad("command frame length does not match"));
                }
                Op::Command(cmd)
            }
            OP_COMMANDS => {
                if b.remaining() < 4 {
                    return Err(bad("command count missing"));
                }
                let n = b.get_u32_le() as usize;
                // Each command takes at least a minimal frame: bound the count before allocating.
                if n > b.remaining() / (LEN_PREFIX + MIN_FRAME_LEN) {
                    return Err(bad("command count exceeds the entry"));
                }
                let mut cmds = Vec::with_capacity(n);
                for _ in 0..n {
                    cmds.push(decode_command_frame(&mut b)?);
                }
                if b.has_remaining() {
                    return Err(bad("trailing bytes"));
                }
                Op::Commands(cmds)
            }
            OP_EXPIRE => {
                if b.remaining() < 4 {
                    return Err(bad("expiry count missing"));
                }
                let n = b.get_u32_le() as usize;
                // Each key takes at least its 4-byte length: bound the count before allocating.
                if n > b.remaining() / 4 {
                    return Err(bad("expiry count exceeds the entry"));
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    if b.remaining() < 4 {
                        return Err(bad("expiry key truncated"));
                    }
                    let len = b.get_u32_le() as usize;
                    if len > b.remaining() {
                        return Err(bad("expiry key truncated"));
                    }
                    keys.push(b.split_to(len));
                }
                if b.has_remaining() {
                    return Err(bad("trailing bytes"));
                }
                Op::Expire(keys)
            }
            op => return Err(bad(&format!("unknown op {op}"))),
        };
        Ok(Self { now_ms, op })
    }
}

/// Takes one binary TCP request frame (id 0) holding a command off the front of `b`.
pub fn decode_command_frame(b: &mut Bytes) -> Result<Command, Error> {
    let bad = |m: &str| Error::Malformed(format!("raft entry: {m}"));
    if b.remaining() < LEN_PREFIX + MIN_FRAME_LEN {
        return Err(bad("command frame too short"));
    }
    let len = b.get_u32() as usize;
    if len > b.remaining() || len < MIN_FRAME_LEN {
        return Err(bad("command frame length does not match"));
    }
    let mut frame = b.split_to(len);
    let kind = frame.get_u8();
    let _id = frame.get_u32();
    match wire::decode_request(kind, frame)? {
        WireRequest::Command(cmd) => Ok(cmd),
        _ => Err(bad("not a command")),
    }
}

// openraft's `serde` feature asks application data to be serde types; NanoDB never serializes
// them with serde on its own paths (entries use `encode_entry`), but this keeps them correct if
// something does: the envelope as a byte string.
impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.to_bytes().map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Request::decode(Bytes::from(bytes)).map_err(serde::de::Error::custom)
    }
}

/// What applying an entry answered: the command's reply or its error (blank, membership and
/// expiry entries answer `Pong`), and whether a put created its key (`Reply::Put` has no room
/// for it, and REST answers 201 for a new key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The reply or error.
    pub result: Result<Reply, Error>,
    /// A put created its key.
    pub created: bool,
    /// An [`Op::Commands`] entry's answers, one per command in order (its own `result` is
    /// `Pong`). Stays on the leader: not part of [`Response::encode`].
    pub each: Vec<Response>,
    /// For a command that published: its entry's index and the number of its first publish
    /// within the entry, where every node records how many of its own subscribers each publish
    /// reached (`state_machine::Deliveries`): the node that took the command answers its own.
    pub delivered: Option<(u64, u32)>,
    /// The log index of the entry that applied it (0: none, or a leader that did not say); `WAIT`
    /// waits for the other members to hold it.
    pub index: u64,
}

impl Response {
    /// `u8 flags (1: created, 2: delivered follows, 4: index follows) | [u64 index | u32 number]
    /// | [u64 entry index] | the reply as a binary TCP response frame`: the forwarding RPC's
    /// answer.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        let flags = u8::from(self.created)
            | if self.delivered.is_some() { 2 } else { 0 }
            | if self.index > 0 { 4 } else { 0 };
        b.put_u8(flags);
        if let Some((index, number)) = self.delivered {
            b.put_u64_le(index);
            b.put_u32_le(number);
        }
        if self.index > 0 {
            b.put_u64_le(self.index);
        }
        b.put_slice(&encode_response(&self.result));
        b.freeze()
    }

    /// [`Response::encode`] back.
    pub fn decode(mut b: Bytes) -> Result<Self, Error> {
        if !b.has_remaining() {
            return Err(Error::Malformed("empty response".into()));
        }
        let flags = b.get_u8();
        if flags > 7 {
            return Err(Error::Malformed(format!("response flags {flags}")));
        }
        let delivered = if flags & 2 != 0 {
            if b.remaining() < 12 {
                return Err(Error::Malformed("response truncated".into()));
            }
            Some((b.get_u64_le(), b.get_u32_le()))
        } else {
            None
        };
        let index = if flags & 4 != 0 {
            if b.remaining() < 8 {
                return Err(Error::Malformed("response truncated".into()));
            }
            b.get_u64_le()
        } else {
            0
        };
        Ok(Self { result: decode_response(b)?, created: flags & 1 != 0, each: Vec::new(), delivered, index })
    }
}

// Responses stay on the node that applied them (the leader hands them to the waiting client);
// the forwarding RPC uses `Response::encode`, not serde.
impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Response::decode(Bytes::from(bytes)).map_err(serde::de::Error::custom)
    }
}

/// A reply or error as a binary TCP response frame (id 0).
pub fn encode_response(result: &Result<Reply, Error>) -> Bytes {
    let response = match result {
        Ok(reply) => wire::Response::Reply(reply.clone()),
        Err(e) => wire::Response::Error(e.clone()),
    };
    let mut b = BytesMut::new();
    wire::encode_response(0, &response, &mut b);
    b.freeze()
}

/// [`encode_response`] back; a remote error reads as [`Error::Remote`], except that an
/// unavailable leader stays [`Error::Unavailable`] so that every protocol still says "retry".
pub fn decode_response(mut b: Bytes) -> Result<Result<Reply, Error>, Error> {
    if b.remaining() < LEN_PREFIX + MIN_FRAME_LEN {
        return Err(Error::Malformed("response frame too short".into()));
    }
    let len = b.get_u32() as usize;
    if len != b.remaining() {
        return Err(Error::Malformed("response frame length does not match".into()));
    }
    let kind = b.get_u8();
    let _id = b.get_u32();
    Ok(match wire::decode_response(kind, b)? {
        wire::Response::Reply(r) => Ok(r),
        wire::Response::Error(Error::Remote { code: nanodb_protocol::ErrorCode::Unavailable, message }) => {
            Err(Error::Unavailable(
                message.strip_prefix("writes are unavailable: ").unwrap_or(&message).to_string(),
            ))
        }
        wire::Response::Error(e) => Err(e),
        _ => return Err(Error::Malformed("unexpected response kind".into())),
    })
}

/// A snapshot: its file on disk and the state beside the keys that a node installing it needs.
#[derive(Debug)]
pub struct SnapshotFile {
    /// The snapshot file (the engine's snapshot format, see `persist::snapshot`).
    pub path: PathBuf,
    /// The engine's version counter when it was taken.
    pub versions: u64,
    /// The largest entry time applied (time never goes back across leaders).
    pub last_now: u64,
    /// The node ids removed from the cluster as of the snapshot (`state_machine::Retired`).
    pub retired: Vec<NodeId>,
}

const ENTRY_BLANK: u8 = 0;
const ENTRY_NORMAL: u8 = 1;
const ENTRY_MEMBERSHIP: u8 = 2;

/// An entry: `u64 term | u64 leader node id | u64 index | u8 kind | u32 len | payload`
/// (little-endian; the term and node id are openraft's committed leader id), the payload a
/// [`Request`] envelope or a JSON membership.
pub fn encode_entry(dst: &mut BytesMut, entry: &Entry<TypeConfig>) -> Result<(), Error> {
    dst.put_u64_le(entry.log_id.leader_id.term);
    dst.put_u64_le(entry.log_id.leader_id.node_id);
    dst.put_u64_le(entry.log_id.index);
    match &entry.payload {
        EntryPayload::Blank => {
            dst.put_u8(ENTRY_BLANK);
            dst.put_u32_le(0);
        }
        EntryPayload::Normal(req) => {
            dst.put_u8(ENTRY_NORMAL);
            let at = dst.len();
            dst.put_u32_le(0);
            req.encode(dst)?;
            let len = (dst.len() - at - 4) as u32;
            dst[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        EntryPayload::Membership(m) => {
            dst.put_u8(ENTRY_MEMBERSHIP);
            let json = serde_json::to_vec(m).map_err(|e| Error::Malformed(e.to_string()))?;
            dst.put_u32_le(json.len() as u32);
            dst.put_slice(&json);
        }
    }
    Ok(())
}

/// Reads one entry from the front of `b`, checking every length against what is left.
pub fn decode_entry(b: &mut Bytes) -> Result<Entry<TypeConfig>, Error> {
    let bad = |m: &str| Error::Malformed(format!("raft entry: {m}"));
    if b.remaining() < ENTRY_HEADER {
        return Err(bad("header truncated"));
    }
    let term = b.get_u64_le();
    let node = b.get_u64_le();
    let index = b.get_u64_le();
    let kind = b.get_u8();
    let len = b.get_u32_le() as usize;
    if len > b.remaining() {
        return Err(bad("payload truncated"));
    }
    let payload = b.split_to(len);
    let payload = match kind {
        ENTRY_BLANK => EntryPayload::Blank,
        ENTRY_NORMAL => EntryPayload::Normal(Request::decode(payload)?),
        ENTRY_MEMBERSHIP => {
            let m: Membership<NodeId, Member> =
                serde_json::from_slice(&payload).map_err(|e| bad(&format!("membership: {e}")))?;
            EntryPayload::Membership(m)
        }
        k => return Err(bad(&format!("unknown kind {k}"))),
    };
    Ok(Entry { log_id: log_id(term, node, index), payload })
}

/// Bytes of an entry before its payload: the smallest entry.
pub const ENTRY_HEADER: usize = 29;

/// A log id from its leader's term and node id, and its index.
pub fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanodb_protocol::{Expiry, PutCondition, cmd};

    #[test]
    fn entries_round_trip_and_truncation_is_refused() {
        let put = Command::Put(cmd::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expiry: Expiry::At(123),
            condition: PutCondition::Always,
        });
        let entries = vec![
            Entry::<TypeConfig> { log_id: log_id(1, 1, 1), payload: EntryPayload::Blank },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Normal(Request { now_ms: 9, op: Op::Command(put.clone()) }),
            },
            Entry {
                log_id: log_id(2, 1, 3),
                payload: EntryPayload::Normal(Request {
                    now_ms: 10,
                    op: Op::Expire(vec![Bytes::from_static(b"a")]),
                }),
            },
            Entry {
                log_id: log_id(2, 1, 4),
                payload: EntryPayload::Normal(Request {
                    now_ms: 11,
                    op: Op::Commands(vec![put.clone(), Command::Ping(cmd::Ping {}), put.clone()]),
                }),
            },
        ];
        let mut buf = BytesMut::new();
        for e in &entries {
            encode_entry(&mut buf, e).expect("encode");
        }
        let mut b = buf.freeze();
        let whole = b.clone();
        for e in &entries {
            assert_eq!(&decode_entry(&mut b).expect("decode"), e);
        }
        assert!(b.is_empty());
        for cut in 0..whole.len() {
            let mut part = whole.slice(..cut);
            let mut ok = 0;
            while !part.is_empty() {
                match decode_entry(&mut part) {
                    Ok(_) => ok += 1,
                    Err(_) => break,
                }
            }
            assert!(ok < entries.len(), "a truncated buffer never decodes whole");
        }
    }

    #[test]
    fn a_group_with_a_count_beyond_its_bytes_or_trailing_bytes_is_refused() {
        let group = Request { now_ms: 1, op: Op::Commands(vec![Command::Ping(cmd::Ping {})]) };
        let good = group.to_bytes().expect("encode");
        assert_eq!(Request::decode(good.clone()).expect("decode"), group);
        // The count sits after `u8 version | u64 now | u8 op`.
        let mut huge = BytesMut::from(&good[..]);
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(huge.freeze()).is_err(), "a count is bounded by the bytes left");
        let mut trailing = BytesMut::from(&good[..]);
        trailing.put_u8(0);
        assert!(Request::decode(trailing.freeze()).is_err());
    }

    #[test]
    fn a_forwarded_answer_carries_where_its_publishes_were_counted_and_bad_flags_are_refused() {
        for response in [
            Response {
                result: Ok(Reply::Int(3)),
                created: false,
                each: Vec::new(),
                delivered: Some((42, 7)),
                index: 42,
            },
            Response { result: Ok(Reply::Pong), created: true, each: Vec::new(), delivered: None, index: 0 },
            Response {
                result: Err(Error::Unavailable("x".into())),
                created: false,
                each: Vec::new(),
                delivered: None,
                index: 0,
            },
        ] {
            assert_eq!(Response::decode(response.encode()).expect("decodes"), response);
        }
        let good = Response {
            result: Ok(Reply::Int(1)),
            created: false,
            each: Vec::new(),
            delivered: Some((1, 0)),
            index: 0,
        }
        .encode();
        assert!(Response::decode(good.slice(..5)).is_err(), "a cut position is refused");
        let mut bad = BytesMut::from(&good[..]);
        bad[0] = 8;
        assert!(Response::decode(bad.freeze()).is_err(), "unknown flags are refused");
    }
}
