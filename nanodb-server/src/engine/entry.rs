//! One key's stored state in a single allocation behind a thin pointer: what a table bucket holds.
//!
//! # Why
//! A key used to cost two heap blocks: a 64-byte entry (inline key, value enum, version,
//! deadline) and the string's own exactly sized box, plus an 8-byte bucket. With 16-byte keys and
//! 64-byte values that was 64 + 64 bytes of allocations per key, about 0.85x Redis's memory. Here
//! the key's header, key bytes and string bytes share one block, and the deadline takes space
//! only when set: a 16-byte key with a 64-byte value and no TTL is 16 + 16 + 64 = 96 bytes, one of
//! mimalloc's size classes exactly, and the bucket stays one pointer (a fat `Box<[u8]>` would
//! double it). It also means a lookup finds the key and the value in the same block, and a SET that
//! overwrites a string of the same length (the common case for fixed-size values) allocates
//! nothing.
//!
//! # Layout
//! ```text
//! offset 0   version: u64
//! offset 8   access:  u16   the access clock (see below); only ever read and written atomically
//! offset 10  key_lo:  u16   the key length's low 16 bits
//! offset 12  meta:    u32   bits 0-1 kind, bit 2 deadline present, bits 3-7 the key length's
//!                           high 5 bits, bits 8-31 string length
//! offset 16  deadline: u64                     only when the deadline bit is set
//! then       body: i64 (INT) | Value (VALUE) | nothing (STR)
//! then       key bytes (key_len)
//! then       string bytes (STR only, the length from meta)
//! ```
//! Kinds: `STR` a string packed as bytes (up to [`MAX_PACKED`] bytes), `INT` a string kept as an
//! integer, `VALUE` any other [`Value`] (hashes, lists, strings too long to pack) stored as a Rust
//! value in place. The block's size and alignment are a function of the header alone
//! ([`Shape::layout`]), so the pointer needs no length beside it.
//!
//! # The access clock (#20, LRU eviction)
//! `--maxmemory-policy allkeys-lru`/`volatile-lru` evict the sampled key idle longest, as Redis
//! does with its 24-bit per-key clock. Here the clock is 16 bits of seconds ([`Entry::touch`],
//! [`Entry::idle`]), wrapping after about 18 hours: a key idle longer than that reads as idle
//! for its age modulo 2^16 s (Redis's wraps after 194 days), which matters only for a key that
//! survived 18 hours of eviction pressure without being read. It costs no memory: the 16 bits
//! came from the key length (now 21 bits, keys up to [`MAX_KEY_LEN`]) and the packed string
//! length (24 bits, [`MAX_PACKED`]; a longer string is kept as a [`Value`], which works for any
//! length). A read under the partition's shared lock may set it, so those two bytes are only
//! ever accessed through `AtomicU16` (never by a plain read of a wider word that covers them),
//! and the other header bytes are never written after `build`: no data race.
//!
//! # Safety argument (the only `unsafe` in the engine)
//! - **Allocation**: [`Entry::build`] allocates `Shape::layout()` (size >= 16, alignment 8, both
//!   checked by `Layout::from_size_align`), writes every byte it will later read (header, deadline,
//!   body, key, string) before the `Entry` exists, and never changes the header's `key_len` or
//!   `meta` afterwards; only `version`, the deadline word (when present) and the body (in place,
//!   same kind and size) are rewritten. So every later `Shape::of` recomputes the very layout
//!   the block was allocated with, and every offset it yields lies inside the block.
//! - **Alignment**: the block is 8-aligned; the header is 16 bytes and the deadline 8, so the body
//!   starts at 16 or 24, which is aligned for `u64`, `i64` and `Value` (`align_of::<Value>() <= 8`
//!   is checked at compile time). Key and string bytes need no alignment.
//! - **Provenance and aliasing**: every pointer is derived from the one `NonNull` returned by the
//!   allocator, which covers the whole block; no reference to the header is ever created (fields
//!   are read and written through raw places), so a `&[u8]` of the key and a `&mut Value` of the
//!   body never overlap a live reference to the same bytes. Shared borrows come from `&self`,
//!   exclusive ones from `&mut self`, so Rust's borrow rules on `Entry` are those of a `Box`.
//! - **Ownership**: an `Entry` owns its block and, for `VALUE`, the `Value` in it. `Drop` drops
//!   that `Value` in place (exactly once: it is only ever moved out by `mem::replace`/`swap`, which
//!   leave a valid value behind) and frees the block with the layout it was allocated with.
//!   `Entry` is not `Clone`; copies go through [`Entry::to_slot`].
//! - **Send/Sync**: the block holds plain bytes and at most one `Value`, which is `Send + Sync`;
//!   an `Entry` is therefore as thread-safe as a `Box<Value>` (checked at compile time below).
//!   The one thing written through `&self` is the access clock, and only atomically.

