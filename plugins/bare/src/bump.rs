//! A bump allocator: every instance of a plugin serves one call and is then thrown away
//! whole, so memory is never worth giving back. Freeing or growing the most recent
//! allocation is done in place, which covers a `String` or `Vec` being built up.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;
use core::ptr;

const PAGE: usize = 65536;

struct Bump {
    /// The first free byte.
    next: Cell<usize>,
    /// The end of the memory obtained with `memory.grow`.
    end: Cell<usize>,
}

// SAFETY: a plugin instance has one thread; wasm32 without the atomics feature cannot
// share this static between threads.
unsafe impl Sync for Bump {}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: Cell::new(0),
    end: Cell::new(0),
};

impl Bump {
    /// Makes at least `bytes` more bytes available after `next` (or in a new region, if
    /// memory was grown by someone else in between). Returns false when memory cannot grow.
    fn grow(&self, bytes: usize) -> bool {
        let pages = bytes.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return false;
        }
        let start = previous * PAGE;
        if start != self.end.get() {
            self.next.set(start);
        }
        self.end.set(start + pages * PAGE);
        true
    }
}

fn align_up(at: usize, align: usize) -> Option<usize> {
    Some(at.checked_add(align - 1)? & !(align - 1))
}

// SAFETY: `alloc` returns blocks of at least the layout's size and alignment that no other
// live allocation overlaps (`next` only moves past a returned block, except when that very
// block is freed or resized in place); null when memory cannot grow.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        for _ in 0..2 {
            let Some(start) = align_up(self.next.get(), layout.align()) else {
                return ptr::null_mut();
            };
            let Some(end) = start.checked_add(layout.size()) else {
                return ptr::null_mut();
            };
            if end <= self.end.get() && self.end.get() != 0 {
                self.next.set(end);
                return start as *mut u8;
            }
            // Room for the block and its alignment, whether the new memory continues the
            // current region or starts a new one.
            if !self.grow(layout.size().saturating_add(layout.align())) {
                return ptr::null_mut();
            }
        }
        ptr::null_mut()
    }

    unsafe fn dealloc(&self, at: *mut u8, layout: Layout) {
        if at as usize + layout.size() == self.next.get() {
            self.next.set(at as usize);
        }
    }

    unsafe fn realloc(&self, at: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = at as usize;
        if start + layout.size() == self.next.get() {
            // The latest block: grow or shrink it where it is.
            if let Some(end) = start.checked_add(new_size) {
                if end <= self.end.get() {
                    self.next.set(end);
                    return at;
                }
                if self.grow(end - self.end.get()) && start + layout.size() == self.next.get() {
                    self.next.set(end);
                    return at;
                }
            }
        } else if new_size <= layout.size() {
            return at;
        }
        // SAFETY: the caller guarantees `layout.align()` is valid and `new_size`, rounded
        // up to it, does not overflow.
        let layout_new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `layout_new` has a non-zero size (the caller's guarantee for realloc).
        let moved = unsafe { self.alloc(layout_new) };
        if !moved.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap
            // (`moved` was just allocated past every live block).
            unsafe { ptr::copy_nonoverlapping(at, moved, layout.size().min(new_size)) };
        }
        moved
    }
}
