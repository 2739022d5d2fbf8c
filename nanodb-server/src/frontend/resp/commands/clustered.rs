//! A RESP connection's round in cluster mode: its consecutive pipelined writes go to the cluster
//! together, so that N writes in flight cost about one Raft round rather than N (the order, retry
//! and read rules are `cluster::pipeline`'s).
//!
//! Handlers are synchronous and write their reply as soon as their command ran, so a write is
//! held in three steps instead of being run:
//!
//! 1. **Probe.** A plain keyspace write ([`held`]: a `write` command whose handler runs exactly
//!    one command, on a connection that is not in MULTI, subscribed or inside a script) runs its
//!    handler once with [`super::run`] in probe mode: the command the handler builds is submitted
//!    ([`Context::submit`]: authorized, added to the connection's writes, not sent), and the
//!    handler is stopped with an error whose reply is thrown away. The command's arguments are
//!    kept.
//! 2. **Settle.** Before the first command that is not held (it may read what they wrote, or
//!    touch the connection's state), and at the end of the round, the writes are sent in order
//!    and awaited together ([`Context::settle`]).
//! 3. **Replay.** Each held command's handler runs again, in order, and [`super::run`] hands it
//!    its settled outcome instead of running: the reply is encoded by the handler, as always.
//!
//! The handlers are deterministic in their arguments, so the replay builds the command the probe
//! submitted. A handler that ran a second command during its replay would break the order (the
//! writes after it were settled already): that is refused as an internal error and logged, never
//! run, and [`one_command`] keeps the handlers that run one command per key or field out.
//!
//! Reads outside the held writes run at once, and consecutive ones share the connection's read
//! barrier: every command of a round had arrived before the round ran.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::Error;

use super::{NO_AUTH, Session, Spec, execute, lookup};
use crate::cluster::pipeline::{Outcome, ReadBarrier};
use crate::frontend::pipeline::{Submitted, Writes};
use crate::frontend::{Context, Run};

/// Commands held in a round at most before they are settled (as the binary TCP frontend's
/// batch).
const MAX_HELD: usize = 1024;

/// A connection's cluster-mode round state (empty on a single node).
#[derive(Debug, Default)]
pub struct Round {
    writes: Writes,
    /// The held commands' arguments, in order, and whether the probe submitted a command (one
    /// outcome) or the handler refused its arguments first (none; it refuses them again).
    held: Vec<(Vec<Bytes>, bool)>,
    mode: Mode,
    barrier: ReadBarrier,
    /// The probes' replies, thrown away.
    scratch: BytesMut,
}

/// What [`super::run`] does with a command.
#[derive(Debug, Default)]
enum Mode {
    /// Runs it (a read under the barrier at once).
    #[default]
    Direct,
    /// Submits it: a held command's probe.
    Probe(Probed),
    /// Answers it with its settled outcome: a held command's replay.
    Replay(Option<Outcome>),
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    /// No command yet (or the handler refused its arguments).
    Nothing,
    /// A write, submitted.
    Submitted,
    /// Not a plain write after all: the command runs directly.
    Given,
}

impl Round {
    /// [`super::run`] in cluster mode: what the mode says. Returns the log index a write applied
    /// at (`WAIT`).
    pub(super) fn run<C: Run>(
        &mut self,
        ctx: &Context,
        caller: &crate::auth::Caller,
        cmd: C,
    ) -> (Result<C::Output, Error>, u64) {
        match &mut self.mode {
            Mode::Probe(probed) => {
                if *probed == Probed::Nothing {
                    *probed = match ctx.submit(&mut self.writes, caller, cmd) {
                        Submitted::Held => Probed::Submitted,
                        Submitted::Given(_) => Probed::Given,
                    };
                }
                // Stops the handler; its reply is thrown away.
                (Err(Error::Internal), 0)
            }
            Mode::Replay(outcome) => match outcome.take() {
                Some(Ok((reply, created, index))) => (C::output_from(reply, created), index),
                Some(Err(e)) => (Err(e), 0),
                None => {
                    tracing::error!(
                        command = cmd.name(),
                        "resp: a held write's handler ran a command it did not run when probed; refused"
                    );
                    (Err(Error::Internal), 0)
                }
            },
            Mode::Direct => {
                let cmd = match ctx.read_under(caller, cmd, &self.barrier) {
                    Ok(result) => return (result, 0),
                    Err(cmd) => cmd,
                };
                // RESP runs commands synchronously: this thread waits on the cluster, handing its
                // other tasks to another worker meanwhile (RESP's event loops are multi-thread
                // runtimes of one worker).
                let handle = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| {
                    handle.block_on(ctx.run_after_writes(caller, cmd, &mut self.barrier))
                })
            }
        }
    }
}

