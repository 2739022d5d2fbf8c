//! Frontends: one adapter per wire protocol. Each decodes its format into a
//! [`nanodb_protocol::Command`], runs it with [`Context::run`] (or [`Context::run_pipelined`] then
//! [`Context::durable`] when pipelining; in a cluster, [`pipeline`]'s submit and settle), and
//! encodes the [`nanodb_protocol::Reply`]. Nothing else: rules, limits and types live in the
//! engine and the command model, and stats are recorded by the `Context` that runs the command.

pub mod conn;
pub mod coverage;
pub mod event_loops;
pub mod grpc;
pub mod http;
pub mod pipeline;
pub mod report;
pub mod resp;
pub(crate) mod sniff;
pub mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanodb_protocol::{Class, Command, Error, FromReply, Reply, TypedCommand, cmd};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::event_loops::EventLoops;
use crate::auth::{Auth, Caller, Need};
use crate::cluster::Cluster;
use crate::cluster::pipeline::ReadBarrier;
use crate::config::Config;
use crate::engine::{Apply, Engine, LogPosition, value};
use crate::feed::Hub;
use crate::persist::Durable;
use crate::scripting::Scripts;
use crate::stats::Stats;

/// What every frontend gets: the engine, the change feed, the configuration, the shutdown token
/// and the tracker its connection tasks register with so shutdown can wait for them ([`Shared`],
/// whose fields it derefs to).
///
/// One reference-counted allocation, so that a clone is one counter's increment: a script's
/// `redis.call` callback owns a clone for each run (see `crate::scripting`), and a clone of the
/// ten handles one by one (the shutdown token's under a lock) was a few percent of a one-key
/// EVAL, on counters every event loop shares.
#[derive(Debug, Clone)]
pub struct Context(Arc<Shared>);

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for Context {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// A [`Context`]'s handles.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The shared engine.
    pub engine: Arc<Engine>,
    /// The change feed: watchers, pub/sub, keyspace notifications.
    pub feed: Arc<Hub>,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Connection tasks; the server waits for it to drain at shutdown.
    pub tasks: TaskTracker,
    /// Server-wide counters every frontend records into.
    pub stats: Arc<Stats>,
    /// The durable store when persistence is on (the append-only log, or RocksDB): replies wait
    /// on it.
    pub log: Option<Durable>,
    /// Users and permissions; off unless `--requirepass` or `--users-file` is given.
    pub auth: Arc<Auth>,
    /// The cluster node in cluster mode: writes go through its Raft log, reads through its read
    /// barrier. `None` on a single node, which then pays one check per command.
    pub cluster: Option<Arc<Cluster>>,
    /// Lua scripts: the cache, the limits, the running scripts (SCRIPT KILL).
    pub scripts: Arc<Scripts>,
}

impl Context {
    /// A context over a fresh engine observed by a fresh feed, without persistence, wired as
    /// `server.rs` wires them: for unit tests of a frontend.
    #[cfg(test)]
    pub(crate) fn for_tests(config: Config) -> Self {
        let feed = Arc::new(Hub::new(config.feed));
        let engine = Arc::new(Engine::with_observers(config.limits.clone(), vec![feed.clone()]));
        let scripts = Arc::new(Scripts::new(config.script_max_memory, config.script_timeout));
        Self::from(Shared {
            engine,
            feed,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stats: Arc::default(),
            log: None,
            auth: Arc::new(Auth::off()),
            cluster: None,
            scripts,
        })
    }

    /// The one way a frontend runs a command: applies it ([`Context::run_pipelined`]) and returns its
    /// typed output once its effect may be acknowledged under the fsync policy. A write whose log
    /// record cannot be made durable is answered with the log's error, never with success.
    pub async fn run<C: Run>(&self, caller: &Caller, cmd: C) -> Result<C::Output, Error> {
        if let Some(cluster) = &self.cluster {
            return self.run_clustered(cluster, caller, cmd).await;
        }
        let (result, position) = self.run_pipelined(caller, cmd);
        self.durable_sharing(position, self.fence_after(position), true).await?;
        result
    }

