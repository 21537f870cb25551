//! The shared Wasmtime engine of a policy chain, and the epoch ticker that bounds plugin CPU.
//!
//! One [`PolicyEngine`] serves every plugin of a chain: compiled code, the pooling allocator
//! (a fixed number of instance slots, each with bounded memory) and the epoch counter are all
//! per engine. Plugins get a deadline in epoch ticks; a background thread advances the epoch
//! about once per millisecond while at least one plugin call is running, and sleeps otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::wasm_err;

/// Length of one epoch tick: plugin deadlines are counted in these.
pub const TICK: Duration = Duration::from_millis(1);

/// Bytes of each memory and table slot kept mapped between instances (reset in place).
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Sizing of the engine's instance pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineOptions {
    /// Component instances that may exist at once.
    pub max_instances: u32,
    /// Largest linear memory any instance may have (the largest per-plugin bound).
    pub max_memory_bytes: u64,
}

/// A Wasmtime engine configured for policy plugins plus its epoch ticker.
pub struct PolicyEngine {
    engine: Engine,
    fingerprint: [u8; 32],
    ticker: Arc<TickerState>,
    ticker_thread: Option<JoinHandle<()>>,
}

struct TickerState {
    stop: AtomicBool,
    /// Plugin calls in progress; the ticker parks while this is zero.
    active: AtomicUsize,
}

impl PolicyEngine {
    pub(crate) fn new(opts: EngineOptions) -> anyhow::Result<Self> {
        let n = opts.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            // A component built by Rust's wasm32-wasip2 toolchain has a few core instances
            // (the program plus small shim modules), one memory and a table or two.
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_tables_per_module(4)
            .max_memory_size(usize::try_from(opts.max_memory_bytes).unwrap_or(usize::MAX))
            // Keep no warm slots beyond what is in use: plugin instances are short-lived and
            // the same few plugins are instantiated over and over, so affine reuse is enough.
            .max_unused_warm_slots(n.min(16))
            // Reset a slot's memory and tables by rewriting the pages the instance dirtied
            // (found with PAGEMAP_SCAN on Linux 6.7+) instead of `madvise`-ing them away:
            // no system call that flushes every thread's TLB, and no page faults to map the
            // pages again in the next instance. Contents are still reset to the module's
            // initial image, so every call sees a fresh instance.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Reserve only what the largest plugin may use instead of the default 4 GiB
            // per memory slot (the pool has 2 slots per instance, so the default reserves
            // about half a TiB of address space). Plugins then get explicit bounds checks,
            // which costs them little: they are small and short-lived.
            .memory_reservation(opts.max_memory_bytes)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("PROCWARDEN_PERFMAP").is_some() {
            // For profiling: `perf` then names the plugins' compiled functions
            // (/tmp/perf-PID.map) instead of showing bare addresses.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)
            .map_err(wasm_err)
            .context("cannot create the WebAssembly engine for policy plugins")?;
        let fingerprint = engine_fingerprint(&engine);

        let ticker = Arc::new(TickerState {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let ticker_thread = {
            let engine = engine.clone();
            let state = ticker.clone();
            thread::Builder::new()
                .name("policy-epoch".into())
                .spawn(move || run_ticker(&engine, &state))
                .context("cannot start the policy epoch ticker thread")?
        };
        Ok(Self {
            engine,
            fingerprint,
            ticker,
            ticker_thread: Some(ticker_thread),
        })
    }

    /// The Wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A digest of everything that makes compiled code from this engine compatible with it:
    /// Wasmtime's version, the target and compiler flags, and the engine's tunables.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Marks a plugin call as running until the guard drops, so the ticker advances epochs.
    pub(crate) fn begin_call(&self) -> CallGuard<'_> {
        if self.ticker.active.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = &self.ticker_thread
        {
            t.thread().unpark();
        }
        CallGuard { engine: self }
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker_thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Keeps the epoch ticker running while a plugin call is in progress.
pub(crate) struct CallGuard<'a> {
    engine: &'a PolicyEngine,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.engine.ticker.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run_ticker(engine: &Engine, state: &TickerState) {
    while !state.stop.load(Ordering::SeqCst) {
        if state.active.load(Ordering::SeqCst) == 0 {
            // Idle: nothing to interrupt. `begin_call` unparks us; the timeout is a safety net.
            thread::park_timeout(Duration::from_millis(200));
            continue;
        }
        thread::sleep(TICK);
        engine.increment_epoch();
    }
}

/// Feeds `Hash` output into SHA-256 so the digest is stable across processes (unlike the
/// standard library's randomly keyed hashers).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is used")
    }
}

fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    use std::hash::Hash;
    let mut h = Sha256Hasher(Sha256::new());
    // Includes the Wasmtime version (the engine's module-version strategy), the target
    // triple, Cranelift and ISA flags, tunables and enabled wasm features.
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn opts() -> EngineOptions {
        EngineOptions {
            max_instances: 4,
            max_memory_bytes: 16 << 20,
        }
    }

    #[test]
    fn fingerprint_is_stable_for_equal_settings() {
        let a = PolicyEngine::new(opts()).unwrap();
        let b = PolicyEngine::new(opts()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    /// `(module (func (export "spin") (loop (br 0))))`, assembled by hand.
    const SPIN_MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
    ];

    #[test]
    fn ticker_interrupts_a_spinning_guest_and_stops_on_drop() {
        let e = PolicyEngine::new(opts()).unwrap();
        let module = wasmtime::Module::new(e.engine(), SPIN_MODULE).unwrap();
        let mut store = wasmtime::Store::new(e.engine(), ());
        store.set_epoch_deadline(5);
        store.epoch_deadline_trap();
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let start = Instant::now();
        let err = {
            let _call = e.begin_call();
            spin.call(&mut store, ()).unwrap_err()
        };
        let took = start.elapsed();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        assert!(
            took >= Duration::from_millis(4),
            "interrupted too early: {took:?}"
        );
        assert!(
            took < Duration::from_millis(500),
            "interrupted too late: {took:?}"
        );
        let start = Instant::now();
        drop(e);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "ticker did not stop promptly"
        );
    }
}
