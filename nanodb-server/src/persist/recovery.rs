//! Recovery: rebuild the engine from the data directory before serving.
//!
//! The state is the newest snapshot `snapshot-K.snap` plus every log segment `log-N.aof` with
//! `N >= K`, in order. Records are applied with [`Engine::restore`], which skips anything not newer
//! than what a key holds, so the overlap between a fuzzy snapshot and the log is harmless and
//! recovering twice gives the same state.
//!
//! The last segment may end in a torn write: a record cut short, or bytes after the last whole
//! record that are not a record (zeros, garbage). That tail is cut off with a warning giving the
//! offset. A bad record *followed by a valid one*, or any damage in an earlier segment or in the
//! snapshot, is corruption: recovery refuses, naming the file and offset, unless `--repair` is given,
//! which keeps a `.broken` copy and truncates the segment there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use super::log::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use super::record::{self, FLAG_CONTINUATION, Read};
use super::snapshot::{SNAPSHOT_MAGIC, TRAILER_MAGIC};
use super::{PersistError, segment_path, segment_seq, snapshot_path, snapshot_seq};
use crate::engine::Engine;

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// Log segments replayed.
    pub segments: Vec<u64>,
    /// Records read (snapshot and log).
    pub records: u64,
    /// Log bytes replayed (they count toward the next snapshot).
    pub log_bytes: u64,
    /// Keys in the engine afterwards.
    pub keys: usize,
    /// The next free segment number.
    pub next_seq: u64,
    /// Whether a torn tail was cut.
    pub truncated_tail: bool,
}

/// Lists (snapshots, segments) by sequence number, removing leftover temp files.
fn scan_dir(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), PersistError> {
    let io = |e| PersistError::Io { path: dir.to_path_buf(), source: e };
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            warn!(file = %entry.path().display(), "removing an unfinished snapshot");
            let _ = std::fs::remove_file(entry.path());
        } else if let Some(seq) = snapshot_seq(&name) {
            snapshots.push(seq);
        } else if let Some(seq) = segment_seq(&name) {
            segments.push(seq);
        }
    }
    snapshots.sort_unstable();
    segments.sort_unstable();
    Ok((snapshots, segments))
}

fn read_file(path: &Path) -> Result<Bytes, PersistError> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| PersistError::Io { path: path.to_path_buf(), source })
}

/// Applies decoded records on several threads. Records are sharded by the engine partition of
/// their key ([`Engine::loader_of`]), so each key's records stay in file order on one thread, no
/// two threads ever want the same partition's lock, and records of different keys commute (each
/// is gated by its own key's version). A batch is applied completely before the next is read,
/// which bounds memory and keeps order across batches.
pub(super) struct Applier<'a> {
    engine: &'a Engine,
    shards: Vec<Vec<(crate::engine::OwnedEffect, bool)>>,
    pending: usize,
}

/// Records decoded before a parallel apply.
const APPLY_BATCH: usize = 1 << 16;

impl<'a> Applier<'a> {
    fn new(engine: &'a Engine) -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        Self::with_threads(engine, n)
    }

    pub(super) fn with_threads(engine: &'a Engine, threads: usize) -> Self {
        let n = threads.max(1);
        Self { engine, shards: (0..n).map(|_| Vec::with_capacity(APPLY_BATCH / n)).collect(), pending: 0 }
    }

    fn push(&mut self, effect: crate::engine::OwnedEffect, continuation: bool) {
        let shard = self.engine.loader_of(&effect.key, self.shards.len());
        self.shards[shard].push((effect, continuation));
        self.pending += 1;
        if self.pending >= APPLY_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        let engine = self.engine;
        if self.shards.len() == 1 {
            engine.restore_batch(&mut self.shards[0]);
        } else {
            std::thread::scope(|scope| {
                for shard in self.shards.iter_mut() {
                    scope.spawn(move || engine.restore_batch(shard));
                }
            });
        }
        self.pending = 0;
    }
}

/// Bytes a file is read in while loading a snapshot: one buffer, reused, instead of the whole
/// file in memory at once (a 119 MB snapshot of 1M keys cost as much again in fresh pages, each
/// zeroed by the kernel, next to the keys themselves).
const READ_CHUNK: usize = 4 << 20;

