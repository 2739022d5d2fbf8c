//! Cluster mode: NanoDB replicated with Raft (openraft 0.9, storage-v2), on when `--raft-addr`
//! is given.
//!
//! - [`types`]: the Raft types and the entry encoding (a client command in the TCP wire's
//!   layout, with the leader's clock and absolute TTLs).
//! - [`log_store`]: the durable Raft log. In a cluster the Raft log *is* the log: the engine has no
//!   append-only log attached.
//! - [`state_machine`]: applies committed entries to the engine; snapshots are the engine's.
//! - [`network`]: the Raft port, both ends.
//! - [`status`]: the report behind `GET /v1/cluster`, `nanodb.v1.Cluster/Status`, `ROLE` and
//!   `INFO replication`.
//! - [`membership`]: membership changes at runtime.
//! - [`identity`]: the cluster id a data dir belongs to, checked on every Raft call.
//! - [`replica`]: serving alone, `REPLICAOF`, `REPLICAOF NO ONE`, `WAIT`.
//! - [`upstream`]: what `REPLICAOF` presents to its target (`masteruser`, `masterauth`) and its
//!   conversation with the target's RESP port.
//! - `instance`: one incarnation of the node (its id, Raft, log, state machine), which
//!   `REPLICAOF` replaces.
//! - [`metrics`]: the Raft figures of `/metrics`.
//! - `read_index`: linearizable reads asking for their read index in shared rounds.
//! - [`pipeline`]: a connection's pipelined writes, submitted in order and awaited together, and
//!   its reads sharing a read barrier.
//! - this module: the node ([`Cluster`]): start, initialization, writes (proposed on the leader,
//!   forwarded from followers), linearizable reads (read index), the leader's expiry sweeper.

pub mod identity;
mod instance;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod pipeline;
mod read_index;
pub mod replica;
pub mod state_machine;
pub mod status;
pub mod types;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use nanodb_protocol::wire::{self, Request as WireRequest};
use nanodb_protocol::{Command, Error, Expiry, Reply};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{ClusterConfig, ReadConsistency};
use crate::engine::Engine;
use crate::feed::Hub;
use crate::persist::FsyncPolicy;
use identity::{ClusterId, Identity};
use instance::Instance;
use network::{CallError, Peers, kind};
use types::{Member, NodeId, Op, Request, Response, SnapshotFile, TypeConfig};

/// The text of every "no leader, retry" error.
pub const NO_LEADER: &str = "CLUSTERDOWN no cluster leader is reachable; retry";

/// Where a node's snapshots live under its data directory (`DATA_DIR/raft/snapshots`).
pub fn snapshots_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(RAFT_DIR).join(instance::SNAPSHOTS)
}

/// The Raft log, snapshots and identity's directory under the data directory.
pub const RAFT_DIR: &str = "raft";

/// Connections the Raft port serves at once (peers pool a few each; the rest is refused).
const MAX_RAFT_CONNECTIONS: usize = 1024;

/// Keys the leader's sweeper proposes to expire per entry.
const EXPIRE_BATCH: usize = 1000;

/// Groups of writes the leader has proposed and not yet seen applied, at most (see
/// [`group_commit`]). One: the writes that arrive during a Raft round all go in the next group,
/// so each round costs one entry, one fsync per node and one AppendEntries. With more, the
/// queue is cut into smaller groups that queue behind each other in the log's fsyncs anyway.
/// Measured with `scripts/bench-cluster.sh --nanodb-only WORKLOADS=set` (three nodes,
/// `--fsync always`, 50 users), 1 against 4 alternated: gRPC SET at 1 in flight 14.5-15.3k
/// against 12.4-12.5k ops/s (3 pairs), at 16 in flight 31-35.7k against 33.7-36.4k (noise);
/// binary TCP SET 23.4k / 182.6k against 20.3k / 158.7k at 1 / 16 in flight.
const MAX_GROUPS_IN_FLIGHT: usize = 1;

/// Commands in one group entry, at most.
const MAX_GROUP: usize = 4096;

/// Writes waiting for the leader's group commit, at most (then a write waits for room).
const MAX_QUEUED: usize = 1 << 16;

/// Batches of forwarded writes a follower has sent to the leader and not yet had answered, at
/// most (see [`forward_batches`]).
const MAX_FORWARDS_IN_FLIGHT: usize = 8;

/// A node's client addresses, as its status lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAddrs {
    /// gRPC.
    pub grpc_addr: Option<String>,
    /// REST.
    pub http_addr: Option<String>,
    /// Binary TCP.
    pub tcp_addr: Option<String>,
    /// RESP.
    pub resp_addr: Option<String>,
}

