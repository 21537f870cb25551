//! The monotonic clock plugins see, with sleeps cut short at the call's real-time limit.
//!
//! Epoch interruption only stops a plugin while it runs wasm code. A plugin that sleeps
//! (WASI `subscribe-duration`/`subscribe-instant` and then `poll` or `block`) waits inside the
//! host, where no deadline applies: `sleep(1 hour)` would hold a policy thread for an hour.
//! So the host's `wasi:clocks/monotonic-clock` is this module's own typed implementation
//! ([`BoundedClock`], added to the linker with the interface's generated `add_to_linker`): a
//! sleep never lasts past the call's real-time limit. When the plugin wakes up and runs wasm again, the epoch check sees the
//! limit has passed and stops it.
//!
//! The clock itself starts at zero for every call (a monotonic clock has no meaningful
//! origin, and this does not tell plugins how long the host has been up). An instance is
//! created before its call, so the clock is armed when the call begins, not when the
//! instance's WASI context is built.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::memo::Nondeterminism;

/// The clock of one call and the instant its sleeps must end by. Clones share the clock.
#[derive(Debug, Clone)]
pub(crate) struct CallClock {
    span: Arc<Mutex<Span>>,
    /// Marked when the plugin reads the clock or sleeps.
    reads: Nondeterminism,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    origin: Instant,
    deadline: Instant,
}

impl CallClock {
    /// A clock starting now, whose sleeps end at the latest after `limit`.
    pub fn new(limit: Duration, reads: Nondeterminism) -> Self {
        let clock = Self {
            span: Arc::new(Mutex::new(Span {
                origin: Instant::now(),
                deadline: Instant::now(),
            })),
            reads,
        };
        clock.arm(limit);
        clock
    }

    /// Restarts the clock at zero now, with sleeps ending at the latest after `limit`.
    pub fn arm(&self, limit: Duration) {
        let origin = Instant::now();
        *self.lock() = Span {
            origin,
            deadline: origin + limit,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Span> {
        procwarden_process::sync::lock(&self.span)
    }

    fn now_nanos(&self) -> u64 {
        self.reads.mark();
        let origin = self.lock().origin;
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long a requested sleep may really last.
    fn bound(&self, requested: Duration) -> Duration {
        self.reads.mark();
        let deadline = self.lock().deadline;
        requested.min(deadline.saturating_duration_since(Instant::now()))
    }
}

/// Store data that has a [`CallClock`] and a resource table.
pub(crate) trait HasCallClock: Send + 'static {
    fn call_clock(&mut self) -> CallClockView<'_>;
}

/// The `monotonic-clock` host of one store: its call's clock and the table its sleeps'
/// pollables go in.
pub(crate) struct CallClockView<'a> {
    pub clock: &'a CallClock,
    pub table: &'a mut ResourceTable,
}

/// Names [`CallClockView`] as the data of `wasi:clocks/monotonic-clock`, for the generated
/// `monotonic_clock::add_to_linker`.
pub(crate) struct BoundedClock;

impl HasData for BoundedClock {
    type Data<'a> = CallClockView<'a>;
}

impl monotonic_clock::Host for CallClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.now_nanos())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let requested = Duration::from_nanos(when.saturating_sub(self.clock.now_nanos()));
        subscribe(self.table, self.clock.bound(requested))
    }

    fn subscribe_duration(
        &mut self,
        nanos: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, self.clock.bound(Duration::from_nanos(nanos)))
    }
}

fn subscribe(
    table: &mut ResourceTable,
    duration: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let sleep = table.push(Sleep {
        until: tokio::time::Instant::now() + duration,
    })?;
    wasmtime_wasi::p2::subscribe(table, sleep)
}

/// A pollable that is ready at `until`.
struct Sleep {
    until: tokio::time::Instant,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_restarts_the_clock_and_its_deadline() {
        let c = CallClock::new(Duration::from_millis(1), Nondeterminism::default());
        let shared = c.clone();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.bound(Duration::from_secs(1)), Duration::ZERO);
        assert!(c.now_nanos() >= 5_000_000);
        shared.arm(Duration::from_secs(60));
        assert!(c.now_nanos() < 5_000_000, "armed clock restarts at zero");
        assert_eq!(c.bound(Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn sleeps_end_by_the_deadline() {
        let c = CallClock::new(Duration::from_millis(50), Nondeterminism::default());
        assert!(c.bound(Duration::from_secs(3600)) <= Duration::from_millis(50));
        assert_eq!(c.bound(Duration::from_millis(1)), Duration::from_millis(1));
        let a = c.now_nanos();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now_nanos() >= a + 2_000_000);
    }
}
