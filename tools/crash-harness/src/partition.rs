//! Network partitions (issue #17) for nodes in Docker containers: while the clients of
//! [`crate::run`] write and read on every node, a node is cut off from the others by disconnecting
//! its container from the Raft network ([`crate::docker`]; its clients still reach it through its
//! own network), then reconnected. The faults, in turn until the run ends:
//!
//! - **the leader isolated**: the majority must elect a new leader and acknowledge a write (a probe
//!   write through a majority node, retried until acknowledged; the time from the cut is the
//!   failover figure), and after the heal the old leader must follow the new one and catch up;
//! - **a follower isolated**, then healed: it must follow the leader again and catch up;
//! - **a flapping link**: the leader's link goes down and up at random intervals (0.2-1.5 s each).
//!
//! Every interval a node spends cut off is a *minority window*: [`crate::run`]'s checks then fail
//! the run if a write sent to that node in the window was acknowledged in it; the usual checks
//! (nothing acknowledged lost, nothing unsent present, per-key linearizability) cover the rest.
//! Every wait is bounded by `--ready-timeout`; a failing step reconnects what it cut before
//! returning its error, so the cluster is never left partitioned.

use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::TcpClient;
use crate::docker;
use crate::nodes::Node;
use crate::run::Options;

/// The run's clock: nanoseconds since the clients started, the time base of every record.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl From<Instant> for Clock {
    fn from(start: Instant) -> Self {
        Self(start)
    }
}

impl Clock {
    /// Now, in nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What the partitions did, for the report and the checks.
#[derive(Debug, Default)]
pub struct Cuts {
    /// Report lines: each fault, the failover and catch-up times.
    pub lines: Vec<String>,
    /// `(node index, from, to)` on the run's [`Clock`]: the node was cut off from the majority,
    /// so no write sent to it within the window may be acknowledged within it.
    pub minority: Vec<(usize, u64, u64)>,
}

/// The faults, in the order they take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Leader,
    Follower,
    Flap,
}

const TURNS: [Kind; 3] = [Kind::Leader, Kind::Follower, Kind::Flap];

/// Time between two faults, for the clients to run on a whole cluster.
const SETTLE: Duration = Duration::from_secs(1);

/// Cuts nodes' containers off `network` (see the module doc).
#[derive(Debug)]
pub struct Partitions {
    network: String,
    /// Container per node index (nodes sorted by id).
    containers: Vec<String>,
    /// How long a node stays cut off (a flapping link flaps this long).
    hold: Duration,
    /// Each container's aliases on `network`, read before the first cut.
    aliases: Vec<Vec<String>>,
    /// The node index cut off now, if any.
    cut: Option<usize>,
}

/// What the faults did and measured.
#[derive(Debug)]
struct State {
    rng: SmallRng,
    cuts: Cuts,
    /// What each fault was.
    done: Vec<String>,
    /// From the leader's cut (the disconnect done) to the first write a majority node acknowledged.
    failover: Vec<Duration>,
    /// Heal to the cut-off node following the leader with everything applied.
    catch_up: Vec<Duration>,
}

impl Partitions {
    /// Faults on `containers` (one per node, in node id order), cut off `network` for `hold` each.
    pub fn new(network: String, containers: Vec<String>, hold: Duration) -> Self {
        Self { network, containers, hold, aliases: Vec::new(), cut: None }
    }

    async fn disconnect(&mut self, i: usize) -> anyhow::Result<()> {
        self.cut = Some(i);
        docker::disconnect(&self.network, &self.containers[i]).await
    }

    async fn connect(&mut self, i: usize) -> anyhow::Result<()> {
        docker::connect(&self.network, &self.containers[i], &self.aliases[i]).await?;
        self.cut = None;
        Ok(())
    }

    /// One fault of `kind`, from cut to healed and caught up.
    async fn fault(
        &mut self,
        kind: Kind,
        nodes: &[Node],
        opts: &Options,
        clock: Clock,
        st: &mut State,
    ) -> anyhow::Result<()> {
        let leader = agreed_leader(nodes, opts.ready_timeout).await?;
        let target = match kind {
            Kind::Leader | Kind::Flap => leader,
            Kind::Follower => {
                let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != leader).collect();
                others[st.rng.random_range(0..others.len())]
            }
        };
        let id = nodes[target].id;
        let cut_at = Instant::now();
        match kind {
            Kind::Leader | Kind::Follower => {
                self.disconnect(target).await?;
                let from = clock.now();
                if kind == Kind::Leader {
                    st.failover.push(majority_ack(nodes, target, opts).await?);
                }
                tokio::time::sleep(self.hold.saturating_sub(cut_at.elapsed())).await;
                st.cuts.minority.push((target, from, clock.now()));
                self.connect(target).await?;
                st.done.push(format!("{} {id} cut for {:.1}s", name(kind), cut_at.elapsed().as_secs_f64()));
            }
            Kind::Flap => {
                let mut cuts = 0;
                while cut_at.elapsed() < self.hold {
                    self.disconnect(target).await?;
                    let from = clock.now();
                    tokio::time::sleep(Duration::from_millis(st.rng.random_range(200..1500))).await;
                    st.cuts.minority.push((target, from, clock.now()));
                    self.connect(target).await?;
                    cuts += 1;
                    tokio::time::sleep(Duration::from_millis(st.rng.random_range(200..1500))).await;
                }
                st.done.push(format!(
                    "{} {id}: {cuts} cuts in {:.1}s",
                    name(kind),
                    cut_at.elapsed().as_secs_f64()
                ));
            }
        }
        let healed = Instant::now();
        caught_up(nodes, target, opts.ready_timeout).await?;
        st.catch_up.push(healed.elapsed());
        Ok(())
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Leader => "leader",
        Kind::Follower => "follower",
        Kind::Flap => "flapping link of leader",
    }
}

