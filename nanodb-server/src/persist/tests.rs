//! Persistence properties: snapshot + log replay equals the live state, recovery is idempotent,
//! torn tails are cut at every offset, every bit flip is detected and never served.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use nanodb_protocol::{Command, Limits, ListEnd, PutCondition};
use proptest::prelude::*;

use super::log::AppendLog;
use super::recovery::recover;
use super::{FsyncPolicy, PersistConfig, PersistError, Persistence, snapshot};
use crate::engine::{Engine, Slot};

const MAX_RECORD: usize = 1 << 20;

fn state(engine: &Engine) -> BTreeMap<Bytes, Slot> {
    let mut out = BTreeMap::new();
    for p in 0..crate::engine::PARTITIONS {
        engine.visit_partition(p, |k, s| {
            out.insert(Bytes::copy_from_slice(k), s.to_slot());
        });
    }
    out
}

fn fresh_engine() -> Engine {
    Engine::new(Limits::default())
}

fn config(dir: &Path) -> PersistConfig {
    PersistConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::No,
        snapshot_every: u64::MAX,
        repair: false,
        max_record_len: MAX_RECORD,
    }
}

fn recovered(dir: &Path) -> Result<BTreeMap<Bytes, Slot>, PersistError> {
    let engine = fresh_engine();
    recover(&engine, dir, false, MAX_RECORD)?;
    Ok(state(&engine))
}

#[derive(Debug, Clone)]
enum Op {
    Cmd(Command),
    /// Rotate the log, apply the next ops, then write the snapshot: writes land on both sides of
    /// the snapshot's start, as they do when it is taken while serving.
    FuzzySnapshot(usize),
}

fn key() -> impl Strategy<Value = Bytes> {
    (0u8..12).prop_map(|k| Bytes::from(format!("k{k}")))
}

fn small() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from)
}

fn end() -> impl Strategy<Value = ListEnd> {
    prop_oneof![Just(ListEnd::Front), Just(ListEnd::Back)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (key(), small(), prop_oneof![Just(0u64), Just(3_600_000u64)]).prop_map(|(key, value, ttl_ms)| {
            Command::Put(cmd::Put {
                key,
                value,
                expiry: Expiry::from_put_ttl_ms(ttl_ms),
                condition: PutCondition::Always,
            })
        }),
        key().prop_map(|key| Command::Delete(cmd::Delete { key })),
        (key(), -5i64..5).prop_map(|(key, delta)| Command::Incr(cmd::Incr { key, delta })),
        (key(), prop_oneof![Just(-1i64), Just(7_200_000i64)]).prop_map(|(key, ttl_ms)| Command::Expire(
            cmd::Expire { key, expiry: Expiry::from_expire_ttl_ms(ttl_ms) }
        )),
        (key(), small(), small()).prop_map(|(key, f, value)| Command::HashSet(cmd::HashSet {
            key,
            field: Bytes::from([b"f".as_slice(), &f].concat()),
            value
        })),
        (key(), small()).prop_map(|(key, f)| Command::HashDelete(cmd::HashDelete {
            key,
            field: Bytes::from([b"f".as_slice(), &f].concat())
        })),
        (key(), end(), proptest::collection::vec(small(), 1..4))
            .prop_map(|(key, end, values)| Command::ListPush(cmd::ListPush { key, end, values })),
        (key(), end(), 0u32..3).prop_map(|(key, end, count)| Command::ListPop(cmd::ListPop {
            key,
            end,
            count
        })),
        proptest::collection::vec((key(), small()), 1..4)
            .prop_map(|pairs| Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false })),
        (key(), key()).prop_map(|(from, to)| Command::Rename(cmd::Rename { from, to })),
        (key(), key(), -3i64..3).prop_map(|(a, b, delta)| Command::Txn(cmd::Txn {
            compares: vec![nanodb_protocol::Compare {
                key: a.clone(),
                op: nanodb_protocol::CompareOp::Equal,
                target: nanodb_protocol::CompareTarget::Exists(true),
            }],
            success: vec![
                Command::Incr(cmd::Incr { key: a.clone(), delta }),
                Command::Incr(cmd::Incr { key: b, delta: -delta }),
            ],
            failure: vec![Command::Delete(cmd::Delete { key: a })],
        })),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![9 => command().prop_map(Op::Cmd), 1 => (0usize..8).prop_map(Op::FuzzySnapshot)],
        1..120,
    )
}

