//! A connection's pipelined requests in a cluster: its writes submitted to the log in the order
//! the client sent them and awaited together, its reads sharing a read barrier.
//!
//! A client that pipelines (binary TCP, RESP) keeps many requests in flight on one connection.
//! Awaiting each write's consensus before submitting the next costs one Raft round (the leader's
//! fsync, then a quorum's) per write; a [`Pipeline`] submits a run of consecutive writes first
//! and awaits them after, so that the leader's group commit (and a follower's forwarding) carries
//! the run in one round or a few.
//!
//! - **Order.** The log holds a connection's writes in the order it sent them: [`Pipeline::settle`]
//!   sends them in order, into the leader's group-commit queue (which proposes its groups in
//!   queue order) or, on a follower, as one forwarded batch (one `FORWARD` call, which the leader
//!   queues in order). A run too large for one batch goes as several, each sent once the one
//!   before it is answered: concurrent calls could reach the leader in either order.
//! - **Retries.** A write answered `Retry` was not proposed (no leader, or a node that turned out
//!   not to lead). Alone, it is sent again until the deadline, as a single write always was.
//!   With several in flight, sending an earlier one again after a later one applied would reorder
//!   them, so: let L be the last write of the run that was not `Retry`; a `Retry` before L is the
//!   retryable [`Error::Unavailable`] (nothing applied: the client may send it again), and the
//!   `Retry`s after L are sent again, in order, until the deadline. A write is never sent again
//!   after any other answer, so none applies twice; a write sent without an answer stays the
//!   indeterminate error it always was.
//! - **Reads.** A read on a connection waits for the connection's writes (the frontend settles
//!   them first), then for a read barrier ([`ReadBarrier`]). A barrier taken after a read
//!   arrived is valid for it (linearizability needs only a point between a read's invocation and
//!   its response), so consecutive reads that had all arrived when it was taken share one.

use std::time::Instant;

use nanodb_protocol::{Command, Error, Reply};
use tokio::sync::oneshot;

use super::types::Response;
use super::{Cluster, Forwarded, NO_LEADER, Queued, Retry, failed, pause};

/// What a settled write answered: its reply, whether a put created its key, and the log index it
/// applied at (`WAIT` waits for the other members to hold it).
pub type Outcome = Result<(Reply, bool, u64), Error>;

/// A connection's run of writes, submitted in order and settled together (see the module
/// documentation). Empty after each [`Pipeline::settle`], ready for the next run.
#[derive(Debug, Default)]
pub struct Pipeline {
    writes: Vec<Write>,
    /// When the run's first write came: the run's deadline is the request timeout after it.
    since: Option<Instant>,
}

#[derive(Debug)]
struct Write {
    cmd: Command,
    state: State,
}

/// Where a write of the run is.
#[derive(Debug)]
enum State {
    /// Not sent (yet, or again).
    Unsent,
    /// In the leader's group-commit queue, on this node.
    Proposed(oneshot::Receiver<Result<Response, Retry>>),
    /// Forwarded to the leader.
    Forwarded(oneshot::Receiver<Result<Response, Retry>>),
    /// Answered.
    Done(Result<Response, Retry>),
}

impl State {
    /// The write's answer, waiting for it until `deadline`.
    async fn answer(self, deadline: Instant) -> Result<Response, Retry> {
        match self {
            State::Proposed(rx) => super::settle(rx, deadline).await,
            State::Forwarded(rx) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, rx).await {
                    Ok(Ok(outcome)) => outcome,
                    // Sent (or about to be), but not answered in time: indeterminate.
                    _ => Ok(failed(Error::Unavailable(format!(
                        "{NO_LEADER} (the leader did not answer in time; the write may or may not have applied)"
                    )))),
                }
            }
            State::Done(outcome) => outcome,
            // Never sent: nothing applied.
            State::Unsent => Err(Retry),
        }
    }
}

impl Pipeline {
    /// How many writes the run holds.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether the run holds no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds a write to the run, after the ones before it. Nothing is sent until
    /// [`Pipeline::settle`]; a command over the limits is refused here, at once, as a single
    /// write is.
    pub fn push(&mut self, cluster: &Cluster, cmd: Command) {
        self.since.get_or_insert_with(Instant::now);
        let state = match cmd.validate(cluster.engine.limits()) {
            Ok(()) => State::Unsent,
            Err(e) => State::Done(Ok(failed(e))),
        };
        self.writes.push(Write { cmd, state });
    }

