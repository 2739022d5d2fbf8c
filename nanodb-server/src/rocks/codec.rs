//! The on-disk encoding of the RocksDB store (docs/ROCKSDB.md, "On-disk layout"). Pure functions,
//! no RocksDB calls, so every layout rule is tested here.
//!
//! `meta` family: key = the key's bytes; value = `type u8 | version u64 LE | deadline u64 LE | body`.
//! `data` family: key = `len(key) u32 BE | key | subver u64 BE | field` (a hash field) or
//! `... | subver u64 BE | index u64 BE` (a list element); value = the field's value or the element.

/// Bytes before a meta value's body: type, version, deadline.
pub const HEADER_LEN: usize = 17;

/// Where a list's first and last indexes start: the middle of the u64 range, so pushes at either
/// end have 2^63 places to go.
pub const LIST_MIDDLE: u64 = 1 << 63;

/// What a meta entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string: the body is its bytes.
    Str,
    /// An integer (INCR's representation): the body is an i64 LE.
    Int,
    /// A hash: the body is its subver; fields live in `data`.
    Hash {
        /// The version the hash was created at: the middle part of its fields' keys.
        subver: u64,
    },
    /// A list: the body is subver, head, tail; elements `head..tail` live in `data`.
    List {
        /// The version the list was created at.
        subver: u64,
        /// Index of the first element.
        head: u64,
        /// One past the index of the last element.
        tail: u64,
    },
}

impl Kind {
    /// The subver of a hash or list (whose elements live in `data`).
    pub fn subver(self) -> Option<u64> {
        match self {
            Self::Hash { subver } | Self::List { subver, .. } => Some(subver),
            Self::Str | Self::Int => None,
        }
    }
}

/// A decoded meta entry (the body of a string stays in the raw value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The type and, for hash and list, where their elements are.
    pub kind: Kind,
    /// The key's version.
    pub version: u64,
    /// Absolute deadline in Unix ms; 0 for none.
    pub deadline: u64,
}

const T_STR: u8 = 0;
const T_INT: u8 = 1;
const T_HASH: u8 = 2;
const T_LIST: u8 = 3;

fn u64_le(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The deadline of a raw meta value, read without decoding the rest (the compaction filter's
/// question). `None` for a value too short to be one.
pub fn deadline_of(raw: &[u8]) -> Option<u64> {
    u64_le(raw, 9)
}

/// Whether a raw meta value's deadline has passed at `now` (Unix ms).
pub fn is_expired(raw: &[u8], now: u64) -> bool {
    deadline_of(raw).is_some_and(|d| d != 0 && d <= now)
}

/// Decodes a raw meta value; `None` when it is malformed.
pub fn decode_meta(raw: &[u8]) -> Option<Meta> {
    let version = u64_le(raw, 1)?;
    let deadline = u64_le(raw, 9)?;
    let kind = match *raw.first()? {
        T_STR => Kind::Str,
        T_INT if raw.len() == HEADER_LEN + 8 => Kind::Int,
        T_HASH => Kind::Hash { subver: u64_le(raw, HEADER_LEN)? },
        T_LIST => Kind::List {
            subver: u64_le(raw, HEADER_LEN)?,
            head: u64_le(raw, HEADER_LEN + 8)?,
            tail: u64_le(raw, HEADER_LEN + 16)?,
        },
        _ => return None,
    };
    Some(Meta { kind, version, deadline })
}

/// The body of a raw meta value (a string's bytes, an integer's 8 bytes).
pub fn body(raw: &[u8]) -> &[u8] {
    raw.get(HEADER_LEN..).unwrap_or_default()
}

fn header(out: &mut Vec<u8>, t: u8, version: u64, deadline: u64) {
    out.push(t);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&deadline.to_le_bytes());
}

/// A string's meta value.
pub fn encode_str(version: u64, deadline: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    header(&mut out, T_STR, version, deadline);
    out.extend_from_slice(value);
    out
}

/// An integer's meta value.
pub fn encode_int(version: u64, deadline: u64, value: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8);
    header(&mut out, T_INT, version, deadline);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// A hash's or list's meta value (`kind` must be one of those).
pub fn encode_container(version: u64, deadline: u64, kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 24);
    match kind {
        Kind::Hash { subver } => {
            header(&mut out, T_HASH, version, deadline);
            out.extend_from_slice(&subver.to_le_bytes());
        }
        Kind::List { subver, head, tail } => {
            header(&mut out, T_LIST, version, deadline);
            for n in [subver, head, tail] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        // Not a container: callers never pass these; an empty string is the harmless answer.
        Kind::Str | Kind::Int => header(&mut out, T_STR, version, deadline),
    }
    out
}

/// Sets the version and deadline of a raw meta value in place (EXPIRE, and a hash or list whose
/// elements changed), keeping its type and body.
pub fn patch(raw: &mut [u8], version: u64, deadline: u64) {
    if raw.len() >= HEADER_LEN {
        raw[1..9].copy_from_slice(&version.to_le_bytes());
        raw[9..17].copy_from_slice(&deadline.to_le_bytes());
    }
}

/// `len(key) u32 BE | key | subver u64 BE`: the prefix of every `data` entry of one hash or list.
pub fn data_prefix(key: &[u8], subver: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + 8 + 16);
    // Keys are bounded far below 4 GiB by the engine (`entry::MAX_KEY_LEN`).
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&subver.to_be_bytes());
    out
}

