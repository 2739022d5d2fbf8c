//! The Raft port: a small framed TCP protocol between nodes, both ends.
//!
//! A request is `u32 length | u8 kind | u64 sender node id | u128 sender's cluster id | body`
//! (big-endian header; `length` counts everything after itself; cluster id 0 while the sender
//! has none, see `identity`); an answer is `u32 length | u8 status | body`, status 0 for
//! success. Lengths are checked against [`MAX_MESSAGE`] before anything is read, and bodies are
//! read as they arrive (memory follows the bytes actually sent, not the length claimed).
//! Connections are pooled per peer and carry one call at a time (a follower's forwarded writes
//! share calls: see `FORWARD`).
//!
//! Why not gRPC: the messages are openraft's, already serialized by us; a framed socket needs no
//! new proto package, keeps the Raft port out of the public gRPC surface (reflection, interop
//! pins), and streams a snapshot as plain chunks under TCP's flow control.
//!
//! Every call carries the sender's node id and cluster id; a node refuses calls from another
//! cluster, from ids that are neither in the membership nor in `--cluster-peers`, and malformed
//! bodies, logging each.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{LogId, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::identity::{ClusterId, Identity};
use super::metrics::Counters;
use super::state_machine::SNAPSHOT_CHUNK;
use nanodb_protocol::Command;
use nanodb_protocol::Error;
use nanodb_protocol::frame::{LEN_PREFIX, MIN_FRAME_LEN};

use super::types::{Member, NodeId, Response, TypeConfig, decode_command_frame, decode_entry, encode_entry};

/// Largest message either end accepts: room for one entry of the largest size a node proposes
/// (see `Cluster::propose`), and far above [`APPEND_BUDGET`].
pub const MAX_MESSAGE: usize = 1 << 30;
/// Bytes of entries one AppendEntries carries at most (always at least one entry): a larger
/// batch is sent in part and reported to openraft as a partial success.
pub const APPEND_BUDGET: usize = 32 << 20;
/// Idle connections kept per peer.
const POOL: usize = 64;
/// Longest wait for a new connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Request kinds.
pub mod kind {
    /// openraft AppendEntries.
    pub const APPEND: u8 = 1;
    /// openraft Vote.
    pub const VOTE: u8 = 2;
    /// A snapshot's header; chunks and the end follow on the same connection.
    pub const SNAPSHOT: u8 = 3;
    /// A chunk of snapshot bytes.
    pub const SNAPSHOT_CHUNK: u8 = 4;
    /// The end of a snapshot.
    pub const SNAPSHOT_END: u8 = 5;
    /// Client commands forwarded by a follower to the leader: `u32 count | count × binary TCP
    /// request frames (id 0)`, answered with `u32 count | count × (u32 len | Response)` in the
    /// same order (see `decode_forwarded`, `encode_forward_answers`).
    pub const FORWARD: u8 = 6;
    /// A follower asks the leader for a read index.
    pub const READ_INDEX: u8 = 7;
    /// A node's client addresses, id and cluster id (for the status report and the start-up
    /// check of `--cluster-peers`): JSON [`super::NodeInfo`].
    pub const INFO: u8 = 8;
    /// A node asks to join the cluster as a learner with a fresh id (`REPLICAOF`): JSON
    /// `replica::JoinRequest` in, JSON `Result<replica::Joined, ChangeError>` out. Forwarded to
    /// the leader. Taken from any node (the caller belongs to no cluster of this one's yet).
    pub const JOIN: u8 = 9;
    /// The leader counts the other members whose matched index is at least `u64 index` (`WAIT`
    /// on another node): `u32 count` out.
    pub const MATCHED: u8 = 10;
}

/// Bytes of a request's header after its length: kind, sender id, cluster id.
pub const REQUEST_HEADER: usize = 1 + 8 + 16;

/// A request as read: its kind, sender, sender's cluster id and body.
#[derive(Debug)]
pub struct Call {
    /// The kind (see [`kind`]).
    pub kind: u8,
    /// The sender's node id.
    pub from: NodeId,
    /// The sender's cluster id (0: none yet).
    pub cluster: ClusterId,
    /// The body.
    pub body: Bytes,
}