use std::alloc::{self, Layout};
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;

use super::value::{Slot, Value, ValueRef};

/// Header bytes before the optional deadline.
const HEAD: usize = 16;
/// The block's alignment.
const ALIGN: usize = 8;

/// Where the access clock is (a `u16`, 2-aligned).
const ACCESS_AT: usize = 8;
/// Where the key length's low 16 bits are.
const KEY_LO_AT: usize = 10;
/// Where `meta` is.
const META_AT: usize = 12;

const KIND_MASK: u32 = 0b11;
const KIND_STR: u32 = 0;
const KIND_INT: u32 = 1;
const KIND_VALUE: u32 = 2;
const HAS_DEADLINE: u32 = 1 << 2;
const KEY_HI_SHIFT: u32 = 3;
const KEY_HI_MASK: u32 = 0b1_1111;
const LEN_SHIFT: u32 = 8;

/// The longest string stored packed (16 MiB - 1); a longer one is kept as a [`Value`] in the
/// entry, which works for any length.
pub(crate) const MAX_PACKED: usize = (u32::MAX >> LEN_SHIFT) as usize;

/// The longest key an entry can hold (2 MiB - 1: 16 + 5 bits). The engine clamps its
/// `max_key_len` to this, so every key that reaches [`Entry::new`] has passed a check against it.
pub(crate) const MAX_KEY_LEN: usize = (1 << 21) - 1;

const _: () = assert!(align_of::<Value>() <= ALIGN);
const _: () = assert!(size_of::<usize>() == 8, "sizes below are computed in usize without overflow checks");
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Value>();
};

/// Where things are in a block with a given header.
#[derive(Clone, Copy)]
struct Shape {
    kind: u32,
    deadline: bool,
    key_len: usize,
    str_len: usize,
}

impl Shape {
    fn of(key_lo: u16, meta: u32) -> Self {
        Self {
            kind: meta & KIND_MASK,
            deadline: meta & HAS_DEADLINE != 0,
            key_len: key_lo as usize | (((meta >> KEY_HI_SHIFT) & KEY_HI_MASK) as usize) << 16,
            str_len: (meta >> LEN_SHIFT) as usize,
        }
    }

    /// The key length's low 16 bits (the high ones are in [`Shape::meta`]).
    fn key_lo(self) -> u16 {
        self.key_len as u16
    }

    fn meta(self) -> u32 {
        // str_len <= MAX_PACKED and key_len <= MAX_KEY_LEN (checked by the caller), so the shifts
        // lose nothing.
        ((self.str_len as u32) << LEN_SHIFT)
            | ((((self.key_len >> 16) as u32) & KEY_HI_MASK) << KEY_HI_SHIFT)
            | if self.deadline { HAS_DEADLINE } else { 0 }
            | self.kind
    }

    fn body_at(self) -> usize {
        HEAD + if self.deadline { 8 } else { 0 }
    }

    fn key_at(self) -> usize {
        self.body_at()
            + match self.kind {
                KIND_STR => 0,
                KIND_INT => size_of::<i64>(),
                _ => size_of::<Value>(),
            }
    }

    fn str_at(self) -> usize {
        self.key_at() + self.key_len
    }

    fn size(self) -> usize {
        self.str_at() + if self.kind == KIND_STR { self.str_len } else { 0 }
    }

    fn layout(self) -> Layout {
        // Sizes are bounded by MAX_KEY_LEN + MAX_PACKED + 48, far below isize::MAX on 64-bit.
        match Layout::from_size_align(self.size(), ALIGN) {
            Ok(layout) => layout,
            Err(_) => unreachable!("entry sizes are below 2^33"),
        }
    }
}