/// The `data` key of hash field `field`.
pub fn field_key(key: &[u8], subver: u64, field: &[u8]) -> Vec<u8> {
    let mut out = data_prefix(key, subver);
    out.extend_from_slice(field);
    out
}

/// The `data` key of list element `index`.
pub fn element_key(key: &[u8], subver: u64, index: u64) -> Vec<u8> {
    let mut out = data_prefix(key, subver);
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// `[from, to)` covering every `data` entry of one hash or list, for a range deletion or a
/// bounded iterator.
pub fn data_range(key: &[u8], subver: u64) -> (Vec<u8>, Vec<u8>) {
    // Versions count writes from 1 and never reach u64::MAX, so subver + 1 always exists.
    (data_prefix(key, subver), data_prefix(key, subver.saturating_add(1)))
}

/// Splits a `data` key into (key, subver, rest); `None` when malformed.
pub fn split_data_key(raw: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let len = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let key = raw.get(4..4 + len)?;
    let subver = u64::from_be_bytes(raw.get(4 + len..12 + len)?.try_into().ok()?);
    Some((key, subver, &raw[12 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_for_every_type() {
        let s = encode_str(7, 99, b"hello");
        assert_eq!(decode_meta(&s), Some(Meta { kind: Kind::Str, version: 7, deadline: 99 }));
        assert_eq!(body(&s), b"hello");
        let i = encode_int(8, 0, -5);
        assert_eq!(decode_meta(&i).map(|m| m.kind), Some(Kind::Int));
        assert_eq!(body(&i), (-5i64).to_le_bytes());
        let h = encode_container(9, 5, Kind::Hash { subver: 3 });
        assert_eq!(decode_meta(&h), Some(Meta { kind: Kind::Hash { subver: 3 }, version: 9, deadline: 5 }));
        let kind = Kind::List { subver: 4, head: LIST_MIDDLE - 2, tail: LIST_MIDDLE + 1 };
        let l = encode_container(10, 0, kind);
        assert_eq!(decode_meta(&l), Some(Meta { kind, version: 10, deadline: 0 }));
        assert_eq!(decode_meta(b"\x09short"), None);
        assert_eq!(decode_meta(&[T_INT; 20]), None, "an integer's body is exactly 8 bytes");
    }

    #[test]
    fn the_deadline_is_read_and_patched_in_place() {
        let mut s = encode_str(1, 1000, b"v");
        assert!(!is_expired(&s, 999));
        assert!(is_expired(&s, 1000));
        patch(&mut s, 2, 0);
        assert!(!is_expired(&s, u64::MAX), "0 means no deadline");
        assert_eq!(decode_meta(&s).map(|m| m.version), Some(2));
        assert_eq!(body(&s), b"v", "patching keeps the body");
    }

    #[test]
    fn data_keys_sort_by_key_then_subver_then_index() {
        let (from, to) = data_range(b"k", 5);
        for index in [0, LIST_MIDDLE, u64::MAX] {
            let e = element_key(b"k", 5, index);
            assert!(from <= e && e < to, "{index} inside its range");
        }
        assert!(element_key(b"k", 5, 1) < element_key(b"k", 5, 2));
        assert!(field_key(b"k", 6, b"") >= to, "the next subver is outside");
        // A key that extends another is outside its range (the length comes first).
        assert!(!(from <= field_key(b"kk", 5, b"") && field_key(b"kk", 5, b"") < to));
        assert_eq!(split_data_key(&field_key(b"key", 9, b"f")), Some((&b"key"[..], 9, &b"f"[..])));
        assert_eq!(split_data_key(b"\0\0\0\x09ab"), None);
    }
}
