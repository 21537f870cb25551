//! The stack a vfork-style child runs on until it execs: mapped once per thread, with a
//! PROT_NONE guard page below it, so an overflow faults instead of writing over the agent's
//! heap (the child shares the agent's memory).

use std::cell::Cell;
use std::io;
use std::ptr;

/// Usable bytes of a child stack. What runs there is `child_main` and the system call wrappers
/// it calls, a few hundred bytes deep.
pub const STACK_BYTES: usize = 64 << 10;

/// A mapped child stack: one guard page, then `STACK_BYTES` readable and writable.
pub struct ChildStack {
    base: *mut libc::c_void,
    guard: usize,
}

impl ChildStack {
    fn map() -> io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let guard = usize::try_from(page)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| io::Error::other("the page size is unknown"))?;
        // SAFETY: a fresh anonymous private mapping at an address of the kernel's choice
        // touches no existing memory.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                guard + STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, guard };
        // The stack grows down: the guard is the lowest page.
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error()); // `stack` unmaps it
        }
        Ok(stack)
    }

    /// The initial stack pointer: the end of the mapping, page-aligned and so 16-byte aligned
    /// as the ABI requires.
    pub fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is still the same allocation.
        unsafe { self.base.cast::<u8>().add(self.guard + STACK_BYTES).cast() }
    }

    /// The guard page, as (start address, length).
    #[cfg(test)]
    pub fn guard_page(&self) -> (usize, usize) {
        (self.base as usize, self.guard)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unused once its owner goes (a child on it has
        // exec'd or exited before clone returned).
        unsafe { libc::munmap(self.base, self.guard + STACK_BYTES) };
    }
}

thread_local! {
    /// This thread's child stack, mapped once. `CLONE_VFORK` suspends the thread until its
    /// child has exec'd or exited, so one stack per thread is never used twice at once.
    /// (`posix_spawn` maps and unmaps a stack for every child; the unmap makes the kernel
    /// interrupt every other CPU running the agent to flush its TLB.)
    static CHILD_STACK: Cell<Option<ChildStack>> = const { Cell::new(None) };
}

/// Run `f` with this thread's child stack, mapping it on first use.
pub fn with_child_stack<T>(f: impl FnOnce(&ChildStack) -> T) -> io::Result<T> {
    let stack = match CHILD_STACK.take() {
        Some(stack) => stack,
        None => ChildStack::map()?,
    };
    let result = f(&stack);
    CHILD_STACK.set(Some(stack));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permissions and end of the mapping /proc/self/maps shows around `address`.
    fn mapping_at(address: usize) -> Option<(String, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|line| {
            let (range, rest) = line.split_once(' ')?;
            let (from, to) = range.split_once('-')?;
            let from = usize::from_str_radix(from, 16).ok()?;
            let to = usize::from_str_radix(to, 16).ok()?;
            (from <= address && address < to)
                .then(|| (rest.split_whitespace().next().unwrap_or("").to_owned(), to))
        })
    }

    #[test]
    fn the_stack_has_an_inaccessible_guard_page_below_it_and_is_reused() {
        std::thread::spawn(|| {
            let (guard, len, top) =
                with_child_stack(|s| (s.guard_page().0, s.guard_page().1, s.top() as usize))
                    .unwrap();
            let (permissions, end) = mapping_at(guard).unwrap();
            assert_eq!(
                (permissions.as_str(), end),
                ("---p", guard + len),
                "guard page"
            );
            let (permissions, end) = mapping_at(guard + len).unwrap();
            assert_eq!(permissions, "rw-p", "the stack itself");
            assert!(end >= top, "the stack reaches its top");
            assert_eq!(top, guard + len + STACK_BYTES);
            assert_eq!(top % 16, 0);
            let again = with_child_stack(|s| s.guard_page().0).unwrap();
            assert_eq!(again, guard, "one stack per thread, mapped once");
        })
        .join()
        .unwrap();
    }
}
