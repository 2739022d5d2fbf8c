//! The append-only log: the engine's effect sink, with group commit.
//!
//! Writers append encoded records to an in-memory buffer while they hold their key's shard lock
//! (so per-key order is the order applied) and get back a *position*. Before a client is told a
//! write succeeded, its frontend waits for that position ([`AppendLog::wait_durable`]):
//!
//! - `no` and `everysec`: the record must be written to the file. The waiting task writes the whole
//!   buffer itself (one `write(2)` for every writer that appended meanwhile), so there is no thread
//!   hop; `everysec` also fsyncs once a second from a background thread.
//! - `always`: the record must be fsynced. A dedicated thread writes and fsyncs in a loop; everything
//!   appended while one fsync runs shares the next one (group commit).
//!
//! Under `always` the sync thread keeps the segment zero-filled a few MiB ahead of its records
//! (see [`PREALLOCATE`]), so that a group commit's `fdatasync` overwrites blocks the file already
//! has and needs no journal commit for a new size. Recovery reads an all-zero remainder as the end
//! of the records.
//!
//! A failed write or fsync is final: the log marks itself failed, every later write is refused
//! with UNAVAILABLE on every protocol (checked before the write is applied), waiting clients get
//! the same error, and the failed fsync is not retried (the kernel may have dropped the dirty
//! pages; a retry that "succeeds" would lie). Reads keep working.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use nanodb_protocol::Error;
use tokio::sync::watch;
use tracing::{error, info};

use super::record;
use super::{FsyncPolicy, fsync_dir, segment_path};
use crate::engine::{Effect, EffectLog};
use crate::feed::DurabilityGate;

/// The first bytes of every log segment, followed by the segment's sequence number (u64 LE).
pub const SEGMENT_MAGIC: &[u8; 8] = b"NANOAOF1";
/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Pending {
    buf: BytesMut,
    /// Position after the last appended record (total record bytes ever appended).
    end: u64,
}

struct Segment {
    /// Shared so the `everysec` thread can fsync it without holding the segment lock, which
    /// writers need for every `write(2)`.
    file: Arc<File>,
    seq: u64,
    /// Bytes of the file taken by the header and the records: where the next record goes.
    len: u64,
    /// Bytes of the file that exist, `len` plus the zeros written ahead of it under `always`.
    allocated: u64,
}

impl Segment {
    fn new(file: File, seq: u64) -> Self {
        let len = SEGMENT_HEADER_LEN as u64;
        Self { file: Arc::new(file), seq, len, allocated: len }
    }

    /// Drops the zeros written ahead of the records, so that a segment no longer appended to ends
    /// with its last record. Not fsynced: should a crash keep the zeros, recovery reads them as the
    /// end of the records all the same.
    fn trim(&mut self) -> std::io::Result<()> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.allocated = self.len;
        }
        Ok(())
    }
}

/// How far ahead of its records the sync thread keeps a segment zero-filled under `always`.
///
/// Why: appending makes every `fdatasync` commit the filesystem's journal as well (the file's size
/// and block map changed), while overwriting blocks the file already has flushes only the data.
/// Measured on this project's CI machine (ext4 on a virtual disk), a 2,400-byte write then
/// `fdatasync`, 3,000 times: about 240 us each when appending, 175 us into a zero-filled file,
/// 205 us into one extended with `fallocate` (its unwritten extents still change on the first
/// write). Databases do the same for their write-ahead logs (PostgreSQL zero-fills WAL segments,
/// etcd preallocates its WAL). The Raft log (`cluster/log_store.rs`) does the same under `always`.
pub(crate) const PREALLOCATE: u64 = 4 << 20;

/// The sync thread zero-fills again once fewer than this many bytes are left ahead of the records.
pub(crate) const PREALLOCATE_LOW: u64 = 1 << 20;

/// Most zeros written by one [`write_zeros`]: small enough that the Raft log can write them
/// under its lock, one chunk at a time, without holding up an append for long.
pub(crate) const ZERO_CHUNK: usize = 64 << 10;

