//! The on-disk record: one [`Effect`] per record, or the effects of one atomic group in one
//! record, framed so that recovery can tell a torn tail from corruption.
//!
//! ```text
//! u32 payload_len | u32 crc32c(payload) | u32 crc32c(first 8 header bytes) | payload
//! payload = u8 kind | u8 flags | u64 version | bytes key | kind-specific fields
//! group   = u8 8 | u8 0 | u64 0 | bytes "" | u32 count | count × bytes(payload)
//! ```
//! A group's effects share one frame and one checksum: a crash that cuts the record anywhere
//! cuts the whole group, so recovery applies all of a group's effects or none.
//! Integers are little-endian; `bytes` is a u32 length and the bytes. The header checksum protects
//! the length itself: a corrupted length is detected instead of being trusted, and the length is
//! checked against `max_record_len` before anything is allocated for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nanodb_protocol::ListEnd;

use crate::engine::value::{FieldMap, Value, ValueRef};
use crate::engine::{Effect, EffectKind, OwnedEffect, OwnedEffectKind};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 12;

const K_SET: u8 = 1;
const K_DELETE: u8 = 2;
const K_EXPIRE: u8 = 3;
const K_HASH_SET: u8 = 4;
const K_HASH_DELETE: u8 = 5;
const K_LIST_PUSH: u8 = 6;
const K_LIST_POP: u8 = 7;
const K_GROUP: u8 = 8;

const V_STR: u8 = 0;
const V_INT: u8 = 1;
const V_HASH: u8 = 2;
const V_LIST: u8 = 3;

/// Record flag: this record continues the previous record's key at the same version (a large
/// value split over several snapshot records).
pub const FLAG_CONTINUATION: u8 = 1;

fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u32_le(b.len() as u32);
    dst.put_slice(b);
}

fn end_byte(end: ListEnd) -> u8 {
    match end {
        ListEnd::Front => 0,
        ListEnd::Back => 1,
    }
}

/// Appends one framed record to `dst`, its payload written by `payload`.
pub fn frame(dst: &mut BytesMut, payload: impl FnOnce(&mut BytesMut)) {
    let start = dst.len();
    dst.put_bytes(0, HEADER_LEN);
    payload(dst);
    let len = (dst.len() - start - HEADER_LEN) as u32;
    let crc = crc32c::crc32c(&dst[start + HEADER_LEN..]);
    dst[start..start + 4].copy_from_slice(&len.to_le_bytes());
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&dst[start..start + 8]);
    dst[start + 8..start + 12].copy_from_slice(&header_crc.to_le_bytes());
}

fn put_value(dst: &mut BytesMut, value: ValueRef<'_>) {
    match value {
        ValueRef::Str(b) => {
            dst.put_u8(V_STR);
            put_bytes(dst, b);
        }
        ValueRef::Int(i) => {
            dst.put_u8(V_INT);
            dst.put_i64_le(i);
        }
        ValueRef::Hash(map) => {
            dst.put_u8(V_HASH);
            dst.put_u32_le(map.len() as u32);
            for (f, v) in map.iter() {
                put_bytes(dst, f);
                put_bytes(dst, v);
            }
        }
        ValueRef::List(list) => {
            dst.put_u8(V_LIST);
            dst.put_u32_le(list.len() as u32);
            for v in list.iter() {
                put_bytes(dst, v);
            }
        }
    }
}

/// Appends the framed record of `effect` to `dst`.
pub fn encode(dst: &mut BytesMut, effect: &Effect<'_>, flags: u8) {
    frame(dst, |p| encode_payload(p, effect, flags));
}