    /// Sends the run's writes in order, waits for their answers, sends again what must be (see
    /// the module documentation), and returns one outcome per write, in order. The pipeline is
    /// empty after.
    pub async fn settle(&mut self, cluster: &Cluster) -> Vec<Outcome> {
        let deadline = self.since.take().unwrap_or_else(Instant::now) + cluster.request_timeout;
        loop {
            self.send(cluster, deadline).await;
            for w in &mut self.writes {
                let state = std::mem::replace(&mut w.state, State::Unsent);
                w.state = State::Done(state.answer(deadline).await);
            }
            let again = resend_from(&self.writes);
            if again == self.writes.len() || Instant::now() >= deadline {
                break;
            }
            for w in &mut self.writes[again..] {
                w.state = State::Unsent;
            }
            pause(deadline).await;
        }
        let mut outcomes = Vec::with_capacity(self.writes.len());
        for Write { cmd, state } in self.writes.drain(..) {
            outcomes.push(match state {
                State::Done(Ok(Response {
                    result: Ok(reply), created, delivered: Some(at), index, ..
                })) => Ok((cluster.local_deliveries(&cmd, reply, at, deadline).await, created, index)),
                State::Done(Ok(Response { result, created, index, .. })) => {
                    result.map(|r| (r, created, index))
                }
                // A `Retry` before a write that applied, or still `Retry` at the deadline:
                // nothing applied, the client may send it again.
                _ => Err(Error::Unavailable(NO_LEADER.into())),
            });
        }
        outcomes
    }

    /// Sends the unsent writes (the run's tail: see [`Pipeline::settle`]) in order to the
    /// leader: into this node's group-commit queue when it leads, forwarded otherwise. Without a
    /// leader they stay `Retry`, and so do the writes after one that could not be queued.
    async fn send(&mut self, cluster: &Cluster, deadline: Instant) {
        let Some(first) = self.writes.iter().position(|w| matches!(w.state, State::Unsent)) else {
            return;
        };
        if cluster.leader().is_none() && cluster.ready_alone() {
            // Serving alone: the first write makes this node a cluster of one (see `replica`).
            if let Err(e) = cluster.init_alone().await {
                for w in &mut self.writes[first..] {
                    if matches!(w.state, State::Unsent) {
                        w.state = State::Done(Ok(failed(Error::Unavailable(format!("{NO_LEADER} ({e})")))));
                    }
                }
                return;
            }
        }
        let tail = &mut self.writes[first..];
        match cluster.leader() {
            Some((id, _)) if id == cluster.node_id() => {
                let mut queued = true;
                for w in tail.iter_mut().filter(|w| matches!(w.state, State::Unsent)) {
                    w.state = if !queued {
                        State::Done(Err(Retry))
                    } else {
                        match cluster.enqueue(w.cmd.clone(), deadline).await {
                            Queued::Waiting(rx) => State::Proposed(rx),
                            Queued::Done(outcome) => {
                                // Not queued: none after it may be, or they would overtake it.
                                queued = !matches!(outcome, Err(Retry));
                                State::Done(outcome)
                            }
                        }
                    };
                }
            }
            Some((_, Some(addr))) => forward(cluster, &addr, tail, deadline).await,
            _ => {
                for w in tail.iter_mut().filter(|w| matches!(w.state, State::Unsent)) {
                    w.state = State::Done(Err(Retry));
                }
            }
        }
    }
}

/// Where the writes that may be sent again begin: after the last one that was not `Retry`. The
/// writes after it were not proposed, and nothing after them was, so they may go again, in
/// order; a `Retry` before it may not (it would overtake a write that was proposed).
fn resend_from(writes: &[Write]) -> usize {
    writes.iter().rposition(|w| !retry(&w.state)).map_or(0, |last| last + 1)
}

/// Whether a write's answer is `Retry` (it was not proposed).
fn retry(state: &State) -> bool {
    matches!(state, State::Done(Err(Retry)) | State::Unsent)
}

