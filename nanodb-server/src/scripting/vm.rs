//! One sandboxed Lua 5.1 state per thread that runs scripts, with its compiled functions.
//!
//! A state is built once (`prelude.lua` sets the sandbox up) and reused by every script the
//! thread runs: building one costs far more than a small script does. Reuse is safe because a
//! script never reaches a table another script sees except through read-only proxies (see the
//! prelude), and each compiled script has an environment of its own that refuses new fields,
//! whose only fields (KEYS, ARGV, _G) every run sets afresh. Between runs the state holds only
//! compiled functions (with their environments) and the SHA-1 of recent bodies, both bounded by
//! [`MAX_COMPILED`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mlua::chunk::ChunkMode;
use mlua::{
    Function, HookTriggers, Lua, LuaOptions, LuaString, MultiValue, StdLib, Value, Variadic, VmState,
};
use nanodb_protocol::{Error, ScriptValue};

use crate::engine::group::GroupState;
use crate::frontend::resp::commands::Session;

/// Lua instructions between two checks of the deadline and of SCRIPT KILL.
const CHECK_EVERY: u32 = 10_000;
/// Compiled functions kept per state; past it the state forgets them all (they recompile from
/// the shared cache on their next run).
const MAX_COMPILED: usize = 1_000;
/// Longest script body whose SHA-1 a state remembers ([`Vm::sha_of`]).
const MAX_NAMED_BODY: usize = 16 * 1024;

/// Why a run stopped early, as [`Control::stop`] holds it.
pub(crate) const RUNNING: u8 = 0;
pub(crate) const TIMED_OUT: u8 = 1;
pub(crate) const KILLED: u8 = 2;
pub(crate) const OUT_OF_MEMORY: u8 = 3;

/// What the instruction hook and SCRIPT KILL share with a running script.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// One of [`RUNNING`], [`TIMED_OUT`], [`KILLED`], [`OUT_OF_MEMORY`].
    pub(crate) stop: AtomicU8,
    /// The run's deadline, in nanoseconds since [`Control::epoch`]... kept as an offset so it
    /// fits an atomic.
    deadline_ns: AtomicU64,
    /// When the run started, as an offset from the epoch like the deadline.
    started_ns: AtomicU64,
    /// The runner ([`super::Scripts`]'s id) this run is for; 0 between runs. SCRIPT KILL stops
    /// the runs marked with its runner's id.
    owner: AtomicU64,
    /// Whether this run already handed its thread's other work away (see [`hand_off`]).
    handed_off: std::sync::atomic::AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

/// A script that runs longer than this hands the rest of its event loop's (or tokio worker's)
/// connections to another thread, so they are not blocked by it.
const HAND_OFF_AFTER_NS: u64 = 1_000_000;

/// Moves the other tasks of the tokio worker this script runs on to another thread: tokio's
/// `block_in_place` hands the worker's core to a new thread, and waiting inside it until that
/// thread runs a task proves the core was taken, so it is not taken back when `block_in_place`
/// returns and the rest of the script runs here while the loop's other connections are served
/// there. Only on a multi-thread runtime's worker, where that is allowed; a script on any other
/// thread blocks nobody else.
fn hand_off() {
    if let Ok(handle) = tokio::runtime::Handle::try_current()
        && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(|| {
            let (taken, wait) = std::sync::mpsc::sync_channel(1);
            handle.spawn(async move {
                let _ = taken.send(());
            });
            let _ = wait.recv_timeout(std::time::Duration::from_millis(200));
        });
    }
}