/// What a node answers `INFO` on its Raft port: its client addresses, its id and its cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its client addresses.
    #[serde(flatten)]
    pub addrs: ClientAddrs,
    /// Its node id.
    #[serde(default)]
    pub node_id: NodeId,
    /// Its cluster id (32 hex digits), absent while it belongs to no cluster.
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// A running cluster node. Shared as `Arc<Cluster>` by the frontends' [`crate::frontend::Context`].
///
/// What belongs to one incarnation of the node in a cluster (its id, its Raft instance, log,
/// state machine and their tasks) is an [`Instance`], which `REPLICAOF` replaces whole (see
/// [`replica`]); the rest (the Raft port, the engine, the client addresses) lives as long as the
/// process.
pub struct Cluster {
    current: std::sync::RwLock<Arc<Instance>>,
    config: ClusterConfig,
    engine: Arc<Engine>,
    feed: Arc<Hub>,
    request_timeout: Duration,
    /// Largest entry proposed: what the log reads back and the Raft port carries.
    max_entry: usize,
    addrs: ClientAddrs,
    /// Other nodes' client addresses as they last told them (see `status`).
    known_addrs: Mutex<HashMap<NodeId, ClientAddrs>>,
    /// The Raft port's bound address.
    pub raft_addr: std::net::SocketAddr,
    /// One membership change at a time (see [`membership`]).
    serializer: membership::Serializer,
    /// Which cluster this node belongs to (see [`identity`]).
    identity: Arc<Identity>,
    /// What opening an instance needs.
    opening: instance::Opening,
    /// One `REPLICAOF` (or serving-alone initialization) at a time.
    switching: tokio::sync::Mutex<()>,
    /// Set while `REPLICAOF` moves this node to another cluster: the Raft port refuses the calls
    /// of the cluster being joined until the new incarnation is open (the old one, taking them,
    /// would hold entries the new one drops: a log reversion the leader refuses).
    joining: std::sync::atomic::AtomicBool,
    /// Raft counters `/metrics` reports (see [`metrics`]).
    pub counters: Arc<metrics::Counters>,
    /// What `REPLICAOF` presents to its target (see [`upstream`]).
    pub upstream: upstream::Upstream,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id())
            .field("raft_addr", &self.raft_addr)
            .finish()
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(pub String);

/// What the server hands a starting node.
#[derive(Debug)]
pub struct Start<'a> {
    /// Cluster settings.
    pub config: ClusterConfig,
    /// The data directory (the Raft log and snapshots go in `raft/`).
    pub data_dir: &'a Path,
    /// The fsync policy of the Raft log.
    pub fsync: FsyncPolicy,
    /// The request deadline (writes and read barriers give up with a retryable error after it).
    pub request_timeout: Duration,
    /// Largest record read back.
    pub max_record_len: usize,
    /// Expiry proposals' period.
    pub sweep_interval: Duration,
    /// This node's client addresses.
    pub addrs: ClientAddrs,
    /// What `REPLICAOF` presents to its target, at start.
    pub upstream: upstream::Credentials,
    /// `--tls-replication`: `REPLICAOF` speaks TLS to its target.
    pub upstream_tls: Option<upstream::UpstreamTls>,
}