    /// The batch form of [`Context::run`] for pipelining frontends: applies one command and
    /// records it, without waiting; returns the log position to wait for (with
    /// [`Context::durable`]) before acknowledging it. A pipelining frontend applies a whole batch,
    /// then waits once for the largest position.
    ///
    /// This is where authorization happens, once, for every protocol: the caller's permissions
    /// against the command's class and every key it touches (every operation of a batch), before
    /// the engine sees it; a refused command changes nothing.
    pub fn run_pipelined<C: Run>(&self, caller: &Caller, cmd: C) -> (Result<C::Output, Error>, u64) {
        if let Some(cluster) = &self.cluster {
            // A synchronous caller in a cluster (the pipelining frontends go through `pipeline`
            // instead): the command waits for consensus on this thread, which hands its other
            // tasks to another worker meanwhile (the frontends' event loops are multi-thread
            // runtimes of one worker). The position returned is the write's Raft log index (there is no
            // append-only log to wait for).
            let handle = tokio::runtime::Handle::current();
            return tokio::task::block_in_place(|| {
                handle.block_on(self.run_clustered_at(cluster, caller, cmd, &mut ReadBarrier::default()))
            });
        }
        let started = Instant::now();
        let op = cmd.name();
        let mut at = LogPosition::default();
        let result = match caller.authorize_with(|| cmd.need()) {
            Ok(()) => cmd.run_in(self, &mut at),
            Err(e) => Err(e),
        };
        self.stats.record(caller.protocol, op, result.is_ok(), started.elapsed());
        (result, at.0)
    }

    /// The same check for what is not a command: a watch (read permission on every key it could
    /// deliver), a subscription (the channel or pattern), an admin operation.
    pub fn authorize(&self, caller: &Caller, need: Need<'_>) -> Result<(), Error> {
        caller.authorize(need)
    }

    /// [`Context::run`] in cluster mode: authorization first, as on a single node (once, here);
    /// then a write (or publish, or a batch holding one) goes through the Raft log as a whole,
    /// and a read waits for the read barrier (linearizable reads) and then runs here.
    async fn run_clustered<C: Run>(
        &self,
        cluster: &Cluster,
        caller: &Caller,
        cmd: C,
    ) -> Result<C::Output, Error> {
        self.run_clustered_at(cluster, caller, cmd, &mut ReadBarrier::default()).await.0
    }

    /// [`Context::run_clustered`], also returning the Raft log index a write was applied at (0
    /// for a read or a refusal). A read takes `barrier` unless it holds (a pipelining
    /// connection's reads share one: see [`pipeline`]); anything else spends it.
    async fn run_clustered_at<C: Run>(
        &self,
        cluster: &Cluster,
        caller: &Caller,
        cmd: C,
        barrier: &mut ReadBarrier,
    ) -> (Result<C::Output, Error>, u64) {
        let started = Instant::now();
        let op = cmd.name();
        let mut index = 0;
        let result = if let Err(e) = caller.authorize_with(|| cmd.need()) {
            // Refused here, on the node that received it, before anything is proposed or
            // forwarded: the leader applies what a member sends without a caller of its own.
            Err(e)
        } else {
            if cmd.replicated() || cmd.is_script() {
                barrier.spent();
            }
            if let Err(e) = self.make_room(&cmd, &mut LogPosition::default()) {
                // Over `--max-memory` (a cluster only refuses: see `engine::memory`).
                self.stats.record(caller.protocol, op, false, started.elapsed());
                return (Err(e), 0);
            }
            match cmd.into_script() {
                // A script runs here and proposes what it wrote as one transaction (see
                // `scripting`): no Lua runs at apply.
                Ok(script) => match self.scripts.eval_clustered(self, cluster, script).await {
                    Ok(value) => C::output_from(Reply::from(value), false),
                    Err(e) => Err(e),
                },
                Err(cmd) if cmd.replicated() => match cluster.write_at(cmd.into_command()).await {
                    Ok((reply, created, at)) => {
                        index = at;
                        C::output_from(reply, created)
                    }
                    Err(e) => Err(e),
                },
                Err(cmd) => match barrier.take(cluster).await {
                    Ok(()) => cmd.run_in(self, &mut LogPosition::default()),
                    Err(e) => Err(e),
                },
            }
        };
        self.stats.record(caller.protocol, op, result.is_ok(), started.elapsed());
        (result, index)
    }

