//! The WASI sources of new values a plugin can read — the wall clock and random numbers —
//! wrapped so that reading one marks the instance's answer as not to be remembered
//! (see [`super::memo`]). The monotonic clock is [`super::clock::CallClock`], which marks
//! the same way.

use std::convert::Infallible;
use std::time::Duration;

use rand::TryRng;
use wasmtime_wasi::HostWallClock;
use wasmtime_wasi::clocks::WallClock;

use super::memo::Nondeterminism;

/// The system's wall clock.
pub(crate) struct WatchedWallClock {
    clock: WallClock,
    reads: Nondeterminism,
}

impl WatchedWallClock {
    pub fn new(reads: Nondeterminism) -> Self {
        Self {
            clock: WallClock::new(),
            reads,
        }
    }
}

impl HostWallClock for WatchedWallClock {
    fn resolution(&self) -> Duration {
        self.clock.resolution()
    }

    fn now(&self) -> Duration {
        self.reads.mark();
        self.clock.now()
    }
}

/// A cryptographically secure generator, seeded from the system only when first read:
/// most plugins never ask for random numbers, and seeding one per instance would cost
/// every call.
pub(crate) struct WatchedRng {
    rng: Option<rand::rngs::StdRng>,
    reads: Nondeterminism,
}

impl WatchedRng {
    pub fn new(reads: Nondeterminism) -> Self {
        Self { rng: None, reads }
    }

    fn rng(&mut self) -> &mut rand::rngs::StdRng {
        self.reads.mark();
        self.rng.get_or_insert_with(rand::make_rng)
    }
}

impl TryRng for WatchedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.rng().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.rng().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.rng().try_fill_bytes(dst)
    }
}
