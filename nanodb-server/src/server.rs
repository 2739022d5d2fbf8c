//! Starting and stopping a server: bind every configured listener, start the frontends and the
//! expiry sweeper under one shutdown token, and drain them on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Auth;
use crate::cluster::{ClientAddrs, Cluster};
use crate::config::{Config, ListenAddr, Storage};
use crate::engine::Engine;
use crate::feed::Hub;
use crate::frontend::{self, Context};
use crate::persist::{DirLock, Durable, PersistConfig, Persistence};
use crate::stats::Stats;
use crate::tls::Tls;

/// Largest log record read back, at least: far above any record a request can produce.
const MAX_RECORD_LEN: usize = 256 << 20;
/// The largest log or snapshot record read back under `config`: above any record a request can
/// produce (recovery, the Raft log and a restore read with the same bound).
pub fn max_record_len(config: &Config) -> usize {
    MAX_RECORD_LEN.max(2 * (config.max_frame_len + config.limits.max_value_len))
}

/// `--tls-replication`'s client side, checked before anything binds (see `cluster::upstream`).
fn replication_tls(config: &Config) -> Result<Option<crate::cluster::upstream::UpstreamTls>, StartError> {
    if !config.tls_replication {
        return Ok(None);
    }
    let Some(files) = &config.tls else {
        return Err(StartError::Tls(crate::tls::TlsError {
            flag: "tls-replication",
            path: "yes".into(),
            reason: "needs --tls-cert and --tls-key (and --tls-ca, to trust the target)".into(),
        }));
    };
    Ok(Some(crate::cluster::upstream::UpstreamTls(crate::tls::replication_connector(files)?)))
}

