//! Counts of live processes (shell running, or a member of its group or cgroup not yet known
//! to be gone), overall and per chat,
//! kept as they change so that the limit checked on every start costs no walk of the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

#[derive(Debug, Default)]
pub struct LiveCounts {
    total: AtomicUsize,
    by_chat: Mutex<HashMap<String, usize>>,
}

impl LiveCounts {
    /// Count one more live process of `chat`, until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, chat: Option<&str>) -> LiveGuard {
        self.total.fetch_add(1, Ordering::AcqRel);
        if let Some(chat) = chat {
            *lock(&self.by_chat).entry(chat.to_owned()).or_default() += 1;
        }
        LiveGuard {
            counts: self.clone(),
            chat: chat.map(str::to_owned),
        }
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub fn of_chat(&self, chat: &str) -> usize {
        lock(&self.by_chat).get(chat).copied().unwrap_or(0)
    }
}

/// One live process in [`LiveCounts`]; dropping it (when its group is found gone, or when the
/// record is forgotten) takes it out.
#[derive(Debug)]
pub struct LiveGuard {
    counts: Arc<LiveCounts>,
    chat: Option<String>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(chat) = &self.chat {
            let mut by_chat = lock(&self.counts.by_chat);
            if let Some(n) = by_chat.get_mut(chat) {
                *n -= 1;
                if *n == 0 {
                    by_chat.remove(chat);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_overall_and_per_chat_and_leave_no_empty_chat() {
        let counts = Arc::new(LiveCounts::default());
        let a = counts.enter(Some("a"));
        let a2 = counts.enter(Some("a"));
        let none = counts.enter(None);
        assert_eq!((counts.total(), counts.of_chat("a")), (3, 2));
        drop(a);
        drop(none);
        assert_eq!((counts.total(), counts.of_chat("a")), (1, 1));
        drop(a2);
        assert_eq!((counts.total(), counts.of_chat("a")), (0, 0));
        assert!(lock(&counts.by_chat).is_empty());
    }
}