/// Status of an answer.
pub const OK: u8 = 0;
/// The call failed; the body is the reason (UTF-8).
pub const FAILED: u8 = 1;

/// Writes a request frame.
pub fn request_frame(kind: u8, from: NodeId, cluster: ClusterId, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(4 + REQUEST_HEADER + body.len());
    b.put_u32((REQUEST_HEADER + body.len()) as u32);
    b.put_u8(kind);
    b.put_u64(from);
    b.put_u128(cluster);
    b.put_slice(body);
    b
}

/// Writes an answer frame.
pub fn answer_frame(status: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u32((1 + body.len()) as u32);
    b.put_u8(status);
    b.put_slice(body);
    b
}

/// Reads `len` bytes as they arrive (never reserving more than is sent).
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    let n = (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if n != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

/// Reads a request frame; `Ok(None)` at a clean end of stream.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Call>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(REQUEST_HEADER..=MAX_MESSAGE).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message length {len} out of bounds"),
        ));
    }
    let kind = r.read_u8().await?;
    let from = r.read_u64().await?;
    let cluster = r.read_u128().await?;
    let body = read_body(r, len - REQUEST_HEADER).await?;
    Ok(Some(Call { kind, from, cluster, body }))
}

/// Reads an answer frame: `(status, body)`.
pub async fn read_answer<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Bytes)> {
    let len = r.read_u32().await? as usize;
    if !(1..=MAX_MESSAGE).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("answer length {len} out of bounds"),
        ));
    }
    let status = r.read_u8().await?;
    Ok((status, read_body(r, len - 1).await?))
}

/// An AppendEntries request's small fields (the entries follow in binary).
#[derive(Debug, Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
}

/// `u32 header length | JSON header | u32 count | entries`, with as many entries as fit in
/// `budget` bytes (at least one); also returns how many were encoded.
pub fn encode_append(
    rpc: &AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<(Bytes, usize), String> {
    let header =
        AppendHeader { vote: rpc.vote, prev_log_id: rpc.prev_log_id, leader_commit: rpc.leader_commit };
    let json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let mut entries = BytesMut::new();
    let mut count = 0;
    for e in &rpc.entries {
        let before = entries.len();
        encode_entry(&mut entries, e).map_err(|e| e.to_string())?;
        if count > 0 && entries.len() > budget {
            entries.truncate(before);
            break;
        }
        count += 1;
    }
    let mut b = BytesMut::with_capacity(8 + json.len() + entries.len());
    b.put_u32(json.len() as u32);
    b.put_slice(&json);
    b.put_u32(count as u32);
    b.put_slice(&entries);
    Ok((b.freeze(), count))
}

/// [`encode_append`] back; every length checked against what is left.
pub fn decode_append(mut b: Bytes) -> Result<AppendEntriesRequest<TypeConfig>, String> {
    if b.remaining() < 4 {
        return Err("truncated".into());
    }
    let n = b.get_u32() as usize;
    if n > b.remaining() {
        return Err("header truncated".into());
    }
    let header: AppendHeader = serde_json::from_slice(&b.split_to(n)).map_err(|e| e.to_string())?;
    if b.remaining() < 4 {
        return Err("count truncated".into());
    }
    let count = b.get_u32() as usize;
    // An entry takes at least its header: bound the count before allocating.
    if count > b.remaining() / super::types::ENTRY_HEADER {
        return Err("entry count exceeds the message".into());
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(decode_entry(&mut b).map_err(|e| e.to_string())?);
    }
    if b.has_remaining() {
        return Err("trailing bytes".into());
    }
    Ok(AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        leader_commit: header.leader_commit,
        entries,
    })
}