/// Appends one framed record holding every effect of an atomic group to `dst`.
pub fn encode_group(dst: &mut BytesMut, effects: &[Effect<'_>]) {
    frame(dst, |p| {
        p.put_u8(K_GROUP);
        p.put_u8(0);
        p.put_u64_le(0);
        put_bytes(p, b"");
        p.put_u32_le(effects.len() as u32);
        for effect in effects {
            let at = p.len();
            p.put_u32_le(0);
            encode_payload(p, effect, 0);
            let len = (p.len() - at - 4) as u32;
            p[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
    });
}

/// Writes the payload of `effect`'s record (everything after the frame header).
fn encode_payload(p: &mut BytesMut, effect: &Effect<'_>, flags: u8) {
    {
        let kind = match effect.kind {
            EffectKind::Set { .. } => K_SET,
            EffectKind::Delete => K_DELETE,
            EffectKind::Expire { .. } => K_EXPIRE,
            EffectKind::HashSet { .. } => K_HASH_SET,
            EffectKind::HashDelete { .. } => K_HASH_DELETE,
            EffectKind::ListPush { .. } => K_LIST_PUSH,
            EffectKind::ListPop { .. } => K_LIST_POP,
        };
        p.put_u8(kind);
        p.put_u8(flags);
        p.put_u64_le(effect.version);
        put_bytes(p, effect.key);
        match effect.kind {
            EffectKind::Set { value, deadline } => {
                p.put_u64_le(deadline);
                put_value(p, value);
            }
            EffectKind::Delete => {}
            EffectKind::Expire { deadline } => p.put_u64_le(deadline),
            EffectKind::HashSet { field, value } => {
                p.put_u32_le(1);
                put_bytes(p, field);
                put_bytes(p, value);
            }
            EffectKind::HashDelete { field } => put_bytes(p, field),
            EffectKind::ListPush { end, list, count } => {
                p.put_u8(end_byte(end));
                p.put_u32_le(count as u32);
                EffectKind::for_each_pushed(list, end, count, |v| put_bytes(p, v));
            }
            EffectKind::ListPop { end, count } => {
                p.put_u8(end_byte(end));
                p.put_u32_le(count as u32);
            }
        }
    }
}

/// Appends a snapshot chunk: hash fields or list values continuing `key` at `version`.
pub fn encode_chunk(dst: &mut BytesMut, key: &[u8], version: u64, chunk: Chunk<'_>) {
    frame(dst, |p| {
        p.put_u8(match chunk {
            Chunk::Hash(_) => K_HASH_SET,
            Chunk::List(_) => K_LIST_PUSH,
        });
        p.put_u8(FLAG_CONTINUATION);
        p.put_u64_le(version);
        put_bytes(p, key);
        match chunk {
            Chunk::Hash(fields) => {
                p.put_u32_le(fields.len() as u32);
                for (f, v) in fields {
                    put_bytes(p, f);
                    put_bytes(p, v);
                }
            }
            Chunk::List(values) => {
                p.put_u8(end_byte(ListEnd::Back));
                p.put_u32_le(values.len() as u32);
                for v in values {
                    put_bytes(p, v);
                }
            }
        }
    });
}

/// Part of a large value, written after its first record in a snapshot.
#[derive(Debug)]
pub enum Chunk<'a> {
    /// Hash fields.
    Hash(&'a [(&'a Bytes, &'a Bytes)]),
    /// List values, appended at the back.
    List(&'a [&'a Bytes]),
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The effect.
    pub effect: OwnedEffect,
    /// Its flags ([`FLAG_CONTINUATION`]).
    pub flags: u8,
}

struct Payload(Bytes);

impl Payload {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            Err(format!("payload truncated: need {n} bytes, {} left", self.0.remaining()))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    /// An owned copy: decoded values outlive the file buffer they were read from (a slice would
    /// keep the whole file in memory for as long as one key lived).
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        let b = Bytes::copy_from_slice(&self.0[..n]);
        self.0.advance(n);
        Ok(b)
    }
    fn count(&mut self, min_item: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.0.remaining() {
            return Err(format!("count {n} cannot fit in {} bytes", self.0.remaining()));
        }
        Ok(n)
    }
    fn end(&mut self) -> Result<ListEnd, String> {
        match self.u8()? {
            0 => Ok(ListEnd::Front),
            1 => Ok(ListEnd::Back),
            n => Err(format!("bad list end {n}")),
        }
    }
}

/// Decodes a payload whose checksum already matched.
pub fn decode_payload(payload: Bytes) -> Result<Decoded, String> {
    let mut p = Payload(payload);
    let kind = p.u8()?;
    let flags = p.u8()?;
    let version = p.u64()?;
    let key = p.bytes()?;
    let kind = match kind {
        K_SET => {
            let deadline = p.u64()?;
            let value = match p.u8()? {
                V_STR => Value::Str(p.bytes()?),
                V_INT => Value::Int(p.u64()? as i64),
                V_HASH => {
                    let n = p.count(8)?;
                    let mut map = FieldMap::with_capacity_and_hasher(n, Default::default());
                    for _ in 0..n {
                        map.insert(p.bytes()?, p.bytes()?);
                    }
                    Value::Hash(Box::new(map))
                }
                V_LIST => {
                    let n = p.count(4)?;
                    let mut list = std::collections::VecDeque::with_capacity(n);
                    for _ in 0..n {
                        list.push_back(p.bytes()?);
                    }
                    Value::List(Box::new(list))
                }
                t => return Err(format!("unknown value type {t}")),
            };
            OwnedEffectKind::Set { value, deadline }
        }
        K_DELETE => OwnedEffectKind::Delete,
        K_EXPIRE => OwnedEffectKind::Expire { deadline: p.u64()? },
        K_HASH_SET => {
            let n = p.count(8)?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                fields.push((p.bytes()?, p.bytes()?));
            }
            OwnedEffectKind::HashSet { fields }
        }
        K_HASH_DELETE => OwnedEffectKind::HashDelete { field: p.bytes()? },
        K_LIST_PUSH => {
            let end = p.end()?;
            let n = p.count(4)?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                values.push(p.bytes()?);
            }
            OwnedEffectKind::ListPush { end, values }
        }
        K_LIST_POP => OwnedEffectKind::ListPop { end: p.end()?, count: p.u32()? as usize },
        k => return Err(format!("unknown record kind {k}")),
    };
    if p.0.has_remaining() {
        return Err(format!("{} trailing bytes in record", p.0.remaining()));
    }
    Ok(Decoded { effect: OwnedEffect { key, version, kind }, flags })
}

