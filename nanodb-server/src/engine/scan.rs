//! Resumable prefix scans.
//!
//! Order: partition, then the engine hash of the key, then the key bytes. That order does not
//! depend on where a key sits inside a hash table, so it survives inserts, deletes and resizes
//! between pages: following cursors visits every key that exists for the whole scan exactly once
//! (keys added or removed meanwhile may or may not appear). A page walks one partition at a time,
//! holding that partition's read lock only while it walks it.
//!
//! The cursor is opaque to clients: `0x01 | u16 partition | u64 hash | key`. Hashes are seeded per
//! process, so a cursor is valid for the life of the server process that issued it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use bytes::{BufMut, Bytes, BytesMut};
use nanodb_protocol::{Error, ScanEntry, ScanPage};

use super::{Engine, PARTITIONS};

const CURSOR_VERSION: u8 = 1;

/// Where a scan resumes: a partition, and optionally the last (hash, key) returned in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    partition: usize,
    after: Option<(u64, Bytes)>,
}

impl Cursor {
    fn decode(raw: &Bytes) -> Result<Self, Error> {
        if raw.is_empty() {
            return Ok(Self { partition: 0, after: None });
        }
        let bad = || Error::InvalidArgument("invalid scan cursor; pass back next_cursor unchanged".into());
        if raw.len() < 11 || raw[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let partition = u16::from_be_bytes([raw[1], raw[2]]) as usize;
        if partition >= PARTITIONS {
            return Err(bad());
        }
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&raw[3..11]);
        Ok(Self { partition, after: Some((u64::from_be_bytes(hash), raw.slice(11..))) })
    }

    fn encode(partition: usize, hash: u64, key: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(11 + key.len());
        b.put_u8(CURSOR_VERSION);
        b.put_u16(partition as u16);
        b.put_u64(hash);
        b.put_slice(key);
        b.freeze()
    }
}

/// A scan candidate, ordered by (hash, key) so a max-heap can keep the smallest `n`.
struct Candidate {
    hash: u64,
    entry: ScanEntry,
}

impl Candidate {
    fn order_key(&self) -> (u64, &[u8]) {
        (self.hash, &self.entry.key)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.order_key() == other.order_key()
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl Engine {
    /// One page of at most `limit` (>= 1) keys starting with `prefix`, resuming at `cursor`.
    pub(crate) fn scan(&self, prefix: &[u8], limit: usize, cursor: &Bytes) -> Result<ScanPage, Error> {
        let Cursor { mut partition, mut after } = Cursor::decode(cursor)?;
        let now = self.clock.now_ms();
        let mut entries = Vec::with_capacity(limit.min(1024));
        while partition < PARTITIONS {
            let need = limit - entries.len();
            let mut best: BinaryHeap<Candidate> = BinaryHeap::with_capacity(need.min(1024) + 1);
            let table = self.partitions[partition].read();
            for item in table.iter() {
                let (key, slot) = (item.key(), item);
                if !key.starts_with(prefix) || slot.is_expired(now) {
                    continue;
                }
                let hash = self.hash(key);
                if let Some((h, k)) = &after
                    && (hash, key) <= (*h, &k[..])
                {
                    continue;
                }
                if best.len() == need && best.peek().is_some_and(|top| (hash, key) >= top.order_key()) {
                    continue;
                }
                let entry = ScanEntry {
                    key: Bytes::copy_from_slice(key),
                    value: slot.value().as_string().unwrap_or_default(),
                    version: slot.version(),
                    ttl_ms: slot.ttl_ms(now),
                    key_type: Some(slot.value().key_type()),
                };
                best.push(Candidate { hash, entry });
                if best.len() > need {
                    best.pop();
                }
            }
            drop(table);
            let full = best.len() == need;
            let page = best.into_sorted_vec();
            if full {
                // The page is full inside this partition: resume after its last key.
                let next = page.last().map(|c| Cursor::encode(partition, c.hash, &c.entry.key));
                entries.extend(page.into_iter().map(|c| c.entry));
                return Ok(ScanPage { entries, next_cursor: next.unwrap_or_default() });
            }
            entries.extend(page.into_iter().map(|c| c.entry));
            partition += 1;
            after = None;
        }
        Ok(ScanPage { entries, next_cursor: Bytes::new() })
    }
}

#[cfg(test)]
mod tests {
    use nanodb_protocol::{Expiry, cmd};

    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let raw = Cursor::encode(5, 0xdead_beef, b"key");
        assert_eq!(
            Cursor::decode(&raw),
            Ok(Cursor { partition: 5, after: Some((0xdead_beef, Bytes::from_static(b"key"))) })
        );
        assert_eq!(Cursor::decode(&Bytes::new()), Ok(Cursor { partition: 0, after: None }));
        for bad in [
            &b"x"[..],
            b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x01\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(matches!(Cursor::decode(&Bytes::copy_from_slice(bad)), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn entries_carry_their_type() {
        use nanodb_protocol::{Command, KeyType, Limits, ListEnd, PutCondition};
        let e = Engine::new(Limits::default());
        let b = Bytes::from_static;
        let cmds = [
            Command::Put(cmd::Put {
                key: b(b"s"),
                value: Bytes::new(),
                expiry: Expiry::Persist,
                condition: PutCondition::Always,
            }),
            Command::Incr(cmd::Incr { key: b(b"n"), delta: 1 }),
            Command::HashSet(cmd::HashSet { key: b(b"h"), field: b(b"f"), value: b(b"v") }),
            Command::ListPush(cmd::ListPush { key: b(b"l"), end: ListEnd::Back, values: vec![b(b"x")] }),
        ];
        for cmd in cmds {
            e.execute(cmd).expect("applies");
        }
        let Ok(ScanPage { entries, .. }) = e.scan(b"", 10, &Bytes::new()) else { panic!("a page") };
        let mut types: Vec<_> =
            entries.iter().map(|e| (e.key.clone(), e.key_type, e.value.clone())).collect();
        types.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            types,
            [
                (b(b"h"), Some(KeyType::Hash), Bytes::new()),
                (b(b"l"), Some(KeyType::List), Bytes::new()),
                (b(b"n"), Some(KeyType::String), b(b"1")),
                (b(b"s"), Some(KeyType::String), Bytes::new()),
            ]
        );
    }
}