/// A `FORWARD` call's commands back; every length checked against what is left, the count
/// bounded by the smallest frame before anything is allocated for it.
pub fn decode_forwarded(mut b: Bytes) -> Result<Vec<Command>, Error> {
    let bad = |m: &str| Error::Malformed(format!("forwarded writes: {m}"));
    if b.remaining() < 4 {
        return Err(bad("count missing"));
    }
    let n = b.get_u32() as usize;
    if n == 0 || n > b.remaining() / (LEN_PREFIX + MIN_FRAME_LEN) {
        return Err(bad("the count does not match the message"));
    }
    let mut cmds = Vec::with_capacity(n);
    for _ in 0..n {
        cmds.push(decode_command_frame(&mut b)?);
    }
    if b.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(cmds)
}

/// The answer to a `FORWARD` call: each command's [`Response`], in order.
pub fn encode_forward_answers(responses: &[Response]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(responses.len() as u32);
    for r in responses {
        let one = r.encode();
        b.put_u32(one.len() as u32);
        b.put_slice(&one);
    }
    b
}

/// [`encode_forward_answers`] back, expecting `n` answers.
pub fn decode_forward_answers(mut b: Bytes, n: usize) -> Result<Vec<Response>, Error> {
    let bad = |m: &str| Error::Malformed(format!("answers to forwarded writes: {m}"));
    if b.remaining() < 4 || b.get_u32() as usize != n {
        return Err(bad("not one answer per write"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if b.remaining() < 4 {
            return Err(bad("truncated"));
        }
        let len = b.get_u32() as usize;
        if len > b.remaining() {
            return Err(bad("truncated"));
        }
        out.push(Response::decode(b.split_to(len))?);
    }
    if b.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// What a snapshot's header frame carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The sender's vote.
    pub vote: Vote<NodeId>,
    /// openraft's metadata.
    pub meta: SnapshotMeta<NodeId, Member>,
    /// The engine's version counter.
    pub versions: u64,
    /// The last entry time.
    pub last_now: u64,
    /// Bytes of the file that follow.
    pub len: u64,
    /// The node ids removed from the cluster as of the snapshot.
    #[serde(default)]
    pub retired: Vec<NodeId>,
}

/// A connection pool to one peer's Raft port.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    me: NodeId,
    identity: Arc<Identity>,
    idle: Mutex<Vec<TcpStream>>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached.
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    /// The connection failed during the call, or the call timed out.
    #[error("call to {0} failed: {1}")]
    Io(String, std::io::Error),
    /// The peer answered with a failure.
    #[error("{0}")]
    Failed(String),
}

impl Peer {
    /// A pool to `addr`, calling as node `me` of the cluster `identity` names.
    pub fn new(addr: String, me: NodeId, identity: Arc<Identity>) -> Self {
        Self { addr, me, identity, idle: Mutex::new(Vec::new()) }
    }

    fn frame(&self, kind: u8, body: &[u8]) -> BytesMut {
        request_frame(kind, self.me, self.identity.cluster(), body)
    }

    /// A pooled connection, or a new one within `timeout` (at most [`CONNECT_TIMEOUT`]): a dead
    /// or unreachable peer must not hold a vote or a forwarded write past the call's deadline.
    async fn connect(&self, timeout: Duration) -> Result<TcpStream, CallError> {
        if let Some(s) = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(s);
        }
        let s = tokio::time::timeout(timeout.min(CONNECT_TIMEOUT), TcpStream::connect(&self.addr))
            .await
            .map_err(|_| CallError::Unreachable(self.addr.clone(), std::io::ErrorKind::TimedOut.into()))?
            .map_err(|e| CallError::Unreachable(self.addr.clone(), e))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn put_back(&self, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOL {
            idle.push(s);
        }
    }

    /// One call: sends `body` as `kind`, waits up to `timeout` for the answer's body.
    pub async fn call(&self, kind: u8, body: &[u8], timeout: Duration) -> Result<Bytes, CallError> {
        let mut s = self.connect(timeout).await?;
        let frame = self.frame(kind, body);
        let io = async {
            s.write_all(&frame).await?;
            read_answer(&mut s).await
        };
        let (status, body) = match tokio::time::timeout(timeout, io).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(CallError::Io(self.addr.clone(), e)),
            Err(_) => return Err(CallError::Io(self.addr.clone(), std::io::ErrorKind::TimedOut.into())),
        };
        self.put_back(s);
        if status == OK {
            Ok(body)
        } else {
            Err(CallError::Failed(String::from_utf8_lossy(&body).into_owned()))
        }
    }

    /// Streams a snapshot file: the header, chunks of [`SNAPSHOT_CHUNK`] bytes, the end; then
    /// the answer. Memory stays at one chunk whatever the snapshot's size.
    pub async fn send_snapshot(
        &self,
        header: &SnapshotHeader,
        mut file: tokio::fs::File,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let mut s = self.connect(timeout).await?;
        let io = |e: std::io::Error| CallError::Io(self.addr.clone(), e);
        let json = serde_json::to_vec(header).map_err(|e| CallError::Failed(e.to_string()))?;
        s.write_all(&self.frame(kind::SNAPSHOT, &json)).await.map_err(io)?;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK];
        let mut sent = 0u64;
        while sent < header.len {
            let n = file.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            s.write_all(&self.frame(kind::SNAPSHOT_CHUNK, &chunk[..n])).await.map_err(io)?;
            sent += n as u64;
        }
        s.write_all(&self.frame(kind::SNAPSHOT_END, &[])).await.map_err(io)?;
        let (status, body) = tokio::time::timeout(timeout, read_answer(&mut s))
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        self.put_back(s);
        if status == OK {
            Ok(body)
        } else {
            Err(CallError::Failed(String::from_utf8_lossy(&body).into_owned()))
        }
    }
}

