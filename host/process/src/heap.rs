//! Handing freed heap memory back to the system after a burst of output.
//!
//! The spool queue holds copies of output chunks between the pipe readers and the writer
//! thread: up to `queue_bytes` while the disk catches up. glibc keeps memory it has handed
//! out once: freed chunks stay in its arenas, resident, for the next allocation, and the
//! pages in an arena's middle are not returned while any small allocation lives above them.
//! So one burst of output would leave the agent tens of megabytes larger for good. After a
//! burst, the writer asks glibc to return its free pages ([`return_free_memory`]).

use std::time::{Duration, Instant};

/// Bytes that must have passed through the queue since the last return before another is
/// worth its cost (a walk of every arena).
pub const RETURN_AFTER_BYTES: usize = 8 * 1024 * 1024;

/// Least time between two returns: a steady stream drains the queue often, and each drain
/// need not walk the arenas.
pub const RETURN_INTERVAL: Duration = Duration::from_millis(250);

/// Decides when the spool writer returns freed memory: once the queue is empty after at
/// least [`RETURN_AFTER_BYTES`] went through it, and at most every [`RETURN_INTERVAL`].
#[derive(Debug)]
pub struct BurstTracker {
    passed: usize,
    last_return: Instant,
}

impl Default for BurstTracker {
    fn default() -> Self {
        Self {
            passed: 0,
            // The first burst may return at once.
            last_return: Instant::now() - RETURN_INTERVAL,
        }
    }
}

impl BurstTracker {
    /// `bytes` went through the queue.
    pub fn passed(&mut self, bytes: usize) {
        self.passed = self.passed.saturating_add(bytes);
    }

    /// The queue is empty: `None` when no return is owed; otherwise how long to wait for
    /// more work before returning (zero: return now).
    pub fn owed_in(&self, now: Instant) -> Option<Duration> {
        (self.passed >= RETURN_AFTER_BYTES)
            .then(|| RETURN_INTERVAL.saturating_sub(now.duration_since(self.last_return)))
    }

    /// Memory was just returned.
    pub fn returned(&mut self, now: Instant) {
        self.passed = 0;
        self.last_return = now;
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
    fn nothing_is_owed_until_a_burst_has_passed() {
        let mut tracker = BurstTracker::default();
        let now = Instant::now();
        assert_eq!(tracker.owed_in(now), None);
        tracker.passed(RETURN_AFTER_BYTES - 1);
        assert_eq!(tracker.owed_in(now), None);
        tracker.passed(1);
        assert_eq!(tracker.owed_in(now), Some(Duration::ZERO));
    }

    #[test]
    fn a_return_waits_out_the_interval_after_the_last() {
        let mut tracker = BurstTracker::default();
        let start = Instant::now();
        tracker.returned(start);
        tracker.passed(RETURN_AFTER_BYTES);
        let later = start + Duration::from_millis(100);
        assert_eq!(
            tracker.owed_in(later),
            Some(RETURN_INTERVAL - Duration::from_millis(100))
        );
        assert_eq!(
            tracker.owed_in(start + RETURN_INTERVAL * 2),
            Some(Duration::ZERO)
        );
        tracker.returned(later);
        assert_eq!(tracker.owed_in(later), None);
    }
}