/// Runs `ops` against an engine whose effects go to a log in `dir`; returns its final state.
fn run(dir: &Path, ops: Vec<Op>) -> BTreeMap<Bytes, Slot> {
    let engine = Arc::new(fresh_engine());
    let log = AppendLog::open(dir, 1, FsyncPolicy::No, 0).expect("log opens");
    engine.attach_log(log.clone()).expect("attach");
    let mut seq = 2;
    let mut pending_snapshot: Option<(u64, usize)> = None;
    for op in ops {
        match op {
            Op::Cmd(cmd) => {
                let _ = engine.execute(cmd);
            }
            Op::FuzzySnapshot(after) if pending_snapshot.is_none() => {
                log.rotate(seq).expect("rotate");
                pending_snapshot = Some((seq, after));
                seq += 1;
            }
            Op::FuzzySnapshot(_) => {}
        }
        if let Some((s, left)) = pending_snapshot {
            if left == 0 {
                snapshot::write(&engine, dir, s).expect("snapshot");
                pending_snapshot = None;
            } else {
                pending_snapshot = Some((s, left - 1));
            }
        }
    }
    log.close().expect("close");
    state(&engine)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_log_replay_equals_live_state(ops in ops()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = run(dir.path(), ops);
        let first = recovered(dir.path()).expect("recovers");
        prop_assert_eq!(&first, &live);
        // Idempotent: recovering again from the same files gives the same state...
        prop_assert_eq!(&recovered(dir.path()).expect("recovers again"), &live);
        // ...and so does replaying the files onto the already-recovered state.
        let engine = fresh_engine();
        recover(&engine, dir.path(), false, MAX_RECORD).expect("once");
        recover(&engine, dir.path(), false, MAX_RECORD).expect("twice");
        prop_assert_eq!(&state(&engine), &live);
    }
}

/// Writes one record per put of `k{i}` = `v{i}` through a real log; returns the segment's path and
/// the offsets where each record starts (and the end).
fn log_with_records(dir: &Path, n: usize) -> (std::path::PathBuf, Vec<usize>) {
    let engine = fresh_engine();
    let log = AppendLog::open(dir, 1, FsyncPolicy::No, 0).expect("log opens");
    engine.attach_log(log.clone()).expect("attach");
    let path = super::segment_path(dir, 1);
    let mut offsets = vec![std::fs::metadata(&path).expect("segment").len() as usize];
    for i in 0..n {
        let cmd = Command::Put(cmd::Put {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from(format!("value-{i}")),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        });
        engine.execute(cmd).expect("put");
        log.flush().expect("flush");
        offsets.push(std::fs::metadata(&path).expect("segment").len() as usize);
    }
    (path, offsets)
}