/// Pools by address, shared by replication and forwarding.
#[derive(Debug, Clone)]
pub struct Peers {
    me: NodeId,
    identity: Arc<Identity>,
    pools: Arc<Mutex<HashMap<String, Arc<Peer>>>>,
}

impl Peers {
    /// No pools yet; calls go out as node `me` of the cluster `identity` names.
    pub fn new(me: NodeId, identity: Arc<Identity>) -> Self {
        Self { me, identity, pools: Arc::default() }
    }

    /// The pool to `addr`.
    pub fn get(&self, addr: &str) -> Arc<Peer> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Peer::new(addr.to_string(), self.me, self.identity.clone())))
            .clone()
    }
}

/// openraft's network factory: one [`Network`] per target.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    /// The pools.
    pub peers: Peers,
    /// Snapshots sent are counted here.
    pub counters: Arc<Counters>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Network {
        Network { target, peer: self.peers.get(&node.raft_addr), counters: self.counters.clone() }
    }
}

/// The link to one peer, as openraft's replication uses it.
#[derive(Debug)]
pub struct Network {
    target: NodeId,
    peer: Arc<Peer>,
    counters: Arc<Counters>,
}

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, Member, E>>;

impl Network {
    fn to_rpc<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, Member, E> {
        match e {
            CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }

    async fn call_json<Resp: serde::de::DeserializeOwned>(
        &self,
        kind: u8,
        body: Bytes,
        option: &RPCOption,
    ) -> RpcResult<Resp> {
        let answer = self.peer.call(kind, &body, option.hard_ttl()).await.map_err(|e| self.to_rpc(e))?;
        let result: Result<Resp, RaftError<NodeId>> =
            serde_json::from_slice(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let (body, sent) = encode_append(&rpc, APPEND_BUDGET)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let response: AppendEntriesResponse<NodeId> = self.call_json(kind::APPEND, body, &option).await?;
        Ok(match response {
            // Only a prefix went: the follower holds up to its last entry (openraft sends the
            // rest next).
            AppendEntriesResponse::Success if sent < rpc.entries.len() => {
                AppendEntriesResponse::PartialSuccess(rpc.entries.get(sent.wrapping_sub(1)).map(|e| e.log_id))
            }
            other => other,
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let body = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_json(kind::VOTE, Bytes::from(body), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let net = |e: &dyn std::error::Error| {
            StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
        };
        let file = tokio::fs::File::open(&snapshot.snapshot.path).await.map_err(|e| net(&e))?;
        let len = file.metadata().await.map_err(|e| net(&e))?.len();
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
            versions: snapshot.snapshot.versions,
            last_now: snapshot.snapshot.last_now,
            len,
            retired: snapshot.snapshot.retired.clone(),
        };
        // Sending a large snapshot takes a while: allow a generous deadline for the answer, as
        // installing it means loading it.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        let send = self.peer.send_snapshot(&header, file, timeout);
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = send => answer,
        };
        let answer = answer.map_err(|e| match e {
            CallError::Unreachable(..) => StreamingError::Unreachable(Unreachable::new(&e)),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            serde_json::from_slice(&answer).map_err(|e| net(&e))?;
        if result.is_ok() {
            self.counters.snapshot_sent();
        }
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{Entry, EntryPayload, Vote};

    use super::*;
    use crate::cluster::types::{Op, Request, log_id};

    #[test]
    fn an_append_over_the_budget_sends_a_prefix_of_at_least_one_entry() {
        let entry = |i| Entry::<TypeConfig> {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(Request {
                now_ms: 1,
                op: Op::Expire(vec![Bytes::from(vec![7u8; 1000])]),
            }),
        };
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (1..=10).map(entry).collect(),
        };
        let (all, n) = encode_append(&rpc, 1 << 20).expect("encode");
        assert_eq!(n, 10);
        assert_eq!(decode_append(all).expect("decode").entries, rpc.entries);
        let (part, n) = encode_append(&rpc, 3000).expect("encode");
        assert!((1..10).contains(&n), "{n}");
        assert_eq!(decode_append(part).expect("decode").entries, rpc.entries[..n]);
        let (one, n) = encode_append(&rpc, 10).expect("encode");
        assert_eq!((n, decode_append(one).expect("decode").entries.len()), (1, 1), "never zero entries");
    }

    #[test]
    fn forwarded_writes_and_their_answers_round_trip_and_malformed_ones_are_errors() {
        use nanodb_protocol::wire::{self, Request as WireRequest};
        use nanodb_protocol::{Reply, cmd};
        let cmds = vec![Command::Ping(cmd::Ping {}), Command::Ping(cmd::Ping {})];
        let mut body = BytesMut::new();
        body.put_u32(2);
        for c in &cmds {
            wire::encode_request(0, &WireRequest::Command(c.clone()), &mut body).expect("encode");
        }
        let whole = body.clone().freeze();
        assert_eq!(decode_forwarded(whole.clone()).expect("decode"), cmds);
        let mut trailing = body.clone();
        trailing.put_u8(0);
        let mut zero = BytesMut::new();
        zero.put_u32(0);
        let mut too_many = BytesMut::new();
        too_many.put_u32(u32::MAX);
        too_many.put_slice(&whole[4..]);
        for bad in [trailing.freeze(), zero.freeze(), too_many.freeze(), whole.slice(..whole.len() - 1)] {
            assert!(decode_forwarded(bad.clone()).is_err(), "{bad:?}");
        }

        let answers = vec![
            Response { result: Ok(Reply::Pong), created: true, each: Vec::new(), delivered: None, index: 0 },
            Response {
                result: Err(Error::Unavailable("retry".into())),
                created: false,
                each: Vec::new(),
                delivered: None,
                index: 0,
            },
        ];
        let encoded = encode_forward_answers(&answers).freeze();
        assert_eq!(decode_forward_answers(encoded.clone(), 2).expect("decode"), answers);
        assert!(decode_forward_answers(encoded.clone(), 3).is_err(), "one answer per write");
        assert!(decode_forward_answers(encoded.slice(..encoded.len() - 1), 2).is_err(), "truncated");
    }

    #[test]
    fn malformed_appends_are_errors() {
        for bad in [&b""[..], b"\x00\x00\x00\x05{}", b"\x00\x00\x00\x02{}\xff\xff\xff\xff"] {
            assert!(decode_append(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
