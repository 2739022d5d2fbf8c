//! The Raft log on disk: openraft's [`RaftLogStorage`], with the rigour of `persist/`.
//!
//! Layout, in `<data-dir>/raft/`:
//! - `raft-<first index:020>.log`: segments of entries, one record per entry framed as the
//!   single-node log frames its records (`persist::record::frame`: length, payload crc32c, header
//!   crc32c), the payload an entry as `types::encode_entry` lays it out. A new segment starts
//!   past [`SEGMENT_BYTES`], so purging deletes whole files. Under `--fsync always` the last
//!   segment is zero-filled [`PREALLOCATE`] bytes ahead of its entries (see
//!   [`LogStore::preallocate`]); entries are written at the segment's logical end, over those
//!   zeros, and the zeros are cut when the segment is closed (rotation, shutdown).
//! - `vote`, `purged`, `committed`: `u32 crc32c | JSON`, each replaced atomically (temp file,
//!   fsync, rename, directory fsync; `committed` is not fsynced: losing it only delays
//!   re-applying entries until the leader says they are committed, and one that names entries a
//!   crash cut from the log's tail is brought back to the log's end on opening). `committed` is
//!   written at most every [`COMMITTED_SAVE_EVERY`] and when the log closes (see
//!   [`LogStore::save_committed`]).
//!
//! Opening reads every segment: an all-zero remainder (the zeros written ahead, kept by a crash)
//! is the end of the entries in any segment and is cut; the last one's torn tail (a record cut
//! short, bytes that are no record and are followed by none, or a write cut short inside the
//! zero-filled space: whole sectors of zeros followed by entries of an append nobody was told
//! about, `persist::record::torn_by_zeros`) is cut off with a warning; damage followed by a valid
//! record (a flipped byte), damage in an earlier segment, a gap in the indexes or a bad
//! `vote`/`purged` file is corruption and refuses to start. Every length is checked against
//! `max_record_len` before anything is allocated for it.
//!
//! Truncating (a new leader overwrites entries this node never had committed) shortens the file
//! at the first entry cut and fsyncs it before returning, so the cut entries' bytes are gone from
//! disk before any new entry is written where they were: a new entry ending exactly where an old
//! one did can never be followed, after a restart, by the old next one (consecutive indexes,
//! valid checksums). The zeros ahead go with them and are laid again after the next append.
//!
//! Memory: what stays in memory per entry is its offset in its segment (8 bytes; the segment is
//! found from the index, segments being keyed by their first index) and the leader that wrote
//! it, kept as runs (one per term, not per entry). The entries themselves are kept only in a
//! bounded cache of the most recent ones ([`CACHE_ENTRIES`], [`CACHE_BYTES`]), which is what
//! replicating to followers that keep up reads; anything older (a lagging follower, a restart)
//! is read back from its segment on demand, in reads of at most [`READ_BYTES`] (or one entry),
//! every frame's checksums verified and its index checked against the one asked for. So a node
//! that writes a million entries between snapshots holds ~8 MB of index for them, not the
//! entries.
//!
//! Durability per `--fsync`: `always` fsyncs a batch of entries before openraft is told it is
//! flushed (so a quorum's acknowledgement means a quorum has it on disk); `everysec` and `no`
//! report it flushed once written, and `everysec` fsyncs within about a second. Only `always`
//! zero-fills ahead: it is what makes its `fdatasync` cheaper (no journal commit for a new file
//! size), and the other two do not fsync per write.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::types::{NodeId, TypeConfig, decode_entry, encode_entry, log_id};
use crate::persist::log::{PREALLOCATE, PREALLOCATE_LOW, write_zeros};
use crate::persist::record::{self, FrameRead};
use crate::persist::{FsyncPolicy, fsync_dir};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Most recent entries kept in memory for replication.
pub const CACHE_ENTRIES: usize = 16_384;

/// Most bytes (as framed on disk) of recent entries kept in memory.
pub const CACHE_BYTES: usize = 32 << 20;

/// Most bytes read from a segment at once when older entries are read back (a longer entry is
/// read alone).
pub const READ_BYTES: u64 = 1 << 20;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Damage that is not a torn tail.
    #[error(
        "{path} is corrupt at offset {offset}: {reason}. Refusing to start so that no committed entry is lost"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: usize,
        /// What was found.
        reason: String,
    },
}

/// The Raft log. Clones share one log (openraft's reader is a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The last committed index saved (for the status report).
    committed_index: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    fsync: FsyncPolicy,
    max_record_len: usize,
    /// The index of the first entry kept (meaningful when `offsets` is not empty).
    first: u64,
    /// Where each entry's record starts in its segment, entry `first + i` at `i`; the segment is
    /// the one with the largest first index at or below the entry's.
    offsets: VecDeque<u64>,
    /// `(term, node)` of the leader that wrote the entries from each index on, until the next.
    leaders: BTreeMap<u64, (u64, NodeId)>,
    /// The most recent entries, the last one the log's last, with their framed size.
    cache: VecDeque<(Entry<TypeConfig>, usize)>,
    /// The sum of the framed sizes in `cache`.
    cache_bytes: usize,
    /// Most entries in `cache` ([`CACHE_ENTRIES`]; the tests make it small).
    cache_limit: usize,
    /// Segments by first index, with their length (the end of their last entry, zeros ahead not
    /// counted).
    segments: BTreeMap<u64, u64>,
    /// A segment is closed past this size ([`SEGMENT_BYTES`]; the tests make it small).
    segment_limit: u64,
    /// The last segment, open for appending.
    file: Option<Arc<File>>,
    /// Bytes of the last segment's file that exist: its entries, plus under `always` the zeros
    /// written ahead of them. Never below the segment's length, and zeros are only ever written
    /// at `allocated`, under the lock: so they can never land on an entry.
    allocated: u64,
    /// A zero-fill ([`LogStore::preallocate`]) is under way; one at a time.
    filling: bool,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    /// When `committed` was last written to its file, and whether a newer one waits in memory.
    committed_saved: Option<Instant>,
    committed_unsaved: bool,
    purged: Option<LogId<NodeId>>,
    /// Written since the last fsync (`everysec`).
    dirty: Arc<AtomicBool>,
}

fn segment_name(first: u64) -> String {
    format!("raft-{first:020}.log")
}

fn segment_first(name: &str) -> Option<u64> {
    name.strip_prefix("raft-")?.strip_suffix(".log")?.parse().ok()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogOpenError + '_ {
    move |source| LogOpenError::Io { path: path.to_path_buf(), source }
}

