//! Pipelining in cluster mode, for the frontends whose clients keep many requests in flight on
//! one connection (binary TCP, RESP): what [`Context::run`] does for one command, split in two so
//! that a run of consecutive writes reaches the cluster together (see
//! [`crate::cluster::pipeline`] for the order, retry and read rules).
//!
//! [`Context::submit`] authorizes a write (once, on the node that received it, as
//! `run_clustered_at` does) and adds it to the connection's [`Writes`]; [`Context::settle`] sends
//! the run, awaits it and returns the outcomes in order, with the stats recorded. Anything that
//! is not a plain write (a read, a script, a transaction of reads, a connection's own state) is
//! given back: the frontend settles the writes before it, then runs it with
//! [`Context::run_after_writes`], whose reads share the connection's [`ReadBarrier`].

use std::time::Instant;

use crate::auth::Caller;
use crate::cluster::pipeline::{Outcome, Pipeline, ReadBarrier};
use crate::engine::LogPosition;
use crate::stats::Protocol;

use super::{Context, Run};

/// A connection's writes submitted and not yet settled, in the order it sent them.
#[derive(Debug, Default)]
pub struct Writes {
    pipeline: Pipeline,
    slots: Vec<Slot>,
}

/// One submitted command: proposed (its outcome comes from the pipeline) or refused already.
#[derive(Debug)]
struct Slot {
    op: &'static str,
    protocol: Protocol,
    started: Instant,
    refused: Option<nanodb_protocol::Error>,
}

impl Writes {
    /// How many commands wait to be settled.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// What [`Context::submit`] did with a command.
#[derive(Debug)]
pub enum Submitted<C> {
    /// Added to the writes: its outcome comes from [`Context::settle`], in its place (a refused
    /// one's too).
    Held,
    /// Not a plain write: settle the writes before it, then run it with
    /// [`Context::run_after_writes`].
    Given(C),
}

impl Context {
    /// Cluster mode: adds `cmd` to the connection's `writes` when it is a plain write (a write,
    /// publish or batch holding one; not a script), authorized first; anything else, and every
    /// command on a single node, is given back untouched.
    pub fn submit<C: Run>(&self, writes: &mut Writes, caller: &Caller, cmd: C) -> Submitted<C> {
        let Some(cluster) = &self.cluster else { return Submitted::Given(cmd) };
        if !cmd.replicated() || cmd.is_script() {
            return Submitted::Given(cmd);
        }
        let started = Instant::now();
        let op = cmd.name();
        // Refused here, on the node that received it, before anything is proposed or forwarded
        // (see `run_clustered_at`): counted now, answered in its place.
        let refused = caller
            .authorize_with(|| cmd.need())
            .and_then(|()| self.make_room(&cmd, &mut crate::engine::LogPosition::default()))
            .err();
        match &refused {
            Some(_) => self.stats.record(caller.protocol, op, false, started.elapsed()),
            None => writes.pipeline.push(cluster, cmd.into_command()),
        }
        writes.slots.push(Slot { op, protocol: caller.protocol, started, refused });
        Submitted::Held
    }

    /// Sends the connection's writes to the cluster in order, awaits them together, and returns
    /// one outcome per submitted command, in order (`writes` is empty after). Each is recorded
    /// in the stats with its time since it was submitted.
    pub async fn settle(&self, writes: &mut Writes) -> Vec<Outcome> {
        let mut outcomes = match &self.cluster {
            Some(cluster) if !writes.pipeline.is_empty() => writes.pipeline.settle(cluster).await.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut settled = Vec::with_capacity(writes.slots.len());
        for slot in writes.slots.drain(..) {
            let outcome = match slot.refused {
                Some(e) => Err(e),
                None => {
                    let outcome = outcomes.next().unwrap_or_else(|| {
                        tracing::error!(command = slot.op, "cluster: a pipelined write has no outcome");
                        Err(nanodb_protocol::Error::Internal)
                    });
                    self.stats.record(slot.protocol, slot.op, outcome.is_ok(), slot.started.elapsed());
                    outcome
                }
            };
            settled.push(outcome);
        }
        settled
    }

    /// Cluster mode: runs a command [`Context::submit`] gave back, once the connection's writes
    /// before it are settled: as [`Context::run`] does, except that a read takes `barrier` only
    /// when it does not hold already, and anything else spends it. Also returns the log index a
    /// write applied at (`WAIT`).
    pub async fn run_after_writes<C: Run>(
        &self,
        caller: &Caller,
        cmd: C,
        barrier: &mut ReadBarrier,
    ) -> (Result<C::Output, nanodb_protocol::Error>, u64) {
        match &self.cluster {
            Some(cluster) => self.run_clustered_at(cluster, caller, cmd, barrier).await,
            None => {
                let (result, position) = self.run_pipelined(caller, cmd);
                let fence = self.fence_after(position);
                (self.durable_sharing(position, fence, true).await.and(result), position)
            }
        }
    }

    /// A read under a barrier that holds (see [`ReadBarrier`]): runs at once, with nothing to
    /// wait for; anything else is given back.
    pub fn read_under<C: Run>(
        &self,
        caller: &Caller,
        cmd: C,
        barrier: &ReadBarrier,
    ) -> Result<Result<C::Output, nanodb_protocol::Error>, C> {
        if self.cluster.is_none() || !barrier.holds() || cmd.replicated() || cmd.is_script() {
            return Err(cmd);
        }
        let started = Instant::now();
        let op = cmd.name();
        let result = match caller.authorize_with(|| cmd.need()) {
            Ok(()) => cmd.run_in(self, &mut LogPosition::default()),
            Err(e) => Err(e),
        };
        self.stats.record(caller.protocol, op, result.is_ok(), started.elapsed());
        Ok(result)
    }
}