impl Partitions {
    /// Cuts nodes off in turn until `deadline` (the clients' end); see the module doc.
    pub async fn inject(
        &mut self,
        nodes: &[Node],
        opts: &Options,
        clock: Clock,
        deadline: Instant,
    ) -> anyhow::Result<Cuts> {
        if nodes.len() < 3 || nodes.len() != self.containers.len() {
            bail!("partitions need a cluster of at least 3 nodes, one container each");
        }
        self.aliases.clear();
        for c in &self.containers {
            self.aliases.push(docker::aliases(&self.network, c).await?);
        }
        let mut st = State {
            rng: SmallRng::seed_from_u64(opts.seed ^ 0x7061_7274),
            cuts: Cuts::default(),
            done: Vec::new(),
            failover: Vec::new(),
            catch_up: Vec::new(),
        };
        // A fault takes its hold, a failover and a catch-up; one is started only while it can end
        // before the clients do (the faults happen under load).
        let room = self.hold + SETTLE * 3;
        for kind in TURNS.iter().cycle() {
            tokio::time::sleep(SETTLE).await;
            if Instant::now() + room > deadline {
                break;
            }
            let r = self.fault(*kind, nodes, opts, clock, &mut st).await;
            if let Err(e) = r {
                if let Some(i) = self.cut {
                    // never leave the cluster partitioned; the first error is the one reported
                    let _ = self.connect(i).await;
                }
                return Err(e);
            }
        }
        if st.done.is_empty() {
            bail!("no partition fitted in the run: make --duration longer than {:?}", room + SETTLE);
        }
        let mut log = st.cuts;
        log.lines.push(format!("partitions: {}", st.done.join(", ")));
        if !st.failover.is_empty() {
            log.lines.push(format!(
                "leader cut off -> a majority node acknowledged a write: {}",
                spread(&st.failover)
            ));
        }
        log.lines.push(format!(
            "healed -> the cut-off node followed the leader, all applied: {}",
            spread(&st.catch_up)
        ));
        Ok(log)
    }
}

/// `min, median, max` of `d`.
fn spread(d: &[Duration]) -> String {
    let mut d = d.to_vec();
    d.sort();
    if d.is_empty() {
        return "none".into();
    }
    format!("min {:?}, median {:?}, max {:?} ({} times)", d[0], d[d.len() / 2], d[d.len() - 1], d.len())
}

/// The index of the node a majority names as leader and that says it leads, waited for up to
/// `limit`.
async fn agreed_leader(nodes: &[Node], limit: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut named = Vec::new();
        let mut leading = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if let Ok(s) = n.status().await {
                named.extend(s.leader_id);
                if s.role == "leader" && s.leader_id == Some(n.id) {
                    leading.push(i);
                }
            }
        }
        for i in leading {
            if named.iter().filter(|l| **l == nodes[i].id).count() * 2 > nodes.len() {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader named by a majority within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retries a write through the nodes other than `cut` (in turn) until one is acknowledged; the
/// time it took. The key is outside the run's prefix, so the final checks ignore it.
async fn majority_ack(nodes: &[Node], cut: usize, opts: &Options) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let others: Vec<&Node> = nodes.iter().enumerate().filter(|(i, _)| *i != cut).map(|(_, n)| n).collect();
    let per_try = opts.op_timeout.min(Duration::from_secs(1));
    let key = format!("partition-probe:{}", nodes[cut].id);
    for attempt in 0u64.. {
        let n = others[attempt as usize % others.len()];
        let put = async {
            let mut c = TcpClient::connect(&n.tcp_addr(), per_try).await?;
            c.put(&key, &attempt.to_string()).await
        };
        if let Ok(Ok(())) = tokio::time::timeout(per_try, put).await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > opts.ready_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!(
        "node {} cut off: the majority acknowledged no write within {:?}",
        nodes[cut].id,
        opts.ready_timeout
    )
}

/// Waits until the nodes agree on a leader, node `i` follows it (an old leader has stepped down)
/// and has applied everything the leader had committed when this began.
async fn caught_up(nodes: &[Node], i: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut target = None;
    loop {
        if let Ok(l) = agreed_leader(nodes, deadline.saturating_duration_since(Instant::now())).await
            && let Ok(ls) = nodes[l].status().await
        {
            let want = *target.get_or_insert(ls.commit_index);
            if let Ok(s) = nodes[i].status().await
                && s.leader_id == Some(nodes[l].id)
                && (l == i || s.role != "leader")
                && s.applied_index >= want
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("node {} did not follow the leader and catch up within {limit:?} of the heal", nodes[i].id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_read_min_median_max() {
        let d = [300, 100, 200].map(Duration::from_millis);
        assert_eq!(spread(&d), "min 100ms, median 200ms, max 300ms (3 times)");
        assert_eq!(spread(&[]), "none");
    }
}