/// Fewer bytes than any snapshot record takes (its header alone is 12, the fields every kind
/// has another 14, and each holds a value or a count): the trailer's record count, which no
/// checksum covers, is believed for pre-sizing only up to what the file could hold.
const MIN_SNAPSHOT_RECORD: u64 = 32;

/// A window over part of a file, read front to back in [`READ_CHUNK`]s. A record the window cuts
/// is completed by [`Window::refill`], which keeps the window's unread tail and reads more after
/// it; a record longer than a chunk grows the window to hold it (at most a chunk past a record
/// whose header passed the `max_record_len` check).
struct Window {
    file: std::fs::File,
    path: PathBuf,
    /// File offset of `data[0]`.
    base: u64,
    /// File offset where reading stops (the snapshot's trailer).
    end: u64,
    /// Bytes read at a time.
    chunk: usize,
    data: Bytes,
}

impl Window {
    fn open(path: &Path, start: u64, end: u64, chunk: usize) -> Result<Self, PersistError> {
        let file = std::fs::File::open(path)
            .map_err(|source| PersistError::Io { path: path.to_path_buf(), source })?;
        Ok(Self { file, path: path.to_path_buf(), base: start, end, chunk: chunk.max(1), data: Bytes::new() })
    }

    /// Whether the file has bytes past the window.
    fn more(&self) -> bool {
        self.base + (self.data.len() as u64) < self.end
    }

    /// Drops the window's first `consumed` bytes and reads up to a chunk more after the
    /// rest; the buffer is reused (every record decoded from it was copied out).
    fn refill(&mut self, consumed: usize) -> Result<(), PersistError> {
        use std::os::unix::fs::FileExt;
        let mut buf = Vec::from(std::mem::take(&mut self.data));
        buf.drain(..consumed);
        self.base += consumed as u64;
        let from = self.base + buf.len() as u64;
        let want = (self.end - from).min(self.chunk as u64) as usize;
        let kept = buf.len();
        buf.resize(kept + want, 0);
        self.file
            .read_exact_at(&mut buf[kept..], from)
            .map_err(|source| PersistError::Io { path: self.path.clone(), source })?;
        self.data = Bytes::from(buf);
        Ok(())
    }
}

/// Logs progress at most once a second while loading a large file.
struct Progress {
    file: PathBuf,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(file: &Path) -> Self {
        Self { file: file.to_path_buf(), started: Instant::now(), last: Instant::now() }
    }

    fn tick(&mut self, engine: &Engine, offset: usize, records: u64) {
        if self.last.elapsed().as_secs() >= 1 {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            info!(
                file = %self.file.display(),
                records,
                keys = engine.key_count(),
                mb_per_s = format!("{:.1}", offset as f64 / 1e6 / secs),
                "loading"
            );
        }
    }
}

/// Rebuilds `engine` from `dir`. `max_record_len` bounds every record before allocation.
pub fn recover(
    engine: &Engine,
    dir: &Path,
    repair: bool,
    max_record_len: usize,
) -> Result<Recovered, PersistError> {
    std::fs::create_dir_all(dir).map_err(|source| PersistError::Io { path: dir.to_path_buf(), source })?;
    let (snapshots, segments) = scan_dir(dir)?;
    let mut out = Recovered::default();
    let started = Instant::now();

    let base = snapshots.last().copied();
    if let Some(seq) = base {
        out.records += load_snapshot(engine, &snapshot_path(dir, seq), max_record_len)?;
        out.snapshot = Some(seq);
    }
    let base = base.unwrap_or(0);
    let replay: Vec<u64> = segments.iter().copied().filter(|s| *s >= base).collect();
    for (i, seq) in replay.iter().enumerate() {
        let last = i + 1 == replay.len();
        let (records, bytes, cut) = replay_segment(engine, dir, *seq, last, repair, max_record_len)?;
        out.records += records;
        out.log_bytes += bytes;
        out.truncated_tail |= cut;
        out.segments.push(*seq);
    }

    // Files the newest snapshot made obsolete (a crash between its rename and the cleanup).
    for seq in segments.iter().filter(|s| **s < base) {
        let _ = std::fs::remove_file(segment_path(dir, *seq));
    }
    for seq in snapshots.iter().filter(|s| **s < base) {
        let _ = std::fs::remove_file(snapshot_path(dir, *seq));
    }

    // Keys whose deadline passed while the server was down are gone before anyone can ask.
    while engine.sweep_expired(100_000).more {}
    out.keys = engine.key_count();
    out.next_seq = segments.iter().chain(snapshots.iter()).max().map_or(1, |m| m + 1);
    if out.snapshot.is_some() || !out.segments.is_empty() {
        info!(
            snapshot = ?out.snapshot,
            segments = ?out.segments,
            records = out.records,
            keys = out.keys,
            secs = format!("{:.2}", started.elapsed().as_secs_f64()),
            "recovered"
        );
    }
    Ok(out)
}

