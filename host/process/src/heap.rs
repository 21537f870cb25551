//! Handing freed heap memory back to the system after a burst of output.
//!
//! The spool queue holds copies of output chunks between the pipe readers and the writer
//! thread: up to `queue_bytes` while the disk catches up. glibc keeps memory it has handed
//! out once: freed chunks stay in its arenas, resident, for the next allocation, and the
//! pages in an arena's middle are not returned while any small allocation lives above them.
//! So one burst of output would leave the agent tens of megabytes larger for good. After a
//! burst, the writer asks glibc to return its free pages ([`return_free_memory`]).

use std::time::Duration;

/// Bytes that must have passed through the queue since the last return before another is
/// worth its cost (a walk of every arena). Low enough that one long line of a few megabytes
/// is handed back too.
pub const RETURN_AFTER_BYTES: usize = 2 * 1024 * 1024;

/// How long the queue must stay empty before the memory is returned: a burst is over, not
/// pausing. A return takes every arena's lock in turn, which would stall the pipe readers
/// in the middle of a stream.
pub const QUIET_BEFORE_RETURN: Duration = Duration::from_millis(100);

/// Counts the bytes through the spool queue since memory was last returned.
#[derive(Debug, Default)]
pub struct BurstTracker {
    passed: usize,
}

impl BurstTracker {
    /// `bytes` went through the queue.
    pub fn passed(&mut self, bytes: usize) {
        self.passed = self.passed.saturating_add(bytes);
    }

    /// Whether enough went through for a return once the queue is quiet.
    pub fn return_owed(&self) -> bool {
        self.passed >= RETURN_AFTER_BYTES
    }

    /// Memory was just returned.
    pub fn returned(&mut self) {
        self.passed = 0;
    }
}

/// Return the heap's free pages to the system (glibc's `malloc_trim`); nothing elsewhere.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes each arena's own lock and only releases pages of free
    // chunks; it never touches memory in use. A pad of 0 keeps no extra slack at the top.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_is_owed_once_a_burst_has_passed_and_not_again_until_the_next() {
        let mut tracker = BurstTracker::default();
        assert!(!tracker.return_owed());
        tracker.passed(RETURN_AFTER_BYTES - 1);
        assert!(!tracker.return_owed());
        tracker.passed(1);
        assert!(tracker.return_owed());
        tracker.returned();
        assert!(!tracker.return_owed());
    }
}