    /// Sends a dynamic command where it belongs: keyspace commands to the engine (writes refused
    /// at once while the log cannot take them, even those that would change nothing), `Publish`
    /// to the feed, and a batch's operations one by one.
    fn route(&self, cmd: Command, at: &mut LogPosition) -> Result<Reply, Error> {
        match cmd {
            Command::Publish(c) => c.run_in(self, at).map(Reply::from),
            Command::Batch(c) => c.run_in(self, at).map(Reply::from),
            Command::Eval(c) => c.run_in(self, at).map(Reply::from),
            cmd => {
                if cmd.is_write() {
                    self.engine.check_writable()?;
                }
                if cmd.may_grow() {
                    self.engine.make_room(at)?;
                }
                self.engine.apply_command(cmd, at)
            }
        }
    }

    /// Where `--max-memory` is enforced, once for every protocol: before a command that may grow
    /// memory, evict by the policy or refuse with `OutOfMemory` (see `engine::memory`). Deletes,
    /// reads and shrinking commands pass. A script or transaction is checked whole, up front.
    pub fn make_room<C: Run>(&self, cmd: &C, at: &mut LogPosition) -> Result<(), Error> {
        if cmd.may_grow() { self.engine.make_room(at) } else { Ok(()) }
    }

    /// Waits until everything up to `position` may be acknowledged (no-op without persistence).
    /// Under `no` and `everysec`, a record not yet written first lets the other tasks on this
    /// worker append theirs, so one `write(2)` covers them all.
    pub async fn durable(&self, position: u64) -> Result<(), Error> {
        self.durable_sharing(position, 0, true).await
    }

    /// The fence the reply of a command that wrote nothing (a read, a refused conditional write)
    /// waits for, taken right after it ran: see [`crate::persist::AppendLog::wait_visible`]. 0 without a log (and
    /// in a cluster, where reads only ever see committed entries).
    pub fn read_fence(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.appended())
    }

    /// The fence a command's reply waits for, given the log position it wrote at: the
    /// [`Context::read_fence`] when it wrote nothing (`position` 0), none for a write (whatever
    /// it saw lies behind its own record).
    pub fn fence_after(&self, position: u64) -> u64 {
        if position == 0 { self.read_fence() } else { 0 }
    }

    /// [`Context::durable`], saying whether an unwritten record waits to share its `write(2)`
    /// (`share`) or is written at once: see [`crate::persist::AppendLog::wait_durable_batched`] for when each
    /// pays. A batch that read (`fence`: the [`Context::read_fence`] after its last command
    /// that wrote nothing, 0 for none) also waits until what its reads could see is durable
    /// ([`crate::persist::AppendLog::wait_visible`]), which never fails it; with nothing pending that costs an
    /// atomic load.
    pub async fn durable_sharing(&self, position: u64, fence: u64, share: bool) -> Result<(), Error> {
        match &self.log {
            Some(log) if position.max(fence) > 0 => log.wait_visible(position, fence, share).await,
            _ => Ok(()),
        }
    }
}

