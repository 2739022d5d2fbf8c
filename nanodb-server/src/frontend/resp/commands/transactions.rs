//! Redis transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Between MULTI and EXEC the connection queues commands (`+QUEUED`); an unknown command, a wrong
//! number of arguments or a command a transaction cannot hold is answered with its error and
//! makes EXEC answer `-EXECABORT`. EXEC runs the queue as one atomic group of the engine
//! (`engine::group`): it locks the partitions of every key the queued commands name (Redis's key
//! positions in the command table) and of every WATCHed key, answers a null array if a WATCHed
//! key was touched since WATCH, and otherwise runs each queued command's ordinary handler against
//! the group's overlay, so each reply is exactly what the command answers alone and a runtime
//! error fails only its command. The group then commits: one log record, seen whole by every
//! reader and watcher. PUBLISHes run after the commit, in queue order: a subscriber that reads
//! the keys on receiving the message sees the transaction's writes, as in Redis, where nothing
//! runs between EXEC's commands.
//!
//! WATCH follows Redis 7.0: a key that existed is touched by any write, deletion or its expiry
//! since (on any protocol: its version changes); a key that did not exist is touched if it was
//! created since, even if deleted again or expired by EXEC; a key already expired when WATCHed
//! and reclaimed later is not. EXEC (aborted or not) and DISCARD forget every WATCH; an EXEC
//! without MULTI does not. See `Group::unchanged_since` for the one imprecision (a removal of
//! another key of the same partition aborts too, which the WATCH idiom retries).
//!
//! Each queued command runs through `Context::run_pipelined`, so authorization is checked for
//! every one of them, as when it runs alone.
//!
//! A transaction may hold commands on named keys and the keyless PING, ECHO, TIME and PUBLISH;
//! commands over the whole keyspace (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB) and server or
//! connection commands are refused while queuing, since a group only holds the keys it names.
//! A cluster replicates single commands: MULTI is refused there (KV.Txn, `POST /v1/txn` and the
//! TCP TXN request are transactions that travel as one Raft entry).

use bytes::{Bytes, BytesMut};

use super::{Flow, Outcome, Reject, Session, Spec, execute};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The queued commands, arguments as received.
    queued: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    dirty: bool,
}

/// A WATCHed key as WATCH saw it (`Engine::watch_point`).
#[derive(Debug, Clone)]
pub struct Watched {
    /// The key.
    pub key: Bytes,
    /// Its version then (0: missing or expired).
    pub version: u64,
    /// The engine's version counter then.
    pub since: u64,
}

/// Commands run at once even inside MULTI (Redis's list).
pub const NOT_QUEUED: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

/// Keyless commands a transaction may hold (UNWATCH is queued, as in Redis, and changes nothing
/// by then: EXEC has checked the WATCHed keys before it runs).
const KEYLESS_ALLOWED: &[&str] = &["echo", "ping", "publish", "time", "unwatch"];

/// Queues a command while MULTI is open; called by `execute` once the command is known and its
/// arity right.
pub fn queue(ctx: &Context, session: &mut Session<'_>, spec: &Spec, args: &[Bytes], out: &mut BytesMut) {
    let Some(multi) = session.multi.as_mut() else { return };
    if spec.keys.0 == 0 && !KEYLESS_ALLOWED.contains(&spec.name) {
        multi.dirty = true;
        encode::error(out, "ERR Command not allowed inside a transaction");
        return;
    }
    let max = ctx.engine.limits().max_batch_len;
    if multi.queued.len() >= max {
        multi.dirty = true;
        encode::error(out, &format!("ERR a transaction queues at most {max} commands (max_batch_len)"));
        return;
    }
    multi.queued.push(args.to_vec());
    encode::simple(out, "QUEUED");
}

/// Marks the open transaction as failed (a command refused while queuing).
pub fn flag(session: &mut Session<'_>) {
    if let Some(multi) = session.multi.as_mut() {
        multi.dirty = true;
    }
}

