//! The runtime of a `no_std` policy plugin on `wasm32`: a global allocator and a panic
//! handler, and nothing else.
//!
//! A plugin built with `std` for `wasm32-wasip2` imports about a dozen WASI interfaces
//! (through the preview1 adapter the toolchain links in), so its component has 18 core
//! instances, 15 of them import shims, all created and dropped for every call. A plugin that
//! is `#![no_std]` on `wasm32` and links this crate imports no WASI at all: its component is
//! one core module, and the host gives it no WASI context.
//!
//! Use it from a plugin crate:
//!
//! ```rust,ignore
//! #![cfg_attr(target_arch = "wasm32", no_std)]
//! extern crate alloc;
//! #[cfg(target_arch = "wasm32")]
//! use procwarden_plugin_bare as _;
//! ```
//!
//! Native builds (unit tests) keep `std`; everything here exists only on `wasm32`. Only
//! `no_std` plugins may depend on this crate: `std` has its own panic handler.
#![no_std]
// The `mem` functions below must not be compiled into calls to themselves.
#![no_builtins]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod bump;

/// A panic traps the instance (as `std` with `panic = "abort"` does, minus the message on
/// stderr, which a `no_std` plugin has nowhere to write). The host reports the trap as an
/// error of the plugin.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocation entry point, which the host calls to pass strings and lists
/// into the component. wit-bindgen leaves it to the C library on `wasm32-wasip2`, and a
/// `no_std` component links none, so it is defined here, on the global allocator.
///
/// # Safety
///
/// Called by the host as the canonical ABI specifies: `old_ptr`/`old_len`/`align` describe
/// a block this function returned before (or `old_len` is 0), and `align` is a power of two.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    let block = if old_len == 0 {
        if new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: `align` is a power of two (the ABI's promise) and `new_len` is non-zero.
        unsafe { alloc(Layout::from_size_align_unchecked(new_len, align)) }
    } else {
        // SAFETY: the block was allocated by this function with this size and alignment.
        unsafe {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if block.is_null() {
        core::arch::wasm32::unreachable();
    }
    block
}

/// `memcmp`, which the compiler calls for slice and string comparisons. On
/// `wasm32-wasip2` it comes from the C library, which a `no_std` component does not link.
///
/// # Safety
///
/// `a` and `b` are valid for reads of `n` bytes.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, and both pointers are valid for `n` bytes (the caller's promise).
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`: whether two blocks are equal (any non-zero answer means they differ).
///
/// # Safety
///
/// As for [`memcmp`].
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same promise as `memcmp`'s.
    unsafe { memcmp(a, b, n) }
}