/// Writes zeros at `at` of `file`, up to `to` and at most [`ZERO_CHUNK`]; returns how many.
pub(crate) fn write_zeros(file: &File, at: u64, to: u64) -> std::io::Result<u64> {
    static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
    let n = to.saturating_sub(at).min(ZERO_CHUNK as u64) as usize;
    file.write_all_at(&ZEROS[..n], at)?;
    Ok(n as u64)
}

/// The log. Share as `Arc<AppendLog>`; attach to the engine as its [`EffectLog`].
pub struct AppendLog {
    dir: PathBuf,
    policy: FsyncPolicy,
    pending: Mutex<Pending>,
    segment: Mutex<Segment>,
    /// `Pending::end`, readable without the lock: where a read's fence is
    /// ([`AppendLog::wait_visible`]). Stored under the pending lock after every append.
    appended: AtomicU64,
    written: AtomicU64,
    synced: AtomicU64,
    /// Position at the last rotation: log growth since then triggers the next snapshot.
    rotated_at: AtomicU64,
    failed: OnceLock<String>,
    /// Unix time in ms of the last successful fsync of a segment (0: none since start), for the
    /// stats' "time since the last fsync": one relaxed store per fsync, never per write.
    last_fsync_ms: AtomicU64,
    /// Wakes the `always` writer thread.
    wake: Condvar,
    wake_lock: Mutex<bool>,
    /// (synced position, failed) for waiters under `always`.
    durable_tx: watch::Sender<(u64, bool)>,
    closing: AtomicBool,
    /// The largest record recovery accepts: a group record beyond it is refused rather than
    /// written where it could not be read back.
    max_record_len: AtomicUsize,
}

impl std::fmt::Debug for AppendLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendLog")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .field("written", &self.written)
            .field("synced", &self.synced)
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Creates segment `seq`: header written and fsynced, directory fsynced.
pub fn create_segment(dir: &Path, seq: u64) -> std::io::Result<File> {
    let path = segment_path(dir, seq);
    // Not `O_APPEND`: records are written at the segment's length, ahead of which the file may
    // hold zeros (see [`PREALLOCATE`]).
    let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&seq.to_le_bytes());
    file.write_all(&header)?;
    file.sync_all()?;
    fsync_dir(dir)?;
    Ok(file)
}

impl AppendLog {
    /// Starts a log appending to a new segment `seq` in `dir`. `replayed` is the log growth already
    /// on disk since the last snapshot (it counts toward the next one).
    pub fn open(dir: &Path, seq: u64, policy: FsyncPolicy, replayed: u64) -> std::io::Result<Arc<Self>> {
        let file = create_segment(dir, seq)?;
        let (durable_tx, _) = watch::channel((0, false));
        let log = Arc::new(Self {
            dir: dir.to_path_buf(),
            policy,
            pending: Mutex::new(Pending { buf: BytesMut::with_capacity(64 * 1024), end: replayed }),
            segment: Mutex::new(Segment::new(file, seq)),
            appended: AtomicU64::new(replayed),
            written: AtomicU64::new(replayed),
            synced: AtomicU64::new(replayed),
            rotated_at: AtomicU64::new(0),
            failed: OnceLock::new(),
            last_fsync_ms: AtomicU64::new(0),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            durable_tx,
            closing: AtomicBool::new(false),
            max_record_len: AtomicUsize::new(usize::MAX),
        });
        match policy {
            FsyncPolicy::Always => {
                let l = log.clone();
                std::thread::Builder::new().name("nanodb-log-sync".into()).spawn(move || l.sync_loop())?;
            }
            FsyncPolicy::EverySec => {
                let l = log.clone();
                std::thread::Builder::new()
                    .name("nanodb-log-everysec".into())
                    .spawn(move || l.everysec_loop())?;
            }
            FsyncPolicy::No => {}
        }
        Ok(log)
    }

    /// Why the log failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Time since the log was last fsynced; `None` if it was not since start.
    pub fn since_last_fsync(&self) -> Option<std::time::Duration> {
        let at = self.last_fsync_ms.load(Ordering::Relaxed);
        (at != 0).then(|| std::time::Duration::from_millis(unix_ms().saturating_sub(at)))
    }