/// Writes `value` as `u32 crc32c | JSON` to `dir/name` atomically; fsyncs when `sync`.
fn write_small<T: serde::Serialize>(dir: &Path, name: &str, value: &T, sync: bool) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(json.len() + 4);
    bytes.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    bytes.extend_from_slice(&json);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    if sync {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    if sync {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// How often, at most, the commit index is written to its file (see `save_committed`).
const COMMITTED_SAVE_EVERY: Duration = Duration::from_millis(100);

/// Reads what [`write_small`] wrote; `Ok(None)` when the file does not exist.
fn read_small<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, String> {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() < 4 {
        return Err("shorter than its checksum".into());
    }
    let crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if crc32c::crc32c(&bytes[4..]) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(&bytes[4..]).map(Some).map_err(|e| e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering what is there; see the module docs for what
    /// is cut and what is refused.
    pub fn open(dir: &Path, fsync: FsyncPolicy, max_record_len: usize) -> Result<Self, LogOpenError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let corrupt =
            |name: &str, reason: String| LogOpenError::Corrupt { path: dir.join(name), offset: 0, reason };
        let vote: Option<Vote<NodeId>> = read_small(dir, "vote").map_err(|r| corrupt("vote", r))?;
        let purged: Option<LogId<NodeId>> = read_small(dir, "purged").map_err(|r| corrupt("purged", r))?;
        let committed: Option<LogId<NodeId>> = read_small(dir, "committed").unwrap_or_else(|reason| {
            warn!(%reason, "raft log: the committed index is unreadable; it will be learnt from the leader");
            None
        });
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(first) = segment_first(&name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            fsync,
            max_record_len,
            first: 0,
            offsets: VecDeque::new(),
            leaders: BTreeMap::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit: CACHE_ENTRIES,
            segments: BTreeMap::new(),
            segment_limit: SEGMENT_BYTES,
            file: None,
            allocated: 0,
            filling: false,
            vote,
            committed,
            committed_saved: None,
            committed_unsaved: false,
            purged,
            dirty: Arc::new(AtomicBool::new(false)),
        };
        let purged_index = purged.map(|p| p.index);
        for (i, first) in firsts.iter().enumerate() {
            let last_segment = i + 1 == firsts.len();
            let path = dir.join(segment_name(*first));
            let data = Bytes::from(std::fs::read(&path).map_err(io_err(&path))?);
            let corrupt =
                |offset: usize, reason: String| LogOpenError::Corrupt { path: path.clone(), offset, reason };
            let mut offset = 0;
            loop {
                let read = record::read_frame_at(&data, offset, max_record_len);
                if matches!(read, FrameRead::Incomplete(_) | FrameRead::Invalid(_))
                    && data[offset..].iter().all(|b| *b == 0)
                {
                    // The zeros an `always` log writes ahead of its entries, kept by a crash: no
                    // frame starts with a zero header (the checksum of eight zero bytes is not
                    // zero), so the entries end here, in any segment.
                    cut(&path, offset)?;
                    break;
                }
                match read {
                    FrameRead::Frame(mut payload, next) => {
                        let entry = decode_entry(&mut payload).map_err(|e| corrupt(offset, e.to_string()))?;
                        let index = entry.log_id.index;
                        if purged_index.is_none_or(|p| index > p) {
                            if let Some(last) = inner.last_index()
                                && last + 1 != index
                            {
                                return Err(corrupt(offset, format!("entry {index} follows entry {last}")));
                            }
                            if inner.offsets.is_empty() {
                                inner.first = index;
                            }
                            inner.offsets.push_back(offset as u64);
                            inner.note_leader(index, &entry);
                        }
                        offset = next;
                    }
                    FrameRead::End => break,
                    FrameRead::Incomplete(reason) | FrameRead::Invalid(reason) => {
                        // A segment is fsynced whole before the next one is created: only the
                        // last can end in a write a crash interrupted.
                        if !last_segment {
                            return Err(corrupt(
                                offset,
                                format!("{reason} in a segment that is not the last"),
                            ));
                        }
                        let reason = if !valid_frame_after(&data, offset, max_record_len) {
                            format!("{reason}, and no valid record follows")
                        } else if record::torn_by_zeros(&data, offset) {
                            // Valid frames after whole sectors of zeros: an append that overwrote
                            // the zero-filled space, cut by a power loss that kept a later page
                            // and lost an earlier one. Nobody was told about those entries: an
                            // fsync that returned covers every byte written before it, so had a
                            // later append been reported flushed, this one would be on disk too.
                            format!("{reason}, in a write cut short inside the zero-filled space")
                        } else {
                            return Err(corrupt(
                                offset,
                                format!("{reason}; valid records follow, so this is not a torn tail"),
                            ));
                        };
                        warn!(file = %path.display(), offset, %reason, "raft log: cutting a torn tail (a write the crash interrupted)");
                        cut(&path, offset)?;
                        break;
                    }
                }
            }
            inner.segments.insert(*first, offset as u64);
        }
        if let (Some(p), false) = (purged_index, inner.offsets.is_empty())
            && inner.first != p + 1
        {
            let first = inner.first;
            return Err(corrupt("purged", format!("the log starts at {first}, after entry {p} was purged")));
        }
        // `committed` is saved without an fsync, and the entries' tail may be cut above (a write
        // a power cut interrupted): it can name an entry this log no longer holds. openraft
        // re-applies the log up to `committed` at start and would fail to read those entries;
        // everything up to the log's end is committed all the same (that index said so), and the
        // leader tells again what is committed beyond it.
        let end = inner.last_log_id().or(inner.purged);
        if let Some(c) = inner.committed
            && end.is_none_or(|e| c.index > e.index)
        {
            warn!(
                committed = c.index,
                log_end = end.map_or(0, |e| e.index),
                "raft log: the saved committed index is past the log's end (a crash cut the entries it names); starting from the log's end"
            );
            inner.committed = end;
        }
        if let Some((&first, _)) = inner.segments.last_key_value() {
            let path = dir.join(segment_name(first));
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            inner.file = Some(Arc::new(f));
            inner.allocated = inner.tail_len();
        }
        let committed_index = Arc::new(AtomicU64::new(inner.committed.map_or(0, |c| c.index)));
        Ok(Self { inner: Arc::new(Mutex::new(inner)), committed_index })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last committed index this node saved.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    /// Under `everysec`, fsyncs what was written about once a second until `stop`.
    pub async fn run_fsync(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.sync_if_dirty();
        }
        self.sync_if_dirty();
    }

    fn sync_if_dirty(&self) {
        let (file, dirty) = {
            let inner = self.lock();
            (inner.file.clone(), inner.dirty.clone())
        };
        if let Some(file) = file
            && dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = file.sync_data()
        {
            warn!(error = %e, "raft log: fsync failed");
            dirty.store(true, Ordering::Release);
        }
    }

    /// Under `always`, zero-fills the last segment up to [`PREALLOCATE`] bytes ahead of its
    /// entries once fewer than [`PREALLOCATE_LOW`] are left, for the reason `persist/log.rs`
    /// gives at [`PREALLOCATE`]: an `fdatasync` after an append must commit the filesystem's
    /// journal (the file's size changed), one after overwriting blocks the file has flushes only
    /// the data.
    ///
    /// Called on the blocking thread of an append, after its callback: the append that waits is
    /// not held up by it. The zeros are not fsynced here: the next append's `fdatasync` makes them
    /// durable with its entries (it flushes every page written before it, and the new size), and
    /// until then a crash finds either the old size or zeros, both read as the end of the entries.
    /// Written [`ZERO_CHUNK`](crate::persist::log::ZERO_CHUNK) bytes at a time, each under the
    /// lock and at `allocated`, never below the segment's length: an append between two chunks
    /// writes its entries at the logical end as always, and a truncation or a rotation meanwhile
    /// moves `allocated` (or the file) under it. A failure only costs the saving.
    fn preallocate(&self) {
        {
            let mut inner = self.lock();
            if inner.fsync != FsyncPolicy::Always
                || inner.filling
                || inner.file.is_none()
                || inner.allocated >= inner.tail_len() + PREALLOCATE_LOW
            {
                return;
            }
            inner.filling = true;
        }
        // At most PREALLOCATE bytes per file: appends landing meanwhile move the target, not the
        // amount written. A rotation or a truncation meanwhile (a new handle) starts over on it.
        let mut filled: Option<(Arc<File>, u64)> = None;
        loop {
            let mut inner = self.lock();
            let target = inner.tail_len() + PREALLOCATE;
            debug_assert!(inner.allocated >= inner.tail_len(), "zeros must never land on an entry");
            let done = match inner.file.clone() {
                Some(file) if inner.allocated < target => {
                    let so_far = match &filled {
                        Some((f, n)) if Arc::ptr_eq(f, &file) => *n,
                        _ => 0,
                    };
                    so_far >= PREALLOCATE
                        || match write_zeros(&file, inner.allocated, target) {
                            Ok(n) => {
                                inner.allocated += n;
                                filled = Some((file, so_far + n));
                                false
                            }
                            Err(e) => {
                                warn!(error = %e, "raft log: could not zero-fill ahead of the entries; fsyncs cost more");
                                true
                            }
                        }
                }
                _ => true,
            };
            if done {
                // Under the same lock as the last check: an append after this asks for a refill.
                inner.filling = false;
                return;
            }
        }
    }
}

/// Whether a valid frame starts anywhere after `offset` (damage in the middle, not a torn tail).
fn valid_frame_after(data: &Bytes, offset: usize, max_len: usize) -> bool {
    (offset + 1..data.len().saturating_sub(record::HEADER_LEN - 1))
        .any(|o| matches!(record::read_frame_at(data, o, max_len), FrameRead::Frame(..)))
}

/// Shortens the segment at `path` to `len` and fsyncs it (opening: zeros or a torn tail cut).
fn cut(path: &Path, len: usize) -> Result<(), LogOpenError> {
    let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    f.set_len(len as u64).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// What [`Inner::write`] leaves to its caller.
struct Written {
    /// The segment file to fsync (under `always`).
    file: Arc<File>,
    /// The first index written: the log is cut back to it if the fsync fails.
    first: u64,
    /// Under `always`, fewer than [`PREALLOCATE_LOW`] zeroed bytes are left ahead of the
    /// entries: [`LogStore::preallocate`] once the batch is reported flushed.
    refill: bool,
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

impl Inner {
    /// Writes and, under `--fsync always`, fsyncs `entries` (the tests' and recovery's path).
    #[cfg(test)]
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        match self.write(entries)? {
            Some(w) if self.fsync == FsyncPolicy::Always => w.file.sync_data().inspect_err(|_| {
                let _ = self.truncate(w.first);
            }),
            _ => Ok(()),
        }
    }

    /// Writes `entries` at the end of the log and keeps them, without fsyncing them: the
    /// caller fsyncs the file returned (under `always`) outside the lock, so that replication
    /// reads entries meanwhile, and cuts the log back to the first index returned if it fails.
    /// Written at the segment's logical end, over the zeros ahead of it if there are any.
    fn write(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<Option<Written>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let first_index = entries[0].log_id.index;
        if let Some(last) = self.last_index()
            && last + 1 != first_index
        {
            return Err(io::Error::other(format!("entry {first_index} appended after entry {last}")));
        }
        let mut buf = BytesMut::new();
        let mut placed = Vec::with_capacity(entries.len());
        let (seg, len) = match self.segments.last_key_value() {
            Some((&first, &len)) if len < self.segment_limit && self.file.is_some() => (first, len),
            _ => {
                let first = entries[0].log_id.index;
                self.start_segment(first)?;
                (first, 0)
            }
        };
        let start = len;
        for entry in &entries {
            let at = start + buf.len() as u64;
            record::frame(&mut buf, |dst| {
                // Every entry openraft hands here was encoded once already (it came from a client
                // or the leader), so this cannot fail; a failure would be caught by the decode.
                let _ = encode_entry(dst, entry);
            });
            placed.push((at, (start + buf.len() as u64 - at) as usize));
        }
        let file = self.file.clone().ok_or_else(|| io::Error::other("no open segment"))?;
        // Written at the segment's known end (not through a cursor), so that a failed write can
        // be cut off and the next append lands exactly where the last whole record ends.
        if let Err(e) = file.write_all_at(&buf, start) {
            // Cut whatever part was written (the zeros ahead go with it).
            self.allocated = match file.set_len(start) {
                Ok(()) => start,
                Err(_) => self.allocated.max(start + buf.len() as u64),
            };
            return Err(e);
        }
        let len = start + buf.len() as u64;
        self.allocated = self.allocated.max(len);
        let refill =
            self.fsync == FsyncPolicy::Always && !self.filling && self.allocated < len + PREALLOCATE_LOW;
        if self.fsync == FsyncPolicy::EverySec {
            self.dirty.store(true, Ordering::Release);
        }
        self.segments.insert(seg, len);
        if self.offsets.is_empty() {
            self.first = first_index;
        }
        // The cache keeps each entry as decoded from the bytes just written, not as it came:
        // a leader's entries hold slices of the buffers their clients' requests arrived in (a
        // gRPC request's value keeps its whole receive buffer alive), so caching them as they
        // came kept ~50 KB per entry, 16,384 entries (880 MB), for what counts as a few hundred
        // bytes. Decoded from `written`, the entries of one append share exactly its bytes.
        let written = buf.freeze();
        for (entry, (at, size)) in entries.into_iter().zip(placed) {
            self.offsets.push_back(at);
            self.note_leader(entry.log_id.index, &entry);
            let from = (at - start) as usize + record::HEADER_LEN;
            let mut body = written.slice(from..(at - start) as usize + size);
            // It was encoded a moment ago; should it not decode, the entry as it came is kept.
            let compact = decode_entry(&mut body).unwrap_or(entry);
            self.cache_bytes += size;
            self.cache.push_back((compact, size));
        }
        while self.cache.len() > self.cache_limit || (self.cache_bytes > CACHE_BYTES && self.cache.len() > 1)
        {
            if let Some((_, size)) = self.cache.pop_front() {
                self.cache_bytes -= size;
            }
        }
        // Past the segment limit, the next append starts a new segment (see the match above).
        Ok(Some(Written { file, first: first_index, refill }))
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            // Done with: its zeros go, and all of it is on disk before the next segment exists,
            // so that only the last segment can end in a write a crash interrupted.
            self.trim(&file);
            file.sync_all()?;
        }
        let path = self.dir.join(segment_name(first));
        let f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        fsync_dir(&self.dir)?;
        self.segments.insert(first, 0);
        self.file = Some(Arc::new(f));
        self.allocated = 0;
        Ok(())
    }

    /// The last segment's length (the end of its last entry).
    fn tail_len(&self) -> u64 {
        self.segments.last_key_value().map_or(0, |(_, &len)| len)
    }

    /// Cuts the zeros written ahead of the last segment's entries (`file`), when it is no longer
    /// appended to. Not fsynced: zeros a crash keeps are read as the end of the entries. A failure
    /// only leaves them there, for the same reason.
    fn trim(&mut self, file: &File) {
        let len = self.tail_len();
        if self.allocated > len {
            match file.set_len(len) {
                Ok(()) => self.allocated = len,
                Err(e) => {
                    warn!(error = %e, "raft log: could not cut the zeros ahead of the last entry; opening skips them")
                }
            }
        }
    }

    /// Removes every entry from `index` on, on disk first: the file is shortened at the first
    /// entry cut (the zeros ahead go too) and fsynced before this returns, so the cut entries'
    /// bytes are gone before a new entry is written where they were. Were they only zeroed
    /// lazily or left past the logical end, a new entry ending where an old one ended would,
    /// after a restart, be followed by the old next entry: a valid frame with the next index.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some((seg, offset)) = self.locate(index) else { return Ok(()) };
        let later: Vec<u64> = self.segments.range(seg + 1..).map(|(f, _)| *f).collect();
        for first in later {
            std::fs::remove_file(self.dir.join(segment_name(first)))?;
            self.segments.remove(&first);
        }
        let path = self.dir.join(segment_name(seg));
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(offset)?;
        f.sync_all()?;
        fsync_dir(&self.dir)?;
        self.segments.insert(seg, offset);
        self.file = Some(Arc::new(f));
        self.allocated = offset;
        self.offsets.truncate((index - self.first) as usize);
        self.leaders.split_off(&index);
        while self.cache.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, size)) = self.cache.pop_back() {
                self.cache_bytes -= size;
            }
        }
        Ok(())
    }

    /// Forgets every entry up to `log_id` (inclusive): the `purged` mark first, then whole
    /// segments that hold nothing later.
    fn purge(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        write_small(&self.dir, "purged", &log_id, true)?;
        self.purged = Some(log_id);
        let gone = (log_id.index + 1).saturating_sub(self.first).min(self.offsets.len() as u64);
        self.offsets.drain(..gone as usize);
        self.first += gone;
        if self.offsets.is_empty() {
            self.leaders.clear();
        } else if let Some((_, &leader)) = self.leaders.range(..=self.first).next_back() {
            // The run the first entry kept belongs to starts at it now.
            self.leaders = self.leaders.split_off(&self.first);
            self.leaders.insert(self.first, leader);
        }
        while self.cache.front().is_some_and(|(e, _)| e.log_id.index <= log_id.index) {
            if let Some((_, size)) = self.cache.pop_front() {
                self.cache_bytes -= size;
            }
        }
        // A segment can go when the next one starts at or before the first entry kept.
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            if pair[1] <= log_id.index + 1 {
                std::fs::remove_file(self.dir.join(segment_name(pair[0])))?;
                self.segments.remove(&pair[0]);
            }
        }
        if self.offsets.is_empty() {
            // Everything is purged: the next append starts a fresh segment at its own index.
            for first in std::mem::take(&mut self.segments).into_keys() {
                std::fs::remove_file(self.dir.join(segment_name(first)))?;
            }
            self.file = None;
            self.allocated = 0;
        }
        Ok(())
    }
}