/// What the body of a new block holds.
enum Body<'a> {
    Str(&'a [u8]),
    Int(i64),
    Value(Value),
}

/// One key's state: key, version, deadline and value, in one block (see the module docs).
pub struct Entry {
    ptr: NonNull<u8>,
}

// SAFETY: an Entry owns its block exclusively (like a Box) and the block holds bytes and at most
// one `Value`, which is Send + Sync (asserted above).
unsafe impl Send for Entry {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Entry {}

impl Entry {
    /// An entry for `key` holding `slot`. Strings up to [`MAX_PACKED`] bytes and integers are
    /// packed; anything else is kept as its `Value`.
    ///
    /// `key` must be at most [`MAX_KEY_LEN`] bytes (the engine's limits guarantee it).
    pub fn new(key: &[u8], slot: Slot) -> Self {
        let Slot { value, version, deadline } = slot;
        match value {
            Value::Str(b) if b.len() <= MAX_PACKED => Self::build(key, version, deadline, Body::Str(&b)),
            Value::Int(i) => Self::build(key, version, deadline, Body::Int(i)),
            other => Self::build(key, version, deadline, Body::Value(other)),
        }
    }

    fn build(key: &[u8], version: u64, deadline: u64, body: Body<'_>) -> Self {
        assert!(key.len() <= MAX_KEY_LEN, "keys are checked against MAX_KEY_LEN before they are stored");
        let (kind, str_len) = match &body {
            Body::Str(b) => (KIND_STR, b.len()),
            Body::Int(_) => (KIND_INT, 0),
            Body::Value(_) => (KIND_VALUE, 0),
        };
        let shape = Shape { kind, deadline: deadline != 0, key_len: key.len(), str_len };
        let layout = shape.layout();
        // SAFETY: the layout's size is at least HEAD (16), never zero.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        let base = ptr.as_ptr();
        // SAFETY: every write below is inside the block (offsets from `shape`, whose size the
        // block has) and aligned as the module docs argue; the regions written do not overlap
        // and `key`/`b` are borrowed from outside the fresh block.
        unsafe {
            base.cast::<u64>().write(version);
            base.add(ACCESS_AT).cast::<u16>().write(0);
            base.add(KEY_LO_AT).cast::<u16>().write(shape.key_lo());
            base.add(META_AT).cast::<u32>().write(shape.meta());
            if shape.deadline {
                base.add(HEAD).cast::<u64>().write(deadline);
            }
            match body {
                Body::Str(b) => ptr::copy_nonoverlapping(b.as_ptr(), base.add(shape.str_at()), b.len()),
                Body::Int(i) => base.add(shape.body_at()).cast::<i64>().write(i),
                Body::Value(v) => base.add(shape.body_at()).cast::<Value>().write(v),
            }
            ptr::copy_nonoverlapping(key.as_ptr(), base.add(shape.key_at()), key.len());
        }
        Self { ptr }
    }

    fn shape(&self) -> Shape {
        let base = self.ptr.as_ptr();
        // SAFETY: the header words were written by `build` and are inside the block, aligned;
        // they are never written afterwards, and these reads do not cover the access clock.
        let (key_lo, meta) =
            unsafe { (base.add(KEY_LO_AT).cast::<u16>().read(), base.add(META_AT).cast::<u32>().read()) };
        Shape::of(key_lo, meta)
    }