impl Cluster {
    /// Opens the Raft log and state machine (loading the last snapshot into `engine`), binds the
    /// Raft port, starts Raft and, on a brand-new cluster, lets the lowest id initialize it.
    pub async fn start(
        start: Start<'_>,
        engine: Arc<Engine>,
        feed: Arc<Hub>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>, ClusterError> {
        let config = start.config;
        let err = |m: String| ClusterError(m);
        if config.node_id == 0 {
            return Err(err("--raft-addr needs --node-id N (an integer >= 1)".into()));
        }
        if !config.peers.is_empty() && !config.peers.iter().any(|(id, _)| *id == config.node_id) {
            return Err(err(format!("--cluster-peers does not list this node's id {}", config.node_id)));
        }
        membership::check_peer_list(&config.peers).map_err(err)?;
        let dir = start.data_dir.join(RAFT_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        instance::remove_dropped(&dir);
        let identity = Arc::new(own_identity(&dir, &config)?);
        check_peers_cluster(&config, &identity).await?;
        engine.set_replicated();
        let et = config.election_timeout.as_millis() as u64;
        // openraft 0.9 lets a follower (with a leader it knew) start an election only after the
        // leader lease (= `election_timeout_max`) *plus* a random timeout in `[min, max)`, checked
        // on a tick of 1.5 heartbeats, and a voter refuses votes within its own lease. With
        // min = 0.35 et and max = 0.55 et (heartbeat et/20), an election starts 0.9-1.1 et (plus
        // a tick, 0.075 et) after the last heartbeat; when it fails (the first candidate had the
        // shorter log, or a split vote), the next round comes min..max + a tick later, so a new
        // leader is up within twice the timeout. With min = et and max = 2 et the wait was
        // 3-4 et: a 3-4 s failover at the default.
        let raft_config = openraft::Config {
            cluster_name: "nanodb".into(),
            heartbeat_interval: (et / 20).max(5),
            election_timeout_min: (et * 35 / 100).max(20),
            election_timeout_max: (et * 55 / 100).max(30),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every.min(1000),
            max_payload_entries: 256,
            install_snapshot_timeout: 60_000,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| err(e.to_string()))?);
        let listener = TcpListener::bind(&config.raft_addr)
            .await
            .map_err(|e| err(format!("cannot listen on {} (--raft-addr): {e}", config.raft_addr)))?;
        let raft_addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let max_entry = start.max_record_len.min(network::MAX_MESSAGE / 2).saturating_sub(1024);
        let counters = Arc::new(metrics::Counters::default());
        let opening = instance::Opening {
            dir,
            fsync: start.fsync,
            max_record_len: start.max_record_len,
            raft_config,
            max_entry,
            request_timeout: start.request_timeout,
        };
        let node_id = identity.get().node_id;
        let first = opening
            .open(node_id, true, &engine, &feed, &identity, &counters, &shutdown, tasks)
            .await
            .map_err(err)?;
        let cluster = Arc::new(Self {
            current: std::sync::RwLock::new(Arc::new(first)),
            config,
            engine,
            feed,
            // A tenth short of the frontends' own deadline, so that the client gets the retryable
            // "no leader" answer rather than a generic timeout.
            request_timeout: start.request_timeout - start.request_timeout / 10,
            max_entry,
            addrs: start.addrs,
            known_addrs: Mutex::default(),
            raft_addr,
            serializer: membership::Serializer::default(),
            identity,
            opening,
            switching: tokio::sync::Mutex::new(()),
            joining: std::sync::atomic::AtomicBool::new(false),
            counters,
            upstream: upstream::Upstream::new(start.upstream, start.upstream_tls),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        info!(node_id, addr = %raft_addr, "raft port listening");
        tasks.spawn(serve(listener, cluster.clone(), shutdown.clone(), tasks.clone()));
        if cluster.initialize_if_new().await? && cluster.engine.key_count() > 0 {
            // A node alone on a base snapshot (a restored backup, or `REPLICAOF NO ONE` cut short
            // by a crash): its log does not hold that data, so a snapshot past it is taken and
            // the log purged before any client is served, and a node that joins it later
            // receives the data by snapshot (see `replica`).
            cluster.compact_base().await;
        }
        cluster.warn_if_peers_disagree();
        tasks.spawn(cluster.clone().sweep(start.sweep_interval, shutdown.clone()));
        tasks.spawn(metrics::count_elections(cluster.clone(), shutdown.clone()));
        tasks.spawn(cluster.clone().stop_on(shutdown));
        Ok(cluster)
    }

    /// A new cluster is initialized once, when its log is empty: by the lowest id of
    /// `--cluster-peers` (the others wait to hear from the leader), or by a node serving alone
    /// (see [`replica`]) that was one before a restart. A restarted node has its membership in
    /// its log and does nothing here. Whether it initialized a cluster of one now.
    async fn initialize_if_new(&self) -> Result<bool, ClusterError> {
        let initialized = self.raft().is_initialized().await.map_err(|e| ClusterError(e.to_string()))?;
        let lowest = self.config.peers.iter().map(|(id, _)| *id).min();
        let alone = self.config.peers.is_empty() && self.identity.get().alone;
        if initialized || (lowest != Some(self.node_id()) && !alone) {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, Member> = if alone {
            BTreeMap::from([(self.node_id(), Member { raft_addr: self.advertised_raft_addr() })])
        } else {
            self.config.peers.iter().map(|(id, addr)| (*id, Member { raft_addr: addr.clone() })).collect()
        };
        self.initialize(members).await?;
        Ok(alone)
    }

    /// Initializes a new cluster of `members`; its id is minted and stored first (a crash in
    /// between keeps it).
    async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<(), ClusterError> {
        let mut stored = self.identity.get();
        if stored.cluster_id.is_none() {
            let id = identity::mint().map_err(ClusterError)?;
            stored.cluster_id = Some(identity::to_hex(id));
            stored.alone = members.len() == 1 && self.config.peers.is_empty();
            self.identity
                .set(stored.clone())
                .map_err(|e| ClusterError(format!("storing the cluster id: {e}")))?;
        }
        info!(
            members = ?members.keys().collect::<Vec<_>>(),
            cluster_id = stored.cluster_id.as_deref().unwrap_or_default(),
            "raft: initializing a new cluster"
        );
        match self.raft().initialize(members).await {
            Ok(()) => Ok(()),
            // Another start already did (a race with an incoming vote): fine.
            Err(RaftError::APIError(e)) => {
                warn!(error = %e, "raft: not initialized");
                Ok(())
            }
            Err(e) => Err(ClusterError(e.to_string())),
        }
    }

    async fn stop_on(self: Arc<Self>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        if let Err(e) = self.raft().shutdown().await {
            warn!(error = %e, "raft: shutdown failed");
        }
    }

    /// The current incarnation.
    fn now(&self) -> Arc<Instance> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The Raft handle (of the current incarnation: `REPLICAOF` replaces it).
    pub fn raft(&self) -> Raft<TypeConfig> {
        self.now().raft.clone()
    }

    /// This node's id (`REPLICAOF` may change it: the joined cluster assigns a fresh one).
    pub fn node_id(&self) -> NodeId {
        self.now().node_id
    }

    fn peers(&self) -> Peers {
        self.now().peers.clone()
    }

    fn retired(&self) -> Arc<state_machine::Retired> {
        self.now().retired.clone()
    }

    /// The address this node's Raft port is known by: its address in the membership, or in
    /// `--cluster-peers` (a node listening on `0.0.0.0` is known by another name there), else
    /// `--raft-addr` as given, or the bound address when it asked for port 0.
    pub fn advertised_raft_addr(&self) -> String {
        let me = self.node_id();
        let member = self.raft().metrics().borrow().membership_config.membership().get_node(&me).cloned();
        if let Some(m) = member {
            return m.raft_addr;
        }
        if let Some((_, addr)) = self.config.peers.iter().find(|(id, _)| *id == me) {
            return addr.clone();
        }
        if self.config.raft_addr.ends_with(":0") {
            self.raft_addr.to_string()
        } else {
            self.config.raft_addr.clone()
        }
    }

    /// This node's read consistency.
    pub fn read_consistency(&self) -> ReadConsistency {
        self.config.read_consistency
    }

    fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let m = self.raft().metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.raft_addr.clone());
        Some((id, addr))
    }

    /// Runs a write through the log: proposed here when this node leads, forwarded to the leader
    /// otherwise; answers once the leader applied it. Without a leader until the request deadline,
    /// the retryable [`Error::Unavailable`]. Also says whether a put created its key.
    pub async fn write(&self, cmd: Command) -> Result<(Reply, bool), Error> {
        self.write_at(cmd).await.map(|(reply, created, _)| (reply, created))
    }

    /// [`Cluster::write`], also saying at which log index the write was applied (`WAIT` waits
    /// for the other members to hold it). A run of one (see [`pipeline`]): sent again while no
    /// leader takes it, until the deadline.
    pub async fn write_at(&self, cmd: Command) -> Result<(Reply, bool, u64), Error> {
        let mut one = pipeline::Pipeline::default();
        one.push(self, cmd);
        one.settle(self).await.pop().unwrap_or_else(|| Err(Error::Unavailable(NO_LEADER.into())))
    }

    /// A `PUBLISH`'s answer on the node that took it: how many of this node's subscribers got
    /// the message (Redis Cluster's answer), known once this node has applied the entry, which
    /// is when it delivered it. Not applied here by the deadline: the publishes count 0 (they
    /// reached nobody here yet).
    async fn local_deliveries(
        &self,
        cmd: &Command,
        reply: Reply,
        at: (u64, u32),
        deadline: Instant,
    ) -> Reply {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self.raft().wait(Some(left)).applied_index_at_least(Some(at.0), "publish delivered").await;
        self.now().deliveries.localize(cmd, reply, at)
    }

    /// Puts `cmd` in the group-commit queue (after the writes queued before it); its answer comes
    /// on the receiver. A command the log cannot carry is answered at once.
    async fn enqueue(&self, cmd: Command, deadline: Instant) -> Queued {
        let size = match self.frame(&cmd) {
            // The command's frame, and its share of a group entry's envelope.
            Ok(frame) => frame.len() + 16,
            Err(e) => return Queued::Done(Ok(failed(e))),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        let queued = tokio::time::timeout(left, self.now().queue.send(Pending { cmd, size, tx })).await;
        if !matches!(queued, Ok(Ok(()))) {
            // Not queued: nothing was proposed.
            return Queued::Done(Err(Retry));
        }
        Queued::Waiting(rx)
    }

    /// The leader's side of a batch of forwarded writes: proposes them, in order, if this node
    /// still leads; one answer per command.
    pub async fn write_as_leader(&self, cmds: Vec<Command>) -> Vec<Response> {
        let deadline = Instant::now() + self.request_timeout;
        // Queued one after the other first (so that they keep their order in the log), then
        // awaited together.
        let mut queued = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            queued.push(self.enqueue(cmd, deadline).await);
        }
        let not_leader =
            || failed(Error::Unavailable(format!("{NO_LEADER} (node {} is not the leader)", self.node_id())));
        let mut answers = Vec::with_capacity(queued.len());
        for q in queued {
            let outcome = match q {
                Queued::Waiting(rx) => settle(rx, deadline).await,
                Queued::Done(outcome) => outcome,
            };
            answers.push(outcome.unwrap_or_else(|Retry| not_leader()));
        }
        answers
    }

    /// `cmd` as a binary TCP request frame (id 0): what a group entry and a forwarded batch
    /// carry. A command the log could not carry (or read back) is refused before it is proposed
    /// or forwarded.
    fn frame(&self, cmd: &Command) -> Result<BytesMut, Error> {
        let mut frame = BytesMut::new();
        wire::encode_request(0, &WireRequest::Command(cmd.clone()), &mut frame)?;
        // With its share of a group entry's envelope.
        if frame.len() + 16 > self.max_entry {
            return Err(Error::InvalidArgument(format!(
                "the command encodes to {} bytes; a cluster's log takes at most {}",
                frame.len() + 16,
                self.max_entry
            )));
        }
        Ok(frame)
    }

    /// Makes a read linearizable (unless `--read-consistency stale`): the leader confirms its
    /// leadership and waits until it applied its read index; a follower asks the leader for that
    /// index and waits until it applied it itself.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        if self.config.read_consistency == ReadConsistency::Stale {
            return Ok(());
        }
        if self.leader().is_none() && self.ready_alone() {
            // Serving alone, never written: the (empty) local state is the whole state.
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout;
        let unavailable = || Error::Unavailable(NO_LEADER.into());
        loop {
            if let Some(index) = self.shared_read_index(deadline).await {
                let left = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft()
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map(|_| ())
                    .map_err(|_| unavailable());
            }
            if Instant::now() >= deadline {
                return Err(unavailable());
            }
            pause(deadline).await;
        }
    }

    /// A read index confirmed after now, from the next shared round (see [`read_index`]);
    /// `None` when that round found no leader or the deadline passed first.
    async fn shared_read_index(&self, deadline: Instant) -> Option<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        let reads = self.now().reads.clone();
        if !matches!(tokio::time::timeout(left, reads.send(tx)).await, Ok(Ok(()))) {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, rx).await.ok().and_then(Result::ok).flatten()
    }