/// Forwards the unsent writes of `tail` to the leader at `addr`, in order: as one batch (see
/// `forward_batches`), or, when they exceed a batch, as several, each sent once the one before it
/// is answered (two calls in flight at once could reach the leader in either order). A batch
/// that could not be queued leaves it and the rest `Retry`.
async fn forward(cluster: &Cluster, addr: &str, tail: &mut [Write], deadline: Instant) {
    let mut batch = Batch::new(addr);
    let mut members: Vec<usize> = Vec::new();
    let mut sent = true;
    for i in 0..tail.len() {
        if !matches!(tail[i].state, State::Unsent) {
            continue;
        }
        if !sent {
            tail[i].state = State::Done(Err(Retry));
            continue;
        }
        let frame = match cluster.frame(&tail[i].cmd) {
            Ok(frame) => frame,
            Err(e) => {
                tail[i].state = State::Done(Ok(failed(e)));
                continue;
            }
        };
        if !batch.is_empty() && batch.bytes + frame.len() > cluster.max_entry {
            // A full batch goes, and is answered, before the next one is sent.
            sent = send_batch(
                cluster,
                std::mem::replace(&mut batch, Batch::new(addr)),
                tail,
                &members,
                deadline,
            )
            .await;
            if sent {
                for &m in &members {
                    let state = std::mem::replace(&mut tail[m].state, State::Unsent);
                    tail[m].state = State::Done(state.answer(deadline).await);
                }
            }
            members.clear();
            if !sent {
                tail[i].state = State::Done(Err(Retry));
                continue;
            }
        }
        let (tx, rx) = oneshot::channel();
        batch.push(frame, tx);
        tail[i].state = State::Forwarded(rx);
        members.push(i);
    }
    if !batch.is_empty() {
        send_batch(cluster, batch, tail, &members, deadline).await;
    }
}

/// Queues `batch` for forwarding; `false` (its members left `Retry`) when it could not be queued
/// before the deadline.
async fn send_batch(
    cluster: &Cluster,
    batch: Batch,
    tail: &mut [Write],
    members: &[usize],
    deadline: Instant,
) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let queued = tokio::time::timeout(left, cluster.now().forwards.send(batch.into_forwarded())).await;
    if matches!(queued, Ok(Ok(()))) {
        return true;
    }
    // Not queued: nothing was sent.
    for &m in members {
        tail[m].state = State::Done(Err(Retry));
    }
    false
}

/// Writes forwarded together, gathered before they are queued.
struct Batch {
    addr: String,
    frames: bytes::BytesMut,
    bytes: usize,
    txs: Vec<oneshot::Sender<Result<Response, Retry>>>,
}

impl Batch {
    fn new(addr: &str) -> Self {
        Self { addr: addr.to_string(), frames: bytes::BytesMut::new(), bytes: 0, txs: Vec::new() }
    }

    fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    fn push(&mut self, frame: bytes::BytesMut, tx: oneshot::Sender<Result<Response, Retry>>) {
        self.bytes += frame.len();
        self.frames.extend_from_slice(&frame);
        self.txs.push(tx);
    }

    fn into_forwarded(self) -> Forwarded {
        Forwarded { addr: self.addr, frames: self.frames.freeze(), txs: self.txs }
    }
}

/// A connection's read barrier: a read runs once one was taken after it arrived and after the
/// connection's last write applied (see the module documentation). The frontend says when one
/// stops holding: after anything but a read ([`ReadBarrier::spent`]), and for what arrives after
/// it was taken.
#[derive(Debug, Default)]
pub struct ReadBarrier {
    taken: bool,
}

impl ReadBarrier {
    /// Takes a barrier unless one holds already.
    pub async fn take(&mut self, cluster: &Cluster) -> Result<(), Error> {
        if !self.taken {
            cluster.read_barrier().await?;
            self.taken = true;
        }
        Ok(())
    }

    /// Whether a barrier holds.
    pub fn holds(&self) -> bool {
        self.taken
    }

    /// The next read takes a new barrier: a write of the connection may have applied since, or
    /// the next read may have arrived after this one was taken.
    pub fn spent(&mut self) {
        self.taken = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(answers: &[bool]) -> Vec<Write> {
        answers
            .iter()
            .map(|&proposed| Write {
                cmd: super::super::ping(),
                state: State::Done(if proposed { Ok(failed(Error::Internal)) } else { Err(Retry) }),
            })
            .collect()
    }

    #[test]
    fn only_the_retries_after_the_last_proposed_write_are_sent_again() {
        // Retry, proposed, Retry, Retry: the first must not overtake the second; the last two
        // may go again.
        assert_eq!(resend_from(&run(&[false, true, false, false])), 2);
        assert_eq!(resend_from(&run(&[true, false, true])), 3, "nothing after the last proposed one");
        assert_eq!(resend_from(&run(&[false, false])), 0, "none proposed: all go again");
        assert_eq!(resend_from(&run(&[true, true])), 2);
        assert_eq!(resend_from(&[]), 0);
    }
}
