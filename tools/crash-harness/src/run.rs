//! One harness run: clients on every node write and read under load while the nemesis kills
//! (`kill -9`) the leader or a random node and restarts it from its data dir; then, once the nodes
//! agree, the final state of every node is read and checked.
//!
//! Two kinds of writes, values unique per write (`writer:seq`):
//! - *inserts* of a fresh key each (`<run>:u:<writer>:<seq>`): after the run every acknowledged
//!   insert must be on every node with its value, and every key found must have been sent;
//! - *register* writes and reads on a few shared keys (`<run>:r:<k>`): each key's history, with
//!   every node's final value as a last read, must be linearizable ([`crate::linearizable`]).
//!
//! With `groups` (the default), clients also write multi-key groups, tagged MSETs and transfers
//! between accounts, and read them together; see [`crate::groups`] for what is checked, during
//! the run, after every restart and at the end.
//!
//! A write whose reply did not arrive, timed out or was an error is indeterminate (a forwarded
//! write refused as "unavailable" may still commit); a failed read is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{RespClient, RespReply, TcpClient};
use crate::groups::{self, GroupOp, Outcome, TransferOp};
use crate::linearizable::{self, Entry, Op, Verdict};
use crate::nodes::Node;
use crate::partition::{Clock, Cuts, Partitions};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the clients run.
    pub duration: Duration,
    /// Kills (each followed by a restart) spread evenly over the run.
    pub kills: u32,
    /// Client connections per node, alternating binary TCP and RESP.
    pub clients_per_node: usize,
    /// Shared register keys.
    pub registers: u32,
    /// Per-request timeout.
    pub op_timeout: Duration,
    /// Seed for every random choice.
    pub seed: u64,
    /// Search steps per key before the checker gives up (which fails the run).
    pub check_budget: u64,
    /// How long a node may take to come back (and, in cluster mode, the nodes to converge).
    pub ready_timeout: Duration,
    /// Run the group workload too: tagged MSETs and transfers ([`crate::groups`]).
    pub groups: bool,
    /// Accounts the transfers move money between (at least 2).
    pub accounts: u32,
    /// Reads see every write acknowledged before they start (false with
    /// `--read-consistency stale`): a read may then require an acknowledged group to be there.
    pub linearizable_reads: bool,
}

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Resp,
}

#[derive(Debug)]
enum Conn {
    Tcp(TcpClient),
    Resp(RespClient),
}

impl Conn {
    async fn open(proto: Proto, node: &NodeAddrs, limit: Duration) -> anyhow::Result<Self> {
        Ok(match proto {
            Proto::Tcp => Self::Tcp(TcpClient::connect(&node.tcp, limit).await?),
            Proto::Resp => Self::Resp(RespClient::connect(&node.resp, limit).await?),
        })
    }
    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Self::Tcp(c) => c.put(key, value).await,
            Self::Resp(c) => c.set(key, value).await,
        }
    }
    async fn get(&mut self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self {
            Self::Tcp(c) => c.get(key).await,
            Self::Resp(c) => c.get(key).await,
        }
    }

    /// Writes group `n` of `writer` as one MSET.
    async fn mset(&mut self, run: &str, writer: u32, n: u32) -> anyhow::Result<()> {
        match self {
            Self::Tcp(c) => groups::mset_tcp(c, run, writer, n).await,
            Self::Resp(c) => {
                let args = groups::mset_args(run, writer, n);
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                match c.call(&args).await? {
                    RespReply::Simple(s) if s == "OK" => Ok(()),
                    other => bail!("MSET answered {other:?}"),
                }
            }
        }
    }

    /// Reads `keys` together: a transaction of gets, or MGET (atomic in NanoDB).
    async fn read_together(&mut self, keys: &[String]) -> anyhow::Result<Vec<Option<Bytes>>> {
        match self {
            Self::Tcp(c) => c.read_together(keys).await,
            Self::Resp(c) => {
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(|k| k.as_bytes()));
                match c.call(&args).await? {
                    RespReply::Array(Some(items)) if items.len() == keys.len() => items
                        .into_iter()
                        .map(|i| match i {
                            RespReply::Bulk(v) => Ok(v),
                            other => bail!("MGET item {other:?}"),
                        })
                        .collect(),
                    other => bail!("MGET answered {other:?}"),
                }
            }
        }
    }

    /// One transfer (`Ok(None)`: skipped, nothing sent).
    async fn transfer(
        &mut self,
        run: &str,
        writer: u32,
        n: u32,
        mv: groups::Move,
    ) -> anyhow::Result<Option<Outcome>> {
        match self {
            Self::Tcp(c) => groups::transfer_tcp(c, run, writer, n, mv).await,
            Self::Resp(c) => groups::transfer_resp(c, run, writer, n, mv).await,
        }
    }
}

/// A node's client addresses (copied out so clients need no access to the processes).
#[derive(Debug, Clone)]
struct NodeAddrs {
    tcp: String,
    resp: String,
}

/// The value written by `writer`'s `seq`-th write (seq from 1, so never id 0).
pub fn value_of(writer: u32, seq: u32) -> String {
    format!("{writer}:{seq}")
}