    /// The leader's read index: the last index committed once its leadership is confirmed by a
    /// quorum.
    pub async fn read_index(&self) -> Result<u64, Error> {
        match self.raft().get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(Error::Unavailable(format!("{NO_LEADER} (node {} is not the leader)", self.node_id())))
            }
            Err(e) => Err(Error::Unavailable(format!("{NO_LEADER} ({e})"))),
        }
    }

    /// The leader proposes deletes for keys whose deadline passed (followers only hide them).
    async fn sweep(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.leader().map(|(id, _)| id) != Some(self.node_id()) {
                continue;
            }
            let now = self.engine.clock().now_ms();
            let keys = self.engine.due_keys(now, EXPIRE_BATCH);
            if keys.is_empty() {
                continue;
            }
            let request = Request { now_ms: now, op: Op::Expire(keys) };
            if let Err(e) = self.raft().client_write(request).await {
                tracing::debug!(error = %e, "raft: expiry proposal not committed; retried next tick");
            }
        }
    }

    /// This node's client addresses.
    pub fn client_addrs(&self) -> &ClientAddrs {
        &self.addrs
    }

    /// What this node answers `INFO` on its Raft port.
    pub fn info(&self) -> NodeInfo {
        let stored = self.identity.get();
        NodeInfo { addrs: self.addrs.clone(), node_id: self.node_id(), cluster_id: stored.cluster_id }
    }

    /// This node's cluster id (see [`identity`]), `None` while it belongs to no cluster.
    pub fn cluster_id(&self) -> Option<String> {
        self.identity.get().cluster_id
    }

    /// Takes the cluster id of the first accepted call from a member (a founder that did not
    /// initialize, a node added as a learner, a data dir older than cluster ids).
    fn adopt_cluster_id(&self, id: ClusterId, from: NodeId) -> std::io::Result<()> {
        if self.identity.adopt(id)? {
            info!(
                cluster_id = identity::to_hex(id),
                from, "raft: this node now belongs to the cluster of node {from}"
            );
        }
        Ok(())
    }

    /// Whether `from` may call this node's Raft port: a member, or one of `--cluster-peers`; on
    /// a node that belongs to no cluster yet (no membership: it waits to be added as a learner),
    /// anyone, since the leader adding it is not known to it before its first call.
    fn knows(&self, from: NodeId) -> bool {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        self.config.peers.iter().any(|(id, _)| *id == from)
            || membership.get_node(&from).is_some()
            || membership.nodes().next().is_none()
    }
}