    fn note_fsync(&self) {
        self.last_fsync_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Log bytes appended since the last rotation (snapshot).
    pub fn growth(&self) -> u64 {
        lock(&self.pending).end.saturating_sub(self.rotated_at.load(Ordering::Relaxed))
    }

    fn unavailable(&self) -> Error {
        Error::Unavailable(format!(
            "the append-only log failed ({}); writes are refused until the server is restarted",
            self.failure().unwrap_or("unknown error")
        ))
    }

    fn fail(&self, what: &str, e: &std::io::Error) {
        let reason = format!("{what}: {e}");
        if self.failed.set(reason.clone()).is_ok() {
            error!(%reason, "append-only log failed; refusing writes from now on (reads still work)");
        }
        let synced = self.synced.load(Ordering::Acquire);
        self.durable_tx.send_replace((synced, true));
    }

    /// Writes everything appended so far to the segment file. Returns the position written.
    fn write_pending(&self, segment: &mut Segment) -> Result<u64, Error> {
        if self.failed.get().is_some() {
            return Err(self.unavailable());
        }
        // Taken under the segment lock, so chunks reach the file in append order.
        let (data, end) = {
            let mut p = lock(&self.pending);
            (p.buf.split(), p.end)
        };
        let written = if data.is_empty() { Ok(()) } else { segment.file.write_all_at(&data, segment.len) };
        if let Err(e) = written {
            self.fail("write to the log failed", &e);
            return Err(self.unavailable());
        }
        segment.len += data.len() as u64;
        segment.allocated = segment.allocated.max(segment.len);
        self.written.fetch_max(end, Ordering::AcqRel);
        Ok(end)
    }

    fn sync(&self, segment: &mut Segment) -> Result<(), Error> {
        let end = self.write_pending(segment)?;
        if self.synced.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        if let Err(e) = segment.file.sync_data() {
            self.fail("fsync of the log failed", &e);
            return Err(self.unavailable());
        }
        self.synced.fetch_max(end, Ordering::AcqRel);
        self.note_fsync();
        self.durable_tx.send_replace((end, false));
        Ok(())
    }

    /// Waits until the record at `position` may be acknowledged under the fsync policy; under `no`
    /// and `everysec` a record nobody has written yet shares a `write(2)` with the other tasks on
    /// this worker (see [`AppendLog::wait_durable_batched`]).
    pub async fn wait_durable(&self, position: u64) -> Result<(), Error> {
        self.wait_durable_batched(position, true).await
    }

    /// [`AppendLog::wait_durable`], choosing how an unwritten record reaches the file under `no`
    /// and `everysec`:
    ///
    /// - `share` true: first let the other tasks on this worker apply and append, so one `write(2)`
    ///   covers them all (Redis writes its AOF buffer once per event-loop turn for the same
    ///   reason); whoever then finds its record unwritten writes everyone's. Worth it for a
    ///   pipelined batch, when both workers are busy: one write per worker turn instead of one per
    ///   connection, and no fight over the file between workers.
    /// - `share` false: write at once. The yield costs a scheduler round trip (the worker polls
    ///   the driver again and often wakes the other worker to steal the yielded tasks), which for
    ///   one request at a time is dearer than a small `write(2)`: measured under `redis-benchmark
    ///   -P 1`, a third of the context switches and more throughput.
    pub async fn wait_durable_batched(&self, position: u64, share: bool) -> Result<(), Error> {
        if position == 0 {
            return Ok(());
        }
        match self.policy {
            FsyncPolicy::No | FsyncPolicy::EverySec => {
                if self.written.load(Ordering::Acquire) >= position {
                    return Ok(());
                }
                if share {
                    tokio::task::yield_now().await;
                    if self.written.load(Ordering::Acquire) >= position {
                        return Ok(());
                    }
                }
                let mut segment = lock(&self.segment);
                if self.written.load(Ordering::Acquire) >= position {
                    return Ok(());
                }
                self.write_pending(&mut segment).map(drop)
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

    /// Where the log's appended records end now: a read's fence. Whatever a command saw was
    /// appended before the key's lock was released, so it lies behind the fence taken after the
    /// command ran.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Waits until the replies of a batch may leave: its writes (up to `position`, 0 for none)
    /// durable as [`AppendLog::wait_durable_batched`] says, and then whatever its reads could
    /// have seen (up to `fence`, [`AppendLog::appended`] after the last command that wrote
    /// nothing, 0 for none). Why the fence: a read sees a write as soon as it is applied, before
    /// its record reaches the file; answering the read then and losing the write to a `kill -9`
    /// (or, under `always`, a power cut) would show a client a value the server then forgets, a
    /// history no order of events explains. Redis keeps the same rule: its event loop writes
    /// (and under `always` fsyncs) the AOF buffer before it sends any reply of that turn. A
    /// write's own reply waits for its own position only (anything it saw is behind it), so
    /// writes do not wait for records appended after them.
    ///
    /// The fence never fails the batch: once the log has failed nothing more becomes durable,
    /// and reads go on, as documented; only the batch's own writes are refused.
    pub async fn wait_visible(&self, position: u64, fence: u64, share: bool) -> Result<(), Error> {
        let written = self.wait_durable_batched(position, share).await;
        if fence > position && written.is_ok() {
            let _ = self.wait_durable_batched(fence, false).await;
        }
        written
    }

    /// Test hook: holds back every `write(2)` and fsync of the log (by holding the lock they
    /// take) until the returned guard is dropped, so that a test can look at the server while
    /// writes are applied but not yet durable.
    #[cfg(feature = "failpoints")]
    pub fn hold_writes(&self) -> HeldWrites<'_> {
        HeldWrites(lock(&self.segment))
    }

    fn kick(&self) {
        let mut woken = lock(&self.wake_lock);
        *woken = true;
        self.wake.notify_one();
    }

    /// `always`: write and fsync whatever has been appended, for as long as the log is open.
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
                    if lock(&self.pending).end > self.synced.load(Ordering::Acquire) {
                        break;
                    }
                }
                *woken = false;
            }
            if self.failed.get().is_some() || self.closing.load(Ordering::Acquire) {
                return;
            }
            let mut segment = lock(&self.segment);
            if self.sync(&mut segment).is_err() {
                return;
            }
            // After the group's waiters were told, so they are not held up by it.
            self.preallocate(&mut segment);
        }
    }

    /// Zero-fills the segment ahead of its records when less than [`PREALLOCATE_LOW`] is left (see
    /// [`PREALLOCATE`]); the next `fdatasync` makes the zeros durable with that group's records.
    /// A failure here only costs the saving: the records are written at the segment's length
    /// whatever the file holds beyond it, and a write that then fails fails the log as always.
    fn preallocate(&self, segment: &mut Segment) {
        if segment.allocated >= segment.len + PREALLOCATE_LOW {
            return;
        }
        let target = segment.len + PREALLOCATE;
        while segment.allocated < target {
            match write_zeros(&segment.file, segment.allocated, target) {
                Ok(n) => segment.allocated += n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not zero-fill the log ahead of its records; fsyncs cost more");
                    return;
                }
            }
        }
    }

    /// `everysec`: fsync once a second. The fsync runs outside the segment lock (as Redis fsyncs
    /// in a background thread while its event loop keeps writing): writers waiting to `write(2)`
    /// their records are not held up for the length of an fsync. A rotation meanwhile fsyncs the
    /// old segment itself, so marking `end` synced after fsyncing the old file stays true.
    fn everysec_loop(self: Arc<Self>) {
        while !self.closing.load(Ordering::Acquire) && self.failed.get().is_none() {
            std::thread::sleep(Duration::from_secs(1));
            let (file, end) = {
                let mut segment = lock(&self.segment);
                match self.write_pending(&mut segment) {
                    Ok(end) => (segment.file.clone(), end),
                    Err(_) => return,
                }
            };
            if self.synced.load(Ordering::Acquire) >= end {
                continue;
            }
            if let Err(e) = file.sync_data() {
                self.fail("fsync of the log failed", &e);
                return;
            }
            self.synced.fetch_max(end, Ordering::AcqRel);
            self.note_fsync();
        }
    }

    /// Ends the current segment (everything written and fsynced) and continues in a new segment
    /// `seq`. Records appended after this returns go to the new segment.
    pub fn rotate(&self, seq: u64) -> std::io::Result<()> {
        let mut segment = lock(&self.segment);
        self.sync(&mut segment).map_err(|e| std::io::Error::other(e.to_string()))?;
        segment.trim()?;
        let file = create_segment(&self.dir, seq)?;
        // Position at the switch: nothing can append between the sync above and here without
        // landing in `pending`, which the new segment will receive.
        let at = lock(&self.pending).end;
        *segment = Segment::new(file, seq);
        self.rotated_at.store(at, Ordering::Relaxed);
        Ok(())
    }

    /// Test hook: the log's next write goes to `/dev/full`, so the kernel fails it with ENOSPC
    /// ("No space left on device") as a full disk would. It swaps the file once; the write path
    /// itself has no test branch.
    #[cfg(feature = "failpoints")]
    pub fn fail_next_write(&self) {
        match std::fs::OpenOptions::new().write(true).open("/dev/full") {
            Ok(full) => lock(&self.segment).file = Arc::new(full),
            Err(e) => self.fail("the failpoint could not open /dev/full", &e),
        }
    }

    /// Sets the largest record recovery will accept (`--max-frame` and value limits decide it):
    /// a group whose record would exceed it is refused whole.
    pub fn set_max_record_len(&self, len: usize) {
        self.max_record_len.store(len, Ordering::Relaxed);
    }

    /// The sequence number of the segment being appended to.
    pub fn segment_seq(&self) -> u64 {
        lock(&self.segment).seq
    }

    /// Writes everything appended so far to the file (no fsync); returns the position written.
    pub fn flush(&self) -> Result<u64, Error> {
        let mut segment = lock(&self.segment);
        self.write_pending(&mut segment)
    }

    /// Writes and fsyncs everything pending and stops the background threads (shutdown).
    pub fn close(&self) -> Result<(), Error> {
        self.closing.store(true, Ordering::Release);
        self.kick();
        let mut segment = lock(&self.segment);
        let r = self.sync(&mut segment);
        if r.is_ok()
            && let Err(e) = segment.trim()
        {
            tracing::warn!(error = %e, "could not cut the log's zero-filled tail at shutdown; recovery skips it");
        }
        if r.is_ok() {
            info!(position = self.synced.load(Ordering::Acquire), "append-only log flushed and fsynced");
        }
        r
    }
}

