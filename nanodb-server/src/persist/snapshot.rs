//! Snapshots: the whole state as records, written while the server keeps serving.
//!
//! `snapshot-<seq>.snap` = `"NANOSNP1" | u64 seq | records... | "NANOEND1" | u64 record count`.
//! It holds every key as of some moment *after* log segment `seq` began (it is fuzzy: writes go on
//! while it is taken), so recovery loads it and then replays segments `seq` and later; version
//! gating makes the overlap harmless. Values over [`CHUNK_BYTES`] are split into a first record and
//! continuation records, so no record is huge.
//!
//! Writing: one partition at a time, encoded under that partition's shard read locks (briefly, no
//! I/O while locked), then written to `snapshot-<seq>.snap.tmp`, fsynced, renamed, and the
//! directory fsynced. Only then are older segments and snapshots deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::info;

use super::record::{self, Chunk};
use super::{fsync_dir, snapshot_path};
use crate::engine::Entry;
use crate::engine::value::{FieldMap, ValueRef};
use crate::engine::{Effect, EffectKind, Engine, PARTITIONS};

/// The first bytes of a snapshot, followed by its sequence number (u64 LE).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"NANOSNP1";
/// The trailer's first bytes, followed by the record count (u64 LE).
pub const TRAILER_MAGIC: &[u8; 8] = b"NANOEND1";
/// Largest encoded chunk of one value's elements.
pub const CHUNK_BYTES: usize = 1 << 20;

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotStats {
    /// Keys written.
    pub keys: u64,
    /// Records written (keys plus continuation chunks).
    pub records: u64,
    /// File size.
    pub bytes: u64,
}

/// Test hook: failpoints let the crash tests stop the process at each step of a snapshot.
fn failpoint(_name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("NANODB_FAILPOINT").is_ok_and(|v| v == _name) {
        eprintln!("failpoint {_name}: exiting");
        std::process::exit(101);
    }
}

/// Writes snapshot `seq` of `engine` into `dir` and makes it durable.
pub fn write(engine: &Engine, dir: &Path, seq: u64) -> std::io::Result<SnapshotStats> {
    write_keys(engine, dir, seq, false)
}

/// [`write`], keeping keys whose deadline has passed when `keep_expired` (a cluster's snapshot:
/// such a key is removed only by a committed expiry entry, so the snapshot must still hold it).
pub fn write_keys(
    engine: &Engine,
    dir: &Path,
    seq: u64,
    keep_expired: bool,
) -> std::io::Result<SnapshotStats> {
    let started = Instant::now();
    let final_path = snapshot_path(dir, seq);
    let tmp: PathBuf = final_path.with_extension("snap.tmp");
    let mut file: File = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
    let mut header = Vec::with_capacity(16);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&seq.to_le_bytes());
    file.write_all(&header)?;

    let mut stats = SnapshotStats { bytes: 16, ..Default::default() };
    let now = engine.clock().now_ms();
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
    for partition in 0..PARTITIONS {
        engine.visit_partition(partition, |key, slot| {
            if keep_expired || !slot.is_expired(now) {
                stats.keys += 1;
                stats.records += encode_slot(&mut buf, key, slot);
            }
        });
        failpoint("snapshot-mid-write");
        file.write_all(&buf)?;
        stats.bytes += buf.len() as u64;
        buf.clear();
    }
    let mut trailer = Vec::with_capacity(16);
    trailer.extend_from_slice(TRAILER_MAGIC);
    trailer.extend_from_slice(&stats.records.to_le_bytes());
    file.write_all(&trailer)?;
    stats.bytes += 16;
    failpoint("snapshot-before-fsync");
    file.sync_all()?;
    drop(file);
    failpoint("snapshot-before-rename");
    std::fs::rename(&tmp, &final_path)?;
    failpoint("snapshot-before-dir-fsync");
    fsync_dir(dir)?;
    failpoint("snapshot-after-rename");
    let secs = started.elapsed().as_secs_f64();
    info!(seq, keys = stats.keys, mb = stats.bytes as f64 / 1e6, secs, "snapshot written");
    Ok(stats)
}

/// Encodes one key: a first record with as much of the value as fits a chunk, then continuation
/// records. Returns the number of records.
fn encode_slot(buf: &mut BytesMut, key: &[u8], slot: &Entry) -> u64 {
    let (version, deadline) = (slot.version(), slot.deadline());
    let set = |buf: &mut BytesMut, value: ValueRef<'_>| {
        let effect = Effect { key, version, kind: EffectKind::Set { value, deadline } };
        record::encode(buf, &effect, 0);
    };
    match slot.value() {
        value @ (ValueRef::Str(_) | ValueRef::Int(_)) => {
            set(buf, value);
            1
        }
        value @ ValueRef::Hash(map)
            if map.iter().map(|(f, v)| f.len() + v.len() + 8).sum::<usize>() <= CHUNK_BYTES =>
        {
            set(buf, value);
            1
        }
        value @ ValueRef::List(list) if list.iter().map(|v| v.len() + 4).sum::<usize>() <= CHUNK_BYTES => {
            set(buf, value);
            1
        }
        ValueRef::Hash(map) => {
            let pairs: Vec<(&Bytes, &Bytes)> = map.iter().collect();
            let mut records = 0;
            for (i, chunk) in chunks(&pairs, |(f, v)| f.len() + v.len() + 8).into_iter().enumerate() {
                if i == 0 {
                    let first: FieldMap = chunk.iter().map(|(f, v)| ((*f).clone(), (*v).clone())).collect();
                    set(buf, ValueRef::Hash(&first));
                } else {
                    record::encode_chunk(buf, key, version, Chunk::Hash(chunk));
                }
                records += 1;
            }
            records
        }
        ValueRef::List(list) => {
            let values: Vec<&Bytes> = list.iter().collect();
            let mut records = 0;
            for (i, chunk) in chunks(&values, |v| v.len() + 4).into_iter().enumerate() {
                if i == 0 {
                    let first = chunk.iter().map(|v| (*v).clone()).collect();
                    let first: std::collections::VecDeque<Bytes> = first;
                    set(buf, ValueRef::List(&first));
                } else {
                    record::encode_chunk(buf, key, version, Chunk::List(chunk));
                }
                records += 1;
            }
            records
        }
    }
}

/// Splits `items` into runs of at most [`CHUNK_BYTES`] (each run at least one item).
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && bytes + s > CHUNK_BYTES {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}