/// This node's identity from its data dir: a data dir that belongs to another node id refuses to
/// start (unless the cluster assigned the id: `REPLICAOF`), since two processes as one node id
/// could split a quorum. A new data dir's identity is written at once, so that the next start is
/// checked against it.
fn own_identity(dir: &Path, config: &ClusterConfig) -> Result<Identity, ClusterError> {
    let (identity, existed) = Identity::open(dir, config.node_id).map_err(ClusterError)?;
    let stored = identity.get();
    if existed && stored.node_id != config.node_id && !stored.assigned {
        return Err(ClusterError(format!(
            "the data dir {} belongs to node {} (cluster {}), but --node-id is {}: start node {} on it, or give \
             this node an empty --data-dir",
            dir.parent().unwrap_or(dir).display(),
            stored.node_id,
            stored.cluster_id.as_deref().unwrap_or("not yet known"),
            config.node_id,
            stored.node_id
        )));
    }
    if !existed {
        identity.set(stored).map_err(|e| ClusterError(format!("{}: {e}", dir.display())))?;
    }
    Ok(identity)
}

/// How long the start-up check waits for `--cluster-peers` to tell their cluster ids.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

/// A node whose data dir belongs to a cluster refuses to start when a reachable peer of
/// `--cluster-peers` belongs to another one: its data dir, or the peer list, is wrong. Peers not
/// up yet, or with no cluster id yet (a new cluster being formed), say nothing; the Raft port's
/// check (every call carries the cluster id) covers what this misses.
async fn check_peers_cluster(config: &ClusterConfig, identity: &Arc<Identity>) -> Result<(), ClusterError> {
    let ours = identity.cluster();
    if ours == 0 {
        return Ok(());
    }
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in config.peers.iter().filter(|(id, _)| *id != config.node_id).cloned() {
        let peer = network::Peer::new(addr.clone(), config.node_id, identity.clone());
        asks.spawn(async move {
            let answer =
                tokio::time::timeout(PEER_CHECK_TIMEOUT, peer.call(kind::INFO, &[], PEER_CHECK_TIMEOUT))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|body| serde_json::from_slice::<NodeInfo>(&body).ok());
            (id, addr, answer)
        });
    }
    while let Some(asked) = asks.join_next().await {
        let Ok((id, addr, Some(info))) = asked else { continue };
        let Some(theirs) = info.cluster_id.as_deref().and_then(identity::from_hex) else { continue };
        if theirs != ours {
            return Err(ClusterError(format!(
                "this node's data dir belongs to cluster {}, but peer {id} at {addr} (--cluster-peers) belongs to \
                 cluster {}: the data dir is another cluster's, or --cluster-peers is wrong; give this node an empty \
                 --data-dir to join that cluster as a new node",
                identity::to_hex(ours),
                identity::to_hex(theirs)
            )));
        }
    }
    Ok(())
}

/// Waits a little (an election takes a fraction of the election timeout) before looking for the
/// leader again, never past `deadline`.
async fn pause(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(left.min(Duration::from_millis(20))).await;
}

/// A write that failed before or without applying.
fn failed(e: Error) -> Response {
    Response { result: Err(e), created: false, each: Vec::new(), delivered: None, index: 0 }
}

/// A write handed to the group commit: waiting for its answer, or answered already.
enum Queued {
    Waiting(tokio::sync::oneshot::Receiver<Result<Response, Retry>>),
    Done(Result<Response, Retry>),
}

/// Waits for a queued write's answer until `deadline`.
async fn settle(
    rx: tokio::sync::oneshot::Receiver<Result<Response, Retry>>,
    deadline: Instant,
) -> Result<Response, Retry> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(outcome)) => outcome,
        // Proposed (or about to be), but not known to be committed in time (a leader change):
        // indeterminate.
        _ => Ok(failed(Error::Unavailable(format!(
            "{NO_LEADER} (the write was proposed but not confirmed in time; it may or may not have applied)"
        )))),
    }
}

