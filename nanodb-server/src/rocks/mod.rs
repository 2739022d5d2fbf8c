//! The RocksDB store (`--storage rocksdb`, feature `rocksdb`): RocksDB in `--data-dir/rocksdb` as
//! the durable store in place of the append-only log and snapshots. The design, and what slice 2
//! adds, is docs/ROCKSDB.md.
//!
//! Slice 1: the engine keeps every key in memory, loaded from RocksDB at start ([`load`]); every
//! applied write reaches RocksDB through the engine's [`EffectLog`] trait, exactly where the
//! append-only log sits today. `append` queues an owned copy of the effect and returns its
//! position (a sequence number); whoever drains the queue writes everything queued as ONE
//! `WriteBatch` ([`batch`]): an atomic group (MSET, MULTI/EXEC, EVAL) is queued in one go and so
//! lands in one batch, atomic on disk, and concurrent writers share one write.
//!
//! `--fsync` (the same acknowledgement rule as `persist::AppendLog`):
//! - `always`: a dedicated thread writes each batch with `sync = true`; a waiter kicks it and waits
//!   for its position to be synced. Everything queued during one synced write shares the next.
//! - `everysec`: the waiting task writes the queue itself (unsynced); a thread calls
//!   `flush_wal(true)` (fsync of the WAL) once a second.
//! - `no`: the waiting task writes the queue itself, unsynced.
//!
//! A failed RocksDB write is final, as the log's: the store marks itself failed, every waiter and
//! every later write gets UNAVAILABLE, and a write RocksDB refused is never acknowledged.

mod batch;
pub mod codec;
mod load;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use nanodb_protocol::Error;
use rocksdb::statistics::Ticker;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode,
    Options, WriteOptions,
};
use tokio::sync::watch;
use tracing::{error, info};

use crate::engine::{Effect, EffectKind, EffectLog, Engine, OwnedEffect, OwnedEffectKind};
use crate::feed::DurabilityGate;
use crate::persist::{DirLock, FsyncPolicy};

/// The family of per-key entries (type, version, deadline; strings inline).
pub const META_CF: &str = "meta";
/// The family of hash fields and list elements.
pub const DATA_CF: &str = "data";
/// Where RocksDB lives inside `--data-dir` (beside NanoDB's own `LOCK`, which RocksDB's own `LOCK`
/// would otherwise collide with).
pub const SUBDIR: &str = "rocksdb";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Settings for [`RocksStore::open`].
#[derive(Debug, Clone)]
pub struct RocksConfig {
    /// `--data-dir`; RocksDB goes in its [`SUBDIR`].
    pub dir: PathBuf,
    /// `--fsync`.
    pub fsync: FsyncPolicy,
    /// `--block-cache`: bytes of the LRU block cache shared by both families.
    pub block_cache: u64,
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum RocksError {
    /// RocksDB refused to open or load.
    #[error("RocksDB in {path}: {source}")]
    Db {
        /// The RocksDB directory.
        path: PathBuf,
        /// Why.
        source: rocksdb::Error,
    },
    /// A thread could not be started.
    #[error("RocksDB store: {0}")]
    Io(#[from] std::io::Error),
    /// Another server holds the data directory.
    #[error(transparent)]
    Lock(#[from] crate::persist::LockError),
}

/// The store. Share as `Arc<RocksStore>`; it is attached to the engine as its [`EffectLog`].
pub struct RocksStore {
    /// The open database; taken (closing it and releasing RocksDB's own `LOCK`) by
    /// [`RocksStore::close`], so a server stopped and started again in one process can reopen it
    /// while stray handles on the store (a frontend task being dropped) still exist.
    db: RwLock<Option<DB>>,
    path: PathBuf,
    /// The options the DB was opened with: they hold its statistics.
    opts: Options,
    policy: FsyncPolicy,
    /// Effects appended and not yet written, and the position of the last one.
    pending: Mutex<(Vec<OwnedEffect>, u64)>,
    appended: AtomicU64,
    written: AtomicU64,
    synced: AtomicU64,
    /// Held while a batch is built and written, so batches reach RocksDB in append order.
    writing: Mutex<()>,
    failed: OnceLock<String>,
    closing: AtomicBool,
    last_fsync_ms: AtomicU64,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    /// (synced position, failed) for waiters under `always`.
    durable_tx: watch::Sender<(u64, bool)>,
    /// Held for as long as the store may write to the directory (released by `close`).
    dir_lock: Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field("written", &self.written)
            .field("synced", &self.synced)
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }
}

/// The options both families share: LZ4, the block cache, a bloom filter for point lookups.
fn family_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&table);
    opts
}