pub fn multi(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    if session.multi.is_some() {
        return Err(Reject::Msg("ERR MULTI calls can not be nested".into()));
    }
    if ctx.cluster.is_some() {
        return Err(Reject::Msg(
            "ERR MULTI is not available in cluster mode: use KV.Txn, POST /v1/txn or the TCP TXN request"
                .into(),
        ));
    }
    session.multi = Some(Multi::default());
    encode::ok(out);
    DONE
}

pub fn discard(_: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    if session.multi.take().is_none() {
        return Err(Reject::Msg("ERR DISCARD without MULTI".into()));
    }
    session.watched.clear();
    encode::ok(out);
    DONE
}

pub fn watch(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    if session.multi.is_some() {
        return Err(Reject::Msg("ERR WATCH inside MULTI is not allowed".into()));
    }
    for key in &args[1..] {
        // What WATCH remembers needs read permission on the key, as a GET would.
        ctx.authorize(
            &session.caller,
            crate::auth::Need::Command(nanodb_protocol::CommandName::Get, nanodb_protocol::Keys::One(key)),
        )?;
    }
    let max = ctx.engine.limits().max_batch_len;
    if session.watched.len() + args.len() - 1 > max {
        return Err(Reject::Msg(format!("ERR a connection watches at most {max} keys (max_batch_len)")));
    }
    for key in &args[1..] {
        let (version, since) = ctx.engine.watch_point(key);
        session.watched.push(Watched { key: key.clone(), version, since });
    }
    encode::ok(out);
    DONE
}

pub fn unwatch(_: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    session.watched.clear();
    encode::ok(out);
    DONE
}

pub fn exec(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    let Some(multi) = session.multi.take() else {
        return Err(Reject::Msg("ERR EXEC without MULTI".into()));
    };
    let watched = std::mem::take(&mut session.watched);
    if multi.dirty {
        return Err(Reject::Msg("EXECABORT Transaction discarded because of previous errors.".into()));
    }
    let specs: Vec<&Spec> = multi.queued.iter().filter_map(|args| super::lookup(&args[0])).collect();
    if specs.iter().any(|s| s.flags.contains(&"write")) {
        ctx.engine.check_writable()?;
    }
    let mut keys: Vec<Bytes> = watched.iter().map(|w| w.key.clone()).collect();
    for (spec, args) in specs.iter().zip(&multi.queued) {
        key_args(spec, args, &mut keys);
    }
    let group = ctx.engine.lock_group(keys);
    for w in watched {
        if !group.unchanged_since(&w.key, w.version, w.since)? {
            encode::null_array(out);
            return DONE;
        }
    }
    // Every queued command runs its own handler, against the group's overlay; PUBLISHes wait
    // for the commit, so that no subscriber hears of the transaction before its writes show.
    let inside = Context { engine: group.overlay().clone(), log: None, cluster: None, ..ctx.clone() };
    let is_publish = |args: &[Bytes]| super::lookup(&args[0]).is_some_and(|s| s.name == "publish");
    let mut replies: Vec<BytesMut> = Vec::with_capacity(multi.queued.len());
    for args in &multi.queued {
        let mut reply = BytesMut::new();
        if !is_publish(args) {
            execute(&inside, session, args, &mut reply);
        }
        replies.push(reply);
    }
    let at = group.commit()?;
    session.log_position = session.log_position.max(at.0);
    for (args, reply) in multi.queued.iter().zip(replies.iter_mut()) {
        if is_publish(args) {
            execute(ctx, session, args, reply);
        }
    }
    encode::array(out, multi.queued.len());
    for reply in replies {
        out.extend_from_slice(&reply);
    }
    DONE
}

/// Appends the keys `args` names, by the command's key positions (first, last, step; a negative
/// last counts from the end), as Redis finds them.
fn key_args(spec: &Spec, args: &[Bytes], out: &mut Vec<Bytes>) {
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return;
    }
    let n = args.len() as i64;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    let mut i = first;
    while i <= last {
        out.push(args[i as usize].clone());
        i += step;
    }
}
