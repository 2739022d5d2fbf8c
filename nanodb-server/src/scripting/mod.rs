//! Lua scripts (Redis's EVAL, EVALSHA and SCRIPT): a sandboxed Lua 5.1 per thread, the script
//! cache, and the runner that makes a script one atomic group.
//!
//! # A script is one group
//! [`cmd::Eval`] declares the keys the script may touch. The runner compiles the script (or finds
//! it by SHA-1), locks those keys' partitions with [`Engine::lock_group`], and runs the script
//! with `redis.call` going to the RESP frontend's own command handlers, redirected into the
//! group's private overlay (so every command behaves as it does on the wire, and an undeclared
//! key is a clear error). Only when the script returns does the group commit: its writes go to the
//! log as one record and reach watchers together. A script that raises an error, runs past
//! `--script-timeout-ms`, allocates past `--script-max-memory` or is killed (SCRIPT KILL) drops
//! the group: **nothing it wrote is kept**, which is why SCRIPT KILL is safe on a script that has
//! written (Redis refuses to kill those: its scripts write in place). Unlike Redis, a script whose
//! `redis.call` raised keeps none of its earlier writes either.
//!
//! Other clients wait for a script only when they touch a partition it holds.
//!
//! # The sandbox
//! Base functions (without `dofile`, `loadfile`, `getfenv`, `setfenv`, `collectgarbage`,
//! `print`; `load`/`loadstring` take text only, never bytecode), `string`, `table` and `math`;
//! no `io`, `os`, `package`, `debug`, `require`, `coroutine`. Globals and the libraries are
//! read-only: a script cannot create a global, replace a library function, change `_G`'s
//! metatable or `rawset` into them. See `prelude.lua`.
//!
//! # Limits
//! Every 10,000 Lua instructions the run checks its deadline and SCRIPT KILL; an allocation past
//! the memory limit fails. `string.rep`, the one library loop that can run long without executing
//! a Lua instruction, is bounded by the memory limit before it starts. Pathological
//! `string.find` patterns still backtrack inside C without a check (as in Redis).
//!
//! # Cluster
//! In a cluster the Raft log carries a script's effects, never the script: no Lua runs at apply,
//! so apply stays deterministic and free of deadlines. The node that took the script
//! ([`Scripts::eval_clustered`]) waits for a read barrier, then runs it here as above but on a
//! group that *records* (`Group::record`): every key a `redis.call` named (read or written) and
//! every write that succeeded, in order. The group is then dropped, not committed, and what it
//! recorded becomes ONE transaction (`Group::into_txn`, an ordinary `cmd::Txn`, one log entry):
//! compares pin every touched key to the version the script saw (version 0: absent; versions are
//! kept for keys of every type, so hashes and lists are pinned exactly too), and the success branch
//! replays the script's writes (their relative TTLs made absolute at proposal, as for any
//! write). Where the compares hold, each write meets exactly the state it met in the script and so
//! does what it did there; where one fails, another write came in between, nothing is applied, and
//! the script runs again, up to [`CLUSTER_TRIES`] times before a retryable `TRYAGAIN` error. A
//! script that wrote nothing proposes nothing: its reads came after the barrier. The recording
//! overlay draws versions from a counter of its own, since every node must draw the same ones.
//!
//! Running the script once per try means its Lua must not act outside the keyspace, which the
//! sandbox already ensures; the answer is the one from the run whose transaction applied. A script
//! whose writes exceed `--max-batch-len` operations cannot travel as one transaction and is
//! refused, nothing written.

mod reply;
mod vm;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use nanodb_protocol::{Command, Error, FromReply, Reply, ScriptSource, ScriptValue, TypedCommand, cmd};

use crate::auth::Need;
use crate::cluster::Cluster;
use crate::engine::LogPosition;
use crate::engine::group::Group;
use crate::frontend::{Context, Run};
use vm::{Control, Ended, KILLED, OUT_OF_MEMORY, TIMED_OUT, Vm};

