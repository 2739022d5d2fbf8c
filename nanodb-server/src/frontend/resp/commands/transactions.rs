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
//!
//! In a cluster, EXEC works as a script does there (see `scripting`, "Cluster"): after a read
//! barrier it checks the WATCHed versions and runs the queue here on a group that records what it
//! touched and wrote, then proposes that as ONE transaction whose compares pin the touched and
//! WATCHed keys to the versions seen; if another write came in between, nothing is applied and
//! EXEC starts over (a WATCHed key that changed then answers the null array), up to 5 times before
//! the retryable `TRYAGAIN`. There a transaction cannot hold PUBLISH (a group holds keyed commands
//! only), and a queue that writes more than `--max-batch-len` times is refused.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Command, Compare, CompareOp, CompareTarget, Error, Reply};

use super::{Flow, Outcome, Reject, Session, Spec, execute};
use crate::cluster::Cluster;
use crate::frontend::resp::encode;
use crate::frontend::{Context, Shared};

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

pub fn multi(_: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    if session.multi.is_some() {
        return Err(Reject::Msg("ERR MULTI calls can not be nested".into()));
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
    if specs.iter().any(|s| s.flags.contains(&"denyoom") || s.name.starts_with("eval")) {
        // Over `--max-memory`: evict now, or refuse the whole queue up front (Redis's -OOM for
        // EXEC), before any partition is locked.
        let mut at = crate::engine::LogPosition::default();
        let made = ctx.engine.make_room(&mut at);
        session.log_position = session.log_position.max(at.0);
        made?;
    }
    let mut keys: Vec<Bytes> = watched.iter().map(|w| w.key.clone()).collect();
    for (spec, args) in specs.iter().zip(&multi.queued) {
        key_args(spec, args, &mut keys);
    }
    if let Some(cluster) = &ctx.cluster {
        return exec_clustered(ctx, cluster, session, &multi.queued, &watched, keys, out);
    }
    let group = ctx.engine.lock_group(&keys);
    for w in watched {
        if !group.unchanged_since(&w.key, w.version, w.since)? {
            encode::null_array(out);
            return DONE;
        }
    }
    // Every queued command runs its own handler, against the group's overlay; PUBLISHes wait
    // for the commit, so that no subscriber hears of the transaction before its writes show.
    let inside = Context::from(Shared {
        engine: group.overlay().clone(),
        log: None,
        cluster: None,
        ..Shared::clone(ctx)
    });
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

/// How many times EXEC runs in a cluster before giving up on keys other writers keep changing.
const CLUSTER_TRIES: u32 = 5;

/// EXEC in a cluster (see the module documentation): the queue runs here on a recording group,
/// and what it wrote is proposed as one transaction pinning what it saw.
fn exec_clustered(
    ctx: &Context,
    cluster: &Cluster,
    session: &mut Session<'_>,
    queued: &[Vec<Bytes>],
    watched: &[Watched],
    keys: Vec<Bytes>,
    out: &mut BytesMut,
) -> Outcome {
    let max_ops = ctx.engine.limits().max_batch_len;
    let pin = |key: &Bytes, version: u64| Compare {
        key: key.clone(),
        op: CompareOp::Equal,
        target: CompareTarget::Version(version),
    };
    // RESP runs commands synchronously: this thread waits for consensus as `run_pipelined` does
    // in a cluster, handing its other tasks to another worker meanwhile.
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            for attempt in 0..CLUSTER_TRIES {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1 + u64::from(attempt))).await;
                }
                cluster.read_barrier().await?;
                // The group lives only in this block: never across an await.
                let ran = {
                    let mut group = ctx.engine.lock_group(&keys);
                    group.record()?;
                    let mut unchanged = true;
                    for w in watched {
                        if !group.unchanged_since(&w.key, w.version, w.since)? {
                            unchanged = false;
                            break;
                        }
                    }
                    if unchanged {
                        let mut inside = Session::new(session.id, session.addr, session.clients, session.caller.clone());
                        inside.group = Some(group.state().clone());
                        let mut replies = BytesMut::new();
                        for args in queued {
                            execute(ctx, &mut inside, args, &mut replies);
                        }
                        drop(inside);
                        Some((replies, group.into_txn()?))
                    } else {
                        None
                    }
                };
                let Some((replies, txn)) = ran else {
                    encode::null_array(out);
                    return DONE;
                };
                let answer = |out: &mut BytesMut| {
                    encode::array(out, queued.len());
                    out.extend_from_slice(&replies);
                    DONE
                };
                let Some(mut txn) = txn else {
                    // Nothing written: its reads came after the read barrier.
                    return answer(out);
                };
                if txn.success.len() > max_ops {
                    return Err(Reject::Msg(format!(
                        "ERR in cluster mode a transaction travels as one log entry of at most {max_ops} writes (max_batch_len); this one made {}, and none was kept",
                        txn.success.len()
                    )));
                }
                // The entry pins versions only: a WATCHed missing key created and removed between
                // this check and the entry's apply on the leader goes unseen there.
                txn.compares.extend(watched.iter().map(|w| pin(&w.key, w.version)));
                match cluster.write(Command::Txn(txn)).await? {
                    (Reply::Txn(outcome), _) if outcome.succeeded => return answer(out),
                    // A key it saw changed in between: nothing applied; start over.
                    (Reply::Txn(_), _) => continue,
                    (other, _) => {
                        tracing::error!(reply = ?other, "EXEC's transaction answered with another reply");
                        return Err(Reject::Engine(Error::Internal));
                    }
                }
            }
            Err(Reject::Msg(format!(
                "TRYAGAIN keys the transaction touched were changed by other writes while it ran, {CLUSTER_TRIES} times in a row; nothing it wrote was kept"
            )))
        })
    })
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