impl Drop for Inner {
    /// The last clone gone (shutdown, or an incarnation replaced): the zeros ahead of the entries
    /// go, so that a log at rest ends with its last entry.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.trim(&file);
        }
        if self.committed_unsaved
            && let Err(e) = write_small(&self.dir, "committed", &self.committed, false)
        {
            warn!(error = %e, "raft log: could not save the committed index");
        }
    }
}

impl Inner {
    /// The last entry's index, if any entry is kept.
    fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// The last entry's log id, if any entry is kept.
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let last = self.last_index()?;
        let (_, &(term, node)) = self.leaders.range(..=last).next_back()?;
        Some(log_id(term, node, last))
    }

    /// Records the leader of `entry` (at `index`, the new last entry) when it starts a new run.
    fn note_leader(&mut self, index: u64, entry: &Entry<TypeConfig>) {
        let leader = (entry.log_id.leader_id.term, entry.log_id.leader_id.node_id);
        if self.leaders.last_key_value().is_none_or(|(_, l)| *l != leader) {
            self.leaders.insert(index, leader);
        }
    }

    /// `(segment's first index, offset)` of the record of entry `index`, if it is kept.
    fn locate(&self, index: u64) -> Option<(u64, u64)> {
        let i = index.checked_sub(self.first)?;
        let offset = *self.offsets.get(usize::try_from(i).ok()?)?;
        let (&seg, _) = self.segments.range(..=index).next_back()?;
        Some((seg, offset))
    }

    /// Where entry `index`'s record ends: the next record's start in the same segment, or the
    /// segment's end.
    fn end_of(&self, index: u64, seg: u64) -> Option<u64> {
        match self.locate(index + 1) {
            Some((next_seg, next)) if next_seg == seg => Some(next),
            _ => self.segments.get(&seg).copied(),
        }
    }

    /// The kept entries in `[from, to)`: from the cache when they are recent, else read back
    /// from their segments in bounded reads, every frame verified.
    fn read(&self, from: u64, to: u64) -> io::Result<Vec<Entry<TypeConfig>>> {
        let from = from.max(self.first);
        let to = to.min(self.last_index().map_or(0, |l| l + 1));
        let mut out = Vec::with_capacity(to.saturating_sub(from).min(4096) as usize);
        let cached_from = self.cache.front().map_or(u64::MAX, |(e, _)| e.log_id.index);
        let mut index = from;
        while index < to && index < cached_from {
            let (seg, start) =
                self.locate(index).ok_or_else(|| io::Error::other(format!("entry {index} is not kept")))?;
            // Whole records from `index` on, within this segment, up to READ_BYTES (one at least).
            let mut last = index;
            let mut end = self.end_of(index, seg).unwrap_or(start);
            while last + 1 < to.min(cached_from) {
                match (self.locate(last + 1), self.end_of(last + 1, seg)) {
                    (Some((s, _)), Some(e)) if s == seg && e - start <= READ_BYTES => {
                        last += 1;
                        end = e;
                    }
                    _ => break,
                }
            }
            let len = end.saturating_sub(start);
            let limit = (self.max_record_len + record::HEADER_LEN) as u64;
            if len == 0 || (last == index && len > limit) {
                return Err(self.damaged(seg, start, format!("entry {index} spans {len} bytes")));
            }
            let path = self.dir.join(segment_name(seg));
            let mut data = vec![0; len as usize];
            File::open(&path)?.read_exact_at(&mut data, start)?;
            let data = Bytes::from(data);
            let mut at = 0;
            for expected in index..=last {
                match record::read_frame_at(&data, at, self.max_record_len) {
                    FrameRead::Frame(mut payload, next) => {
                        let entry = decode_entry(&mut payload)
                            .map_err(|e| self.damaged(seg, start + at as u64, e.to_string()))?;
                        if entry.log_id.index != expected {
                            return Err(self.damaged(
                                seg,
                                start + at as u64,
                                format!("entry {} where entry {expected} belongs", entry.log_id.index),
                            ));
                        }
                        out.push(entry);
                        at = next;
                    }
                    FrameRead::End | FrameRead::Incomplete(_) | FrameRead::Invalid(_) => {
                        return Err(self.damaged(
                            seg,
                            start + at as u64,
                            format!("entry {expected} is unreadable"),
                        ));
                    }
                }
            }
            index = last + 1;
        }
        if index < to {
            let skip = (index - cached_from) as usize;
            let take = (to - index) as usize;
            let end = (skip + take).min(self.cache.len());
            out.extend(self.cache.range(skip.min(end)..end).map(|(e, _)| e.clone()));
        }
        Ok(out)
    }

    fn damaged(&self, seg: u64, offset: u64, reason: String) -> io::Error {
        let path = self.dir.join(segment_name(seg));
        tracing::error!(file = %path.display(), offset, %reason, "raft log: a record read back is damaged");
        io::Error::new(io::ErrorKind::InvalidData, format!("{} at offset {offset}: {reason}", path.display()))
    }
}