/// Most scripts the shared cache holds; the oldest is forgotten beyond it (EVALSHA of it is then
/// NOSCRIPT, and clients fall back to EVAL as Redis's do).
const MAX_CACHED_SCRIPTS: usize = 10_000;
/// Most bytes of script text the shared cache holds.
const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;
/// How many times a script runs in a cluster before giving up on keys other writers keep changing
/// (see [`Scripts::eval_clustered`]).
const CLUSTER_TRIES: u32 = 5;

/// The script cache and the running scripts, shared by every connection.
#[derive(Debug)]
pub struct Scripts {
    max_memory: usize,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// Bumped by SCRIPT FLUSH: threads' compiled functions of older generations are dropped.
    generation: AtomicU64,
    /// This runner's number: a thread's Lua state marks the runs it makes for it with it, so
    /// SCRIPT KILL stops only this server's scripts.
    id: u64,
    /// The controls of every Lua state that ran a script for this runner, for SCRIPT KILL: each
    /// registered once, when its state first runs one here, so that starting and ending a run
    /// takes no lock shared by every connection (a run marks its own control instead).
    controls: Mutex<Vec<Weak<Control>>>,
}

/// Numbers for [`Scripts::id`]; 0 means "no run" in [`Control`].
static NEXT_RUNNER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
struct Cache {
    scripts: HashMap<Bytes, Bytes>,
    order: VecDeque<Bytes>,
    bytes: usize,
}

impl Cache {
    fn insert(&mut self, sha: Bytes, text: Bytes) {
        if self.scripts.contains_key(&sha) {
            return;
        }
        while !self.order.is_empty()
            && (self.scripts.len() >= MAX_CACHED_SCRIPTS || self.bytes + text.len() > MAX_CACHED_BYTES)
        {
            if let Some(old) = self.order.pop_front()
                && let Some(t) = self.scripts.remove(&old)
            {
                self.bytes -= t.len();
            }
        }
        self.bytes += text.len();
        self.order.push_back(sha.clone());
        self.scripts.insert(sha, text);
    }
}

thread_local! {
    /// This thread's Lua state, built on its first script.
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
}

/// The lowercase hex SHA-1 of `text` (a script's name in the cache).
pub fn sha1_hex(text: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text);
    // Every EVAL names its script this way: a table, not `format!` per byte (which was a tenth of
    // an EVAL's server time under redis-benchmark -P 16).
    let mut hex = String::with_capacity(2 * digest.as_ref().len());
    for b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// What SCRIPT KILL found.
#[derive(Debug, PartialEq, Eq)]
pub enum Killed {
    /// This many running scripts were told to stop.
    Some(usize),
    /// No script was running.
    NotBusy,
}