/// Keys the sweeper may examine per step before yielding.
const SWEEP_BUDGET: usize = 10_000;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be recovered or opened.
    #[error(transparent)]
    Persist(#[from] crate::persist::PersistError),
    /// A TLS file is missing or bad; the message names the flag, the file and the reason.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The data directory is held by another server.
    #[error(transparent)]
    Lock(#[from] crate::persist::LockError),
    /// A listener could not bind; the message names the flag.
    #[error("cannot listen on {addr} (--{flag}): {source}")]
    Bind {
        /// The flag that set the address.
        flag: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The users file is malformed (`FILE:LINE: reason`), or protected mode refused an address.
    #[error("{0}")]
    Auth(String),
    /// `--maxmemory-policy` cannot be used in this mode (an evicting policy in a cluster).
    #[error("--maxmemory-policy: {0}")]
    Memory(String),
    /// `--storage` cannot be used as configured, or the RocksDB store could not open.
    #[error("--storage: {0}")]
    Storage(String),
}

/// Refuses a `--storage` this build or this configuration cannot serve, before anything binds or
/// touches the data directory, naming why and what to do instead.
fn check_storage(config: &Config) -> Result<(), StartError> {
    let dir = &config.data_dir;
    let refuse = |why: String| Err(StartError::Storage(why));
    match config.storage {
        Storage::Memory => {
            let rocks = dir.join("rocksdb");
            if config.persistence && config.cluster.is_none() && rocks.is_dir() {
                return refuse(format!(
                    "memory: {} holds a RocksDB store; start with --storage rocksdb, or use another --data-dir",
                    rocks.display()
                ));
            }
        }
        Storage::Rocksdb => {
            if !cfg!(feature = "rocksdb") {
                return refuse(
                    "rocksdb: this nanodb-server was built without RocksDB; build it with \
                     `cargo build --release -p nanodb-server --features rocksdb` (the bundled RocksDB \
                     needs a C++ compiler and libclang), or use --storage memory"
                        .into(),
                );
            }
            if config.cluster.is_some() {
                return refuse(
                    "rocksdb is not available in cluster mode (--raft-addr): a cluster's durable state is its \
                     Raft log and snapshots (see docs/ROCKSDB.md, \"Cluster mode\"); use --storage memory"
                        .into(),
                );
            }
            if !config.persistence {
                return refuse(
                    "rocksdb keeps data on disk; it cannot be combined with --persistence off".into(),
                );
            }
            let names = std::fs::read_dir(dir).into_iter().flatten().flatten();
            let legacy = names.map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| {
                crate::persist::segment_seq(n).is_some() || crate::persist::snapshot_seq(n).is_some()
            });
            if let Some(name) = legacy {
                return refuse(format!(
                    "rocksdb: {} holds the append-only log or snapshots of --storage memory ({name}); start \
                     with --storage memory, or use another --data-dir",
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// The addresses the server actually listens on (port 0 resolved).
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundAddrs {
    /// The binary TCP protocol.
    pub tcp: Option<SocketAddr>,
    /// Redis RESP2.
    pub resp: Option<SocketAddr>,
    /// The REST API.
    pub http: Option<SocketAddr>,
    /// gRPC.
    pub grpc: Option<SocketAddr>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    engine: Arc<Engine>,
    feed: Arc<Hub>,
    addrs: BoundAddrs,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    config: Arc<Config>,
    stats: Arc<Stats>,
    persistence: Option<Arc<Persistence>>,
    /// The RocksDB store (`--storage rocksdb`), in place of `persistence`.
    #[cfg(feature = "rocksdb")]
    rocks: Option<Arc<crate::rocks::RocksStore>>,
    tls: Option<Arc<Tls>>,
    cluster: Option<Arc<Cluster>>,
    /// Cluster mode's hold on the data directory (the single-node mode's is in `persistence`).
    _cluster_lock: Option<DirLock>,
}

/// Binds `addr` unless it is off; returns the listener and the address it got (port 0 resolved).
async fn bind(
    flag: &'static str,
    addr: &ListenAddr,
) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let Some(a) = addr.as_option() else { return Ok(None) };
    let error = |source| StartError::Bind { flag, addr: a.to_string(), source };
    let listener = TcpListener::bind(a).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok(Some((listener, local)))
}

impl Server {
    /// Binds every configured listener (all before serving any, so a taken port fails fast) and
    /// starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        if config.cluster.is_some() && config.maxmemory_policy != crate::engine::Policy::NoEviction {
            // See `engine::memory`: an eviction is one node's decision, and the leader does not
            // propose them (yet).
            return Err(StartError::Memory(format!(
                "{} is not available in cluster mode: every node must apply the same log, and an eviction \
                 is one node's decision; use noeviction (writes past --max-memory are refused)",
                config.maxmemory_policy
            )));
        }
        check_storage(&config)?;
        let auth = auth_from(&config)?;
        // TLS files are checked before anything binds: a bad file refuses to start, naming it.
        let tls = config.tls.as_ref().map(Tls::load).transpose()?.map(Arc::new);
        let replication_tls = replication_tls(&config)?;
        let tcp = bind("tcp-addr", &config.tcp_addr).await?;
        let resp = bind("resp-addr", &config.resp_addr).await?;
        let http = bind("http-addr", &config.http_addr).await?;
        let grpc = bind("grpc-addr", &config.grpc_addr).await?;
        let bound = [("tcp-addr", &tcp), ("resp-addr", &resp), ("http-addr", &http), ("grpc-addr", &grpc)];
        protected_mode(&config, &auth, bound.iter().filter_map(|(f, b)| Some((*f, b.as_ref()?.1))))?;

        let config = Arc::new(config);
        // The change feed observes the engine's effects; the engine knows it only as an observer.
        let feed = Arc::new(Hub::new(config.feed));
        feed.set_notify_flags(config.notify_keyspace_events);
        let engine = Arc::new(Engine::with_observers(config.limits.clone(), vec![feed.clone()]));
        engine.set_memory_limit(config.max_memory, config.maxmemory_policy).map_err(StartError::Memory)?;
        let largest_event = config.limits.max_key_len + config.limits.max_value_len;
        if config.feed.queue_bytes < largest_event {
            warn!(
                watch_queue_bytes = config.feed.queue_bytes,
                largest_event,
                "--watch-queue-bytes is below one maximal key and value: a watcher sent such a value lags at once"
            );
        }
        let max_record_len = max_record_len(&config);
        // Recovery happens before anything serves: a client never sees a half-loaded state. In a
        // cluster the Raft log replaces the single-node log (see `cluster`).
        let persistence = if config.cluster.is_some() {
            None
        } else if config.persistence && config.storage == Storage::Memory {
            Some(Persistence::open(
                engine.clone(),
                PersistConfig {
                    dir: config.data_dir.clone(),
                    fsync: config.fsync,
                    snapshot_every: config.snapshot_every,
                    repair: config.repair,
                    max_record_len,
                },
            )?)
        } else {
            info!("persistence off: a pure in-memory cache");
            None
        };
        #[cfg(feature = "rocksdb")]
        let rocks = match config.storage {
            Storage::Rocksdb if config.cluster.is_none() => Some(open_rocks(&engine, &config)?),
            _ => None,
        };
        let durable = persistence.as_ref().map(|p| Durable::Log(p.log().clone()));
        #[cfg(feature = "rocksdb")]
        let durable = durable.or_else(|| rocks.clone().map(Durable::Rocks));
        // Watchers see a write only once it may be acknowledged.
        match &durable {
            Some(Durable::Log(log)) => feed.set_gate(log.clone()),
            #[cfg(feature = "rocksdb")]
            Some(Durable::Rocks(store)) => feed.set_gate(store.clone()),
            None => {}
        }
        // Cluster mode's hold on the data directory (the single node's is in `persistence`).
        let cluster_lock = match &config.cluster {
            Some(_) => Some(DirLock::acquire(&config.data_dir)?),
            None => None,
        };
        // After the data directory is open and locked (by persistence on a single node, by the
        // lock above in a cluster, whose data directory holds the Raft log): a generated token
        // secret lives there.
        attach_tokens(&auth, &config)?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let stats = Arc::new(Stats::default());
        let addr_of = |b: &Option<(TcpListener, SocketAddr)>| b.as_ref().map(|(_, a)| a.to_string());
        let cluster = match &config.cluster {
            Some(c) => {
                let start = crate::cluster::Start {
                    config: c.clone(),
                    data_dir: &config.data_dir,
                    fsync: config.fsync,
                    request_timeout: config.request_timeout,
                    max_record_len,
                    sweep_interval: config.sweep_interval,
                    addrs: ClientAddrs {
                        grpc_addr: addr_of(&grpc),
                        http_addr: addr_of(&http),
                        tcp_addr: addr_of(&tcp),
                        resp_addr: addr_of(&resp),
                    },
                    upstream: crate::cluster::upstream::Credentials {
                        user: config.auth.masteruser.clone(),
                        pass: config.auth.masterauth.clone(),
                    },
                    upstream_tls: replication_tls.clone(),
                };
                Some(Cluster::start(start, engine.clone(), feed.clone(), shutdown.clone(), &tasks).await?)
            }
            None => None,
        };
        let ctx = Context::from(frontend::Shared {
            cluster: cluster.clone(),
            engine: engine.clone(),
            feed: feed.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            stats: stats.clone(),
            log: durable,
            auth,
            scripts: Arc::new(crate::scripting::Scripts::new(
                config.script_max_memory,
                config.script_timeout,
            )),
        });

        let mut addrs = BoundAddrs::default();
        if let Some((listener, local)) = tcp {
            addrs.tcp = Some(local);
            info!(addr = %local, "binary TCP protocol listening");
            tasks.spawn(frontend::tcp::serve(listener, ctx.clone(), tls.clone()));
        }
        if let Some((listener, local)) = resp {
            addrs.resp = Some(local);
            info!(addr = %local, "Redis protocol (RESP2) listening");
            tasks.spawn(frontend::resp::serve(listener, ctx.clone(), tls.clone()));
        }
        if let Some((listener, local)) = http {
            addrs.http = Some(local);
            info!(addr = %local, "REST API listening");
            tasks.spawn(frontend::http::serve(listener, ctx.clone(), tls.clone()));
        }
        if let Some((listener, local)) = grpc {
            addrs.grpc = Some(local);
            info!(addr = %local, "gRPC listening");
            tasks.spawn(frontend::grpc::serve(listener, ctx.clone(), tls.clone()));
        }
        if cluster.is_none() {
            // In a cluster the leader proposes expiry deletes instead (`Cluster::sweep`).
            tasks.spawn(sweeper(engine.clone(), config.sweep_interval, shutdown.clone()));
        }
        if let Some(p) = &persistence {
            tasks.spawn(p.clone().run_scheduler(shutdown.clone()));
        }
        if tls.is_some() {
            info!("TLS on every frontend (--tls-cert); SIGHUP reloads the certificate and key");
        }
        Ok(Self {
            engine,
            feed,
            addrs,
            shutdown,
            tasks,
            config,
            stats,
            persistence,
            #[cfg(feature = "rocksdb")]
            rocks,
            tls,
            cluster,
            _cluster_lock: cluster_lock,
        })
    }

    /// Where the listeners are.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The persistence layer, when on.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// The RocksDB store, with `--storage rocksdb`.
    #[cfg(feature = "rocksdb")]
    pub fn rocks(&self) -> Option<&Arc<crate::rocks::RocksStore>> {
        self.rocks.as_ref()
    }

    /// The cluster node, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The shared engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The change feed (watchers and pub/sub).
    pub fn feed(&self) -> &Arc<Hub> {
        &self.feed
    }

    /// The server's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Reads `--tls-cert` and `--tls-key` again and serves them to every new handshake;
    /// established connections keep theirs. On error (logged by the caller) the old certificate
    /// stays. `Ok(false)` when TLS is off. What SIGHUP does.
    pub fn reload_tls(&self) -> Result<bool, crate::tls::TlsError> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// A handle that shuts the server down when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets connections finish what they received and flush, and waits for them
    /// up to `shutdown_grace`. Returns whether everything drained in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout(self.config.shutdown_grace, self.tasks.wait()).await.is_ok();
        if !drained {
            warn!(grace = ?self.config.shutdown_grace, "connections still open after the shutdown grace period");
        }
        // Everything acknowledged is already in the log; this also fsyncs what `everysec` and `no`
        // had only written.
        if let Some(p) = &self.persistence {
            if self.config.snapshot_on_shutdown {
                p.snapshot_at_shutdown();
            }
            p.close();
        }
        #[cfg(feature = "rocksdb")]
        if let Some(store) = &self.rocks {
            store.close();
        }
        drained
    }
}

/// Opens the RocksDB store in `--data-dir` (loading every key into `engine`) and attaches it as
/// the engine's effect log.
#[cfg(feature = "rocksdb")]
fn open_rocks(engine: &Arc<Engine>, config: &Config) -> Result<Arc<crate::rocks::RocksStore>, StartError> {
    let rocks_config = crate::rocks::RocksConfig {
        dir: config.data_dir.clone(),
        fsync: config.fsync,
        block_cache: config.block_cache,
    };
    let store = match crate::rocks::RocksStore::open(engine, &rocks_config) {
        Ok(store) => store,
        Err(crate::rocks::RocksError::Lock(e)) => return Err(StartError::Lock(e)),
        Err(e) => return Err(StartError::Storage(format!("rocksdb: {e}"))),
    };
    if engine.attach_log(store.clone()).is_err() {
        warn!("the engine already had an effect log; the RocksDB store not attached");
    }
    Ok(store)
}

/// Runs a server until `signal` completes (or its token is cancelled), then shuts it down.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = Server::start(config).await?;
    let token = server.shutdown_token();
    let mut signal = std::pin::pin!(signal);
    let mut hangups = hangups();
    loop {
        tokio::select! {
            () = &mut signal => {
                info!("shutdown requested");
                break;
            }
            () = token.cancelled() => break,
            Some(()) = hangups.recv() => match server.reload_tls() {
                Ok(true) => info!("SIGHUP: TLS certificate and key reloaded"),
                Ok(false) => info!("SIGHUP: nothing to reload (TLS is off)"),
                Err(e) => warn!(error = %e, "SIGHUP: TLS reload failed; still serving the previous certificate"),
            },
        }
    }
    server.shutdown().await;
    info!("bye");
    Ok(())
}

/// SIGHUPs, as a channel (never one on platforms without them, or if the handler cannot be set).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot handle SIGHUP; TLS reload needs a restart"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Reclaims expired keys in the background: one bounded step per interval, repeated at once while
/// steps report more due keys.
async fn sweeper(engine: Arc<Engine>, every: std::time::Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        while engine.sweep_expired(SWEEP_BUDGET).more {
            tokio::task::yield_now().await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

// ---- Users and authentication (#15) ----

/// The users registry the configuration describes; a bad users file refuses to start.
fn auth_from(config: &Config) -> Result<Arc<Auth>, StartError> {
    let a = &config.auth;
    let auth =
        Auth::from_config(a.requirepass.as_deref(), a.users_file.as_deref()).map_err(StartError::Auth)?;
    if auth.enabled() {
        info!(users = auth.users().len(), "authentication on");
    }
    Ok(Arc::new(auth))
}

/// Gives an auth-on registry its token signer: the key from `--token-secret-file`, else the one
/// kept in the data directory (generated there once), else, without persistence, one for this
/// process only.
fn attach_tokens(auth: &Auth, config: &Config) -> Result<(), StartError> {
    use crate::auth::token::{SecretSource, TokenKey};
    if !auth.enabled() {
        return Ok(());
    }
    // A cluster always keeps its data directory (the Raft log), whatever `--persistence` says.
    let keeps_dir = config.persistence || config.cluster.is_some();
    let data_dir = keeps_dir.then_some(config.data_dir.as_path());
    let (key, source) = TokenKey::load_or_create(config.auth.token_secret_file.as_deref(), data_dir)
        .map_err(|e| StartError::Auth(format!("{e} (--token-secret-file)")))?;
    match &source {
        SecretSource::Ephemeral => warn!(
            "tokens are signed with a secret for this process only (no data directory, no --token-secret-file): they stop working at restart"
        ),
        SecretSource::Generated(path) => info!(path = %path.display(), "generated the token secret"),
        SecretSource::File(path) | SecretSource::DataDir(path) => {
            debug!(path = %path.display(), "token secret")
        }
    }
    auth.attach_tokens(crate::auth::Tokens { key, ttl: config.auth.token_ttl });
    Ok(())
}

/// Protected mode: without authentication, only loopback addresses may be listened on.
fn protected_mode(
    config: &Config,
    auth: &Auth,
    bound: impl Iterator<Item = (&'static str, SocketAddr)>,
) -> Result<(), StartError> {
    if auth.enabled() || !config.auth.protected_mode {
        return Ok(());
    }
    for (flag, addr) in bound {
        if !addr.ip().is_loopback() {
            return Err(StartError::Auth(format!(
                "protected mode: refusing to listen on {addr} (--{flag}) without authentication; set --requirepass or --users-file, or pass --protected-mode no to allow it"
            )));
        }
    }
    Ok(())
}