fn keys(state: &BTreeMap<Bytes, Slot>) -> Vec<String> {
    state.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

fn with_segment(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(super::segment_path(dir.path(), 1), bytes).expect("write segment");
    dir
}

#[test]
fn torn_tail_at_every_offset_recovers_the_whole_records() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 3);
    let full = std::fs::read(&path).expect("read");
    let (last_start, end) = (offsets[2], offsets[3]);
    for cut in last_start..end {
        let dir = with_segment(&full[..cut]);
        let before = recovered(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(keys(&before), ["k0", "k1"], "cut at {cut}");
        assert_eq!(
            std::fs::metadata(super::segment_path(dir.path(), 1)).expect("seg").len() as usize,
            last_start
        );
        // It accepts new writes, and restarts identically.
        let engine = Arc::new(fresh_engine());
        let p = Persistence::open(engine.clone(), config(dir.path())).expect("opens");
        let put = Command::Put(cmd::Put {
            key: Bytes::from("new"),
            value: Bytes::from("v"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        });
        engine.execute(put).expect("write after recovery");
        p.close();
        let again = recovered(dir.path()).expect("restart");
        assert_eq!(keys(&again), ["k0", "k1", "new"], "cut at {cut}");
        assert_eq!(again, state(&engine));
    }
}

/// A group's effects are one record: a crash that cuts it anywhere loses the whole group and
/// nothing before it, and recovery never applies part of it.
#[test]
fn a_torn_group_record_is_applied_whole_or_not_at_all() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 1);
    {
        let engine = fresh_engine();
        recover(&engine, src.path(), false, MAX_RECORD).expect("recover");
        let log = AppendLog::open(src.path(), 2, FsyncPolicy::No, 0).expect("log opens");
        engine.attach_log(log.clone()).expect("attach");
        let pairs = (0..10).map(|i| (Bytes::from(format!("g{i}")), Bytes::from("tag-1"))).collect();
        engine.execute(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false })).expect("mset");
        log.close().expect("close");
    }
    let first = std::fs::read(&path).expect("read");
    assert_eq!(first.len(), offsets[1]);
    let second_path = super::segment_path(src.path(), 2);
    let group = std::fs::read(&second_path).expect("read");
    let header = super::log::SEGMENT_HEADER_LEN;
    assert!(
        matches!(super::record::read_at(&Bytes::from(group.clone()), header, MAX_RECORD), super::record::Read::Group(ref e, next) if e.len() == 10 && next == group.len()),
        "ten pairs are one group record"
    );
    for cut in header..=group.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(super::segment_path(dir.path(), 1), &first).expect("write");
        std::fs::write(super::segment_path(dir.path(), 2), &group[..cut]).expect("write");
        let state = recovered(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let grouped = state.keys().filter(|k| k.starts_with(b"g")).count();
        let expected = if cut == group.len() { 10 } else { 0 };
        assert_eq!(grouped, expected, "cut at {cut}: all of the group or none");
        assert!(state.contains_key(&Bytes::from("k0")), "cut at {cut}: the record before survives");
    }
}

#[test]
fn zero_and_random_fill_after_the_last_record_is_cut() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 3);
    let full = std::fs::read(&path).expect("read");
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect()
    };
    for fill in [vec![0u8; 1], vec![0u8; 4096], random(5), random(100), random(4096)] {
        let dir = with_segment(&[full.as_slice(), &fill].concat());
        let state = recovered(dir.path()).expect("recovers");
        assert_eq!(keys(&state), ["k0", "k1", "k2"], "fill of {} bytes", fill.len());
        assert_eq!(
            std::fs::metadata(super::segment_path(dir.path(), 1)).expect("seg").len() as usize,
            offsets[3]
        );
    }
}

#[test]
fn every_bit_flip_is_detected_and_never_served() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 3);
    let full = std::fs::read(&path).expect("read");
    for byte in offsets[0]..full.len() {
        let record = offsets.iter().rposition(|o| *o <= byte).expect("record");
        for bit in 0..8 {
            let mut bad = full.clone();
            bad[byte] ^= 1 << bit;
            let dir = with_segment(&bad);
            match recovered(dir.path()) {
                Err(PersistError::Corrupt { offset, .. }) => {
                    assert_eq!(
                        offset, offsets[record],
                        "flip at {byte}:{bit} reported at the damaged record"
                    );
                    assert!(record < 2, "only damage before the tail refuses to start");
                }
                Ok(state) => {
                    assert_eq!(
                        record, 2,
                        "flip at {byte}:{bit}: damage before the tail must refuse to start"
                    );
                    assert_eq!(keys(&state), ["k0", "k1"], "the damaged last record is not served");
                }
                Err(e) => panic!("flip at {byte}:{bit}: {e}"),
            }
        }
    }
}

#[test]
fn repair_truncates_at_the_damage_and_keeps_a_copy() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 3);
    let mut bad = std::fs::read(&path).expect("read");
    bad[offsets[1] + 20] ^= 0xFF;
    let dir = with_segment(&bad);
    let engine = fresh_engine();
    assert!(matches!(recover(&engine, dir.path(), false, MAX_RECORD), Err(PersistError::Corrupt { .. })));
    let engine = fresh_engine();
    recover(&engine, dir.path(), true, MAX_RECORD).expect("--repair starts");
    assert_eq!(keys(&state(&engine)), ["k0"]);
    let seg = super::segment_path(dir.path(), 1);
    assert!(seg.with_extension("aof.broken").exists(), "a .broken copy is kept");
    assert_eq!(std::fs::metadata(&seg).expect("seg").len() as usize, offsets[1]);
}