/// Loads one snapshot file into `engine` (recovery, and a cluster node installing a snapshot);
/// returns the records read. Any damage is corruption: a snapshot is complete or refused.
pub fn load_snapshot(engine: &Engine, path: &Path, max_record_len: usize) -> Result<u64, PersistError> {
    load_snapshot_with(engine, path, max_record_len, Applier::new(engine), READ_CHUNK)
}

/// [`load_snapshot`] with `applier`'s threads and reads of `chunk` bytes (tests vary both).
pub(super) fn load_snapshot_with(
    engine: &Engine,
    path: &Path,
    max_record_len: usize,
    mut applier: Applier<'_>,
    chunk: usize,
) -> Result<u64, PersistError> {
    use std::os::unix::fs::FileExt;
    let corrupt = |offset: u64, reason: String| PersistError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as usize,
        reason,
    };
    let io = |source| PersistError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut header = [0u8; 16];
    if len < 32 || file.read_exact_at(&mut header, 0).is_err() || &header[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "not a NanoDB snapshot (bad header)".into()));
    }
    let trailer = len - 16;
    let mut tail = [0u8; 16];
    file.read_exact_at(&mut tail, trailer).map_err(io)?;
    if &tail[..8] != TRAILER_MAGIC {
        return Err(corrupt(trailer, "snapshot trailer missing: the file is incomplete".into()));
    }
    let expected = u64::from_le_bytes(tail[8..].try_into().unwrap_or([0; 8]));
    // Tables sized once for what the snapshot holds (records are keys, plus a few continuation
    // records of large values); bounded by what the file could hold, whatever the trailer says.
    let most = (trailer / MIN_SNAPSHOT_RECORD).min(expected);
    engine.reserve(usize::try_from(most).unwrap_or(usize::MAX));
    drop(file);

    let mut window = Window::open(path, 16, trailer, chunk)?;
    let mut progress = Progress::new(path);
    let (mut offset, mut records) = (0, 0u64);
    loop {
        match record::read_at(&window.data, offset, max_record_len) {
            Read::Record(d, next) => {
                applier.push(d.effect, d.flags & FLAG_CONTINUATION != 0);
                records += 1;
                offset = next;
                if records % 65_536 == 0 {
                    progress.tick(engine, (window.base as usize) + offset, records);
                }
            }
            // The window cut the record, or ended: read on.
            Read::End | Read::Incomplete(_) if window.more() => {
                window.refill(offset)?;
                offset = 0;
            }
            // A snapshot is written key by key and never holds a group record.
            Read::Group(..) => {
                return Err(corrupt(window.base + offset as u64, "a group record in a snapshot".into()));
            }
            Read::End => break,
            Read::Incomplete(reason) | Read::Invalid(reason) => {
                return Err(corrupt(window.base + offset as u64, reason));
            }
        }
    }
    applier.flush();
    if records != expected {
        return Err(corrupt(
            window.base + offset as u64,
            format!("snapshot holds {records} records, its trailer says {expected}"),
        ));
    }
    Ok(records)
}