/// See [`AppendLog::hold_writes`].
#[cfg(feature = "failpoints")]
#[must_use = "the log's writes resume when this is dropped"]
pub struct HeldWrites<'a>(#[allow(dead_code)] MutexGuard<'a, Segment>);

#[cfg(feature = "failpoints")]
impl std::fmt::Debug for HeldWrites<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldWrites")
    }
}

impl DurabilityGate for AppendLog {
    fn is_durable(&self, position: u64) -> bool {
        let reached = match self.policy {
            FsyncPolicy::No | FsyncPolicy::EverySec => &self.written,
            FsyncPolicy::Always => &self.synced,
        };
        reached.load(Ordering::Acquire) >= position
    }

    fn wait_durable(&self, position: u64) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(AppendLog::wait_durable(self, position))
    }
}

impl EffectLog for AppendLog {
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
        let mut p = lock(&self.pending);
        let before = p.buf.len();
        record::encode(&mut p.buf, effect, 0);
        p.end += (p.buf.len() - before) as u64;
        self.appended.store(p.end, Ordering::Release);
        p.end
    }

    fn append_group(&self, effects: &[Effect<'_>]) -> Result<u64, Error> {
        self.check_writable()?;
        if let [one] = effects {
            return Ok(self.append(one));
        }
        let mut record = BytesMut::new();
        record::encode_group(&mut record, effects);
        let max = self.max_record_len.load(Ordering::Relaxed);
        if record.len() - record::HEADER_LEN > max {
            return Err(Error::LimitExceeded {
                what: "bytes in one transaction's log record",
                len: record.len() - record::HEADER_LEN,
                max,
                setting: "max_frame_len",
            });
        }
        let mut p = lock(&self.pending);
        p.buf.extend_from_slice(&record);
        p.end += record.len() as u64;
        self.appended.store(p.end, Ordering::Release);
        Ok(p.end)
    }
}
