//! What the engine stores per key: a typed [`Value`] with its version and deadline.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use nanodb_protocol::{Error, KeyType};

/// The hash map used inside hash values.
pub type FieldMap = HashMap<Bytes, Bytes, ahash::RandomState>;

/// A key's value. Strings that were incremented are kept as integers (compact, and INCR needs no
/// parsing); they read back as their decimal text.
///
/// Strings are exactly sized boxes, not `Bytes`: a stored string is one allocation of its length
/// and 16 bytes in the slot (a `Bytes` is 32), which is most of a small key's memory. Reading one
/// copies it out ([`Value::as_string`]), as Redis copies a value into its reply buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Bytes.
    Str(Box<[u8]>),
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
        match self {
            Self::Str(_) | Self::Int(_) => KeyType::String,
            Self::Hash(_) => KeyType::Hash,
            Self::List(_) => KeyType::List,
        }
    }

    /// The Redis-style type name.
    pub fn type_name(&self) -> &'static str {
        self.key_type().as_str()
    }

    /// A string value holding an exact-size copy of `b`.
    pub fn str(b: &[u8]) -> Self {
        Self::Str(Box::from(b))
    }

    /// The value as string bytes, or WRONGTYPE for hashes and lists.
    pub fn as_string(&self) -> Result<Bytes, Error> {
        match self {
            Self::Str(b) => Ok(Bytes::copy_from_slice(b)),
            Self::Int(i) => Ok(Bytes::from(i.to_string())),
            _ => Err(Error::WrongType),
        }
    }
}

/// One key's stored state.
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
        if self.deadline == 0 {
            -1
        } else {
            i64::try_from(self.deadline.saturating_sub(now)).unwrap_or(i64::MAX)
        }
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
