//! Small synchronisation helpers shared across modules.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not. A poisoned lock only means another thread panicked
/// mid-update of plain data; the data is still usable, and one bad request must not take
/// every later one down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