/// Writes a follower forwards to the leader, waiting for their batch: one connection's run (see
/// [`pipeline`]), which stays whole inside one `FORWARD` call so that the leader queues it in
/// order.
struct Forwarded {
    /// The leader's Raft address when the writes were forwarded.
    addr: String,
    /// The commands as binary TCP request frames (id 0), one after the other.
    frames: Bytes,
    /// One per command, in order.
    txs: Vec<tokio::sync::oneshot::Sender<Result<Response, Retry>>>,
}

/// A follower's forwarding, batched as the leader's group commit is: the writes that arrive while
/// [`MAX_FORWARDS_IN_FLIGHT`] batches are on their way to the leader go as one `FORWARD` call
/// (see [`network::kind::FORWARD`]), so that a follower's clients share round trips and pooled
/// connections instead of taking one of each per write. The leader queues a batch's writes in
/// order into its own group commit and answers them together; each client here still gets its
/// own answer.
async fn forward_batches(
    peers: Peers,
    mut queue: tokio::sync::mpsc::Receiver<Forwarded>,
    max_batch: usize,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS_IN_FLIGHT));
    let mut carry: Option<Forwarded> = None;
    loop {
        let first = match carry.take() {
            Some(f) => f,
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                f = queue.recv() => match f { Some(f) => f, None => return },
            },
        };
        // Waiting for a place lets the queue fill: that is where batches come from.
        let Ok(place) = in_flight.clone().acquire_owned().await else { return };
        let mut bytes = first.frames.len();
        let mut n = first.txs.len();
        let mut batch = vec![first];
        while n < MAX_GROUP {
            let Ok(next) = queue.try_recv() else { break };
            // One leader per batch (a write queued before a leader change goes on its own), and
            // at most an entry's worth of bytes.
            if next.addr != batch[0].addr || bytes + next.frames.len() > max_batch {
                carry = Some(next);
                break;
            }
            bytes += next.frames.len();
            n += next.txs.len();
            batch.push(next);
        }
        let peer = peers.get(&batch[0].addr);
        tokio::spawn(async move {
            let _place = place;
            let mut body = BytesMut::with_capacity(4 + bytes);
            body.put_u32(n as u32);
            for f in &batch {
                body.put_slice(&f.frames);
            }
            let answers: Vec<Result<Response, Retry>> = match peer.call(kind::FORWARD, &body, timeout).await {
                Ok(answer) => match network::decode_forward_answers(answer, n) {
                    Ok(responses) => responses
                        .into_iter()
                        .map(|r| match r {
                            Response { result: Err(Error::Unavailable(m)), .. }
                                if m.contains("is not the leader") =>
                            {
                                Err(Retry)
                            }
                            r => Ok(r),
                        })
                        .collect(),
                    Err(e) => {
                        warn!(error = %e, "raft: the leader's answer to forwarded writes is malformed");
                        (0..n).map(|_| Ok(failed(e.clone()))).collect()
                    }
                },
                // Nothing was sent: look for the leader again.
                Err(CallError::Unreachable(..)) => (0..n).map(|_| Err(Retry)).collect(),
                Err(e) => {
                    warn!(error = %e, writes = n, "raft: forwarded writes' outcome is unknown");
                    (0..n)
                        .map(|_| {
                            Ok(failed(Error::Unavailable(format!(
                                "the leader did not answer: {e}; the write may or may not have applied"
                            ))))
                        })
                        .collect()
                }
            };
            for (tx, answer) in batch.into_iter().flat_map(|f| f.txs).zip(answers) {
                // The client may have given up (its deadline): nothing to tell.
                let _ = tx.send(answer);
            }
        });
    }
}

/// A write waiting in the leader's group-commit queue.
struct Pending {
    cmd: Command,
    /// Its encoded size (the group's budget is the largest entry).
    size: usize,
    tx: tokio::sync::oneshot::Sender<Result<Response, Retry>>,
}