/// Replays one segment; returns (records, bytes, whether a torn tail was cut).
fn replay_segment(
    engine: &Engine,
    dir: &Path,
    seq: u64,
    last: bool,
    repair: bool,
    max_record_len: usize,
) -> Result<(u64, u64, bool), PersistError> {
    let path = segment_path(dir, seq);
    let data = read_file(&path)?;
    let corrupt =
        |offset: usize, reason: String| PersistError::Corrupt { path: path.clone(), offset, reason };
    if data.len() < SEGMENT_HEADER_LEN {
        if last {
            // Crashed while creating it: nothing in it was ever acknowledged.
            warn!(file = %path.display(), "removing a log segment cut short in its header");
            let _ = std::fs::remove_file(&path);
            return Ok((0, 0, true));
        }
        return Err(corrupt(0, "segment header cut short".into()));
    }
    if &data[..8] != SEGMENT_MAGIC {
        return Err(corrupt(0, "not a NanoDB log segment (bad header)".into()));
    }
    let mut progress = Progress::new(&path);
    let mut applier = Applier::new(engine);
    let (mut offset, mut records) = (SEGMENT_HEADER_LEN, 0u64);
    loop {
        let read = record::read_at(&data, offset, max_record_len);
        if matches!(read, Read::Incomplete(_) | Read::Invalid(_)) && data[offset..].iter().all(|b| *b == 0) {
            // The zeros an `always` log writes ahead of its records (log.rs, `PREALLOCATE`): no
            // record starts with a zero header, so this is where the records end, in any segment.
            applier.flush();
            truncate(&path, offset)?;
            return Ok((records, (offset - SEGMENT_HEADER_LEN) as u64, false));
        }
        let problem = match read {
            Read::Record(d, next) => {
                applier.push(d.effect, false);
                records += 1;
                offset = next;
                if records % 65_536 == 0 {
                    progress.tick(engine, offset, records);
                }
                continue;
            }
            Read::Group(effects, next) => {
                // Decoded whole (one checksum covers the group), so all of it is applied.
                for effect in effects {
                    applier.push(effect, false);
                }
                records += 1;
                offset = next;
                continue;
            }
            Read::End => {
                applier.flush();
                return Ok((records, (offset - SEGMENT_HEADER_LEN) as u64, false));
            }
            Read::Incomplete(reason) => {
                applier.flush();
                reason
            }
            Read::Invalid(reason) if !record::valid_record_after(&data, offset, max_record_len) => {
                applier.flush();
                format!("{reason}, and no valid record follows")
            }
            Read::Invalid(reason) if last && record::torn_by_zeros(&data, offset) => {
                applier.flush();
                format!(
                    "{reason}, in a write cut short inside the zero-filled space (whole sectors of zeros)"
                )
            }
            Read::Invalid(reason) => {
                applier.flush();
                let reason = format!("{reason}; valid records follow, so this is not a torn tail");
                if !repair {
                    return Err(corrupt(offset, reason));
                }
                let broken = path.with_extension("aof.broken");
                std::fs::copy(&path, &broken)
                    .map_err(|source| PersistError::Io { path: broken.clone(), source })?;
                warn!(file = %path.display(), offset, %reason, copy = %broken.display(), "--repair: truncating a corrupt log segment");
                truncate(&path, offset)?;
                return Ok((records, (offset - SEGMENT_HEADER_LEN) as u64, true));
            }
        };
        if !last {
            return Err(corrupt(offset, format!("{problem} in a segment that is not the last")));
        }
        warn!(
            file = %path.display(),
            offset,
            dropped_bytes = data.len() - offset,
            reason = %problem,
            "torn tail in the log (a write cut short by a crash): truncating to the last whole record"
        );
        truncate(&path, offset)?;
        return Ok((records, (offset - SEGMENT_HEADER_LEN) as u64, true));
    }
}

fn truncate(path: &Path, len: usize) -> Result<(), PersistError> {
    let io = |source| PersistError::Io { path: path.to_path_buf(), source };
    let f = std::fs::OpenOptions::new().write(true).open(path).map_err(io)?;
    f.set_len(len as u64).map_err(io)?;
    f.sync_all().map_err(io)
}