/// How the server runs one command, typed or dynamic: what [`Context::run`] takes.
pub trait Run: Sized {
    /// What the command answers.
    type Output;
    /// Its name, for stats.
    fn name(&self) -> &'static str;
    /// What running it needs permission for: its command and keys.
    fn need(&self) -> Need<'_>;
    /// Runs it, raising `at` to the log position its writes reached.
    fn run_in(self, ctx: &Context, at: &mut LogPosition) -> Result<Self::Output, Error>;
    /// Whether, in a cluster, it goes through the Raft log (writes, publishes, a batch holding
    /// either) rather than reading this node's state.
    fn replicated(&self) -> bool;
    /// A script, which in a cluster runs on the node that took it and proposes what it wrote
    /// (`Scripts::eval_clustered`) rather than being proposed itself; any other command is
    /// given back.
    fn into_script(self) -> Result<cmd::Eval, Self> {
        Err(self)
    }
    /// Whether [`Run::into_script`] takes it (whoever overrides one overrides both).
    fn is_script(&self) -> bool {
        false
    }
    /// The dynamic command, for the log.
    fn into_command(self) -> Command;
    /// Whether it may grow the dataset's memory (Redis's `denyoom`): refused over
    /// `--max-memory` when nothing can be evicted ([`Context::make_room`]).
    fn may_grow(&self) -> bool;
    /// The typed output back from the reply the state machine gave (`created`: a put created its
    /// key, which `Reply::Put` does not carry).
    fn output_from(reply: Reply, created: bool) -> Result<Self::Output, Error>;
}

/// A reply whose shape is not the command's output: a fault, logged.
fn wrong_shape(name: &str, reply: &Reply) -> Error {
    tracing::error!(command = name, ?reply, "cluster: a reply does not have its command's shape");
    Error::Internal
}

/// Whether a dynamic command must go through a cluster's log.
fn replicated(cmd: &Command) -> bool {
    match cmd {
        Command::Publish(_) => true,
        Command::Batch(b) => b.ops.iter().any(replicated),
        cmd => cmd.is_write(),
    }
}

/// Keyspace commands go to the engine; writes are refused at once while the log cannot take them.
impl<C: Apply + 'static> Run for C
where
    C::Output: FromReply + 'static,
{
    type Output = C::Output;

    fn name(&self) -> &'static str {
        C::NAME
    }

    fn need(&self) -> Need<'_> {
        Need::Command(C::COMMAND, self.keys())
    }

    fn replicated(&self) -> bool {
        writes(self)
    }

    fn may_grow(&self) -> bool {
        match (self as &dyn std::any::Any).downcast_ref::<cmd::Txn>() {
            Some(txn) => txn.success.iter().chain(&txn.failure).any(Command::may_grow),
            None => C::COMMAND.may_grow(),
        }
    }

    fn into_command(self) -> Command {
        self.into()
    }

    fn output_from(reply: Reply, created: bool) -> Result<C::Output, Error> {
        let mut output = C::Output::from_reply(reply).map_err(|r| wrong_shape(C::NAME, &r))?;
        if let Some(put) =
            (&mut output as &mut dyn std::any::Any).downcast_mut::<nanodb_protocol::PutOutcome>()
        {
            put.created = created;
        }
        Ok(output)
    }

    fn run_in(self, ctx: &Context, at: &mut LogPosition) -> Result<C::Output, Error> {
        if writes(&self) {
            ctx.engine.check_writable()?;
            ctx.make_room(&self, at)?;
        }
        ctx.engine.apply(self, at)
    }
}

/// Whether a typed command writes: its class says, except for a transaction, which writes when
/// one of its operations does (a transaction of reads is an atomic multi-key read).
fn writes<C: TypedCommand + 'static>(cmd: &C) -> bool {
    match (cmd as &dyn std::any::Any).downcast_ref::<cmd::Txn>() {
        Some(txn) => txn.writes(),
        None => C::CLASS == Class::Write,
    }
}

/// Publishing touches no key: the feed delivers it.
impl Run for cmd::Publish {
    type Output = i64;