/// The id of a written value ([`value_of`]), `None` if it is not one.
pub fn id_of(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let (w, q) = s.split_once(':')?;
    let (w, q): (u32, u32) = (w.parse().ok()?, q.parse().ok()?);
    (q > 0).then_some((u64::from(w) << 32) | u64::from(q))
}

/// One recorded operation.
#[derive(Debug, Clone)]
struct Record {
    key: String,
    /// The register index, or `None` for an insert.
    register: Option<u32>,
    write: bool,
    /// The written value id; for reads what was seen (`Ok(0)` absent, `Err` not a sent value's form).
    value: Result<u64, String>,
    call: u64,
    ret: Option<u64>,
}

/// What one client did.
#[derive(Debug, Default)]
struct ClientLog {
    records: Vec<Record>,
    errors: BTreeMap<String, u64>,
    /// Tagged MSETs sent.
    groups: Vec<GroupOp>,
    /// Transfers sent.
    transfers: Vec<TransferOp>,
    /// Atomic reads that saw part of a group or a sum not conserved.
    violations: Vec<String>,
    /// Atomic reads made (of a group, of every account).
    group_reads: u64,
}

/// Shortens an error to a countable kind: no addresses (a refused connect counts once, whichever
/// node), no OS error numbers, at most 80 characters.
fn error_kind(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let s = match s.strip_prefix("connect to ") {
        Some(rest) => format!("connect: {}", rest.split_once(": ").map_or(rest, |(_, why)| why)),
        None => s,
    };
    let s = s.split(" (os error").next().unwrap_or(&s);
    s.chars().take(80).collect()
}

struct Shared {
    start: Instant,
    run: String,
    opts: Options,
    /// Whether this is a cluster (which refuses MULTI: RESP clients make no transfers there).
    cluster: bool,
    /// Acknowledged groups and transfers with when their ack arrived, for the nemesis's check
    /// of a restarted node.
    acked: Mutex<Vec<(Instant, Acked)>>,
}

/// An acknowledged group write.
#[derive(Debug, Clone, Copy)]
enum Acked {
    /// Tagged MSET (writer, n).
    Group(u32, u32),
    /// Transfer (writer, n).
    Transfer(u32, u32),
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

async fn client(
    shared: Arc<Shared>,
    writer: u32,
    proto: Proto,
    node: NodeAddrs,
    deadline: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut rng = SmallRng::seed_from_u64(shared.opts.seed ^ (u64::from(writer) << 17));
    let mut conn: Option<Conn> = None;
    let mut seq = 0u32;
    let limit = shared.opts.op_timeout;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(proto, &node, limit).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    *log.errors.entry(error_kind(&e)).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let roll = rng.random_range(0..100);
        if shared.opts.groups && roll >= 60 {
            if let Err(e) = group_step(&shared, &mut log, c, writer, proto, &mut rng, roll).await {
                *log.errors.entry(error_kind(&e)).or_default() += 1;
                conn = None;
            }
            continue;
        }
        // Without groups the whole range is single-key work; with them, 0..60 is.
        let roll = if shared.opts.groups { roll * 100 / 60 } else { roll };
        let register = rng.random_range(0..shared.opts.registers);
        let (key, reg, write) = match roll {
            0..35 => (format!("{}:u:{writer}:{}", shared.run, seq + 1), None, true),
            35..70 => (format!("{}:r:{register}", shared.run), Some(register), true),
            _ => (format!("{}:r:{register}", shared.run), Some(register), false),
        };
        let call = shared.now();
        let (value, ok) = if write {
            seq += 1;
            let v = value_of(writer, seq);
            let res = c.put(&key, &v).await;
            let id = id_of(v.as_bytes()).unwrap_or(0);
            match res {
                Ok(()) => (Ok(id), true),
                Err(e) => {
                    *log.errors.entry(error_kind(&e)).or_default() += 1;
                    (Ok(id), false)
                }
            }
        } else {
            match c.get(&key).await {
                Ok(None) => (Ok(0), true),
                Ok(Some(b)) => (id_of(&b).ok_or_else(|| String::from_utf8_lossy(&b).into_owned()), true),
                Err(e) => {
                    *log.errors.entry(error_kind(&e)).or_default() += 1;
                    conn = None;
                    continue;
                }
            }
        };
        let ret = ok.then(|| shared.now());
        if !ok {
            conn = None;
        }
        log.records.push(Record { key, register: reg, write, value, call, ret });
    }
    log
}