impl Control {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    /// Arms the run: its deadline, and the stop flag back to running. Called BEFORE the control is
    /// registered for SCRIPT KILL, so that a kill arriving at once is not undone by this reset.
    pub(crate) fn start(&self, timeout: std::time::Duration, owner: u64) {
        let now = self.epoch().elapsed();
        let deadline = now + timeout;
        self.deadline_ns.store(u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.started_ns.store(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.handed_off.store(false, Ordering::Relaxed);
        self.stop.store(RUNNING, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Release);
    }

    /// Marks the run over: SCRIPT KILL no longer counts it.
    pub(crate) fn end(&self) {
        self.owner.store(0, Ordering::Release);
    }

    /// The runner whose script runs now (0: none).
    pub(crate) fn running_for(&self) -> u64 {
        self.owner.load(Ordering::Acquire)
    }

    /// Checks the deadline; whether the run must stop.
    fn check(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) != RUNNING {
            return true;
        }
        let now = u64::try_from(self.epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now >= self.deadline_ns.load(Ordering::Relaxed) {
            let _ = self.stop.compare_exchange(RUNNING, TIMED_OUT, Ordering::Relaxed, Ordering::Relaxed);
            return true;
        }
        if now.saturating_sub(self.started_ns.load(Ordering::Relaxed)) > HAND_OFF_AFTER_NS
            && !self.handed_off.swap(true, Ordering::Relaxed)
        {
            hand_off();
        }
        false
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) != RUNNING
    }
}

/// The client list a script's commands see (a script is no connection; nothing registers here).
static NO_CLIENTS: std::sync::LazyLock<crate::frontend::resp::Clients> =
    std::sync::LazyLock::new(crate::frontend::resp::Clients::default);

/// The slot the state's one `redis.call` callback reads the running script's context and
/// session from, with its argument and reply buffers, kept from one run to the next.
///
/// The callback is made once per state, not once per run: a callback made per run (mlua's
/// `scope`, which lets it borrow the run's context) cost a closure, a userdata and their
/// destructors on every EVAL, and left garbage for the collector. A callback made once must
/// own what it reaches, hence the owned context here (a clone, set for the run and dropped at
/// its end, so a state never keeps a server alive) rather than a borrow.
///
/// The session is kept from run to run (building, moving and dropping one was a few percent of
/// a one-key EVAL): between runs it holds no group, and one that a command changed in a way
/// the next script could notice (a SCAN cursor) is dropped and built anew
/// ([`Session::ready_for_next_script`]).
#[derive(Default)]
struct Calls {
    /// The running script's context; `None` between runs.
    ctx: Option<crate::frontend::Context>,
    session: Option<Session<'static>>,
    argbuf: Vec<Bytes>,
    /// Where the arguments' bytes are copied ([`carve`]).
    argspace: BytesMut,
    out: BytesMut,
}

/// A script's session: no connection, every permission (the script's declared keys were
/// authorized before it ran), the group set per run.
fn script_session() -> Session<'static> {
    Session::new(
        0,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &NO_CLIENTS,
        crate::auth::Caller::everything(crate::stats::Protocol::Resp),
    )
}

/// A copy of `bytes` carved from `space`. A command's arguments are copied out of Lua (whose
/// strings live only while the call does) into one buffer kept from call to call: a carved
/// copy shares that buffer, so neither copying nor the handlers' clones of it allocate, and once
/// the copies of earlier calls are dropped the buffer's space is reused.
fn carve(space: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if space.capacity() < bytes.len() {
        // Reclaims the buffer when no earlier copy is held, else starts another.
        space.reserve(bytes.len().max(4096));
    }
    space.extend_from_slice(bytes);
    space.split().freeze()
}

type Scripts = HashMap<Bytes, Function, ahash::RandomState>;

/// A thread's Lua state.
pub(crate) struct Vm {
    lua: Lua,
    /// `prelude.lua`'s runner.
    runner: Function,
    /// Compiled scripts by SHA-1 (hex).
    compiled: Scripts,
    /// The SHA-1 (hex) of script bodies this state ran, so that an EVAL of a known body skips
    /// hashing it (SHA-1 was a few percent of an EVAL's time). Bounded like `compiled`, and only
    /// bodies up to [`MAX_NAMED_BODY`] bytes.
    shas: HashMap<Bytes, Bytes, ahash::RandomState>,
    /// The runner ([`super::Scripts`]) this state's control is registered with for SCRIPT KILL
    /// (0: none yet).
    pub(crate) registered: u64,
    /// The running script's context and session, shared with the `redis.call` callback.
    calls: Rc<RefCell<Calls>>,
    /// A run's KEYS and ARGV as Lua strings, kept (empty) from one run to the next.
    strings: Vec<LuaString>,
    /// The cache generation the compiled functions belong to (SCRIPT FLUSH bumps it).
    generation: u64,
    pub(crate) control: Arc<Control>,
    max_memory: usize,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("compiled", &self.compiled.len()).finish_non_exhaustive()
    }
}