    fn name(&self) -> &'static str {
        <Self as TypedCommand>::NAME
    }

    fn need(&self) -> Need<'_> {
        Need::Command(<Self as TypedCommand>::COMMAND, TypedCommand::keys(self))
    }

    fn replicated(&self) -> bool {
        true
    }

    fn may_grow(&self) -> bool {
        false
    }

    fn into_command(self) -> Command {
        self.into()
    }

    fn output_from(reply: Reply, _: bool) -> Result<i64, Error> {
        i64::from_reply(reply).map_err(|r| wrong_shape("publish", &r))
    }

    fn run_in(self, ctx: &Context, _: &mut LogPosition) -> Result<i64, Error> {
        self.validate(ctx.engine.limits())?;
        // Exact-size copies: a slice of a network buffer would pin the whole buffer in every
        // subscriber's queue.
        let delivered = ctx.feed.publish(&value::owned(&self.channel), &value::owned(&self.message));
        Ok(delivered as i64)
    }
}

/// A batch runs its operations in order, one result each; validated whole first.
impl Run for cmd::Batch {
    type Output = Vec<Result<Reply, Error>>;

    fn name(&self) -> &'static str {
        <Self as TypedCommand>::NAME
    }

    fn need(&self) -> Need<'_> {
        Need::Command(<Self as TypedCommand>::COMMAND, TypedCommand::keys(self))
    }

    fn replicated(&self) -> bool {
        self.ops.iter().any(replicated)
    }

    /// On a single node each operation is checked as it runs (`Context::route`), so a batch of
    /// deletes and writes runs its deletes; this answers for the batch whole, in a cluster.
    fn may_grow(&self) -> bool {
        self.ops.iter().any(Command::may_grow)
    }

    fn into_command(self) -> Command {
        self.into()
    }

    fn output_from(reply: Reply, _: bool) -> Result<Self::Output, Error> {
        Self::Output::from_reply(reply).map_err(|r| wrong_shape("batch", &r))
    }

    fn run_in(self, ctx: &Context, at: &mut LogPosition) -> Result<Self::Output, Error> {
        self.validate(ctx.engine.limits())?;
        Ok(self.ops.into_iter().map(|op| ctx.route(op, at)).collect())
    }
}

/// A command whose type is known only at run time (the TCP wire): its dynamic reply.
impl Run for Command {
    type Output = Reply;

    fn name(&self) -> &'static str {
        Command::name(self)
    }

    fn need(&self) -> Need<'_> {
        Need::Command(self.command_name(), self.keys())
    }

    fn replicated(&self) -> bool {
        replicated(self)
    }

    fn may_grow(&self) -> bool {
        Command::may_grow(self)
    }

    fn into_script(self) -> Result<cmd::Eval, Self> {
        match self {
            Command::Eval(c) => Ok(c),
            other => Err(other),
        }
    }

    fn is_script(&self) -> bool {
        matches!(self, Command::Eval(_))
    }

    fn into_command(self) -> Command {
        self
    }

    fn output_from(reply: Reply, _: bool) -> Result<Reply, Error> {
        Ok(reply)
    }

    fn run_in(self, ctx: &Context, at: &mut LogPosition) -> Result<Reply, Error> {
        ctx.route(self, at)
    }
}