/// Decodes the payload of a group record (its kind byte included): every effect, or an error
/// if any is damaged (a group is applied whole or not at all).
fn decode_group(payload: Bytes) -> Result<Vec<OwnedEffect>, String> {
    let mut p = Payload(payload);
    let (kind, flags, version, key) = (p.u8()?, p.u8()?, p.u64()?, p.bytes()?);
    if kind != K_GROUP || flags != 0 || version != 0 || !key.is_empty() {
        return Err("bad group record header".into());
    }
    let n = p.count(4)?;
    let mut effects = Vec::with_capacity(n);
    for _ in 0..n {
        let inner = p.u32()? as usize;
        p.need(inner)?;
        let payload = p.0.split_to(inner);
        if payload.first() == Some(&K_GROUP) {
            return Err("a group record inside a group record".into());
        }
        effects.push(decode_payload(payload)?.effect);
    }
    if p.0.has_remaining() {
        return Err(format!("{} trailing bytes in group record", p.0.remaining()));
    }
    Ok(effects)
}

/// What reading at an offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole, valid record and the offset after it.
    Record(Decoded, usize),
    /// A whole, valid record of an atomic group (its effects, in order) and the offset after it.
    Group(Vec<OwnedEffect>, usize),
    /// The end of the data, exactly at a record boundary.
    End,
    /// The data stops inside a record: a write that did not finish (valid header, short payload,
    /// or fewer than 12 bytes left).
    Incomplete(String),
    /// Bytes that are not a valid record (bad header or payload checksum, bad layout).
    Invalid(String),
}

/// What reading one frame found, whatever its payload holds (the Raft log frames its entries
/// the same way as this log frames effects).
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRead {
    /// A whole frame whose checksums hold: its payload and the offset after it.
    Frame(Bytes, usize),
    /// The end of the data, exactly at a frame boundary.
    End,
    /// The data stops inside a frame.
    Incomplete(String),
    /// Bytes that are not a valid frame.
    Invalid(String),
}