/// A round begins: what arrives from now on arrived after any barrier taken before.
pub fn begin(session: &mut Session<'_>) {
    session.round.barrier.spent();
}

/// [`super::execute`] in cluster mode: holds a plain write (see the module documentation);
/// settles what is held before running anything else.
pub fn execute_clustered(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    out: &mut BytesMut,
) -> super::Flow {
    let spec = lookup(&args[0]);
    if let Some(spec) = spec.filter(|spec| held(session, spec, args)) {
        if session.round.held.len() >= MAX_HELD {
            settle(ctx, session, out);
        }
        session.round.mode = Mode::Probe(Probed::Nothing);
        let mut scratch = std::mem::take(&mut session.round.scratch);
        let _ = (spec.handler)(ctx, session, args, &mut scratch);
        scratch.clear();
        session.round.scratch = scratch;
        match std::mem::take(&mut session.round.mode) {
            Mode::Probe(Probed::Given) => {}
            Mode::Probe(probed) => {
                session.round.held.push((args.to_vec(), probed == Probed::Submitted));
                return super::Flow::Continue;
            }
            _ => {}
        }
    }
    settle(ctx, session, out);
    if !spec.is_some_and(|spec| spec.flags.contains(&"readonly")) {
        // It may write, or touch what the next read should see.
        session.round.barrier.spent();
    }
    execute(ctx, session, args, out)
}

/// Sends the held writes, awaits them together, and writes every held command's reply, in
/// order (see the module documentation).
pub fn settle(ctx: &Context, session: &mut Session<'_>, out: &mut BytesMut) {
    if session.round.held.is_empty() {
        return;
    }
    let mut writes = std::mem::take(&mut session.round.writes);
    let handle = tokio::runtime::Handle::current();
    let outcomes = tokio::task::block_in_place(|| handle.block_on(ctx.settle(&mut writes)));
    session.round.writes = writes;
    session.round.barrier.spent();
    let mut outcomes = outcomes.into_iter();
    for (args, submitted) in std::mem::take(&mut session.round.held) {
        session.round.mode = Mode::Replay(if submitted { outcomes.next() } else { None });
        // A held write's handler never closes the connection.
        let _ = execute(ctx, session, &args, out);
    }
    session.round.mode = Mode::Direct;
}

/// Whether a command may be held: a plain keyspace write that runs one command
/// ([`one_command`]), that `execute` would run (known, arity, authenticated), on a connection
/// whose state it does not depend on (not queued by MULTI, not subscribed, not in a script).
fn held(session: &Session<'_>, spec: &Spec, args: &[Bytes]) -> bool {
    let n = args.len() as i64;
    let arity = if spec.arity > 0 { n == spec.arity } else { n >= -spec.arity };
    spec.flags.contains(&"write")
        && arity
        && (session.caller.is_authenticated() || NO_AUTH.contains(&spec.name))
        && session.multi.is_none()
        && !session.subscribed()
        && session.group.is_none()
        && one_command(spec, args)
}

/// Whether a write's handler runs exactly one command for these arguments: the ones that run one
/// per key or field (DEL, UNLINK, HDEL, HSET, HMSET) do when given one. A held command's handler
/// must: its reply is written from one outcome.
fn one_command(spec: &Spec, args: &[Bytes]) -> bool {
    match spec.name {
        "del" | "unlink" => args.len() == 2,
        "hdel" => args.len() == 3,
        "hset" | "hmset" => args.len() == 4,
        _ => true,
    }
}