/// How a run ended, before the caller decides to commit.
pub(crate) enum Ended {
    /// The script returned this value.
    Value(ScriptValue),
    /// It raised this error (Redis's words, without the "script:" suffix).
    Raised(String),
    /// It was stopped ([`TIMED_OUT`], [`KILLED`], [`OUT_OF_MEMORY`]).
    Stopped(u8),
}

fn lua_err(e: mlua::Error) -> Error {
    tracing::error!(error = %e, "scripting: the Lua state failed");
    Error::Internal
}

impl Vm {
    /// A fresh sandboxed state whose scripts may allocate `max_memory` bytes each.
    pub(crate) fn new(max_memory: usize) -> Result<Self, Error> {
        let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::new())
            .map_err(lua_err)?;
        let control = Arc::new(Control::default());
        let host = lua.create_table().map_err(lua_err)?;
        let c = control.clone();
        let stopped = lua.create_function(move |_, ()| Ok(c.stopped())).map_err(lua_err)?;
        let c = control.clone();
        let mark_oom = lua
            .create_function(move |_, ()| {
                let _ = c.stop.compare_exchange(RUNNING, OUT_OF_MEMORY, Ordering::Relaxed, Ordering::Relaxed);
                Ok(())
            })
            .map_err(lua_err)?;
        let sha1hex = lua
            .create_function(|lua, s: mlua::LuaString| lua.create_string(super::sha1_hex(&s.as_bytes())))
            .map_err(lua_err)?;
        let log = lua
            .create_function(|_, args: MultiValue| {
                let text: Vec<String> =
                    args.iter().skip(1).map(|v| v.to_string().unwrap_or_default()).collect();
                tracing::info!(target: "nanodb::script", "{}", text.join(" "));
                Ok(())
            })
            .map_err(lua_err)?;
        let calls = Rc::new(RefCell::new(Calls::default()));
        let slot = calls.clone();
        let invoke = lua
            .create_function(move |lua, values: MultiValue| invoke(lua, &slot, values))
            .map_err(lua_err)?;
        for (name, f) in [
            ("stopped", stopped),
            ("mark_oom", mark_oom),
            ("sha1hex", sha1hex),
            ("log", log),
            ("invoke", invoke),
        ] {
            host.raw_set(name, f).map_err(lua_err)?;
        }
        host.raw_set("max_memory", max_memory as f64).map_err(lua_err)?;
        let runner: Function = lua
            .load(include_str!("prelude.lua"))
            .set_name("=prelude")
            .set_mode(ChunkMode::Text)
            .call(host)
            .map_err(lua_err)?;
        let c = control.clone();
        lua.set_hook(HookTriggers::new().every_nth_instruction(CHECK_EVERY), move |_, _| {
            if c.check() {
                Err(mlua::Error::RuntimeError("script stopped".into()))
            } else {
                Ok(VmState::Continue)
            }
        })
        .map_err(lua_err)?;
        // A collection cycle starts when the heap reaches `pause`% of what the last one left
        // live (Lua's default: 200%). A state's live heap is small (the sandbox and compiled
        // scripts) and each EVAL leaves a little garbage (its KEYS and ARGV), so cycles (each a
        // full mark of that live heap) come less often for a few hundred KiB more per thread: up
        // to 1000%, but never so far that the garbage allowed before a cycle is more than half a
        // script's memory limit (Lua 5.1 does not collect before failing an allocation, so a
        // script that makes garbage must meet a cycle well before its limit). A state past 4 MiB
        // after a run is collected in full.
        let live = lua.used_memory().max(1);
        let pause = (100 + 50 * (max_memory / live)).clamp(200, 1000);
        lua.gc_set_mode(mlua::state::GcMode::Incremental(
            mlua::state::GcIncParams::default().pause(i32::try_from(pause).unwrap_or(200)),
        ));
        Ok(Self {
            lua,
            runner,
            compiled: Scripts::default(),
            shas: HashMap::default(),
            registered: 0,
            calls,
            strings: Vec::new(),
            generation: 0,
            control,
            max_memory,
        })
    }

    /// Forgets compiled functions of an older cache generation.
    pub(crate) fn sync_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.compiled.clear();
            self.generation = generation;
        }
    }

    /// The SHA-1 (hex) naming script body `text`: remembered from an earlier run of the same
    /// body, else computed (and remembered, for bodies up to [`MAX_NAMED_BODY`] bytes).
    pub(crate) fn sha_of(&mut self, text: &Bytes) -> Bytes {
        if let Some(sha) = self.shas.get(text) {
            return sha.clone();
        }
        let sha = Bytes::from(super::sha1_hex(text));
        if text.len() <= MAX_NAMED_BODY {
            if self.shas.len() >= MAX_COMPILED {
                self.shas.clear();
            }
            // A copy: `text` may be a slice of a connection's whole read buffer.
            self.shas.insert(Bytes::copy_from_slice(text), sha.clone());
        }
        sha
    }

    /// Whether `sha` is compiled here.
    pub(crate) fn has(&self, sha: &[u8]) -> bool {
        self.compiled.contains_key(sha)
    }

    /// Compiles `text` as script `sha`; a syntax error in Redis's words.
    pub(crate) fn compile(&mut self, sha: Bytes, text: &[u8]) -> Result<(), Error> {
        if text.first() == Some(&0x1b) {
            return Err(Error::Script("ERR Error compiling script: loading bytecode is not allowed".into()));
        }
        if self.compiled.len() >= MAX_COMPILED {
            self.compiled.clear();
        }
        self.lua.set_memory_limit(self.lua.used_memory() + self.max_memory).map_err(lua_err)?;
        let compiled = self.lua.load(text).set_name("@user_script").set_mode(ChunkMode::Text).into_function();
        self.lua.set_memory_limit(0).map_err(lua_err)?;
        let f = match compiled {
            Ok(f) => f,
            Err(mlua::Error::SyntaxError { message, .. }) => {
                return Err(Error::Script(format!("ERR Error compiling script (new function): {message}")));
            }
            Err(e) => return Err(Error::Script(format!("ERR Error compiling script (new function): {e}"))),
        };
        self.compiled.insert(sha, f);
        Ok(())
    }

    /// Runs compiled script `sha` with `keys` and `args`; each `redis.call` runs its command
    /// against `ctx` inside `group` (the arguments, as bytes, through the RESP handlers). The
    /// caller started [`Vm::control`] ([`Control::start`]) and then registered it for SCRIPT
    /// KILL.
    pub(crate) fn run(
        &mut self,
        sha: &[u8],
        keys: &[Bytes],
        args: &[Bytes],
        ctx: &crate::frontend::Context,
        group: &Arc<GroupState>,
    ) -> Result<Ended, Error> {
        let Some(f) = self.compiled.get(sha) else {
            return Err(Error::Script("NOSCRIPT No matching script. Please use EVAL.".into()));
        };
        let lua = &self.lua;
        // Made while the memory limit is 0 (see below), so without a protected call each; the
        // runner builds the KEYS and ARGV tables from them (cheaper in Lua than through the API).
        let strings = &mut self.strings;
        for item in keys.iter().chain(args) {
            strings.push(lua.create_string(item).map_err(lua_err)?);
        }
        {
            let mut calls = self.calls.borrow_mut();
            calls.ctx = Some(ctx.clone());
            calls.session.get_or_insert_with(script_session).group = Some(group.clone());
        }
        // The limit is set only around the script itself: while it is 0, mlua makes the strings
        // above without wrapping each Lua API call it makes in a protected call of its own.
        let result = lua.set_memory_limit(lua.used_memory() + self.max_memory).and_then(|_| {
            self.runner.call::<(bool, Value)>((
                f,
                keys.len(),
                args.len(),
                Variadic::from_iter(strings.iter()),
            ))
        });
        let _ = lua.set_memory_limit(0);
        strings.clear();
        {
            let mut calls = self.calls.borrow_mut();
            // The run's context and its hold on the group go now, not at the next run (the group
            // hands its overlay on only when no one else holds it).
            calls.ctx = None;
            if let Some(session) = &mut calls.session
                && !session.ready_for_next_script()
            {
                calls.session = None;
            }
            calls.argbuf.clear();
            if calls.argbuf.capacity() > 1024 {
                calls.argbuf = Vec::new();
            }
            if calls.out.capacity() > 64 * 1024 {
                // A large reply (an LRANGE of a long list) is not kept for the thread's life.
                calls.out = BytesMut::new();
            }
            if calls.argspace.capacity() > 64 * 1024 {
                // Nor a large argument's space.
                calls.argspace = BytesMut::new();
            }
        }
        if strings.capacity() > 1024 {
            *strings = Vec::new();
        }
        let stop = self.control.stop.load(Ordering::Relaxed);
        let ended = if stop != RUNNING {
            Ended::Stopped(stop)
        } else {
            match result {
                Ok((true, value)) => match super::reply::lua_to_value(&value, 0) {
                    Ok(ScriptValue::Error(e)) => Ended::Raised(e),
                    Ok(v) => Ended::Value(v),
                    Err(e) => Ended::Raised(e),
                },
                Ok((false, error)) => Ended::Raised(error_text(&error)),
                Err(mlua::Error::MemoryError(_)) => Ended::Stopped(OUT_OF_MEMORY),
                Err(e) => return Err(lua_err(e)),
            }
        };
        if matches!(ended, Ended::Stopped(OUT_OF_MEMORY)) || lua.used_memory() > 4 * 1024 * 1024 {
            let _ = lua.gc_collect();
        }
        Ok(ended)
    }
}