/// The leader's group commit. openraft 0.9's core appends (and so fsyncs) every
/// `client_write` on its own before it looks at the next one, so 50 clients writing one key
/// each meant 50 entries, 50 fsyncs on every node and 50 replication rounds. Here, the writes that
/// arrive while [`MAX_GROUPS_IN_FLIGHT`] groups are already in flight wait in the queue and go
/// as one [`Op::Commands`] entry (at most [`MAX_GROUP`] commands and the largest entry's size):
/// one fsync per node and one AppendEntries for the whole group, each command still applied on
/// its own, in order, with its own answer. A lone write goes at once, as before. Groups are
/// handed to Raft in queue order, so writes queued in order (a connection's pipelined run, a
/// forwarded batch) are logged in that order.
async fn group_commit(
    raft: Raft<TypeConfig>,
    engine: Arc<Engine>,
    mut queue: tokio::sync::mpsc::Receiver<Pending>,
    max_entry: usize,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_GROUPS_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                p = queue.recv() => match p { Some(p) => p, None => return },
            },
        };
        // Waiting for a place lets the queue fill: that is where groups come from.
        let Ok(place) = in_flight.clone().acquire_owned().await else { return };
        let mut bytes = first.size;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            let Ok(next) = queue.try_recv() else { break };
            if bytes + next.size > max_entry {
                carry = Some(next);
                break;
            }
            bytes += next.size;
            group.push(next);
        }
        let now = engine.clock().now_ms();
        let (cmds, txs): (Vec<Command>, Vec<_>) =
            group.into_iter().map(|p| (absolute(p.cmd, now), p.tx)).unzip();
        let n = cmds.len();
        let op = if n == 1 {
            Op::Command(cmds.into_iter().next().unwrap_or_else(ping))
        } else {
            Op::Commands(cmds)
        };
        // Handed to Raft here, in queue order, and awaited in a task of its own: a connection's
        // pipelined writes queued in order reach the log in order even when they span groups
        // (tasks calling `client_write` could reach Raft in either order).
        let proposed = raft.client_write_ff(Request { now_ms: now, op }).await;
        tokio::spawn(async move {
            let _place = place;
            let written = match proposed {
                Ok(rx) => match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(written)) => written.map_err(RaftError::APIError),
                    // Raft stopped before it answered.
                    Ok(Err(_)) => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
                    // Its clients have given up by now; the place is free for the next group.
                    Err(_) => return,
                },
                Err(fatal) => Err(RaftError::Fatal(fatal)),
            };
            let answers: Vec<Result<Response, Retry>> = match written {
                Ok(resp) if n == 1 => vec![Ok(resp.data)],
                Ok(resp) if resp.data.each.len() == n => resp.data.each.into_iter().map(Ok).collect(),
                Ok(resp) => {
                    warn!(
                        sent = n,
                        answered = resp.data.each.len(),
                        "raft: a group's answers do not match its commands"
                    );
                    (0..n)
                        .map(|_| {
                            Ok(failed(Error::Unavailable(
                                "a grouped write's answer is missing; it may or may not have applied".into(),
                            )))
                        })
                        .collect()
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    (0..n).map(|_| Err(Retry)).collect()
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    (0..n).map(|_| Ok(failed(Error::InvalidArgument(e.to_string())))).collect()
                }
                Err(RaftError::Fatal(e)) => {
                    warn!(error = %e, "raft: write refused: the node is stopping");
                    (0..n).map(|_| Ok(failed(Error::Unavailable(NO_LEADER.into())))).collect()
                }
            };
            for (tx, answer) in txs.into_iter().zip(answers) {
                // The client may have given up (its deadline): nothing to tell.
                let _ = tx.send(answer);
            }
        });
    }
}

fn ping() -> Command {
    Command::Ping(nanodb_protocol::cmd::Ping {})
}

/// Nothing was proposed: look for the leader again.
#[derive(Debug)]
struct Retry;

/// `cmd` with every relative TTL made absolute as of `now`, so that every node applies the same
/// deadline.
pub fn absolute(cmd: Command, now: u64) -> Command {
    let fix = |e: Expiry| match e {
        Expiry::In(ms) => Expiry::At(now.saturating_add(ms)),
        other => other,
    };
    match cmd {
        Command::Put(mut c) => {
            c.expiry = fix(c.expiry);
            Command::Put(c)
        }
        Command::GetSet(mut c) => {
            c.expiry = fix(c.expiry);
            Command::GetSet(c)
        }
        Command::GetEx(mut c) => {
            c.expiry = fix(c.expiry);
            Command::GetEx(c)
        }
        Command::Expire(mut c) => {
            c.expiry = fix(c.expiry);
            Command::Expire(c)
        }
        Command::Batch(mut c) => {
            c.ops = c.ops.into_iter().map(|op| absolute(op, now)).collect();
            Command::Batch(c)
        }
        Command::Txn(mut c) => {
            c.success = c.success.into_iter().map(|op| absolute(op, now)).collect();
            c.failure = c.failure.into_iter().map(|op| absolute(op, now)).collect();
            Command::Txn(c)
        }
        other => other,
    }
}

/// Serves the Raft port until shutdown.
async fn serve(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_RAFT_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "raft port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            warn!(%peer, max = MAX_RAFT_CONNECTIONS, "raft port: connection refused, too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _place = place;
            tokio::select! {
                () = shutdown.cancelled() => {}
                r = connection(stream, &cluster) => {
                    if let Err(e) = r {
                        warn!(%peer, error = %e, "raft port: connection closed");
                    }
                }
            }
        });
    }
}