    /// The access clock, shared by every holder of `&self`.
    fn access(&self) -> &AtomicU16 {
        // SAFETY: two bytes at ACCESS_AT inside the block, 2-aligned (the block is 8-aligned),
        // initialized by `build`, alive as long as `self`; every access to them, from any thread,
        // goes through this atomic (module docs, "The access clock").
        unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(ACCESS_AT).cast::<u16>()) }
    }

    /// Records an access at `tick` (seconds on the engine's clock, wrapping). Writes only when the
    /// clock moved, so a key read many times a second dirties its cache line once a second.
    pub fn touch(&self, tick: u16) {
        let access = self.access();
        if access.load(Ordering::Relaxed) != tick {
            access.store(tick, Ordering::Relaxed);
        }
    }

    /// Seconds since the last [`Entry::touch`] at `tick` (modulo 2^16: see the module docs).
    pub fn idle(&self, tick: u16) -> u16 {
        tick.wrapping_sub(self.access().load(Ordering::Relaxed))
    }

    /// What this entry's memory is reckoned at: its block as the allocator rounds it, plus what
    /// its value owns outside the block and its place in the expiry index. A function of the
    /// entry's state alone, so a table that adds it on insertion and subtracts it on removal (and
    /// the difference across a change) never drifts. Exact for strings and integers; for hashes
    /// and lists an estimate from their lengths and capacities (each element counted at its
    /// smallest allocation, so long fields are undercounted), as O(1) must be.
    pub fn footprint(&self) -> usize {
        let shape = self.shape();
        let mut bytes = size_class(shape.size());
        if shape.deadline {
            // A `(u64, Box<[u8]>)` in a B-tree node about 2/3 full, and the boxed key copy.
            bytes += 36 + size_class(shape.key_len.max(1));
        }
        if let Some(value) = self.value_ref() {
            bytes += match value {
                Value::Str(b) => size_class(b.len()),
                Value::Int(_) => 0,
                Value::Hash(map) => {
                    size_class(std::mem::size_of::<super::value::FieldMap>())
                        + map.capacity() * (2 * size_of::<Bytes>() + 1)
                        + map.len() * 2 * 16
                }
                Value::List(list) => {
                    size_class(std::mem::size_of::<std::collections::VecDeque<Bytes>>())
                        + list.capacity() * size_of::<Bytes>()
                        + list.len() * 16
                }
            };
        }
        bytes
    }

    /// The stored `Value` of a VALUE block, shared.
    fn value_ref(&self) -> Option<&Value> {
        let shape = self.shape();
        if shape.kind != KIND_VALUE {
            return None;
        }
        // SAFETY: as in `value_mut`, shared.
        Some(unsafe { &*self.ptr.as_ptr().add(shape.body_at()).cast::<Value>() })
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let shape = self.shape();
        // SAFETY: `key_len` initialized bytes at `key_at`, inside the block, borrowed for as long
        // as `self` is; never written after `build`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(shape.key_at()), shape.key_len) }
    }

    /// Changes on every write; see [`Slot::version`].
    pub fn version(&self) -> u64 {
        // SAFETY: the first word of the block, written by `build`.
        unsafe { self.ptr.as_ptr().cast::<u64>().read() }
    }

    /// Sets the version.
    pub fn set_version(&mut self, version: u64) {
        // SAFETY: as in `version`; `&mut self` makes this the only access.
        unsafe { self.ptr.as_ptr().cast::<u64>().write(version) }
    }

    /// Absolute Unix-ms deadline; 0 for none.
    pub fn deadline(&self) -> u64 {
        if !self.shape().deadline {
            return 0;
        }
        // SAFETY: the deadline bit says the word at HEAD was written by `build`.
        unsafe { self.ptr.as_ptr().add(HEAD).cast::<u64>().read() }
    }

    /// Sets the deadline (0 for none). Moving between none and some rebuilds the block (the
    /// deadline takes room only when set); otherwise it is written in place.
    pub fn set_deadline(&mut self, deadline: u64) {
        let shape = self.shape();
        if shape.deadline && deadline != 0 {
            // SAFETY: as in `deadline`; `&mut self` makes this the only access.
            unsafe { self.ptr.as_ptr().add(HEAD).cast::<u64>().write(deadline) }
            return;
        }
        if !shape.deadline && deadline == 0 {
            return;
        }
        let (key, version) = (self.key(), self.version());
        let rebuilt = match self.value() {
            ValueRef::Str(b) if shape.kind == KIND_STR => Self::build(key, version, deadline, Body::Str(b)),
            ValueRef::Int(i) if shape.kind == KIND_INT => Self::build(key, version, deadline, Body::Int(i)),
            _ => {
                // Move the value over instead of cloning it (a hash may be large).
                let mut rebuilt = Self::build(key, version, deadline, Body::Value(Value::Int(0)));
                if let (Some(new), Some(old)) = (rebuilt.value_mut(), self.value_mut()) {
                    std::mem::swap(new, old);
                }
                rebuilt
            }
        };
        *self = rebuilt;
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        let deadline = self.deadline();
        deadline != 0 && deadline <= now
    }

    /// Remaining ms to the deadline at `now`, -1 when there is none (see [`Slot::ttl_ms`]).
    pub fn ttl_ms(&self, now: u64) -> i64 {
        ttl_ms(self.deadline(), now)
    }

    /// The value.
    pub fn value(&self) -> ValueRef<'_> {
        let shape = self.shape();
        let base = self.ptr.as_ptr();
        // SAFETY: each arm reads what `build` wrote for that kind, at its offset inside the block;
        // the borrows live as long as `&self`, and only `&mut self` methods write the body.
        unsafe {
            match shape.kind {
                KIND_STR => {
                    ValueRef::Str(std::slice::from_raw_parts(base.add(shape.str_at()), shape.str_len))
                }
                KIND_INT => ValueRef::Int(base.add(shape.body_at()).cast::<i64>().read()),
                _ => (*base.add(shape.body_at()).cast::<Value>()).view(),
            }
        }
    }

    /// The stored `Value` of a hash or list (or of a string too long to pack), to change in
    /// place; `None` for packed strings and integers.
    pub fn value_mut(&mut self) -> Option<&mut Value> {
        let shape = self.shape();
        if shape.kind != KIND_VALUE {
            return None;
        }
        // SAFETY: a VALUE block holds an initialized `Value` at `body_at`, aligned; the exclusive
        // borrow is tied to `&mut self`.
        Some(unsafe { &mut *self.ptr.as_ptr().add(shape.body_at()).cast::<Value>() })
    }

    /// Replaces the value. A string of the same length as the one held, or an integer over an
    /// integer, is written in place; anything else rebuilds the block.
    pub fn set_value(&mut self, value: Value) {
        let shape = self.shape();
        match (shape.kind, value) {
            (KIND_STR, Value::Str(b)) if b.len() == shape.str_len => {
                // SAFETY: `str_len` bytes at `str_at` are inside the block; `b` is not in it.
                unsafe {
                    ptr::copy_nonoverlapping(b.as_ptr(), self.ptr.as_ptr().add(shape.str_at()), b.len())
                }
            }
            (KIND_INT, Value::Int(i)) => {
                // SAFETY: an INT block's body is an aligned i64 inside it.
                unsafe { self.ptr.as_ptr().add(shape.body_at()).cast::<i64>().write(i) }
            }
            (_, value) => {
                let slot = Slot { value, version: self.version(), deadline: self.deadline() };
                *self = Self::new(self.key(), slot);
            }
        }
    }

    /// Replaces value, version and deadline (a whole new slot for this key).
    pub fn set_slot(&mut self, slot: Slot) {
        let Slot { value, version, deadline } = slot;
        if (deadline != 0) != self.shape().deadline {
            *self = Self::new(self.key(), Slot { value, version, deadline });
            return;
        }
        self.set_value(value);
        self.set_version(version);
        self.set_deadline(deadline);
    }

    /// An owned copy of the slot.
    pub fn to_slot(&self) -> Slot {
        Slot { value: self.value().to_value(), version: self.version(), deadline: self.deadline() }
    }

    /// The slot, moved out (a hash or list is not copied).
    pub fn into_slot(mut self) -> Slot {
        let (version, deadline) = (self.version(), self.deadline());
        let value = match self.value_mut() {
            Some(v) => std::mem::replace(v, Value::Int(0)),
            None => self.value().to_value(),
        };
        Slot { value, version, deadline }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let shape = self.shape();
        let base = self.ptr.as_ptr();
        // SAFETY: a VALUE block holds one initialized `Value`, dropped here once; then the block
        // is freed with the layout it was allocated with (the header is unchanged since `build`).
        unsafe {
            if shape.kind == KIND_VALUE {
                ptr::drop_in_place(base.add(shape.body_at()).cast::<Value>());
            }
            alloc::dealloc(base, shape.layout());
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &Bytes::copy_from_slice(self.key()))
            .field("version", &self.version())
            .field("deadline", &self.deadline())
            .field("value", &self.value())
            .finish()
    }
}