#[test]
fn snapshot_compacts_the_log_and_restores_large_values_in_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(fresh_engine());
    let p = Persistence::open(engine.clone(), config(dir.path())).expect("opens");
    // A list and a hash far larger than one snapshot chunk.
    for i in 0..3_000 {
        let big = Bytes::from(vec![i as u8; 1_000]);
        engine
            .execute(Command::ListPush(cmd::ListPush {
                key: Bytes::from("list"),
                end: ListEnd::Back,
                values: vec![big.clone()],
            }))
            .expect("push");
        engine
            .execute(Command::HashSet(cmd::HashSet {
                key: Bytes::from("hash"),
                field: Bytes::from(format!("f{i}")),
                value: big,
            }))
            .expect("hset");
    }
    engine.execute(Command::Incr(cmd::Incr { key: Bytes::from("n"), delta: 42 })).expect("incr");
    p.snapshot().expect("snapshot");
    engine.execute(Command::Incr(cmd::Incr { key: Bytes::from("n"), delta: 1 })).expect("incr after");
    p.close();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".snap")).count(), 1, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".aof")).count(), 1, "older segments deleted: {names:?}");
    assert_eq!(recovered(dir.path()).expect("recovers"), state(&engine));
}

#[test]
fn file_names_round_trip_through_the_naming_scheme() {
    let dir = Path::new("/data");
    let name = |p: std::path::PathBuf| {
        p.file_name().and_then(|n| n.to_str()).map(str::to_string).unwrap_or_default()
    };
    assert_eq!(super::segment_seq(&name(super::segment_path(dir, 7))), Some(7));
    assert_eq!(super::snapshot_seq(&name(super::snapshot_path(dir, u64::MAX))), Some(u64::MAX));
    assert_eq!(super::segment_seq(&name(super::snapshot_path(dir, 7))), None, "kinds never mix");
    assert_eq!(super::snapshot_seq("snapshot-7.snap.tmp"), None, "temp files are not snapshots");
}

/// Puts `key` = 64 bytes through `engine`'s command path; the log position its acknowledgement
/// waits for.
fn put_logged(engine: &Engine, key: String) -> u64 {
    let cmd = Command::Put(cmd::Put {
        key: Bytes::from(key),
        value: Bytes::from(vec![b'v'; 64]),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    let mut at = crate::engine::LogPosition::default();
    engine.apply_command(cmd, &mut at).expect("put");
    at.0
}

/// Under `everysec` and `no`, a waiter may acknowledge only once its record is in the file
/// (`write(2)` done): whether it writes at once (a single request) or first lets other tasks share
/// the write (a pipelined batch), the file holds every byte up to its position when the wait ends.
#[tokio::test]
async fn everysec_waits_end_with_the_record_written_whether_or_not_they_share() {
    for policy in [FsyncPolicy::EverySec, FsyncPolicy::No] {
        for share in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = Arc::new(fresh_engine());
            let log = AppendLog::open(dir.path(), 1, policy, 0).expect("log opens");
            engine.attach_log(log.clone()).expect("attach");
            let segment = super::segment_path(dir.path(), 1);
            for i in 0..50u32 {
                let position = put_logged(&engine, format!("k{i}"));
                assert!(position > 0, "a put is logged");
                log.wait_durable_batched(position, share).await.expect("durable");
                let on_disk = std::fs::metadata(&segment).expect("segment").len();
                assert_eq!(
                    on_disk,
                    super::log::SEGMENT_HEADER_LEN as u64 + position,
                    "{policy} share={share}: record {i} acknowledged before it was written"
                );
            }
            log.close().expect("close");
        }
    }
}

/// Under `always` the segment is zero-filled ahead of its records (log.rs, `PREALLOCATE`). A crash
/// leaves those zeros in the file: recovery must read every acknowledged record, take the zeros
/// for the end of the records rather than damage, and cut them. A clean close cuts them itself.
#[tokio::test]
async fn always_zero_fills_ahead_and_recovery_reads_the_zeros_as_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(fresh_engine());
    let log = AppendLog::open(dir.path(), 1, FsyncPolicy::Always, 0).expect("log opens");
    engine.attach_log(log.clone()).expect("attach");
    let segment = super::segment_path(dir.path(), 1);
    let mut position = 0;
    for i in 0..100u32 {
        position = put_logged(&engine, format!("k{i:03}"));
        log.wait_durable(position).await.expect("durable");
    }
    let records_end = super::log::SEGMENT_HEADER_LEN as u64 + position;
    // The sync thread zero-fills after it tells the waiters: give it a moment, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&segment).expect("segment").len() <= records_end {
        assert!(std::time::Instant::now() < deadline, "the segment was never zero-filled ahead");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let crashed = std::fs::read(&segment).expect("read");
    assert!(crashed[records_end as usize..].iter().all(|b| *b == 0), "only zeros follow the records");

    // A crash: the file as it is now, zeros included.
    let copy = with_segment(&crashed);
    let engine2 = fresh_engine();
    let out = recover(&engine2, copy.path(), false, MAX_RECORD).expect("recovers");
    assert!(!out.truncated_tail, "the zeros are not a torn tail");
    assert_eq!(state(&engine2).len(), 100);
    assert_eq!(
        std::fs::metadata(super::segment_path(copy.path(), 1)).expect("seg").len(),
        records_end,
        "recovery cuts the zeros"
    );

    log.close().expect("close");
    assert_eq!(std::fs::metadata(&segment).expect("segment").len(), records_end, "close cuts the zeros");
}

