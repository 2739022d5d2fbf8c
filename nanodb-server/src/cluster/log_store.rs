//! The Raft log on disk: openraft's [`RaftLogStorage`], with the rigour of `persist/`.
//!
//! Layout, in `<data-dir>/raft/`:
//! - `raft-<first index:020>.log`: segments of entries, one record per entry framed as the
//!   single-node log frames its records (`persist::record::frame`: length, payload crc32c, header
//!   crc32c), the payload an entry as `types::encode_entry` lays it out. A new segment starts
//!   past [`SEGMENT_BYTES`], so purging deletes whole files.
//! - `vote`, `purged`, `committed`: `u32 crc32c | JSON`, each replaced atomically (temp file,
//!   fsync, rename, directory fsync; `committed` is not fsynced: losing it only delays
//!   re-applying entries until the leader says they are committed).
//!
//! Opening reads every segment: the last one's torn tail (a record cut short, or bytes that are
//! no record and are followed by none) is cut off with a warning; damage followed by a valid
//! record, damage in an earlier segment, a gap in the indexes or a bad `vote`/`purged` file is
//! corruption and refuses to start. Every length is checked against `max_record_len` before
//! anything is allocated for it.
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
//! report it flushed once written, and `everysec` fsyncs within about a second.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::types::{NodeId, TypeConfig, decode_entry, encode_entry, log_id};
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
    /// Segments by first index, with their length.
    segments: BTreeMap<u64, u64>,
    /// The last segment, open for appending.
    file: Option<Arc<File>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
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
            file: None,
            vote,
            committed,
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
                match record::read_frame_at(&data, offset, max_record_len) {
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
                        if !last_segment || valid_frame_after(&data, offset, max_record_len) {
                            return Err(corrupt(offset, reason));
                        }
                        warn!(file = %path.display(), offset, %reason, "raft log: cutting a torn tail (a write the crash interrupted)");
                        let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                        f.set_len(offset as u64).map_err(io_err(&path))?;
                        f.sync_all().map_err(io_err(&path))?;
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
        if let Some((&first, _)) = inner.segments.last_key_value() {
            let path = dir.join(segment_name(first));
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            inner.file = Some(Arc::new(f));
        }
        let committed_index = Arc::new(AtomicU64::new(committed.map_or(0, |c| c.index)));
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
}

/// Whether a valid frame starts anywhere after `offset` (damage in the middle, not a torn tail).
fn valid_frame_after(data: &Bytes, offset: usize, max_len: usize) -> bool {
    (offset + 1..data.len().saturating_sub(record::HEADER_LEN - 1))
        .any(|o| matches!(record::read_frame_at(data, o, max_len), FrameRead::Frame(..)))
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

impl Inner {
    /// Writes and, under `--fsync always`, fsyncs `entries` (the tests' and recovery's path).
    #[cfg(test)]
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        match self.write(entries)? {
            Some((file, first)) if self.fsync == FsyncPolicy::Always => file.sync_data().inspect_err(|_| {
                let _ = self.truncate(first);
            }),
            _ => Ok(()),
        }
    }

    /// Writes `entries` at the end of the log and keeps them, without fsyncing them: the
    /// caller fsyncs the file returned (under `always`) outside the lock, so that replication
    /// reads entries meanwhile, and cuts the log back to the first index returned if it fails.
    fn write(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<Option<(Arc<File>, u64)>> {
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
            Some((&first, &len)) if len < SEGMENT_BYTES && self.file.is_some() => (first, len),
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
            let _ = file.set_len(start);
            return Err(e);
        }
        let len = start + buf.len() as u64;
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
        // Past SEGMENT_BYTES, the next append starts a new segment (see the match above).
        Ok(Some((file, first_index)))
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_data()?;
        }
        let path = self.dir.join(segment_name(first));
        let f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        fsync_dir(&self.dir)?;
        self.segments.insert(first, 0);
        self.file = Some(Arc::new(f));
        Ok(())
    }

    /// Removes every entry from `index` on, on disk first.
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
        }
        Ok(())
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
        if let Err(e) = write_small(&inner.dir, "committed", &committed, false) {
            // Only an optimisation: the leader tells again what is committed.
            warn!(error = %e, "raft log: could not save the committed index");
        }
        inner.committed = committed;
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
            Ok(Some((file, first))) if self.lock().fsync == FsyncPolicy::Always => {
                // openraft waits for the callback, not for this call: the fsync runs on a blocking
                // thread, off the runtime's workers, with the log unlocked (replication reads it).
                let store = self.clone();
                tokio::task::spawn_blocking(move || {
                    let synced = file.sync_data();
                    if let Err(e) = &synced {
                        // Not durable: the entries are not reported flushed, and not kept.
                        tracing::error!(error = %e, "raft log: fsync failed");
                        if let Err(e) = store.lock().truncate(first) {
                            tracing::error!(error = %e, "raft log: could not cut back an entry that was not fsynced");
                        }
                    }
                    callback.log_io_completed(synced);
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
}
