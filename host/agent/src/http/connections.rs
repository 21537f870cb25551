//! The table of open connections behind the connection cap.
//!
//! A connection is either waiting for a request (fresh, keep-alive idle, or a client still
//! sending its header) or busy (a request in flight until its response body is done). At the
//! cap, a new connection makes room by closing the one that has waited longest: stalled and
//! idle clients go first, and a request in flight is never cut. Only when every connection is
//! busy is a new one refused. So a flood of stalled connections cannot keep `/health` out,
//! and open file descriptors stay at the cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

pub struct Connections {
    registry: Arc<Registry>,
}

struct Registry {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Arc<ConnState>>,
    shutting_down: bool,
}

struct ConnState {
    phase: Mutex<Phase>,
    /// Set on shutdown: finish the request in flight, then close.
    draining: std::sync::atomic::AtomicBool,
    orders: Notify,
}

#[derive(Clone, Copy)]
enum Phase {
    Waiting {
        since: Instant,
    },
    Busy {
        requests: usize,
    },
    /// Closed without a request in flight; no request may start on it any more.
    Closed,
}

/// What the registry tells a connection's task.
#[derive(Debug, PartialEq, Eq)]
pub enum Order {
    /// Drop the connection now: it has no request in flight.
    Close,
    /// Stop keeping it alive: finish the request in flight, then close.
    Drain,
}

/// One admitted connection; dropping it gives its place back.
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

/// A request in flight on a connection; dropped when its response body is done.
pub struct Busy {
    state: Arc<ConnState>,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            registry: Arc::new(Registry {
                max,
                table: Mutex::new(Table::default()),
            }),
        }
    }

    /// A place for a new connection, closing the longest-waiting one at the cap; `None` when
    /// every connection is busy or the server is shutting down.
    pub fn admit(&self) -> Option<Slot> {
        let mut table = lock(&self.registry.table);
        if table.shutting_down {
            return None;
        }
        if table.open.len() >= self.registry.max {
            let victim = table
                .open
                .iter()
                .filter_map(|(id, state)| match *lock(&state.phase) {
                    Phase::Waiting { since } => Some((since, *id)),
                    _ => None,
                })
                .min()
                .map(|(_, id)| id)?;
            if let Some(state) = table.open.remove(&victim) {
                *lock(&state.phase) = Phase::Closed;
                state.orders.notify_one();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
            }),
            draining: std::sync::atomic::AtomicBool::new(false),
            orders: Notify::new(),
        });
        table.open.insert(id, state.clone());
        Some(Slot {
            registry: self.registry.clone(),
            id,
            state,
        })
    }

    /// Admit nothing more; close every waiting connection and drain the busy ones.
    pub fn shut_down(&self) {
        let mut table = lock(&self.registry.table);
        table.shutting_down = true;
        for state in table.open.values() {
            let mut phase = lock(&state.phase);
            if let Phase::Waiting { .. } = *phase {
                *phase = Phase::Closed;
            }
            state
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            state.orders.notify_one();
        }
    }

    /// Connections currently holding a place.
    pub fn len(&self) -> usize {
        lock(&self.registry.table).open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    /// A request starts; `None` if the connection was closed to make room meanwhile (the
    /// request must not run: its connection is being dropped).
    pub fn begin(&self) -> Option<Busy> {
        let mut phase = lock(&self.state.phase);
        *phase = match *phase {
            Phase::Waiting { .. } => Phase::Busy { requests: 1 },
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            Phase::Closed => return None,
        };
        Some(Busy {
            state: self.state.clone(),
        })
    }

    /// The next order for this connection.
    pub async fn order(&self) -> Order {
        loop {
            self.state.orders.notified().await;
            if let Phase::Closed = *lock(&self.state.phase) {
                return Order::Close;
            }
            if self
                .state
                .draining
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Order::Drain;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = lock(&self.registry.table);
        if table
            .open
            .get(&self.id)
            .is_some_and(|state| Arc::ptr_eq(state, &self.state))
        {
            table.open.remove(&self.id);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = lock(&self.state.phase);
        if let Phase::Busy { requests } = *phase {
            *phase = if requests > 1 {
                Phase::Busy {
                    requests: requests - 1,
                }
            } else {
                Phase::Waiting {
                    since: Instant::now(),
                }
            };
        }
    }
}

/// The tables hold plain data updated in single steps, so a panic elsewhere cannot leave
/// them inconsistent: keep using them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room() {
        let connections = Connections::new(2);
        let oldest = connections.admit().unwrap();
        let busy_conn = connections.admit().unwrap();
        let _busy = busy_conn.begin().unwrap();
        let newest = connections.admit().expect("room made");
        assert_eq!(connections.len(), 2);
        assert!(oldest.begin().is_none(), "the waiting one was closed");
        assert!(busy_conn.begin().is_some(), "the busy one was kept");
        let _newest_busy = newest.begin().unwrap();
        assert!(connections.admit().is_none(), "every connection is busy");
    }

    #[test]
    fn a_finished_request_makes_its_connection_waiting_again() {
        let connections = Connections::new(1);
        let conn = connections.admit().unwrap();
        drop(conn.begin().unwrap());
        let _next = connections.admit().expect("the idle one makes room");
        drop(conn);
        assert_eq!(connections.len(), 1);
    }

    #[test]
    fn shutdown_admits_nothing() {
        let connections = Connections::new(4);
        let _a = connections.admit().unwrap();
        connections.shut_down();
        assert!(connections.admit().is_none());
    }
}
