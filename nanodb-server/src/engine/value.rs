//! What the engine stores per key: a typed [`Value`] with its version and deadline.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use nanodb_protocol::{Error, KeyType};

/// The hash map used inside hash values.
pub type FieldMap = HashMap<Bytes, Bytes, ahash::RandomState>;

/// A key's value, owned: what writes hand the engine and what effects carry. Strings that were
/// incremented are kept as integers (compact, and INCR needs no parsing); they read back as their
/// decimal text.
///
/// This is not how a key is stored: an [`Entry`](super::entry::Entry) packs a string's bytes
/// (and its key and header) into one block, so a `Value::Str` lives only on its way in or out and
/// may share the request's buffer (`Bytes`) until it is packed. Stored values are read as
/// [`ValueRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Bytes.
    Str(Bytes),
    /// A string holding a decimal integer.
    Int(i64),
    /// A hash of fields to values; never empty (an emptied hash is removed).
    Hash(Box<FieldMap>),
    /// A list; never empty (an emptied list is removed).
    List(Box<VecDeque<Bytes>>),
}

impl Value {
    /// The value's type.
    pub fn key_type(&self) -> KeyType {
        self.view().key_type()
    }

    /// The Redis-style type name.
    pub fn type_name(&self) -> &'static str {
        self.key_type().as_str()
    }

    /// A string value holding a copy of `b`.
    pub fn str(b: &[u8]) -> Self {
        Self::Str(Bytes::copy_from_slice(b))
    }

    /// The value as string bytes, or WRONGTYPE for hashes and lists.
    pub fn as_string(&self) -> Result<Bytes, Error> {
        match self {
            Self::Str(b) => Ok(b.clone()),
            other => other.view().as_string(),
        }
    }

    /// A borrowed view, as stored values are read.
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Self::Str(b) => ValueRef::Str(b),
            Self::Int(i) => ValueRef::Int(*i),
            Self::Hash(map) => ValueRef::Hash(map),
            Self::List(list) => ValueRef::List(list),
        }
    }
}

/// A stored value, borrowed from its entry (or from a [`Value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// Bytes.
    Str(&'a [u8]),
    /// A string holding a decimal integer.
    Int(i64),
    /// A hash.
    Hash(&'a FieldMap),
    /// A list.
    List(&'a VecDeque<Bytes>),
}

impl ValueRef<'_> {
    /// The value's type.
    pub fn key_type(self) -> KeyType {
        match self {
            Self::Str(_) | Self::Int(_) => KeyType::String,
            Self::Hash(_) => KeyType::Hash,
            Self::List(_) => KeyType::List,
        }
    }

    /// The Redis-style type name.
    pub fn type_name(self) -> &'static str {
        self.key_type().as_str()
    }

    /// The value as string bytes (a copy, as Redis copies a value into its reply buffer), or
    /// WRONGTYPE for hashes and lists.
    pub fn as_string(self) -> Result<Bytes, Error> {
        match self {
            Self::Str(b) => Ok(Bytes::copy_from_slice(b)),
            Self::Int(i) => Ok(Bytes::from(i.to_string())),
            _ => Err(Error::WrongType),
        }
    }

    /// An owned copy.
    pub fn to_value(self) -> Value {
        match self {
            Self::Str(b) => Value::str(b),
            Self::Int(i) => Value::Int(i),
            Self::Hash(map) => Value::Hash(Box::new(map.clone())),
            Self::List(list) => Value::List(Box::new(list.clone())),
        }
    }
}

/// One key's state, owned: what a write puts and what a group carries between its overlay and
/// the engine. Stored as an [`Entry`](super::entry::Entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The value.
    pub value: Value,
    /// Changes on every write; engine-wide unique, so a deleted and re-created key never repeats a
    /// version (no ABA for compare-and-set).
    pub version: u64,
    /// Absolute Unix-ms deadline; 0 for none.
    pub deadline: u64,
}

impl Slot {
    /// Whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.deadline != 0 && self.deadline <= now
    }

    /// Remaining ms to the deadline at `now`, -1 when there is none. A deadline further away than
    /// `i64::MAX` ms (a client may ask for one) reads as `i64::MAX`, never as a negative TTL.
    pub fn ttl_ms(&self, now: u64) -> i64 {
        super::entry::ttl_ms(self.deadline, now)
    }
}

/// An exact-size copy of `b` that the engine may keep. Network frontends hand the engine slices of
/// their read buffers; storing such a slice would pin the whole buffer for as long as the key
/// lives, so everything stored goes through here (or [`Value::str`]) once.
pub fn owned(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// Parses a decimal i64 the way Redis does: optional '-', digits, no '+', no spaces, no leading
/// zeros except "0" itself.
pub fn parse_i64(b: &[u8]) -> Result<i64, Error> {
    let s = std::str::from_utf8(b).map_err(|_| Error::NotAnInteger)?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return Err(Error::NotAnInteger);
    }
    s.parse().map_err(|_| Error::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_i64(b"0"), Ok(0));
        assert_eq!(parse_i64(b"-12"), Ok(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Ok(i64::MIN));
        for bad in
            [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1.5", b"9223372036854775808", b"\xff"]
        {
            assert_eq!(parse_i64(bad), Err(Error::NotAnInteger), "{bad:?}");
        }
    }
}