/// The rule recovery relies on to tell the zero-filled space from damage: no record, however
/// short, starts with a zero header, because the header's own checksum of zeros is not zero.
#[test]
fn a_zero_header_is_never_a_record() {
    let zeros = Bytes::from(vec![0u8; 4096]);
    assert!(matches!(
        super::record::read_at(&zeros, 0, MAX_RECORD),
        super::record::Read::Invalid(_) | super::record::Read::Incomplete(_)
    ));
}

/// A power loss inside the zero-filled space can keep a later page of the group commit it cut and
/// lose an earlier one: zeros, then valid records of that same, unacknowledged group. Recovery
/// cuts there (a torn tail) instead of refusing to start; the acknowledged records before it stay.
/// Without the zeros (a flipped byte), the same place is still damage.
#[test]
fn zeros_then_records_in_the_last_segment_are_a_torn_write_not_damage() {
    let src = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = log_with_records(src.path(), 200);
    let full = std::fs::read(&path).expect("read");
    let sector = super::record::SECTOR;
    // A sector boundary inside a record well before the end, as a lost page would start.
    let (i, boundary) = (50..150)
        .find_map(|i| {
            let b = offsets[i].next_multiple_of(sector);
            (b > offsets[i] && b < offsets[i + 1]).then_some((i, b))
        })
        .expect("a record that straddles a sector boundary");
    for lost in [sector, 2 * sector] {
        let mut torn = full.clone();
        torn[boundary..boundary + lost].fill(0);
        let dir = with_segment(&torn);
        let engine = fresh_engine();
        let out = recover(&engine, dir.path(), false, MAX_RECORD).expect("a torn write is not damage");
        assert!(out.truncated_tail);
        assert_eq!(state(&engine).len(), i, "records before the torn one stay, later ones go");
        assert_eq!(
            std::fs::metadata(super::segment_path(dir.path(), 1)).expect("seg").len() as usize,
            offsets[i]
        );
    }
    // The page lost from the record's very start: zeros from its first byte to the boundary.
    let mut torn = full.clone();
    torn[offsets[i]..boundary].fill(0);
    let dir = with_segment(&torn);
    let engine = fresh_engine();
    recover(&engine, dir.path(), false, MAX_RECORD).expect("zeros to a sector boundary are a torn write");
    assert_eq!(state(&engine).len(), i);
    // One flipped byte in the same record is damage: refused.
    let mut flipped = full.clone();
    flipped[boundary] ^= 0x5a;
    let dir = with_segment(&flipped);
    assert!(matches!(
        recover(&fresh_engine(), dir.path(), false, MAX_RECORD),
        Err(PersistError::Corrupt { .. })
    ));
}