/// `redis.call`'s and `redis.pcall`'s callback: runs one command of the running script (see
/// [`Calls`]); its reply as Lua converts it and whether it is an error (which `redis.call`
/// raises).
fn invoke(lua: &Lua, calls: &RefCell<Calls>, values: MultiValue) -> mlua::Result<(Value, bool)> {
    // A command never runs a script, so the slot is free; a state that is not running one has
    // nothing to run the command against.
    let Ok(mut calls) = calls.try_borrow_mut() else {
        return error_table(lua, "ERR a script command cannot run here");
    };
    let Calls { ctx, session, argbuf, argspace, out } = &mut *calls;
    let (Some(ctx), Some(session)) = (ctx.as_ref(), session.as_mut()) else {
        return error_table(lua, "ERR no script is running");
    };
    argbuf.clear();
    for v in values {
        match v {
            Value::String(s) => argbuf.push(carve(argspace, &s.as_bytes())),
            Value::Integer(n) => argbuf.push(carve(argspace, n.to_string().as_bytes())),
            Value::Number(n) => argbuf.push(carve(argspace, format_number(n).as_bytes())),
            _ => return error_table(lua, "ERR Lua redis lib command arguments must be strings or integers"),
        }
    }
    if argbuf.is_empty() {
        return error_table(lua, "ERR Please specify at least one argument for this redis lib call");
    }
    out.clear();
    crate::frontend::resp::commands::execute_in_script(ctx, session, argbuf, out);
    let failed = out.first() == Some(&b'-');
    Ok((super::reply::resp_to_lua(lua, out)?, failed))
}

fn error_table(lua: &Lua, msg: &str) -> mlua::Result<(Value, bool)> {
    let t = lua.create_table()?;
    t.raw_set("err", msg)?;
    Ok((Value::Table(t), true))
}

/// A Lua number as an argument of a command: an integral number as an integer, others as Lua
/// prints them (`%.14g`, Lua 5.1's `tostring`).
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// The text of a raised error value: an error table's `err` (as `redis.call` raises them), a
/// message as `ERR <message>`.
fn error_text(error: &Value) -> String {
    if let Value::Table(t) = error
        && let Ok(Value::String(e)) = t.raw_get::<Value>("err")
    {
        return String::from_utf8_lossy(&e.as_bytes()).into_owned();
    }
    match error {
        Value::String(s) => format!("ERR {}", String::from_utf8_lossy(&s.as_bytes())),
        Value::Error(e) => format!("ERR {}", first_line(&e.to_string())),
        other => format!("ERR {}", other.to_string().unwrap_or_else(|_| "unknown error".into())),
    }
}

/// mlua's errors carry a traceback after the message: the client gets the message.
fn first_line(s: &str) -> &str {
    let s = s.strip_prefix("runtime error: ").unwrap_or(s);
    s.lines().next().unwrap_or(s)
}