/// The size the allocator hands out for a request of `n` bytes, as mimalloc's size classes go:
/// multiples of 8 up to 64, then four classes per doubling (80, 96, 112, 128, 160, ...). An
/// estimate (a large block is rounded to its pages), and a pure function: accounting needs one.
pub(crate) fn size_class(n: usize) -> usize {
    if n <= 64 {
        return n.div_ceil(8) * 8;
    }
    let step = (1usize << (usize::BITS - 1 - (n - 1).leading_zeros())) / 4;
    n.div_ceil(step) * step
}

/// Remaining ms to `deadline` at `now`, -1 when there is none. A deadline further away than
/// `i64::MAX` ms (a client may ask for one) reads as `i64::MAX`, never as a negative TTL.
pub(crate) fn ttl_ms(deadline: u64, now: u64) -> i64 {
    if deadline == 0 { -1 } else { i64::try_from(deadline.saturating_sub(now)).unwrap_or(i64::MAX) }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::engine::value::FieldMap;

    fn slot(value: Value, version: u64, deadline: u64) -> Slot {
        Slot { value, version, deadline }
    }

    fn hash(pairs: &[(&'static [u8], &'static [u8])]) -> Value {
        let map: FieldMap =
            pairs.iter().map(|(f, v)| (Bytes::from_static(f), Bytes::from_static(v))).collect();
        Value::Hash(Box::new(map))
    }

    #[test]
    fn a_thin_pointer_and_the_promised_block_sizes() {
        assert_eq!(size_of::<Entry>(), 8);
        assert_eq!(size_of::<Option<Entry>>(), 8);
        // The benchmark's key: 16-byte key, 64-byte value, no TTL: one 96-byte block.
        let shape = |kind, deadline, key_len, str_len| Shape { kind, deadline, key_len, str_len }.size();
        assert_eq!(shape(KIND_STR, false, 16, 64), 96);
        assert_eq!(shape(KIND_STR, true, 16, 64), 104);
        assert_eq!(shape(KIND_INT, false, 5, 0), 29);
        assert_eq!(shape(KIND_VALUE, true, 1, 0), 24 + size_of::<Value>() + 1);
    }

    /// Every kind, with and without deadline, reads back what went in, at every key length
    /// around the interesting boundaries (empty, unaligned, long).
    #[test]
    fn every_kind_round_trips() {
        let list: VecDeque<Bytes> = [Bytes::from_static(b"a"), Bytes::from_static(b"b")].into();
        let values = [
            Value::str(b""),
            Value::str(b"v"),
            Value::str(&[7u8; 300]),
            Value::Int(i64::MIN),
            Value::Int(-1),
            hash(&[(b"f", b"v")]),
            Value::List(Box::new(list)),
        ];
        for key_len in [0usize, 1, 7, 16, 23, 1000, 65_535, 65_536, 70_001, MAX_KEY_LEN] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            for value in &values {
                for deadline in [0, 1, u64::MAX] {
                    let e = Entry::new(&key, slot(value.clone(), 42, deadline));
                    assert_eq!(e.key(), &key[..]);
                    assert_eq!(e.version(), 42);
                    assert_eq!(e.deadline(), deadline);
                    assert_eq!(e.value(), value.view());
                    assert_eq!(e.to_slot(), slot(value.clone(), 42, deadline));
                    assert_eq!(e.into_slot(), slot(value.clone(), 42, deadline));
                }
            }
        }
    }

    #[test]
    fn in_place_and_rebuilding_changes_keep_the_rest() {
        let mut e = Entry::new(b"key", slot(Value::str(b"abcd"), 1, 0));
        let before = e.ptr;
        // Same length: in place, no new block.
        e.set_value(Value::str(b"wxyz"));
        e.set_version(2);
        assert_eq!(e.ptr, before);
        assert_eq!((e.value(), e.version(), e.deadline()), (ValueRef::Str(b"wxyz"), 2, 0));
        // A deadline appears: rebuilt; changes in place after that; disappears: rebuilt.
        e.set_deadline(500);
        assert_eq!(
            (e.key(), e.value(), e.version(), e.deadline()),
            (&b"key"[..], ValueRef::Str(b"wxyz"), 2, 500)
        );
        e.set_deadline(600);
        assert!(e.is_expired(600) && !e.is_expired(599));
        assert_eq!(e.ttl_ms(100), 500);
        e.set_deadline(0);
        assert_eq!((e.deadline(), e.ttl_ms(100)), (0, -1));
        // Another length, then another kind.
        e.set_value(Value::str(b"longer value"));
        assert_eq!(e.value(), ValueRef::Str(b"longer value"));
        e.set_value(Value::Int(9));
        e.set_value(Value::Int(10));
        assert_eq!(e.value(), ValueRef::Int(10));
        assert!(e.value_mut().is_none());
        e.set_value(hash(&[(b"f", b"1")]));
        e.set_deadline(77);
        // A hash moves through a rebuild and changes in place.
        match e.value_mut() {
            Some(Value::Hash(map)) => {
                map.insert(Bytes::from_static(b"g"), Bytes::from_static(b"2"));
            }
            other => panic!("not a hash: {other:?}"),
        }
        e.set_deadline(0);
        assert_eq!(e.value(), hash(&[(b"f", b"1"), (b"g", b"2")]).view());
        assert_eq!(e.key(), b"key");
        // A whole slot, with and without a deadline change.
        e.set_slot(slot(Value::str(b"s"), 5, 9));
        assert_eq!(e.to_slot(), slot(Value::str(b"s"), 5, 9));
        e.set_slot(slot(Value::str(b"t"), 6, 10));
        assert_eq!(e.to_slot(), slot(Value::str(b"t"), 6, 10));
        e.set_slot(slot(Value::Int(3), 7, 0));
        assert_eq!(e.to_slot(), slot(Value::Int(3), 7, 0));
    }

    #[test]
    fn size_classes_follow_mimalloc() {
        let classes: Vec<usize> = [1, 8, 9, 64, 65, 80, 81, 96, 97, 128, 129, 1000].map(size_class).to_vec();
        assert_eq!(classes, [8, 8, 16, 64, 80, 80, 96, 96, 112, 128, 160, 1024]);
    }

    /// The access clock is kept across value changes in place, starts at 0, and reads as the
    /// seconds since the last touch, wrapping.
    #[test]
    fn the_access_clock_is_its_own_two_bytes() {
        let mut e = Entry::new(&[0xff; 70_000], slot(Value::str(&[0xee; 64]), u64::MAX, u64::MAX));
        assert_eq!(e.idle(5), 5);
        e.touch(u16::MAX);
        assert_eq!(e.idle(3), 4);
        // Neither the key length nor the value nor the deadline see the clock's bits.
        assert_eq!((e.key().len(), e.version(), e.deadline()), (70_000, u64::MAX, u64::MAX));
        assert_eq!(e.value(), ValueRef::Str(&[0xee; 64]));
        e.set_value(Value::str(&[0xdd; 64]));
        e.set_version(7);
        assert_eq!(e.idle(u16::MAX), 0);
        // The block of the benchmark's key is still one 96-byte class, plus nothing else.
        let plain = Entry::new(&[1; 16], slot(Value::str(&[2; 64]), 1, 0));
        assert_eq!(plain.footprint(), 96);
    }

    /// A string longer than the packed limit is kept as a `Value` and reads back whole.
    #[test]
    fn strings_past_the_packed_limit_are_values() {
        let long = vec![3u8; MAX_PACKED + 1];
        let e = Entry::new(b"k", slot(Value::str(&long), 1, 0));
        assert!(matches!(e.value(), ValueRef::Str(b) if b.len() == long.len()));
        assert!(e.footprint() > long.len());
    }

    /// Values that own heap memory are dropped exactly once, whichever way the entry goes
    /// (dropped, moved out, rebuilt, replaced): counted through `Bytes`' shared ownership.
    #[test]
    fn owned_values_are_dropped_once() {
        let field = Bytes::from(vec![1u8; 64]);
        let counted = || {
            let mut map = FieldMap::default();
            map.insert(field.clone(), field.clone());
            Value::Hash(Box::new(map))
        };
        {
            let _dropped = Entry::new(b"a", slot(counted(), 1, 0));
            let mut rebuilt = Entry::new(b"b", slot(counted(), 1, 0));
            rebuilt.set_deadline(5);
            rebuilt.set_value(Value::Int(1));
            let moved = Entry::new(b"c", slot(counted(), 1, 0)).into_slot();
            let mut replaced = Entry::new(b"d", slot(counted(), 1, 0));
            replaced.set_value(counted());
            drop(moved);
        }
        // `Bytes::from(Vec)` is uniquely owned again only when every clone is gone.
        assert!(field.is_unique());
    }
}