impl Scripts {
    /// Scripts limited to `max_memory` bytes and `timeout` each.
    pub fn new(max_memory: usize, timeout: Duration) -> Self {
        Self {
            max_memory,
            timeout,
            cache: Mutex::default(),
            generation: AtomicU64::new(0),
            id: NEXT_RUNNER.fetch_add(1, Ordering::Relaxed),
            controls: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn controls(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Control>>> {
        self.controls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `control` (a thread's Lua state's) reachable by SCRIPT KILL, once; the controls of
    /// states whose thread ended are dropped on the way.
    fn register(&self, control: &Arc<Control>) {
        let mut controls = self.controls();
        controls.retain(|c| c.strong_count() > 0);
        if !controls.iter().any(|c| std::ptr::eq(c.as_ptr(), Arc::as_ptr(control))) {
            controls.push(Arc::downgrade(control));
        }
    }

    /// SCRIPT LOAD: compiles `text` (a syntax error is reported and nothing is cached) and caches
    /// it; its SHA-1.
    pub fn load(&self, text: Bytes) -> Result<String, Error> {
        let sha = sha1_hex(&text);
        let key = Bytes::from(sha.clone());
        self.with_vm(|vm| {
            if !vm.has(&key) {
                vm.compile(key.clone(), &text)?;
            }
            Ok(())
        })?;
        self.cache().insert(key, text);
        Ok(sha)
    }

    /// SCRIPT EXISTS for one SHA-1.
    pub fn exists(&self, sha: &[u8]) -> bool {
        self.cache().scripts.contains_key(&sha.to_ascii_lowercase()[..])
    }

    /// SCRIPT FLUSH: forgets every cached script.
    pub fn flush(&self) {
        *self.cache() = Cache::default();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// SCRIPT KILL: stops every running script; each ends with an error and writes nothing.
    pub fn kill(&self) -> Killed {
        let mut stopped = 0;
        for control in self.controls().iter().filter_map(Weak::upgrade) {
            if control.running_for() == self.id {
                let _ = control.stop.compare_exchange(0, KILLED, Ordering::Relaxed, Ordering::Relaxed);
                stopped += 1;
            }
        }
        if stopped == 0 { Killed::NotBusy } else { Killed::Some(stopped) }
    }

    /// Runs `f` with this thread's Lua state (built on first use), its compiled functions of the
    /// current generation.
    fn with_vm<T>(&self, f: impl FnOnce(&mut Vm) -> Result<T, Error>) -> Result<T, Error> {
        VM.with(|cell| {
            // A script cannot run a script (EVAL is refused inside one), so the state is free.
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return Err(Error::Script("ERR a script cannot run a script".into()));
            };
            if slot.is_none() {
                *slot = Some(Vm::new(self.max_memory)?);
            }
            let Some(vm) = slot.as_mut() else { return Err(Error::Internal) };
            vm.sync_generation(self.generation.load(Ordering::Relaxed));
            f(vm)
        })
    }

    /// Runs a script as one group (see the module documentation) and commits what it wrote.
    fn eval(&self, ctx: &Context, eval: cmd::Eval, at: &mut LogPosition) -> Result<ScriptValue, Error> {
        let (value, position) = self.execute(ctx, eval, false, |group| group.commit())?;
        at.raise(position.0);
        Ok(value)
    }

    /// Runs a script in a cluster (see the module documentation): here, on a group that records
    /// what it touched and wrote, after a read barrier; then its writes go through the Raft log as
    /// one transaction whose compares pin every key it touched to the version it saw. When another
    /// write came in between, the transaction applies nothing and the script runs again, at most
    /// [`CLUSTER_TRIES`] times.
    pub(crate) async fn eval_clustered(
        &self,
        ctx: &Context,
        cluster: &Cluster,
        eval: cmd::Eval,
    ) -> Result<ScriptValue, Error> {
        eval.validate(ctx.engine.limits())?;
        let max_ops = ctx.engine.limits().max_batch_len;
        for attempt in 0..CLUSTER_TRIES {
            if attempt > 0 {
                // Two scripts on the same keys from two nodes would otherwise collide in step.
                let jitter = u64::from(std::process::id() ^ attempt).wrapping_mul(7919) % 5;
                tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
            }
            cluster.read_barrier().await?;
            let (value, txn) = self.execute(ctx, eval.clone(), true, |group| group.into_txn())?;
            let Some(txn) = txn else {
                // It wrote nothing: its reads came after the read barrier, so its answer stands.
                return Ok(value);
            };
            if txn.success.len() > max_ops {
                return Err(Error::Script(format!(
                    "ERR in cluster mode a script travels as one transaction of at most {max_ops} writes (--max-batch-len); this one made {}, and none was kept",
                    txn.success.len()
                )));
            }
            match cluster.write(Command::Txn(txn)).await? {
                (Reply::Txn(outcome), _) if outcome.succeeded => {
                    if let Some(Err(e)) = outcome.results.iter().find(|r| r.is_err()) {
                        // Replayed on the state the script saw, a write does what it did there.
                        tracing::error!(error = %e, "a script's write failed when its transaction was applied");
                        return Err(Error::Internal);
                    }
                    return Ok(value);
                }
                // A key it touched changed in between: nothing was applied; run it again.
                (Reply::Txn(_), _) => continue,
                (other, _) => {
                    tracing::error!(reply = ?other, "a script's transaction answered with another reply");
                    return Err(Error::Internal);
                }
            }
        }
        Err(Error::Script(format!(
            "TRYAGAIN keys the script touched were changed by other writes while it ran, {CLUSTER_TRIES} times in a row; nothing it wrote was kept"
        )))
    }

    /// Runs a script on a group over its declared keys (recording what it does when `record`)
    /// and, when the script returns, hands the group to `finish`: commit it, or make it a
    /// transaction. A script that fails or is stopped drops the group: nothing it wrote is kept.
    fn execute<T>(
        &self,
        ctx: &Context,
        eval: cmd::Eval,
        record: bool,
        finish: impl FnOnce(Group<'_>) -> Result<T, Error>,
    ) -> Result<(ScriptValue, T), Error> {
        let cmd::Eval { script, keys, args } = eval;
        self.with_vm(|vm| {
            let (sha, text) = match script {
                // A body this state has run before is named without hashing it again.
                ScriptSource::Text(text) => (vm.sha_of(&text), Some(text)),
                ScriptSource::Sha(sha) => (Bytes::from(sha.to_ascii_lowercase()), None),
            };
            if !vm.has(&sha) {
                let text = match text {
                    Some(t) => t,
                    None => self
                        .cache()
                        .scripts
                        .get(&sha)
                        .cloned()
                        .ok_or_else(|| Error::Script("NOSCRIPT No matching script. Please use EVAL.".into()))?,
                };
                vm.compile(sha.clone(), &text)?;
                self.cache().insert(sha.clone(), text);
            }
            let mut group = ctx.engine.lock_group(&keys);
            if record {
                group.record()?;
            }
            if vm.registered != self.id {
                self.register(&vm.control);
                vm.registered = self.id;
            }
            // Armed (the stop flag reset) before it is marked as running for SCRIPT KILL: a kill
            // landing between the two would otherwise be lost (the script then ran to its
            // timeout).
            vm.control.start(self.timeout, self.id);
            let ended = vm.run(&sha, &keys, &args, ctx, group.state());
            vm.control.end();
            let hex = || String::from_utf8_lossy(&sha).into_owned();
            match ended? {
                Ended::Value(value) => {
                    let done = finish(group)?;
                    Ok((value, done))
                }
                // The group is dropped: nothing the script wrote is kept.
                Ended::Raised(message) => Err(Error::Script(format!("{message} script: {}", hex()))),
                Ended::Stopped(why) => Err(Error::Script(match why {
                    TIMED_OUT => format!(
                        "BUSY script {} ran past --script-timeout-ms ({} ms) and was stopped; nothing it wrote was kept",
                        hex(),
                        self.timeout.as_millis()
                    ),
                    OUT_OF_MEMORY => format!(
                        "OOM script {} allocated past --script-max-memory ({} bytes) and was stopped; nothing it wrote was kept",
                        hex(),
                        self.max_memory
                    ),
                    _ => format!("ERR script {} was killed by SCRIPT KILL; nothing it wrote was kept", hex()),
                })),
            }
        })
    }
}

/// A script runs through the command path like any write: authorization on its declared keys
/// first (each must be readable and writable), then the runner.
impl Run for cmd::Eval {
    type Output = ScriptValue;

    fn name(&self) -> &'static str {
        <Self as TypedCommand>::NAME
    }

    fn need(&self) -> Need<'_> {
        Need::Command(<Self as TypedCommand>::COMMAND, TypedCommand::keys(self))
    }

    fn replicated(&self) -> bool {
        true
    }

    fn into_script(self) -> Result<cmd::Eval, Self> {
        Ok(self)
    }

    fn is_script(&self) -> bool {
        true
    }

    fn into_command(self) -> nanodb_protocol::Command {
        self.into()
    }

    fn output_from(reply: Reply, _: bool) -> Result<ScriptValue, Error> {
        ScriptValue::from_reply(reply).map_err(|_| Error::Internal)
    }

    fn may_grow(&self) -> bool {
        true
    }

    fn run_in(self, ctx: &Context, at: &mut LogPosition) -> Result<ScriptValue, Error> {
        self.validate(ctx.engine.limits())?;
        ctx.engine.check_writable()?;
        // A script may write: over `--max-memory` it is refused before it runs (Redis refuses
        // a script that may write up front), or room is made first.
        ctx.make_room(&self, at)?;
        ctx.scripts.eval(ctx, self, at)
    }
}

#[cfg(test)]
mod tests;
