//! The server's global allocator: mimalloc, asked for alignment only when a request needs more
//! than every mimalloc block has.
//!
//! The `mimalloc` crate's allocator sends every request, whatever its alignment, to
//! `mi_malloc_aligned`. That takes a fast path only while the current page has a free block at
//! the requested alignment; when the page is full it falls to the generic aligned path, which
//! over-allocates the block by the alignment and bins it in a larger size class (an 80-byte
//! allocation then takes a 96-byte block, and freeing it must find the block's start again).
//! Under callgrind that path was about 2.6 calls per EVAL. Nearly every Rust allocation asks for
//! an alignment of 8 or less, which every mimalloc block has (blocks are whole machine words), so
//! those go to `mi_malloc`, whose page-full path is the ordinary one; only larger alignments
//! (Lua's 16, the engine's 128-byte partitions) take the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has: a machine word.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, with plain calls for word-aligned requests (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct Mimalloc;

// SAFETY: each method hands mimalloc a request it can satisfy at the layout's alignment: the
// plain calls return word-aligned blocks (or null), which satisfies any alignment up to a word;
// larger alignments go to the aligned calls. `dealloc` and `realloc` accept a block from either
// kind of call (`mi_free` and `mi_realloc*` find an aligned block's start themselves), so a block
// may be reallocated across the threshold.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc returns null on failure, as `alloc` must.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`; the `z` calls return zeroed memory.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; the result keeps `layout`'s alignment
        // (a word at least from `mi_realloc`, the requested one from `mi_realloc_aligned`) and
        // the contents up to the smaller size; null on failure leaves `ptr` valid.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class a key-value server's allocations land in, at every alignment Rust asks
    /// for, including reallocations across the word threshold's sides and across size classes.
    #[test]
    fn blocks_have_their_alignment_and_keep_their_contents() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 9, 15, 16, 17, 24, 40, 80, 96, 100, 1000, 4096, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero-size layout; every block is freed with its layout below.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown = size * 3 + 5;
                    let q = a.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    for i in 0..size {
                        assert_eq!(*q.add(i), (i % 251) as u8, "contents after realloc");
                    }
                    let grown_layout = Layout::from_size_align(grown, align).expect("layout");
                    let r = a.realloc(q, grown_layout, 1);
                    assert_eq!(r as usize % align, 0, "shrink align {align}");
                    assert_eq!(*r, 0);
                    a.dealloc(r, Layout::from_size_align(1, align).expect("layout"));

                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0, "alloc_zeroed size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed size {size} align {align}");
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