impl RocksStore {
    /// Locks `--data-dir`, opens (or creates) RocksDB in it, loads every live key into `engine`,
    /// and starts the `--fsync` thread. Attach the result to the engine afterwards.
    pub fn open(engine: &Engine, config: &RocksConfig) -> Result<Arc<Self>, RocksError> {
        std::fs::create_dir_all(&config.dir)?;
        let dir_lock = DirLock::acquire(&config.dir)?;
        let path = config.dir.join(SUBDIR);
        let db_error = |source| RocksError::Db { path: path.clone(), source };
        let cache = Cache::new_lru_cache(usize::try_from(config.block_cache).unwrap_or(usize::MAX));
        let mut opts = family_options(&cache);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A torn WAL tail is dropped, and nothing after a hole is applied.
        opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        opts.enable_statistics();
        opts.increase_parallelism(std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
        let mut meta_opts = family_options(&cache);
        // Expired keys leave at compaction: a filtered entry becomes a deletion above the bottom
        // level, so an older version below cannot reappear.
        meta_opts.set_compaction_filter("nanodb-expired", |_level: u32, _key: &[u8], value: &[u8]| {
            if codec::is_expired(value, unix_ms()) {
                rocksdb::CompactionDecision::Remove
            } else {
                rocksdb::CompactionDecision::Keep
            }
        });
        let families = [
            ColumnFamilyDescriptor::new(META_CF, meta_opts),
            ColumnFamilyDescriptor::new(DATA_CF, family_options(&cache)),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, families).map_err(db_error)?;
        let (meta, data) = match (db.cf_handle(META_CF), db.cf_handle(DATA_CF)) {
            (Some(m), Some(d)) => (m, d),
            _ => {
                return Err(RocksError::Io(std::io::Error::other(
                    "the meta and data column families are missing",
                )));
            }
        };
        let loaded = load::load(&db, meta, data, engine).map_err(db_error)?;
        info!(
            path = %path.display(),
            fsync = %config.fsync,
            keys = loaded.keys,
            expired = loaded.expired,
            orphans = loaded.orphans,
            "RocksDB store open"
        );
        let (durable_tx, _) = watch::channel((0, false));
        let store = Arc::new(Self {
            db: RwLock::new(Some(db)),
            path,
            opts,
            policy: config.fsync,
            pending: Mutex::new((Vec::new(), 0)),
            appended: AtomicU64::new(0),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            writing: Mutex::new(()),
            failed: OnceLock::new(),
            closing: AtomicBool::new(false),
            last_fsync_ms: AtomicU64::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            durable_tx,
            dir_lock: Mutex::new(Some(dir_lock)),
        });
        match config.fsync {
            FsyncPolicy::Always => {
                let s = store.clone();
                std::thread::Builder::new().name("nanodb-rocks-sync".into()).spawn(move || s.sync_loop())?;
            }
            FsyncPolicy::EverySec => {
                let s = store.clone();
                std::thread::Builder::new()
                    .name("nanodb-rocks-everysec".into())
                    .spawn(move || s.everysec_loop())?;
            }
            FsyncPolicy::No => {}
        }
        Ok(store)
    }

    /// The open database, `None` once closed.
    fn db(&self) -> RwLockReadGuard<'_, Option<DB>> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    fn families(db: &DB) -> Result<(&ColumnFamily, &ColumnFamily), Error> {
        match (db.cf_handle(META_CF), db.cf_handle(DATA_CF)) {
            (Some(m), Some(d)) => Ok((m, d)),
            _ => Err(Error::Unavailable("the RocksDB store lost its column families".into())),
        }
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Time since the WAL was last synced; `None` if it was not since start.
    pub fn since_last_fsync(&self) -> Option<Duration> {
        let at = self.last_fsync_ms.load(Ordering::Relaxed);
        (at != 0).then(|| Duration::from_millis(unix_ms().saturating_sub(at)))
    }

    fn unavailable(&self) -> Error {
        Error::Unavailable(format!(
            "the RocksDB store failed ({}); writes are refused until the server is restarted",
            self.failure().unwrap_or("unknown error")
        ))
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) {
        let reason = format!("{what}: {e}");
        if self.failed.set(reason.clone()).is_ok() {
            error!(%reason, "RocksDB store failed; refusing writes from now on (reads still work)");
        }
        let synced = self.synced.load(Ordering::Acquire);
        self.durable_tx.send_replace((synced, true));
    }

    /// Writes everything queued as one batch (synced when `sync`); returns the position written.
    /// The caller holds `writing`.
    fn write_pending(&self, sync: bool) -> Result<u64, Error> {
        if self.failed.get().is_some() {
            return Err(self.unavailable());
        }
        let guard = self.db();
        // Closed at shutdown: whatever is still queued was never acknowledged.
        let Some(db) = guard.as_ref() else { return Err(Error::ShuttingDown) };
        let (effects, end) = {
            let mut p = lock(&self.pending);
            (std::mem::take(&mut p.0), p.1)
        };
        if effects.is_empty() {
            // Nothing to write; under a sync, what earlier unsynced batches wrote still needs it.
            if sync && self.synced.load(Ordering::Acquire) < end {
                if let Err(e) = db.flush_wal(true) {
                    self.fail("syncing the RocksDB WAL failed", &e);
                    return Err(self.unavailable());
                }
                self.note_synced(end);
            }
            return Ok(end);
        }
        let (meta, data) = Self::families(db)?;
        let mut builder = batch::BatchBuilder::new(db, meta, data);
        for effect in effects {
            if let Err(e) = builder.add(effect) {
                self.fail("reading the store to build a batch failed", &e);
                return Err(self.unavailable());
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        if let Err(e) = db.write_opt(builder.finish(), &opts) {
            self.fail("a RocksDB write failed", &e);
            return Err(self.unavailable());
        }
        self.written.fetch_max(end, Ordering::AcqRel);
        if sync {
            self.note_synced(end);
        }
        Ok(end)
    }

    /// Everything up to `end` is synced: tells the `always` waiters.
    fn note_synced(&self, end: u64) {
        self.synced.fetch_max(end, Ordering::AcqRel);
        self.last_fsync_ms.store(unix_ms(), Ordering::Relaxed);
        self.durable_tx.send_replace((self.synced.load(Ordering::Acquire), false));
    }

    /// Where the appended effects end now: a read's fence (see `AppendLog::appended`).
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Waits until the effect at `position` may be acknowledged under the fsync policy.
    pub async fn wait_durable(&self, position: u64) -> Result<(), Error> {
        if position == 0 {
            return Ok(());
        }
        match self.policy {
            FsyncPolicy::No | FsyncPolicy::EverySec => {
                if self.written.load(Ordering::Acquire) >= position {
                    return Ok(());
                }
                let _writing = lock(&self.writing);
                if self.written.load(Ordering::Acquire) >= position {
                    return Ok(());
                }
                self.write_pending(false).map(drop)
            }
            FsyncPolicy::Always => {
                if self.synced.load(Ordering::Acquire) >= position {
                    return Ok(());
                }
                let mut rx = self.durable_tx.subscribe();
                self.kick();
                let state = rx.wait_for(|(synced, failed)| *failed || *synced >= position).await;
                match state {
                    Ok(s) if !s.1 => Ok(()),
                    _ => Err(self.unavailable()),
                }
            }
        }
    }

    /// `AppendLog::wait_visible`'s rule: a reply waits for its writes (`position`) and then for
    /// whatever its reads could have seen (`fence`); the fence never fails it.
    pub async fn wait_visible(&self, position: u64, fence: u64) -> Result<(), Error> {
        let written = self.wait_durable(position).await;
        if fence > position && written.is_ok() {
            let _ = self.wait_durable(fence).await;
        }
        written
    }

    fn kick(&self) {
        let mut woken = lock(&self.wake_lock);
        *woken = true;
        self.wake.notify_one();
    }

    /// `always`: write and sync whatever has been appended, for as long as the store is open.
    fn sync_loop(self: Arc<Self>) {
        loop {
            {
                let mut woken = lock(&self.wake_lock);
                while !*woken && !self.closing.load(Ordering::Acquire) {
                    let (g, _) = self
                        .wake
                        .wait_timeout(woken, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner());
                    woken = g;
                    if lock(&self.pending).1 > self.synced.load(Ordering::Acquire) {
                        break;
                    }
                }
                *woken = false;
            }
            if self.failed.get().is_some() || self.closing.load(Ordering::Acquire) {
                return;
            }
            let _writing = lock(&self.writing);
            if self.write_pending(true).is_err() {
                return;
            }
        }
    }

    /// `everysec`: sync the WAL once a second (outside `writing`: RocksDB lets writes go on).
    fn everysec_loop(self: Arc<Self>) {
        while !self.closing.load(Ordering::Acquire) && self.failed.get().is_none() {
            std::thread::sleep(Duration::from_secs(1));
            let end = {
                let _writing = lock(&self.writing);
                match self.write_pending(false) {
                    Ok(end) => end,
                    Err(_) => return,
                }
            };
            if self.synced.load(Ordering::Acquire) >= end {
                continue;
            }
            let flushed = match self.db().as_ref() {
                Some(db) => db.flush_wal(true),
                None => return,
            };
            if let Err(e) = flushed {
                self.fail("syncing the RocksDB WAL failed", &e);
                return;
            }
            self.note_synced(end);
        }
    }

    /// Writes and syncs everything pending and stops the background threads (shutdown).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.kick();
        let _writing = lock(&self.writing);
        match self.write_pending(true) {
            Ok(end) => info!(position = end, "RocksDB store flushed and synced"),
            Err(e) => error!(error = %e, "could not flush the RocksDB store at shutdown"),
        }
        // Closes RocksDB, then frees the data directory.
        drop(self.db.write().unwrap_or_else(|p| p.into_inner()).take());
        drop(lock(&self.dir_lock).take());
    }

    /// Prometheus lines for RocksDB's statistics (`/metrics`).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let tick = |t| self.opts.get_ticker_count(t);
        let sst_bytes = match self.db().as_ref() {
            Some(db) => {
                let sst = |cf: Option<&ColumnFamily>| {
                    cf.and_then(|cf| {
                        db.property_int_value_cf(cf, "rocksdb.total-sst-files-size").ok().flatten()
                    })
                    .unwrap_or(0)
                };
                sst(db.cf_handle(META_CF)) + sst(db.cf_handle(DATA_CF))
            }
            None => 0,
        };
        for (name, kind, help, n) in [
            (
                "nanodb_rocksdb_block_cache_hits_total",
                "counter",
                "RocksDB block cache hits.",
                tick(Ticker::BlockCacheHit),
            ),
            (
                "nanodb_rocksdb_block_cache_misses_total",
                "counter",
                "RocksDB block cache misses.",
                tick(Ticker::BlockCacheMiss),
            ),
            (
                "nanodb_rocksdb_compaction_read_bytes_total",
                "counter",
                "Bytes read by RocksDB compactions.",
                tick(Ticker::CompactReadBytes),
            ),
            (
                "nanodb_rocksdb_compaction_write_bytes_total",
                "counter",
                "Bytes written by RocksDB compactions.",
                tick(Ticker::CompactWriteBytes),
            ),
            (
                "nanodb_rocksdb_compaction_filter_drops_total",
                "counter",
                "Entries the compaction filter dropped (expired keys).",
                tick(Ticker::CompactionKeyDropUser),
            ),
            (
                "nanodb_rocksdb_write_stall_micros_total",
                "counter",
                "Microseconds writes were stalled by RocksDB (compaction falling behind).",
                tick(Ticker::StallMicros),
            ),
            (
                "nanodb_rocksdb_sst_bytes",
                "gauge",
                "Bytes of RocksDB SST files, both column families.",
                sst_bytes,
            ),
        ] {
            crate::stats::prometheus_family(out, name, kind, help);
            let _ = writeln!(out, "{name} {n}");
        }
    }

    /// Compacts both families now (tests: makes the compaction filter run).
    pub fn compact(&self) {
        let guard = self.db();
        let Some(db) = guard.as_ref() else { return };
        for name in [META_CF, DATA_CF] {
            if let Some(cf) = db.cf_handle(name) {
                db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
        }
    }

    /// The RocksDB directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn push(&self, effects: &[Effect<'_>]) -> u64 {
        let mut p = lock(&self.pending);
        p.0.extend(effects.iter().map(owned));
        p.1 += effects.len() as u64;
        self.appended.store(p.1, Ordering::Release);
        p.1
    }
}

/// An owned copy of `effect`, to be written after the shard lock is released.
fn owned(effect: &Effect<'_>) -> OwnedEffect {
    let copy = bytes::Bytes::copy_from_slice;
    let kind = match effect.kind {
        EffectKind::Set { value, deadline } => OwnedEffectKind::Set { value: value.to_value(), deadline },
        EffectKind::Delete => OwnedEffectKind::Delete,
        EffectKind::Expire { deadline } => OwnedEffectKind::Expire { deadline },
        EffectKind::HashSet { field, value } => {
            OwnedEffectKind::HashSet { fields: vec![(copy(field), copy(value))] }
        }
        EffectKind::HashDelete { field } => OwnedEffectKind::HashDelete { field: copy(field) },
        EffectKind::ListPush { end, list, count } => {
            let mut values = Vec::with_capacity(count);
            EffectKind::for_each_pushed(list, end, count, |v| values.push(v.clone()));
            OwnedEffectKind::ListPush { end, values }
        }
        EffectKind::ListPop { end, count } => OwnedEffectKind::ListPop { end, count },
    };
    OwnedEffect { key: copy(effect.key), version: effect.version, kind }
}

impl EffectLog for RocksStore {
    fn check_writable(&self) -> Result<(), Error> {
        if self.failed.get().is_some() {
            return Err(self.unavailable());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    fn append(&self, effect: &Effect<'_>) -> u64 {
        self.push(std::slice::from_ref(effect))
    }

    fn append_group(&self, effects: &[Effect<'_>]) -> Result<u64, Error> {
        self.check_writable()?;
        // Queued under one lock: the group is never split between two batches.
        Ok(self.push(effects))
    }
}

impl DurabilityGate for RocksStore {
    fn is_durable(&self, position: u64) -> bool {
        let reached = match self.policy {
            FsyncPolicy::No | FsyncPolicy::EverySec => &self.written,
            FsyncPolicy::Always => &self.synced,
        };
        reached.load(Ordering::Acquire) >= position
    }

    fn wait_durable(&self, position: u64) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(RocksStore::wait_durable(self, position))
    }
}