/// One connection of the Raft port: calls one after the other.
async fn connection(mut stream: TcpStream, cluster: &Cluster) -> Result<(), String> {
    while let Some(call) = network::read_request(&mut stream).await.map_err(|e| e.to_string())? {
        let network::Call { kind: k, from, cluster: theirs, body } = call;
        if k == kind::INFO {
            // Anyone may ask (the start-up check asks before it is known to be a member).
            stream.write_all(&json_answer(&cluster.info())).await.map_err(|e| e.to_string())?;
            continue;
        }
        if k == kind::JOIN {
            // From a node of no cluster of ours yet, by definition (`REPLICAOF`).
            match cluster.serve_join(&body).await {
                Ok(result) => stream.write_all(&json_answer(&result)).await.map_err(|e| e.to_string())?,
                Err(e) => return refuse(&mut stream, from, k, e).await,
            }
            continue;
        }
        if cluster.joining.load(Ordering::Acquire) {
            let _ = stream
                .write_all(&network::answer_frame(
                    network::FAILED,
                    b"this node is switching clusters (REPLICAOF)",
                ))
                .await;
            tracing::debug!(from, kind = k, "raft port: refused a call while switching clusters");
            return Ok(());
        }
        let ours = cluster.identity.cluster();
        if theirs != 0 && ours != 0 && theirs != ours {
            // A misplaced node calls at its heartbeat rate: said once per node every 10 s.
            if identity::first_in_a_while(from, theirs) {
                warn!(
                    from,
                    kind = k,
                    their_cluster_id = identity::to_hex(theirs),
                    our_cluster_id = identity::to_hex(ours),
                    "raft port: refused a call from node {from}: it belongs to another cluster (its data dir is \
                     not this cluster's)"
                );
            }
            let why = format!(
                "cluster id mismatch: this node belongs to cluster {}, the caller to {}",
                identity::to_hex(ours),
                identity::to_hex(theirs)
            );
            let _ = stream.write_all(&network::answer_frame(network::FAILED, why.as_bytes())).await;
            return Ok(());
        }
        if cluster.is_retired(from) {
            warn!(
                from,
                kind = k,
                "raft port: refused a call from node {from}: it was removed from the cluster"
            );
            let _ = stream
                .write_all(&network::answer_frame(network::FAILED, b"this node was removed from the cluster"))
                .await;
            return Err(format!("node {from} was removed from the cluster"));
        }
        if !cluster.knows(from) {
            warn!(from, kind = k, "raft port: refused a call from a node that is not a member");
            let _ = stream.write_all(&network::answer_frame(network::FAILED, b"unknown node id")).await;
            return Err(format!("unknown node id {from}"));
        }
        if ours == 0 && theirs != 0 && matches!(k, kind::APPEND | kind::VOTE | kind::SNAPSHOT) {
            cluster.adopt_cluster_id(theirs, from).map_err(|e| e.to_string())?;
        }
        let answer = match k {
            kind::APPEND => match network::decode_append(body) {
                Ok(rpc) => json_answer(&cluster.raft().append_entries(rpc).await),
                Err(e) => return refuse(&mut stream, from, k, e).await,
            },
            kind::VOTE => match serde_json::from_slice(&body) {
                Ok(rpc) => json_answer(&cluster.raft().vote(rpc).await),
                Err(e) => return refuse(&mut stream, from, k, e.to_string()).await,
            },
            kind::SNAPSHOT => match receive_snapshot(&mut stream, cluster, body).await {
                Ok(answer) => answer,
                Err(e) => return refuse(&mut stream, from, k, e).await,
            },
            kind::FORWARD => match network::decode_forwarded(body) {
                Ok(cmds) => {
                    let responses = cluster.write_as_leader(cmds).await;
                    network::answer_frame(network::OK, &network::encode_forward_answers(&responses))
                }
                Err(e) => return refuse(&mut stream, from, k, e.to_string()).await,
            },
            kind::MATCHED => match <[u8; 8]>::try_from(&body[..]) {
                Ok(index) if cluster.leader().map(|(id, _)| id) == Some(cluster.node_id()) => {
                    let n = cluster.matched_at(u64::from_be_bytes(index)) as u32;
                    network::answer_frame(network::OK, &n.to_be_bytes())
                }
                Ok(_) => network::answer_frame(network::FAILED, b"not the leader"),
                Err(e) => return refuse(&mut stream, from, k, e).await,
            },
            kind::READ_INDEX => match cluster.read_index().await {
                Ok(index) => network::answer_frame(network::OK, &index.to_be_bytes()),
                Err(e) => network::answer_frame(network::FAILED, e.to_string().as_bytes()),
            },
            membership::MEMBERS => match cluster.serve_change(&body).await {
                Ok(answer) => answer,
                Err(e) => return refuse(&mut stream, from, k, e).await,
            },
            other => return refuse(&mut stream, from, other, format!("unknown call kind {other}")).await,
        };
        stream.write_all(&answer).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Logs and answers a malformed call, then closes the connection.
async fn refuse(stream: &mut TcpStream, from: NodeId, k: u8, why: impl ToString) -> Result<(), String> {
    let why = why.to_string();
    warn!(from, kind = k, reason = %why, "raft port: refused a malformed call");
    let _ = stream.write_all(&network::answer_frame(network::FAILED, why.as_bytes())).await;
    Err(why)
}

fn json_answer<T: Serialize>(value: &T) -> BytesMut {
    match serde_json::to_vec(value) {
        Ok(json) => network::answer_frame(network::OK, &json),
        Err(e) => network::answer_frame(network::FAILED, e.to_string().as_bytes()),
    }
}

/// Receives a streamed snapshot into the state machine's directory (bounded: at most the
/// announced length is written, one chunk in memory at a time) and installs it.
async fn receive_snapshot(
    stream: &mut TcpStream,
    cluster: &Cluster,
    header: Bytes,
) -> Result<BytesMut, String> {
    use tokio::io::AsyncWriteExt as _;
    let header: network::SnapshotHeader = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let me = cluster.now();
    let path = me.sm.incoming_path(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
    let mut received = 0u64;
    let result: Result<(), String> = async {
        loop {
            let Some(network::Call { kind: k, body, .. }) =
                network::read_request(stream).await.map_err(|e| e.to_string())?
            else {
                return Err("snapshot cut off mid-stream".into());
            };
            match k {
                kind::SNAPSHOT_CHUNK => {
                    received += body.len() as u64;
                    if received > header.len {
                        return Err(format!("snapshot longer than its announced {} bytes", header.len));
                    }
                    file.write_all(&body).await.map_err(|e| e.to_string())?;
                }
                kind::SNAPSHOT_END if received == header.len => return Ok(()),
                kind::SNAPSHOT_END => {
                    return Err(format!("snapshot of {received} bytes, {} announced", header.len));
                }
                other => return Err(format!("unexpected call kind {other} inside a snapshot")),
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    drop(file);
    let snapshot = openraft::Snapshot {
        meta: header.meta,
        snapshot: Box::new(SnapshotFile {
            path,
            versions: header.versions,
            last_now: header.last_now,
            retired: header.retired,
        }),
    };
    let result = me.raft.install_full_snapshot(header.vote, snapshot).await;
    if result.is_ok() {
        cluster.counters.snapshot_installed();
    }
    Ok(json_answer(&result))
}