/// Accepts connections on `listener` until shutdown, for the frontends that own their sockets (the
/// binary TCP protocol, RESP, REST): each connection runs `serve` in its own tracked task while it
/// holds one of `max_connections` places; a connection beyond the limit runs `refuse` (which tells
/// the client why, in its protocol) instead. A failing accept (out of file descriptors) backs off
/// briefly instead of spinning. With `loops`, connections run on the frontend's event loops
/// (round robin), moved to the loop's reactor first and tracked by the loops, which the caller
/// stops once this returns ([`EventLoops::stop`]); without, on the server's runtime, tracked by
/// `ctx.tasks`.
pub async fn accept_loop<S, SF, R, RF>(
    listener: TcpListener,
    ctx: Context,
    name: &'static str,
    serve: S,
    refuse: R,
    loops: Option<&EventLoops>,
) where
    S: Fn(TcpStream, SocketAddr) -> SF + Send + Sync + 'static,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(ctx.config.max_connections));
    let serve = Arc::new(serve);
    let (mut refused, mut last_warning) = (0u64, None);
    loop {
        let accepted = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "{name}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match places.clone().try_acquire_owned() {
            Ok(permit) => match loops {
                Some(loops) => {
                    let serve = serve.clone();
                    loops.spawn_socket(loops.next(), name, stream, peer, move |stream| async move {
                        serve(stream, peer).await;
                        drop(permit);
                    });
                }
                None => {
                    let connection = serve(stream, peer);
                    ctx.tasks.spawn(async move {
                        connection.await;
                        drop(permit);
                    });
                }
            },
            Err(_) => {
                // A flood of refusals is one warning a second, the rest at debug.
                refused += 1;
                if last_warning.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%peer, max = ctx.config.max_connections, refused, "{name}: connections refused, at max_connections");
                    last_warning = Some(Instant::now());
                    refused = 0;
                } else {
                    tracing::debug!(%peer, "{name}: connection refused, at max_connections");
                }
                ctx.tasks.spawn(refuse(stream));
            }
        }
    }
    tracing::debug!("{name}: listener stopped");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use nanodb_protocol::{Command, Error, Reply, cmd};

    use super::Context;
    use crate::auth::Caller;
    use crate::config::Config;
    use crate::stats::Protocol;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn batch_applies_in_order_with_one_result_each() {
        let ctx = Context::for_tests(Config::all_off());
        let run = |cmd| ctx.run_pipelined(&Caller::everything(Protocol::Tcp), cmd).0;
        run(Command::Append(cmd::Append { key: b("s"), value: b("text") })).expect("append");
        let ops = vec![
            Command::Incr(cmd::Incr { key: b("n"), delta: 2 }),
            Command::Incr(cmd::Incr { key: b("s"), delta: 1 }),
            Command::Incr(cmd::Incr { key: b("n"), delta: 3 }),
            Command::Get(cmd::Get { key: b("n") }),
            Command::Publish(cmd::Publish { channel: b("c"), message: b("m") }),
            Command::Delete(cmd::Delete { key: b("n") }),
        ];
        let reply = run(Command::Batch(cmd::Batch { ops })).expect("batch");
        let Reply::Batch(results) = reply else { panic!("{reply:?}") };
        assert_eq!(results.len(), 6);
        assert_eq!(results[0], Ok(Reply::Int(2)));
        assert_eq!(results[1], Err(Error::NotAnInteger), "one failure does not stop the batch");
        assert_eq!(results[2], Ok(Reply::Int(5)));
        assert!(matches!(&results[3], Ok(Reply::Value(Some(entry))) if entry.value == b("5")));
        assert_eq!(results[4], Ok(Reply::Int(0)), "publish runs in a batch, reaching nobody");
        assert_eq!(results[5], Ok(Reply::Bool(true)));
    }

    #[test]
    fn a_batch_or_publish_over_its_limits_is_refused_whole() {
        let mut config = Config::all_off();
        config.limits.max_batch_len = 2;
        config.limits.max_value_len = 4;
        let ctx = Context::for_tests(config);
        let incr = Command::Incr(cmd::Incr { key: b("n"), delta: 1 });
        let batch = Command::Batch(cmd::Batch { ops: vec![incr.clone(), incr.clone(), incr] });
        assert!(matches!(
            ctx.run_pipelined(&Caller::everything(Protocol::Tcp), batch).0,
            Err(Error::LimitExceeded { .. })
        ));
        assert_eq!(ctx.engine.key_count(), 0, "nothing of a refused batch was applied");
        let publish = Command::Publish(cmd::Publish { channel: b("c"), message: b("too long") });
        assert!(matches!(
            ctx.run_pipelined(&Caller::everything(Protocol::Tcp), publish).0,
            Err(Error::ValueTooLarge { .. })
        ));
    }
}