/// Reads the frame at `offset` of `data` and checks both checksums, refusing lengths above
/// `max_len` before allocating.
pub fn read_frame_at(data: &Bytes, offset: usize, max_len: usize) -> FrameRead {
    let rest = &data[offset..];
    if rest.is_empty() {
        return FrameRead::End;
    }
    if rest.len() < HEADER_LEN {
        return FrameRead::Incomplete(format!("{} bytes left, a record header is {HEADER_LEN}", rest.len()));
    }
    let header_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    if crc32c::crc32c(&rest[..8]) != header_crc {
        return FrameRead::Invalid("record header checksum mismatch".into());
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if len > max_len {
        return FrameRead::Invalid(format!("record length {len} exceeds the limit {max_len}"));
    }
    if rest.len() < HEADER_LEN + len {
        return FrameRead::Incomplete(format!("record of {len} bytes, {} left", rest.len() - HEADER_LEN));
    }
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let payload = data.slice(offset + HEADER_LEN..offset + HEADER_LEN + len);
    if crc32c::crc32c(&payload) != crc {
        return FrameRead::Invalid("record checksum mismatch".into());
    }
    FrameRead::Frame(payload, offset + HEADER_LEN + len)
}

/// Reads the record at `offset` of `data`, refusing lengths above `max_len` before allocating.
pub fn read_at(data: &Bytes, offset: usize, max_len: usize) -> Read {
    match read_frame_at(data, offset, max_len) {
        FrameRead::Frame(payload, next) if payload.first() == Some(&K_GROUP) => match decode_group(payload) {
            Ok(effects) => Read::Group(effects, next),
            Err(e) => Read::Invalid(e),
        },
        FrameRead::Frame(payload, next) => match decode_payload(payload) {
            Ok(decoded) => Read::Record(decoded, next),
            Err(e) => Read::Invalid(e),
        },
        FrameRead::End => Read::End,
        FrameRead::Incomplete(e) => Read::Incomplete(e),
        FrameRead::Invalid(e) => Read::Invalid(e),
    }
}

/// The unit in which a disk writes, for telling a torn write from damage (see [`torn_by_zeros`]).
pub const SECTOR: usize = 512;

/// Whether the bad record at `offset` of the file `data` looks like a write cut short by a power
/// loss inside space the log had zero-filled ahead of its records (`log.rs`, `PREALLOCATE`), as
/// etcd's WAL judges its torn entries: zeros run from `offset` to the next sector boundary, or a
/// whole sector of zeros starts at a sector boundary inside the record (its header's extent when
/// that header is intact, else the page after `offset`).
///
/// Why valid records may follow: such a write overwrote blocks the file already had, so no size
/// change orders its pages, and a later page may reach the disk while an earlier one does not.
/// Everything after the gap belongs to the same group commit, which nobody was told about: the
/// sync thread writes a group only after the previous group's fsync returned. A bit flipped by a
/// failing disk leaves no such run of zeros and is still refused as damage.
pub fn torn_by_zeros(data: &[u8], offset: usize) -> bool {
    let rest = &data[offset..];
    let intact_len = (rest.len() >= HEADER_LEN
        && crc32c::crc32c(&rest[..8]) == u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]))
    .then(|| HEADER_LEN + u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize);
    let end = offset.saturating_add(intact_len.unwrap_or(4096)).min(data.len());
    let zero = |range: std::ops::Range<usize>| data[range].iter().all(|b| *b == 0);
    let boundary = offset.next_multiple_of(SECTOR);
    if boundary > offset && boundary <= data.len() && zero(offset..boundary) {
        return true;
    }
    let mut sector = boundary;
    while sector < end && sector + SECTOR <= data.len() {
        if zero(sector..sector + SECTOR) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// Whether any valid record starts anywhere after `offset`: tells corruption in the middle (a
/// valid record follows) from garbage at the tail (nothing valid follows).
pub fn valid_record_after(data: &Bytes, offset: usize, max_len: usize) -> bool {
    (offset + 1..data.len().saturating_sub(HEADER_LEN - 1))
        .any(|o| matches!(read_at(data, o, max_len), Read::Record(..) | Read::Group(..)))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let list: VecDeque<Bytes> =
            ["a", "b", "c"].iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
        let mut hash = FieldMap::default();
        hash.insert(Bytes::from_static(b"f"), Bytes::from_static(b"v"));
        let values = [
            Value::str(b"\x00\xff"),
            Value::Int(-7),
            Value::Hash(Box::new(hash)),
            Value::List(Box::new(list.clone())),
        ];
        let mut cases: Vec<(Effect<'_>, OwnedEffectKind)> = values
            .iter()
            .map(|v| {
                (
                    EffectKind::Set { value: v.view(), deadline: 99 },
                    OwnedEffectKind::Set { value: v.clone(), deadline: 99 },
                )
            })
            .map(|(k, o)| (Effect { key: b"key", version: 5, kind: k }, o))
            .collect();
        let more = [
            (EffectKind::Delete, OwnedEffectKind::Delete),
            (EffectKind::Expire { deadline: 0 }, OwnedEffectKind::Expire { deadline: 0 }),
            (
                EffectKind::HashSet { field: b"f", value: b"v" },
                OwnedEffectKind::HashSet {
                    fields: vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))],
                },
            ),
            (
                EffectKind::HashDelete { field: b"f" },
                OwnedEffectKind::HashDelete { field: Bytes::from_static(b"f") },
            ),
            (
                // Front push of two leaves them first in reverse: push order is b, a.
                EffectKind::ListPush { end: ListEnd::Front, list: &list, count: 2 },
                OwnedEffectKind::ListPush {
                    end: ListEnd::Front,
                    values: vec![Bytes::from_static(b"b"), Bytes::from_static(b"a")],
                },
            ),
            (
                EffectKind::ListPush { end: ListEnd::Back, list: &list, count: 2 },
                OwnedEffectKind::ListPush {
                    end: ListEnd::Back,
                    values: vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")],
                },
            ),
            (
                EffectKind::ListPop { end: ListEnd::Back, count: 3 },
                OwnedEffectKind::ListPop { end: ListEnd::Back, count: 3 },
            ),
        ];
        cases.extend(more.into_iter().map(|(k, o)| (Effect { key: b"key", version: 5, kind: k }, o)));
        for (effect, expected) in cases {
            let mut buf = BytesMut::new();
            encode(&mut buf, &effect, 0);
            let data = buf.freeze();
            match read_at(&data, 0, 1 << 20) {
                Read::Record(d, next) => {
                    assert_eq!(next, data.len());
                    assert_eq!(
                        d.effect,
                        OwnedEffect { key: Bytes::from_static(b"key"), version: 5, kind: expected }
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn two_records() -> Bytes {
        let v = Value::str(b"value");
        let mut buf = BytesMut::new();
        for version in [1, 2] {
            encode(
                &mut buf,
                &Effect { key: b"k", version, kind: EffectKind::Set { value: v.view(), deadline: 0 } },
                0,
            );
        }
        buf.freeze()
    }

    #[test]
    fn truncation_anywhere_in_the_last_record_is_incomplete() {
        let data = two_records();
        let Read::Record(_, second) = read_at(&data, 0, 1 << 20) else { panic!() };
        for cut in second + 1..data.len() {
            let torn = data.slice(..cut);
            assert!(matches!(read_at(&torn, second, 1 << 20), Read::Incomplete(_)), "cut at {cut}");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let data = two_records();
        for byte in 0..data.len() {
            for bit in 0..8 {
                let mut bad = data.to_vec();
                bad[byte] ^= 1 << bit;
                let bad = Bytes::from(bad);
                let mut offset = 0;
                let mut records = 0;
                loop {
                    match read_at(&bad, offset, 1 << 20) {
                        Read::Record(_, next) => {
                            records += 1;
                            offset = next;
                        }
                        Read::End => panic!("flip at {byte}:{bit} went unnoticed"),
                        Read::Group(..) => panic!("flip at {byte}:{bit} made a group record"),
                        Read::Incomplete(_) | Read::Invalid(_) => break,
                    }
                }
                assert!(records < 2, "flip at {byte}:{bit} served a damaged record");
            }
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut buf = BytesMut::new();
        frame(&mut buf, |p| p.put_bytes(7, 10));
        // Rewrite the length to 3 GiB with a matching header checksum: a valid-looking header.
        let len = 3u32 << 30;
        buf[0..4].copy_from_slice(&len.to_le_bytes());
        let hc = crc32c::crc32c(&buf[0..8]);
        buf[8..12].copy_from_slice(&hc.to_le_bytes());
        assert!(matches!(read_at(&buf.freeze(), 0, 1 << 20), Read::Invalid(_)));
    }
}