/// One step of the group workload (`roll` in 60..100): a tagged MSET, a transfer, or an atomic
/// read of one of this writer's groups or of every account. An `Err` leaves a write's outcome
/// unknown (already recorded) and drops the connection.
async fn group_step(
    shared: &Shared,
    log: &mut ClientLog,
    c: &mut Conn,
    writer: u32,
    proto: Proto,
    rng: &mut SmallRng,
    roll: u32,
) -> anyhow::Result<()> {
    let run = shared.run.as_str();
    // A cluster refuses MULTI, so a RESP client there makes MSETs instead of transfers.
    let transfers_here = proto == Proto::Tcp || !shared.cluster;
    match roll {
        60..75 => mset_step(shared, log, c, writer).await,
        75..87 if transfers_here => {
            let n = (log.transfers.len() + 1) as u32;
            let mv = groups::pick(rng, shared.opts.accounts);
            // Recorded before it is sent: a failure leaves it unknown.
            log.transfers.push(TransferOp { writer, n, mv, outcome: Outcome::Unknown });
            let outcome = c.transfer(run, writer, n, mv).await?;
            match outcome {
                None => {
                    log.transfers.pop();
                }
                Some(o) => {
                    if let Some(t) = log.transfers.last_mut() {
                        t.outcome = o;
                    }
                    if o == Outcome::Applied {
                        acked(shared, Acked::Transfer(writer, n));
                    }
                }
            }
            Ok(())
        }
        75..87 => mset_step(shared, log, c, writer).await,
        87..90 => {
            // Another writer's group that may be in flight right now: the one after the latest
            // acknowledged group (a reader landing inside a write must still see all or none).
            let latest = shared.acked.lock().unwrap_or_else(PoisonError::into_inner).iter().rev().find_map(
                |(_, a)| match a {
                    Acked::Group(w, n) => Some((*w, *n)),
                    Acked::Transfer(..) => None,
                },
            );
            let Some((w, n)) = latest else { return Ok(()) };
            let seen = c.read_together(&groups::group_keys(run, w, n + 1)).await?;
            log.group_reads += 1;
            if let Some(v) = groups::group_violation(&seen, &groups::tag(w, n + 1)) {
                log.violations.push(format!("an atomic read saw {v}"));
            }
            Ok(())
        }
        90..94 if !log.groups.is_empty() => {
            let g = log.groups[rng.random_range(0..log.groups.len())].clone();
            let seen = c.read_together(&groups::group_keys(run, writer, g.n)).await?;
            log.group_reads += 1;
            let t = groups::tag(writer, g.n);
            if let Some(v) = groups::group_violation(&seen, &t) {
                log.violations.push(format!("an atomic read saw {v}"));
            } else if g.outcome == Outcome::Applied && shared.opts.linearizable_reads && seen[0].is_none() {
                log.violations.push(format!("a read after its acknowledgement found no group {t}"));
            }
            Ok(())
        }
        _ => {
            let seen = c.read_together(&groups::account_keys(run, shared.opts.accounts)).await?;
            log.group_reads += 1;
            let total = groups::BALANCE * i64::from(shared.opts.accounts);
            match groups::sum_of(&seen) {
                Ok(sum) if sum == total => {}
                Ok(sum) => log
                    .violations
                    .push(format!("an atomic read of the accounts summed to {sum}, not {total}")),
                Err(e) => log.violations.push(format!("an atomic read of the accounts: {e:#}")),
            }
            Ok(())
        }
    }
}

async fn mset_step(shared: &Shared, log: &mut ClientLog, c: &mut Conn, writer: u32) -> anyhow::Result<()> {
    let n = (log.groups.len() + 1) as u32;
    log.groups.push(GroupOp { writer, n, outcome: Outcome::Unknown });
    c.mset(&shared.run, writer, n).await?;
    if let Some(g) = log.groups.last_mut() {
        g.outcome = Outcome::Applied;
    }
    acked(shared, Acked::Group(writer, n));
    Ok(())
}

fn acked(shared: &Shared, what: Acked) {
    shared.acked.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), what));
}