/// `[from, to)` of a range of indexes.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    use std::ops::Bound;
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let (from, to) = bounds(&range);
        self.lock()
            .read(from, to)
            .map_err(|e| StorageIOError::read_logs(AnyError::error(e.to_string())).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner.last_log_id().or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        write_small(&inner.dir, "vote", vote, true)
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.lock();
        inner.committed = committed;
        // openraft saves the commit index each time it moves, thousands of times a second under
        // load; a temp file and a rename each time cost a follower a quarter of its CPU (inode
        // allocation, directory updates, the journal). The file is only a head start for
        // re-applying entries at start (the leader tells again what is committed), so it is
        // written at most every `COMMITTED_SAVE_EVERY`, and the latest when the log closes.
        let now = Instant::now();
        if inner.committed_saved.is_some_and(|at| now.duration_since(at) < COMMITTED_SAVE_EVERY) {
            inner.committed_unsaved = true;
        } else {
            if let Err(e) = write_small(&inner.dir, "committed", &committed, false) {
                // Only an optimisation: the leader tells again what is committed.
                warn!(error = %e, "raft log: could not save the committed index");
            }
            inner.committed_saved = Some(now);
            inner.committed_unsaved = false;
        }
        self.committed_index.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.lock().write(entries.into_iter().collect());
        match result {
            Ok(Some(Written { file, first, refill })) if self.lock().fsync == FsyncPolicy::Always => {
                // openraft waits for the callback, not for this call: the fsync runs on a blocking
                // thread, off the runtime's workers, with the log unlocked (replication reads it).
                let store = self.clone();
                tokio::task::spawn_blocking(move || {
                    let synced = file.sync_data();
                    let ok = synced.is_ok();
                    if let Err(e) = &synced {
                        // Not durable: the entries are not reported flushed, and not kept.
                        tracing::error!(error = %e, "raft log: fsync failed");
                        if let Err(e) = store.lock().truncate(first) {
                            tracing::error!(error = %e, "raft log: could not cut back an entry that was not fsynced");
                        }
                    }
                    callback.log_io_completed(synced);
                    // After the callback: the append that waits is not held up by the zeros.
                    if ok && refill {
                        store.preallocate();
                    }
                });
                Ok(())
            }
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "raft log: append failed");
                let msg = e.to_string();
                callback.log_io_completed(Err(e));
                Err(write_err(msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.lock().truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.lock().purge(log_id).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::storage::RaftLogStorageExt;

    use super::*;
    use crate::cluster::types::log_id;

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Blank }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        let inner = store.lock();
        (inner.first..inner.first + inner.offsets.len() as u64).collect()
    }

    #[test]
    fn reopening_keeps_entries_cuts_a_torn_tail_and_refuses_damage_in_the_middle() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
            store.lock().append((1..=5).map(blank).collect()).expect("append");
            store.lock().truncate(4).expect("truncate");
            store.lock().append(vec![blank(4)]).expect("append");
            store.lock().purge(log_id(1, 1, 1)).expect("purge");
        }
        let store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(indexes(&store), vec![2, 3, 4]);
        drop(store);
        let seg = dir.path().join(segment_name(1));
        let whole = std::fs::read(&seg).expect("read");
        // A torn tail: half a record more.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[whole.len() - 10..]);
        std::fs::write(&seg, &torn).expect("write");
        let store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("a torn tail is cut");
        assert_eq!(indexes(&store), vec![2, 3, 4]);
        assert_eq!(std::fs::read(&seg).expect("read").len(), whole.len(), "the tail was cut on disk");
        drop(store);
        // A flipped byte in the second record, followed by a valid one: corruption.
        let mut bad = whole.clone();
        let second = whole.len() / 4 + record::HEADER_LEN + 3;
        bad[second] ^= 0xff;
        std::fs::write(&seg, &bad).expect("write");
        let err = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect_err("refused");
        assert!(matches!(err, LogOpenError::Corrupt { .. }), "{err}");
    }

    /// A saved committed index past the log's end (its entries cut as a torn tail after a power
    /// cut: `committed` is not fsynced) is brought back to the log's end on opening, so that
    /// openraft does not look for entries that are gone; one within the log is kept.
    #[tokio::test]
    async fn a_committed_index_past_the_log_s_end_is_brought_back_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
            store.lock().append((1..=5).map(blank).collect()).expect("append");
            store.save_committed(Some(log_id(1, 1, 3))).await.expect("save committed");
        }
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(
            store.read_committed().await.expect("read"),
            Some(log_id(1, 1, 3)),
            "within the log: kept"
        );
        store.save_committed(Some(log_id(1, 1, 5))).await.expect("save committed");
        drop(store);
        // The last two records lost: their bytes become a torn tail (zeros, as a power cut leaves
        // the zero-filled space).
        let seg = dir.path().join(segment_name(1));
        let whole = std::fs::read(&seg).expect("read");
        let store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        let cut_at = {
            let inner = store.lock();
            usize::try_from(inner.offsets[3]).expect("offset")
        };
        drop(store);
        let mut torn = whole[..cut_at].to_vec();
        torn.resize(whole.len(), 0);
        std::fs::write(&seg, &torn).expect("write");
        let mut store =
            LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen after the cut");
        assert_eq!(indexes(&store), vec![1, 2, 3]);
        assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 1, 3)));
        assert_eq!(store.committed_index().load(Ordering::Relaxed), 3);
    }

    /// The commit index is written at most every `COMMITTED_SAVE_EVERY`: a second save right
    /// after the first stays in memory (read back at once) and reaches the file when the log
    /// closes.
    #[tokio::test]
    async fn the_committed_index_is_saved_at_most_every_interval_and_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let on_disk =
            |dir: &Path| read_small::<Option<LogId<NodeId>>>(dir, "committed").expect("readable").flatten();
        {
            let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
            store.lock().append((1..=5).map(blank).collect()).expect("append");
            store.save_committed(Some(log_id(1, 1, 3))).await.expect("save committed");
            assert_eq!(on_disk(dir.path()), Some(log_id(1, 1, 3)), "the first save is written");
            store.save_committed(Some(log_id(1, 1, 4))).await.expect("save committed");
            assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 1, 4)));
            assert_eq!(on_disk(dir.path()), Some(log_id(1, 1, 3)), "the second waits");
        }
        assert_eq!(on_disk(dir.path()), Some(log_id(1, 1, 4)), "closing writes the latest");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 1, 4)));
    }

    /// A cached entry does not keep the buffer its command arrived in alive: its value is a
    /// copy in the bytes the append wrote, not a slice of the (much larger) receive buffer.
    #[tokio::test]
    async fn a_cached_entry_holds_its_own_bytes_not_its_requests_buffer() {
        use nanodb_protocol::{Command, Expiry, PutCondition, cmd};

        use crate::cluster::types::{Op, Request};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        let received = Bytes::from(vec![7u8; 64 * 1024]);
        let value = received.slice(100..164);
        let put = Command::Put(cmd::Put {
            key: Bytes::from_static(b"k"),
            value: value.clone(),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        });
        let entry = Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(Request { now_ms: 1, op: Op::Command(put) }),
        };
        store.lock().append(vec![entry]).expect("append");
        let cached = store.try_get_log_entries(1..=1).await.expect("read");
        let EntryPayload::Normal(Request { op: Op::Command(Command::Put(p)), .. }) = &cached[0].payload
        else {
            panic!("not the put: {:?}", cached[0].payload);
        };
        assert_eq!(p.value, value, "the same value");
        let buffer = received.as_ptr_range();
        assert!(
            !buffer.contains(&p.value.as_ptr()),
            "the cached value still points into the request's buffer"
        );
    }

    fn at(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: log_id(term, term, index), payload: EntryPayload::Blank }
    }

    async fn ids(store: &mut LogStore, range: std::ops::RangeInclusive<u64>) -> Vec<LogId<NodeId>> {
        store.try_get_log_entries(range).await.expect("read").iter().map(|e| e.log_id).collect()
    }

    #[tokio::test]
    async fn entries_past_the_cache_are_read_back_from_their_segment_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.lock().cache_limit = 2;
        let written: Vec<_> = (1..=5).map(|i| at(1, i)).chain((6..=10).map(|i| at(2, i))).collect();
        store.lock().append(written.clone()).expect("append");
        assert_eq!(store.lock().cache.len(), 2, "only the most recent entries stay in memory");
        let all: Vec<_> = written.iter().map(|e| e.log_id).collect();
        assert_eq!(ids(&mut store, 1..=10).await, all, "read back from disk and cache");
        assert_eq!(ids(&mut store, 4..=6).await, all[3..6]);
        assert_eq!(store.get_log_state().await.expect("state").last_log_id, Some(log_id(2, 2, 10)));

        store.lock().purge(log_id(1, 1, 3)).expect("purge");
        store.lock().truncate(8).expect("truncate");
        assert_eq!(ids(&mut store, 0..=20).await, all[3..7], "what is kept, and nothing else");
        assert_eq!(store.get_log_state().await.expect("state").last_log_id, Some(log_id(2, 2, 7)));
        drop(store);

        // Reopened, nothing is cached: every read comes from the segment.
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert!(store.lock().cache.is_empty());
        assert_eq!(ids(&mut store, 4..=7).await, all[3..7]);
        assert_eq!(store.get_log_state().await.expect("state").last_log_id, Some(log_id(2, 2, 7)));

        // A byte flipped under a running node: the entry is refused, never returned wrong.
        let (seg, offset) = store.lock().locate(5).expect("entry 5 kept");
        let path = dir.path().join(segment_name(seg));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[offset as usize + record::HEADER_LEN + 2] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert!(store.try_get_log_entries(5..=5).await.is_err(), "a damaged entry is an error");
        assert!(store.try_get_log_entries(4..=7).await.is_err(), "a read that spans it too");
        assert_eq!(ids(&mut store, 6..=7).await, all[5..7], "the entries around it still read");
    }

    /// Copies the log's files as they are now, zeros ahead included, as a crash (power kept)
    /// would leave them: the store is not closed, so nothing is trimmed.
    fn crash_copy(dir: &Path) -> tempfile::TempDir {
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
        copy
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).expect("segment").len()
    }

    /// Waits (bounded) until no append's blocking task holds the store, so that its zero-fill,
    /// which runs after openraft was told, is done.
    async fn settle(store: &LogStore) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&store.inner) > 1 {
            assert!(std::time::Instant::now() < deadline, "an append's blocking task never finished");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Under `always` the last segment is zero-filled ahead of its entries once an append was
    /// reported flushed; later entries are written over the zeros (the file does not grow); the
    /// zeros are cut when the segment is closed by a rotation and when the log is dropped.
    #[tokio::test]
    async fn always_zero_fills_ahead_of_the_entries_and_cuts_the_zeros_at_rotation_and_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.lock().cache_limit = 2;
        store.blocking_append((1..=50).map(blank)).await.expect("append");
        settle(&store).await;
        let seg = dir.path().join(segment_name(1));
        let len = store.lock().tail_len();
        assert_eq!(len, 50 * 41, "50 blank entries of 41 bytes framed");
        assert_eq!(file_len(&seg), len + PREALLOCATE, "zero-filled ahead");
        let bytes = std::fs::read(&seg).expect("read");
        assert!(bytes[len as usize..].iter().all(|b| *b == 0), "only zeros follow the entries");

        store.blocking_append((51..=100).map(blank)).await.expect("append");
        settle(&store).await;
        let len2 = store.lock().tail_len();
        assert_eq!(len2, 2 * len, "written at the logical end, right after entry 50");
        assert_eq!(file_len(&seg), len + PREALLOCATE, "written over the zeros, not appended");
        let all: Vec<_> = (1..=100).map(|i| log_id(1, 1, i)).collect();
        assert_eq!(ids(&mut store, 1..=100).await, all, "read back from the segment, zeros never read");
        assert_eq!(store.get_log_state().await.expect("state").last_log_id, Some(log_id(1, 1, 100)));

        // The next append starts a new segment: the old one's zeros go.
        store.lock().segment_limit = len2;
        store.blocking_append(vec![blank(101)]).await.expect("append");
        settle(&store).await;
        assert_eq!(file_len(&seg), len2, "rotation cuts the zeros");
        let seg2 = dir.path().join(segment_name(101));
        assert_eq!(file_len(&seg2), 41 + PREALLOCATE, "the new segment is zero-filled in turn");
        assert_eq!(
            ids(&mut store, 99..=101).await,
            all[98..].iter().copied().chain([log_id(1, 1, 101)]).collect::<Vec<_>>()
        );

        drop(store);
        assert_eq!(file_len(&seg2), 41, "closing cuts the zeros");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(indexes(&store), (1..=101).collect::<Vec<_>>());
        assert_eq!(ids(&mut store, 1..=2).await, all[..2]);
    }

    /// A crash keeps the zeros: opening reads exactly the entries written (in the last segment
    /// and in an earlier one whose trim the crash lost), cuts the zeros, and the next append
    /// lands right after the last entry.
    #[tokio::test]
    async fn a_crash_that_keeps_the_zeros_reopens_to_exactly_the_written_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.blocking_append((1..=30).map(blank)).await.expect("append");
        store.lock().segment_limit = 20 * 41;
        store.blocking_append((31..=40).map(blank)).await.expect("append");
        settle(&store).await;
        let first = dir.path().join(segment_name(1));
        let last = dir.path().join(segment_name(31));
        assert_eq!(file_len(&last), 10 * 41 + PREALLOCATE, "zeros ahead in the last segment");
        let crashed = crash_copy(dir.path());
        // As if the rotation's trim (not fsynced) was lost: zeros after the first segment's entries.
        let mut zeros = std::fs::read(&first).expect("read");
        zeros.resize(zeros.len() + 10_000, 0);
        std::fs::write(crashed.path().join(segment_name(1)), &zeros).expect("write");

        let mut reopened = LogStore::open(crashed.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(indexes(&reopened), (1..=40).collect::<Vec<_>>(), "every entry, nothing else");
        assert_eq!(file_len(&crashed.path().join(segment_name(1))), 30 * 41, "zeros cut");
        assert_eq!(file_len(&crashed.path().join(segment_name(31))), 10 * 41, "zeros cut");
        let all: Vec<_> = (1..=40).map(|i| log_id(1, 1, i)).collect();
        assert_eq!(ids(&mut reopened, 1..=40).await, all);

        reopened.blocking_append((41..=42).map(blank)).await.expect("append after reopening");
        settle(&reopened).await;
        let crashed_again = crash_copy(crashed.path());
        drop(reopened);
        let mut again = LogStore::open(crashed_again.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(indexes(&again), (1..=42).collect::<Vec<_>>());
        assert_eq!(ids(&mut again, 40..=42).await, [40, 41, 42].map(|i| log_id(1, 1, i)));
        drop(store);
    }

    /// Truncating removes the cut entries' bytes from disk before it returns. The new entries are
    /// the size of the old ones, so one ends exactly where an old one did: were the old bytes left
    /// past the logical end (or zeroed only lazily), entry 8 of term 1 would follow entry 7 of
    /// term 2 after a restart, a valid frame with the next index.
    #[tokio::test]
    async fn entries_cut_by_truncate_never_come_back_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.lock().cache_limit = 1;
        store.blocking_append((1..=10).map(|i| at(1, i))).await.expect("append");
        settle(&store).await;
        let seg = dir.path().join(segment_name(1));
        let (_, cut_at) = store.lock().locate(6).expect("entry 6");
        let (_, old_eighth) = store.lock().locate(8).expect("entry 8");
        assert!(file_len(&seg) > 10 * 41, "zeros ahead before the cut");

        store.truncate(log_id(1, 1, 6)).await.expect("truncate");
        assert_eq!(file_len(&seg), cut_at, "cut on disk at once, the zeros with the entries");
        let crashed = crash_copy(dir.path());
        let reopened = LogStore::open(crashed.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(indexes(&reopened), (1..=5).collect::<Vec<_>>());
        drop(reopened);

        // Written and fsynced, not yet zero-filled ahead (a crash before the refill)...
        store.lock().append(vec![at(2, 6), at(2, 7)]).expect("append");
        assert_eq!(store.lock().tail_len(), old_eighth, "entry 7 of term 2 ends where entry 8 started");
        let before_refill = crash_copy(dir.path());
        // ...and after it (what the blocking task does once openraft was told).
        store.preallocate();
        assert_eq!(file_len(&seg), old_eighth + PREALLOCATE, "zero-filled ahead again");
        let expected: Vec<_> =
            (1..=5).map(|i| log_id(1, 1, i)).chain([log_id(2, 2, 6), log_id(2, 2, 7)]).collect();
        assert_eq!(ids(&mut store, 1..=20).await, expected, "read back before a restart");
        let crashed = crash_copy(dir.path());
        drop(store);
        for dir in [before_refill.path(), crashed.path(), dir.path()] {
            let mut reopened = LogStore::open(dir, FsyncPolicy::Always, 1 << 20).expect("reopen");
            assert_eq!(ids(&mut reopened, 1..=20).await, expected, "after a restart, nothing more");
            assert_eq!(reopened.get_log_state().await.expect("state").last_log_id, Some(log_id(2, 2, 7)));
        }
    }

    /// A power loss inside the zero-filled space can keep a later page of an append and lose an
    /// earlier one: zeros, then valid entries that nobody was told about. In the last segment
    /// that is a torn tail, cut at the damaged entry; a flipped byte in the same place, or the
    /// same zeros in an earlier segment, is damage: refused.
    #[test]
    fn zeros_then_entries_in_the_last_segment_are_a_torn_write_and_a_flipped_byte_is_refused() {
        let src = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(src.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.lock().append((1..=200).map(blank).collect()).expect("append");
        store.lock().segment_limit = 0;
        store.lock().append(vec![blank(201)]).expect("append");
        let mut offsets: Vec<usize> = store.lock().offsets.iter().map(|o| *o as usize).collect();
        offsets[200] = 200 * 41;
        drop(store);
        let full = std::fs::read(src.path().join(segment_name(1))).expect("read");
        let later = std::fs::read(src.path().join(segment_name(201))).expect("read");
        let sector = record::SECTOR;
        // A sector boundary inside an entry's record well before the end, as a lost page starts.
        let (i, boundary) = (50..150)
            .find_map(|i| {
                let b = offsets[i].next_multiple_of(sector);
                (b > offsets[i] && b < offsets[i + 1]).then_some((i, b))
            })
            .expect("a record that straddles a sector boundary");
        let open_with = |first: &[u8], second: Option<&[u8]>| {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join(segment_name(1)), first).expect("write");
            if let Some(second) = second {
                std::fs::write(dir.path().join(segment_name(201)), second).expect("write");
            }
            let opened = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20)
                .map(|s| (indexes(&s), file_len(&dir.path().join(segment_name(1)))));
            (dir, opened)
        };
        let kept: Vec<u64> = (1..=i as u64).collect();
        for lost in [sector, 2 * sector] {
            let mut torn = full.clone();
            torn[boundary..boundary + lost].fill(0);
            let (_dir, opened) = open_with(&torn, None);
            let (got, len) = opened.expect("a torn write is not damage");
            assert_eq!(got, kept, "entries before the torn one stay, later ones go");
            assert_eq!(len, offsets[i] as u64, "cut at the torn entry");
            let (_dir, opened) = open_with(&torn, Some(&later));
            assert!(
                matches!(opened, Err(LogOpenError::Corrupt { .. })),
                "in a segment that is not the last: {opened:?}"
            );
        }
        // The page lost from the record's very start: zeros from its first byte to the boundary.
        let mut torn = full.clone();
        torn[offsets[i]..boundary].fill(0);
        let (_dir, opened) = open_with(&torn, None);
        assert_eq!(opened.expect("zeros to a sector boundary are a torn write").0, kept);
        // One flipped byte in the same record, valid entries after it: damage.
        let mut flipped = full.clone();
        flipped[boundary] ^= 0x5a;
        let (_dir, opened) = open_with(&flipped, None);
        assert!(matches!(opened, Err(LogOpenError::Corrupt { .. })), "{opened:?}");
    }

    /// Only `always` zero-fills: `everysec` and `no` do not fsync per write, so they would pay for
    /// the zeros and gain nothing.
    #[tokio::test]
    async fn everysec_and_no_write_no_zeros_ahead() {
        for policy in [FsyncPolicy::EverySec, FsyncPolicy::No] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut store = LogStore::open(dir.path(), policy, 1 << 20).expect("open");
            store.blocking_append((1..=50).map(blank)).await.expect("append");
            store.preallocate();
            assert_eq!(file_len(&dir.path().join(segment_name(1))), 50 * 41, "{policy}");
        }
    }

    /// Zero-fills running while appends land never touch an entry: large entries cross the
    /// refill threshold many times, and every entry reads back, before and after a crash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_fills_between_appends_never_touch_an_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), FsyncPolicy::Always, 1 << 20).expect("open");
        store.lock().cache_limit = 1;
        let value = Bytes::from(vec![b'v'; 64 << 10]);
        let mut index = 0;
        for _ in 0..40 {
            let batch: Vec<_> = (0..4)
                .map(|_| {
                    index += 1;
                    put_entry(index, value.clone())
                })
                .collect();
            store.blocking_append(batch).await.expect("append");
        }
        let all: Vec<_> = (1..=index).map(|i| log_id(1, 1, i)).collect();
        assert_eq!(ids(&mut store, 1..=index).await, all, "every entry verified as read back");
        let crashed = crash_copy(dir.path());
        settle(&store).await;
        let mut reopened = LogStore::open(crashed.path(), FsyncPolicy::Always, 1 << 20).expect("reopen");
        assert_eq!(ids(&mut reopened, 1..=index).await, all);
    }

    fn put_entry(index: u64, value: Bytes) -> Entry<TypeConfig> {
        use nanodb_protocol::{Command, Expiry, PutCondition, cmd};

        use crate::cluster::types::{Op, Request};
        let put = Command::Put(cmd::Put {
            key: Bytes::from(format!("k{index}")),
            value,
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        });
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Request { now_ms: 1, op: Op::Command(put) }),
        }
    }
}
