//! An allocator that remembers, per thread, the largest single allocation asked for. Test
//! binaries install it (`#[global_allocator]`) to hold parsers of outside bytes to a bound:
//! a header that claims a billion entries must be refused, not answered with a billion-
//! entry `Vec`. It forwards everything to the system allocator; the bookkeeping is one
//! thread-local compare.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Largest allocation (bytes) this thread asked for since the last [`reset_largest`].
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown go unrecorded rather than panic.
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size);
        }
    });
}

/// Forgets this thread's largest allocation so far.
pub fn reset_largest() {
    let _ = LARGEST.try_with(|c| c.set(0));
}

/// The largest allocation this thread asked for since [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.try_with(Cell::get).unwrap_or(0)
}

/// The system allocator, with [`largest`] kept per thread.
#[derive(Debug)]
pub struct PeakAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// extra work (a thread-local `Cell` update that cannot allocate) does not touch the memory.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`, with the caller's `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