/// Sets every account to its starting balance, as one MSET, before any client starts.
async fn open_accounts(node: &Node, run: &str, opts: &Options) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = groups::account_keys(run, opts.accounts)
        .into_iter()
        .map(|k| (k, groups::BALANCE.to_string()))
        .collect();
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        // Setting the same balances again is harmless, so a failed attempt is simply retried.
        let attempt = async {
            let mut c = TcpClient::connect(&node.tcp_addr(), opts.op_timeout).await?;
            c.multi_put(&pairs).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context("opening the accounts")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Checks a node just restarted from its data dir, while the clients go on: the accounts read
/// together sum to the total; every group a SCAN finds in part is read again together (a SCAN
/// is not atomic) and must be whole or absent; on one node, every group and transfer
/// acknowledged before the kill is there.
async fn check_restarted(
    node: &Node,
    shared: &Shared,
    killed_at: Instant,
    cluster: bool,
) -> anyhow::Result<Vec<String>> {
    let run = shared.run.as_str();
    let limit = shared.opts.ready_timeout;
    let (mut out, mut partial, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    let before: Vec<Acked> = shared
        .acked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(t, _)| *t < killed_at)
        .map(|(_, a)| *a)
        .collect();
    // Only the groups' and the markers' keys: the inserts are many and not this check's.
    let mut state = final_state(node, &format!("{run}:g:"), limit).await?;
    state.extend(final_state(node, &format!("{run}:t:"), limit).await?);
    let mut c = TcpClient::connect(&node.tcp_addr(), shared.opts.op_timeout).await?;
    let seen = c.read_together(&groups::account_keys(run, shared.opts.accounts)).await?;
    let total = groups::BALANCE * i64::from(shared.opts.accounts);
    match groups::sum_of(&seen) {
        Ok(sum) if sum == total => {}
        Ok(sum) => {
            out.push(format!("node {} after restart: the accounts sum to {sum}, not {total}", node.id))
        }
        Err(e) => out.push(format!("node {} after restart: accounts: {e:#}", node.id)),
    }
    for (w, n) in groups::partial_groups(run, &state) {
        let again = c.read_together(&groups::group_keys(run, w, n)).await?;
        if let Some(v) = groups::group_violation(&again, &groups::tag(w, n)) {
            partial.push(v);
        }
    }
    if !cluster {
        // A follower may still be catching up after its restart; the final check covers it.
        for a in before {
            let missing = match a {
                Acked::Group(w, n) => {
                    groups::group_keys(run, w, n).into_iter().find(|k| !state.contains_key(k))
                }
                Acked::Transfer(w, n) => {
                    Some(groups::marker_key(run, w, n)).filter(|k| !state.contains_key(k))
                }
            };
            gone.extend(missing);
        }
    }
    if !partial.is_empty() {
        out.push(format!(
            "node {} after restart: {} partial groups: {}",
            node.id,
            partial.len(),
            sample(&partial)
        ));
    }
    if !gone.is_empty() {
        out.push(format!(
            "node {} after restart: {} keys of groups acknowledged before the kill are gone: {}",
            node.id,
            gone.len(),
            sample(&gone)
        ));
    }
    Ok(out)
}

/// The nemesis's log.
#[derive(Debug, Default)]
struct NemesisLog {
    kills: Vec<String>,
    /// Leader kill to a new leader named by a survivor, per leader kill.
    elections: Vec<Duration>,
    /// What the checks of restarted nodes found.
    violations: Vec<String>,
    /// Restarted nodes checked.
    checked: u32,
    /// How long each check of a restarted node took.
    check_times: Vec<Duration>,
}

async fn leader_of(nodes: &[Node]) -> Option<u64> {
    for n in nodes.iter().filter(|n| n.is_up()) {
        if let Ok(s) = n.status().await
            && let Some(l) = s.leader_id
        {
            return Some(l);
        }
    }
    None
}

async fn nemesis(
    nodes: &mut [Node],
    shared: &Shared,
    cluster: bool,
    deadline: Instant,
) -> anyhow::Result<NemesisLog> {
    let opts = &shared.opts;
    let mut log = NemesisLog::default();
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x6b69_6c6c);
    // Kill i is due at (i + 1) * gap from the start; a cycle that overran (an election, a slow
    // restart) makes the next kill come at once rather than pushing every later one back.
    let gap = opts.duration / (opts.kills + 1);
    let start = tokio::time::Instant::now();
    for i in 0..opts.kills {
        tokio::time::sleep_until(start + gap * (i + 1)).await;
        if Instant::now() >= deadline {
            break;
        }
        let leader = if cluster && i % 2 == 0 { leader_of(nodes).await } else { None };
        let victim = match leader.and_then(|l| nodes.iter().position(|n| n.id == l)) {
            Some(v) => v,
            None => rng.random_range(0..nodes.len()),
        };
        let killed_at = Instant::now();
        nodes[victim].kill()?;
        let what = if leader.is_some() { "leader" } else { "node" };
        log.kills.push(format!("{what} {}", nodes[victim].id));
        if cluster && leader.is_some() {
            let killed = nodes[victim].id;
            loop {
                let new = leader_of(nodes).await;
                if new.is_some_and(|l| l != killed) {
                    log.elections.push(killed_at.elapsed());
                    break;
                }
                if killed_at.elapsed() > opts.ready_timeout {
                    bail!("no new leader {:?} after killing leader {killed}", opts.ready_timeout);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let down = Duration::from_millis(if cluster {
            rng.random_range(300..1500)
        } else {
            rng.random_range(100..500)
        });
        tokio::time::sleep(down.saturating_sub(killed_at.elapsed())).await;
        nodes[victim].start()?;
        nodes[victim].wait_ready(cluster, opts.ready_timeout).await.context("restart after kill -9")?;
        if opts.groups {
            let began = Instant::now();
            let found = check_restarted(&nodes[victim], shared, killed_at, cluster)
                .await
                .context("checking a restarted node")?;
            log.violations.extend(found);
            log.checked += 1;
            log.check_times.push(began.elapsed());
        }
    }
    Ok(log)
}

/// Waits until every node names the same leader and reports the same applied index, twice in a
/// row 200 ms apart (the writes have stopped, so equal and unchanged means caught up). Commit
/// indexes are shown but not compared: a follower learns the leader's only with the next append.
async fn converge(nodes: &[Node], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            if let Ok(s) = n.status().await {
                seen.push((s.leader_id, s.applied_index, s.commit_index));
            }
        }
        let agreed = seen.len() == nodes.len()
            && seen[0].0.is_some()
            && seen.iter().all(|s| (s.0, s.1) == (seen[0].0, seen[0].1));
        let view: Vec<_> = seen.iter().map(|s| (s.0, s.1)).collect();
        if agreed && last.as_ref() == Some(&view) {
            return Ok(());
        }
        last = agreed.then_some(view);
        if Instant::now() > deadline {
            bail!("nodes did not converge within {limit:?}: (leader, applied, commit) = {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every key of the run on one node, retried while the node is not ready to answer.
async fn final_state(node: &Node, prefix: &str, limit: Duration) -> anyhow::Result<HashMap<String, Bytes>> {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = async {
            let mut c = TcpClient::connect(&node.tcp_addr(), Duration::from_secs(10)).await?;
            c.scan(prefix).await
        };
        match attempt.await {
            Ok(kv) => {
                return Ok(kv
                    .into_iter()
                    .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                    .collect());
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("final read of node {}", node.id)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// Human-readable lines.
    pub lines: Vec<String>,
    /// Violations found (empty: the run passed).
    pub violations: Vec<String>,
}

/// Runs the workload and the nemesis against started, ready `nodes`, then checks.
pub async fn run(nodes: &mut [Node], opts: &Options) -> anyhow::Result<Report> {
    run_with(nodes, opts, None).await
}

/// [`run`], with network partitions too when given `partitions` (nodes in containers; give them
/// no kills: the harness neither kills nor starts a container).
pub async fn run_with(
    nodes: &mut [Node],
    opts: &Options,
    partitions: Option<&mut Partitions>,
) -> anyhow::Result<Report> {
    let cluster = nodes.len() > 1;
    let run_id = format!("h{:08x}", SmallRng::seed_from_u64(opts.seed).random::<u32>());
    if opts.groups {
        open_accounts(&nodes[0], &run_id, opts).await?;
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        run: run_id.clone(),
        opts: opts.clone(),
        cluster,
        acked: Mutex::new(Vec::new()),
    });
    let deadline = Instant::now() + opts.duration;
    let mut tasks = Vec::new();
    let mut writer = 0u32;
    for n in nodes.iter() {
        let addrs = NodeAddrs { tcp: n.tcp_addr(), resp: n.resp_addr() };
        for c in 0..opts.clients_per_node {
            let proto = if c % 2 == 0 { Proto::Tcp } else { Proto::Resp };
            tasks.push(tokio::spawn(client(shared.clone(), writer, proto, addrs.clone(), deadline)));
            writer += 1;
        }
    }
    let nem = nemesis(nodes, &shared, cluster, deadline).await;
    let mut logs = Vec::new();
    // The partitions (after the nemesis, which returns at once without kills), while the clients run.
    let cuts = match partitions {
        Some(p) => p.inject(nodes, opts, Clock::from(shared.start), deadline).await,
        None => Ok(Cuts::default()),
    };
    for t in tasks {
        logs.push(t.await.context("client task")?);
    }
    let nem = nem?;
    let cuts = cuts?;
    let end = shared.now();

    if cluster {
        converge(nodes, opts.ready_timeout).await?;
    }
    let mut finals = Vec::new();
    for n in nodes.iter() {
        finals.push((n.id, final_state(n, &format!("{run_id}:"), opts.ready_timeout).await?));
    }
    let minority = minority_check(&logs, &cuts, opts);
    let mut report = check(&run_id, logs, finals, end, &nem, opts);
    report.lines.extend(cuts.lines);
    report.lines.extend(minority.lines);
    report.violations.extend(minority.violations);
    Ok(report)
}

/// After partitions: the writes sent to a node while it was cut off from the majority (within one
/// of its `cuts.minority` windows), none of which may have been acknowledged within the window.
/// A writer's node is its number / `clients_per_node` (`run_with` numbers writers node by node),
/// reported by id: index + 1 (ids are 1..=N in order, processes and containers alike).
fn minority_check(logs: &[ClientLog], cuts: &Cuts, opts: &Options) -> Report {
    let mut report = Report { lines: Vec::new(), violations: Vec::new() };
    if cuts.minority.is_empty() {
        return report;
    }
    let per_node = opts.clients_per_node.max(1) as u64;
    let mut sent = 0;
    let mut acked = Vec::new();
    for r in logs.iter().flat_map(|l| &l.records).filter(|r| r.write) {
        let Ok(v) = &r.value else { continue };
        let node = ((v >> 32) / per_node) as usize;
        let Some((_, from, to)) =
            cuts.minority.iter().find(|(n, from, to)| *n == node && (*from..=*to).contains(&r.call))
        else {
            continue;
        };
        sent += 1;
        if let Some(ret) = r.ret.filter(|ret| ret <= to) {
            let ms = |t: u64| t as f64 / 1e6;
            acked.push(format!(
                "{} = {}:{} acknowledged by node {} in [{:.1}, {:.1}] ms, while it was cut off in [{:.1}, {:.1}] ms",
                r.key,
                v >> 32,
                v & 0xffff_ffff,
                node + 1,
                ms(r.call),
                ms(ret),
                ms(*from),
                ms(*to)
            ));
        }
    }
    report.lines.push(format!(
        "cut-off nodes: {} cuts, {sent} writes sent to a node while it was cut off, {} acknowledged before the heal",
        cuts.minority.len(),
        acked.len()
    ));
    if !acked.is_empty() {
        report.violations.push(format!(
            "{} writes acknowledged by a minority: {}",
            acked.len(),
            sample(&acked)
        ));
    }
    if sent == 0 {
        report.violations.push(
            "no write was sent to a cut-off node while it was cut off: the minority check checked nothing \
             (a shorter --op-timeout than the cuts lets clients send more than one request per cut)"
                .into(),
        );
    }
    report
}

fn check(
    run: &str,
    logs: Vec<ClientLog>,
    finals: Vec<(u64, HashMap<String, Bytes>)>,
    end: u64,
    nem: &NemesisLog,
    opts: &Options,
) -> Report {
    let mut lines = Vec::new();
    let mut violations = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut group_ops, mut transfers, mut group_reads, mut seen_bad) =
        (Vec::new(), Vec::new(), 0, Vec::new());
    let records: Vec<Record> = logs
        .into_iter()
        .flat_map(|l| {
            for (k, v) in l.errors {
                *errors.entry(k).or_default() += v;
            }
            group_ops.extend(l.groups);
            transfers.extend(l.transfers);
            group_reads += l.group_reads;
            seen_bad.extend(l.violations);
            l.records
        })
        .collect();
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count();
    lines.push(format!(
        "inserts: {} acknowledged, {} indeterminate; register writes: {} acknowledged, {} indeterminate; reads: {}",
        count(&|r| r.register.is_none() && r.ret.is_some()),
        count(&|r| r.register.is_none() && r.ret.is_none()),
        count(&|r| r.register.is_some() && r.write && r.ret.is_some()),
        count(&|r| r.register.is_some() && r.write && r.ret.is_none()),
        count(&|r| !r.write),
    ));
    let short = if (nem.kills.len() as u32) < opts.kills { " (the run ended before the rest)" } else { "" };
    if opts.kills > 0 {
        lines.push(format!("kills: {} of {}{short} ({})", nem.kills.len(), opts.kills, nem.kills.join(", ")));
    }
    if !nem.elections.is_empty() {
        let mut e = nem.elections.clone();
        e.sort();
        lines.push(format!(
            "new leader after a leader kill: min {:?}, median {:?}, max {:?}",
            e[0],
            e[e.len() / 2],
            e[e.len() - 1]
        ));
    }
    if !errors.is_empty() {
        let e: Vec<String> = errors.iter().map(|(k, v)| format!("{v} x {k}")).collect();
        lines.push(format!("client errors (outcome unknown): {}", e.join("; ")));
    }
    if count(&|r| r.ret.is_some() && r.write) == 0 {
        violations.push("no write was acknowledged at all: the run checked nothing".into());
    }
    if opts.groups {
        let n = |ops: &[Outcome], o: Outcome| ops.iter().filter(|x| **x == o).count();
        let g: Vec<Outcome> = group_ops.iter().map(|g| g.outcome).collect();
        let t: Vec<Outcome> = transfers.iter().map(|t| t.outcome).collect();
        lines.push(format!(
            "groups: {} MSETs of {} keys acknowledged, {} indeterminate; transfers: {} applied, {} refused \
             (versions changed), {} indeterminate; atomic reads: {group_reads}; restarted nodes checked: {}",
            n(&g, Outcome::Applied),
            groups::GROUP_SIZE,
            n(&g, Outcome::Unknown),
            n(&t, Outcome::Applied),
            n(&t, Outcome::Refused),
            n(&t, Outcome::Unknown),
            nem.checked,
        ));
        if let Some(max) = nem.check_times.iter().max() {
            let total: Duration = nem.check_times.iter().sum();
            lines.push(format!("checks of restarted nodes: {total:?} in all, the longest {max:?}"));
        }
        if n(&g, Outcome::Applied) == 0 || n(&t, Outcome::Applied) == 0 {
            violations
                .push("no MSET or no transfer was acknowledged: the group checks checked nothing".into());
        }
        if !seen_bad.is_empty() {
            violations.push(format!("{} atomic reads during the run: {}", seen_bad.len(), sample(&seen_bad)));
        }
        violations.extend(nem.violations.iter().cloned());
        for (id, state) in &finals {
            violations.extend(groups::check_final(run, *id, state, opts.accounts, &group_ops, &transfers));
        }
    }

    // Inserts: acknowledged ones on every node, nothing unsent anywhere.
    let sent: HashMap<&str, u64> = records
        .iter()
        .filter(|r| r.register.is_none())
        .filter_map(|r| r.value.as_ref().ok().map(|v| (r.key.as_str(), *v)))
        .collect();
    let mut lost = Vec::new();
    for r in records.iter().filter(|r| r.register.is_none() && r.ret.is_some()) {
        for (id, state) in &finals {
            let got = state.get(&r.key).and_then(|b| id_of(b));
            if got != r.value.as_ref().ok().copied() {
                lost.push(format!("{} on node {id} (found {:?})", r.key, state.get(&r.key)));
            }
        }
    }
    if !lost.is_empty() {
        violations.push(format!("{} acknowledged inserts missing or wrong: {}", lost.len(), sample(&lost)));
    }
    let upre = format!("{run}:u:");
    let mut unsent = Vec::new();
    for (id, state) in &finals {
        for (k, v) in state {
            let ok = if k.starts_with(&upre) {
                sent.get(k.as_str()).is_some_and(|s| id_of(v) == Some(*s))
            } else {
                // groups, accounts and markers are checked by `groups::check_final`
                let group_key = ["g", "a", "t"].iter().any(|p| k.starts_with(&format!("{run}:{p}:")));
                k.starts_with(&format!("{run}:r:")) || (opts.groups && group_key)
            };
            if !ok {
                unsent.push(format!("{k}={:?} on node {id}", String::from_utf8_lossy(v)));
            }
        }
    }
    if !unsent.is_empty() {
        violations.push(format!("{} keys or values never sent: {}", unsent.len(), sample(&unsent)));
    }

    // Registers: every node ends equal; reads see only sent values; each history linearizable.
    let mut checked = 0;
    for k in 0..opts.registers {
        let key = format!("{run}:r:{k}");
        let mut history: Vec<Entry> = Vec::new();
        let written: HashSet<u64> = records
            .iter()
            .filter(|r| r.register == Some(k) && r.write)
            .filter_map(|r| r.value.as_ref().ok().copied())
            .collect();
        for r in records.iter().filter(|r| r.register == Some(k)) {
            match (&r.value, r.write) {
                (Ok(v), true) => history.push(Entry { op: Op::Write(*v), call: r.call, ret: r.ret }),
                (Ok(v), false) if *v == 0 || written.contains(v) => {
                    history.push(Entry { op: Op::Read(*v), call: r.call, ret: r.ret })
                }
                (v, _) => violations.push(format!("{key}: a read saw a value never sent: {v:?}")),
            }
        }
        let mut ends = Vec::new();
        for (i, (id, state)) in finals.iter().enumerate() {
            let v = match state.get(&key) {
                None => 0,
                Some(b) => match id_of(b) {
                    Some(v) if written.contains(&v) => v,
                    _ => {
                        violations.push(format!("{key} on node {id} holds a value never sent: {b:?}"));
                        continue;
                    }
                },
            };
            ends.push((id, v));
            let t = end + 1 + i as u64;
            history.push(Entry { op: Op::Read(v), call: t, ret: Some(t) });
        }
        if ends.windows(2).any(|w| w[0].1 != w[1].1) {
            violations.push(format!("{key}: nodes disagree after convergence: {ends:?}"));
        }
        match linearizable::check(&history, opts.check_budget) {
            Verdict::Linearizable => checked += 1,
            Verdict::NotLinearizable => {
                let at = match linearizable::first_failure(&history, opts.check_budget) {
                    Some(e) => format!("; first unexplainable: {}", describe(&e, end)),
                    None => String::new(),
                };
                violations
                    .push(format!("{key}: history of {} operations is NOT linearizable{at}", history.len()))
            }
            Verdict::Unknown { steps } => violations
                .push(format!("{key}: linearizability undecided after {steps} steps (raise --check-budget)")),
        }
    }
    lines.push(format!(
        "linearizable: {checked}/{} register keys; final state read from {} node(s)",
        opts.registers,
        finals.len()
    ));
    Report { lines, violations }
}

/// One operation for a report: what, which value (`writer:seq`), when (ms since the start).
fn describe(e: &Entry, end: u64) -> String {
    let value =
        |v: u64| if v == 0 { "absent".to_string() } else { format!("{}:{}", v >> 32, v & 0xffff_ffff) };
    let ms = |t: u64| format!("{:.1}", t as f64 / 1e6);
    let (what, v) = match e.op {
        Op::Write(v) => ("write of", v),
        Op::Read(v) => ("read saw", v),
    };
    match e.ret {
        Some(_) if e.call > end => format!("{what} {} in the final state", value(v)),
        Some(r) => format!("{what} {} in [{}, {}] ms", value(v), ms(e.call), ms(r)),
        None => format!("{what} {} from {} ms, unacknowledged", value(v), ms(e.call)),
    }
}

/// The first few of `items`, for a report line.
pub(crate) fn sample(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        s.push_str(", ...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            duration: Duration::from_secs(1),
            kills: 0,
            clients_per_node: 1,
            registers: 1,
            op_timeout: Duration::from_secs(1),
            seed: 1,
            check_budget: 1_000_000,
            ready_timeout: Duration::from_secs(1),
            groups: false,
            accounts: 2,
            linearizable_reads: true,
        }
    }

    fn rec(key: &str, register: Option<u32>, write: bool, value: u64, call: u64, ret: Option<u64>) -> Record {
        Record { key: key.into(), register, write, value: Ok(value), call, ret }
    }

    fn state(kv: &[(&str, &str)]) -> HashMap<String, Bytes> {
        kv.iter().map(|(k, v)| (k.to_string(), Bytes::from(v.to_string()))).collect()
    }

    #[test]
    fn error_kinds_drop_addresses() {
        let e = anyhow::anyhow!("connect to 127.0.0.1:4242: Connection refused (os error 111)");
        assert_eq!(error_kind(&e), "connect: Connection refused");
        assert_eq!(error_kind(&anyhow::anyhow!("timed out after 5s")), "timed out after 5s");
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(id_of(value_of(3, 9).as_bytes()), Some((3 << 32) | 9));
        assert_eq!(id_of(b"3:0"), None);
        assert_eq!(id_of(b"x"), None);
    }

    #[test]
    fn a_minority_acknowledging_a_write_is_a_violation() {
        let opts = Options { clients_per_node: 2, ..opts() };
        // writer 3 writes through node index 1, id 2 (2 clients per node), cut off in [10, 20]
        let w = |seq: u64, call, ret| rec("r:u:3:1", None, true, (3 << 32) | seq, call, ret);
        let logs = |records| vec![ClientLog { records, ..ClientLog::default() }];
        let cuts = Cuts { minority: vec![(1, 10, 20)], ..Cuts::default() };
        // sent before the cut, unacknowledged, acknowledged after the heal: all fine
        let rep =
            minority_check(&logs(vec![w(1, 5, Some(12)), w(2, 12, None), w(3, 18, Some(25))]), &cuts, &opts);
        assert!(rep.violations.is_empty(), "{:?}", rep.violations);
        assert!(rep.lines[0].contains("1 cuts, 2 writes sent"), "{:?}", rep.lines);
        // another node's writer (writer 1: node index 0) may be acknowledged meanwhile, but that
        // leaves the cut-off node's check empty, which fails too
        let rep = minority_check(
            &logs(vec![rec("r:u:1:1", None, true, (1 << 32) | 1, 12, Some(15))]),
            &cuts,
            &opts,
        );
        assert!(
            rep.violations.len() == 1 && rep.violations[0].contains("the minority check checked nothing"),
            "{:?}",
            rep.violations
        );
        let rep = minority_check(&logs(vec![w(4, 11, Some(19))]), &cuts, &opts);
        assert!(
            rep.violations.len() == 1
                && rep.violations[0].contains("1 writes acknowledged by a minority")
                && rep.violations[0].contains("by node 2 "),
            "{:?}",
            rep.violations
        );
        // without cuts, nothing to say
        let rep = minority_check(&logs(vec![w(4, 11, Some(19))]), &Cuts::default(), &opts);
        assert!(rep.lines.is_empty() && rep.violations.is_empty());
    }

    #[test]
    fn the_final_checks_catch_loss_strays_and_stale_state() {
        let id = |w, s| id_of(value_of(w, s).as_bytes()).unwrap_or(0);
        let log = |records| vec![ClientLog { records, ..ClientLog::default() }];
        let records = vec![
            rec("r:u:0:1", None, true, id(0, 1), 0, Some(1)),
            rec("r:r:0", Some(0), true, id(0, 2), 2, Some(3)),
            rec("r:u:0:3", None, true, id(0, 3), 4, None),
        ];
        let nem = NemesisLog::default();
        let good = state(&[("r:u:0:1", "0:1"), ("r:r:0", "0:2")]);
        let rep =
            check("r", log(records.clone()), vec![(1, good.clone()), (2, good.clone())], 10, &nem, &opts());
        assert!(rep.violations.is_empty(), "{:?}", rep.violations);
        // the indeterminate insert may be there too
        let with_maybe = state(&[("r:u:0:1", "0:1"), ("r:r:0", "0:2"), ("r:u:0:3", "0:3")]);
        let rep = check("r", log(records.clone()), vec![(1, with_maybe)], 10, &nem, &opts());
        assert!(rep.violations.is_empty(), "{:?}", rep.violations);

        let lost = state(&[("r:r:0", "0:2")]);
        let rep = check("r", log(records.clone()), vec![(1, good.clone()), (2, lost)], 10, &nem, &opts());
        assert!(rep.violations.iter().any(|v| v.contains("missing")), "{:?}", rep.violations);

        let stray = state(&[("r:u:0:1", "0:1"), ("r:r:0", "0:2"), ("r:u:0:9", "0:9")]);
        let rep = check("r", log(records.clone()), vec![(1, stray)], 10, &nem, &opts());
        assert!(rep.violations.iter().any(|v| v.contains("never sent")), "{:?}", rep.violations);

        let stale = state(&[("r:u:0:1", "0:1")]);
        let rep = check("r", log(records.clone()), vec![(1, good), (2, stale)], 10, &nem, &opts());
        assert!(rep.violations.iter().any(|v| v.contains("disagree")), "{:?}", rep.violations);
        assert!(rep.violations.iter().any(|v| v.contains("NOT linearizable")), "{:?}", rep.violations);

        let rep = check("r", log(vec![]), vec![(1, HashMap::new())], 10, &nem, &opts());
        assert!(rep.violations.iter().any(|v| v.contains("checked nothing")), "{:?}", rep.violations);
    }
}