/// An engine with many keys of every shape: strings of many lengths (some longer than the small
/// read chunks below), integers, TTLs, a hash and a list large enough to be split into
/// continuation records, and keys written more than once (later versions).
fn varied_engine() -> Engine {
    let engine = fresh_engine();
    for i in 0..3_000u32 {
        let value = Bytes::from(vec![b'a' + (i % 26) as u8; (i as usize * 7) % 300]);
        let expiry = if i % 4 == 0 { Expiry::from_put_ttl_ms(3_600_000) } else { Expiry::Persist };
        let put =
            cmd::Put { key: Bytes::from(format!("k{i}")), value, expiry, condition: PutCondition::Always };
        engine.execute(Command::Put(put)).expect("put");
    }
    for i in 0..500u32 {
        engine.execute(Command::Incr(cmd::Incr { key: Bytes::from(format!("k{i}")), delta: 0 })).ok();
        engine
            .execute(Command::Incr(cmd::Incr { key: Bytes::from(format!("n{i}")), delta: i as i64 }))
            .expect("incr");
    }
    let big = Bytes::from(vec![7u8; 64 << 10]);
    for f in 0..40u32 {
        let hset = cmd::HashSet {
            key: Bytes::from("hash"),
            field: Bytes::from(format!("f{f}")),
            value: big.clone(),
        };
        engine.execute(Command::HashSet(hset)).expect("hset");
    }
    let values = (0..40).map(|_| big.clone()).collect();
    engine
        .execute(Command::ListPush(cmd::ListPush { key: Bytes::from("list"), end: ListEnd::Back, values }))
        .expect("push");
    engine
}

#[test]
fn a_snapshot_loads_the_same_whatever_the_read_chunk_cuts_and_however_many_loaders() {
    use super::recovery::{Applier, load_snapshot_with};
    let dir = tempfile::tempdir().expect("tempdir");
    let source = varied_engine();
    let stats = snapshot::write(&source, dir.path(), 1).expect("snapshot");
    assert!(stats.records > stats.keys, "the hash and the list were split into continuation records");
    let path = super::snapshot_path(dir.path(), 1);
    let expected = state(&source);
    // Chunks of 1 and 7 bytes cut every record, header included, at every place; 4 KiB chunks
    // are smaller than the 64 KiB hash and list values and than their 1 MiB continuation
    // records; the default reads the whole file at once.
    for chunk in [1, 7, 100, 4096, 1 << 30] {
        for threads in [1, 2, 5] {
            let engine = fresh_engine();
            let records = load_snapshot_with(
                &engine,
                &path,
                MAX_RECORD * 2,
                Applier::with_threads(&engine, threads),
                chunk,
            )
            .unwrap_or_else(|e| panic!("chunk {chunk}, {threads} loaders: {e}"));
            assert_eq!(records, stats.records);
            assert_eq!(
                state(&engine),
                expected,
                "chunk {chunk}, {threads} loaders: every key, version and TTL"
            );
            // The version counter was raised past every restored version.
            let put = cmd::Put {
                key: Bytes::from("after"),
                value: Bytes::new(),
                expiry: Expiry::Persist,
                condition: PutCondition::Always,
            };
            let Ok(nanodb_protocol::Reply::Put { version, .. }) = engine.execute(Command::Put(put)) else {
                panic!()
            };
            assert!(expected.values().all(|s| s.version < version), "chunk {chunk}, {threads} loaders");
        }
    }
}

#[test]
fn a_damaged_or_cut_snapshot_is_refused_at_any_read_chunk() {
    use super::recovery::{Applier, load_snapshot_with};
    let dir = tempfile::tempdir().expect("tempdir");
    let source = varied_engine();
    snapshot::write(&source, dir.path(), 1).expect("snapshot");
    let path = super::snapshot_path(dir.path(), 1);
    let good = std::fs::read(&path).expect("read");
    let middle = good.len() / 2;
    let mut flipped = good.clone();
    flipped[middle] ^= 0x10;
    // Cut in the middle, trailer kept: the record count cannot match, or a record is cut.
    let mut cut = good[..middle].to_vec();
    cut.extend_from_slice(&good[good.len() - 16..]);
    for (what, bytes) in [("a flipped bit", flipped), ("a cut", cut)] {
        std::fs::write(&path, &bytes).expect("write");
        for chunk in [7, 4096, 1 << 30] {
            let engine = fresh_engine();
            let r =
                load_snapshot_with(&engine, &path, MAX_RECORD * 2, Applier::with_threads(&engine, 2), chunk);
            assert!(matches!(r, Err(PersistError::Corrupt { .. })), "{what}, chunk {chunk}: {r:?}");
        }
    }
}
