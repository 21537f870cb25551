//! One instance of a plugin in its own store: the host side of its imports, its memory and
//! time limits, and its creation ahead of the call that uses it.
//!
//! Creating an instance costs about as much as calling it, and so does resetting its pool slot
//! afterwards. Both are moved off the request's path: a plugin keeps one instance ready,
//! created after its previous call, and a spent instance is dropped later too (see the
//! chain). Every call still runs in an instance nobody has called before: only the moment it
//! was created moved. Creation runs under the same CPU and memory limits as a call, so a
//! plugin that misbehaves while instantiating is stopped and reported all the same.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::clock::{CallClock, CallClockView, HasCallClock};
use super::engine::PolicyEngine;
use super::memo::{Nondeterminism, Observations};
use super::plugin::{Verdict, WALL_CLOCK_FACTOR, truncate};
use super::probe::ReadScope;
use super::stdio::Capture;
use super::watched::{WatchedRng, WatchedWallClock};
use super::wit::latest::{Decision, LogLevel};
use super::wit::{PolicyBindings, PolicyPre};
use super::{PolicyContext, WitRequest};

/// Bytes of a plugin's stdout and of its stderr kept per call (the rest is discarded).
const STDIO_CAPTURE_BYTES: usize = 4096;
/// `log` calls honoured per plugin call; later ones are dropped (and counted).
const LOG_LINES_PER_CALL: u32 = 64;
/// Longest log message or denial reason kept, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 4096;
/// The `insecure-seed` every instance gets. Fixed, so that a guest's hash tables (Rust's
/// `HashMap` seeds from it) do not make its answers differ from call to call; its purpose,
/// resisting collision attacks on a long-lived process, does not apply to an instance that
/// serves one call.
const INSECURE_SEED: u128 = 0x7072_6f63_7761_7264_656e_2d73_6565_6421;

/// What every instance of one plugin shares.
pub(crate) struct InstanceSpec<'a> {
    pub pre: &'a PolicyPre,
    pub plugin: &'a Arc<str>,
    pub settings: &'a Arc<BTreeMap<String, String>>,
    /// Paths the operator allowed `read-file` under.
    pub read_paths: &'a Arc<[PathBuf]>,
    /// CPU time for instantiating, and again for the call.
    pub budget: Duration,
    pub max_memory_bytes: u64,
}

/// Why an instance produced no answer, with what is needed to explain it.
pub(crate) struct Fault {
    pub error: wasmtime::Error,
    /// Whether it happened while instantiating (rather than in `on-start`).
    pub instantiating: bool,
    /// A memory growth the limiter refused, in bytes.
    pub memory_denied: Option<usize>,
    /// Set when the time limit stopped it: `true` if by the real-time cap.
    pub timed_out: Option<bool>,
    /// What the plugin wrote to stderr (a Rust panic message, say).
    pub stderr: Option<String>,
}

/// An instance that has never been called.
pub(crate) struct ReadyInstance {
    store: Store<HostState>,
    bindings: PolicyBindings,
    stdout: Capture,
    stderr: Capture,
}

/// An instance after its call. Dropping it resets its slot in the instance pool, which is
/// worth doing after the request has moved on.
pub(crate) struct SpentInstance {
    _store: Store<HostState>,
}

impl ReadyInstance {
    /// Creates an instance in a new store, within the plugin's CPU and memory limits.
    pub async fn create(
        spec: &InstanceSpec<'_>,
        engine: &PolicyEngine,
        timers: &tokio::runtime::Handle,
    ) -> Result<Self, Fault> {
        let stdout = Capture::new(STDIO_CAPTURE_BYTES);
        let stderr = Capture::new(STDIO_CAPTURE_BYTES);
        let nondeterminism = Nondeterminism::default();
        let clock = CallClock::new(
            spec.budget * WALL_CLOCK_FACTOR as u32,
            nondeterminism.clone(),
        );
        let mut store = Store::new(
            engine.engine(),
            HostState {
                plugin: spec.plugin.clone(),
                settings: spec.settings.clone(),
                wasi: None,
                wasi_seed: WasiSeed {
                    stdout: stdout.clone(),
                    stderr: stderr.clone(),
                    nondeterminism: nondeterminism.clone(),
                },
                clock,
                read_paths: spec.read_paths.clone(),
                call: CallFacts::default(),
                read_scope: None,
                table: ResourceTable::new(),
                limiter: MemoryLimiter {
                    limit: usize::try_from(spec.max_memory_bytes).unwrap_or(usize::MAX),
                    denied: None,
                },
                logs_left: LOG_LINES_PER_CALL,
                observed: Observations::default(),
                nondeterminism,
                timed_out: None,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let meter = Arc::new(CpuMeter::default());
        arm_time_limit(&mut store, spec.budget, meter.clone());
        let created = {
            let _running = engine.begin_call();
            meter
                .run(timers, spec.pre.instantiate_async(&mut store))
                .await
        };
        match created {
            Ok(bindings) => Ok(Self {
                store,
                bindings,
                stdout,
                stderr,
            }),
            Err(error) => Err(fault(error, true, store.data(), &stderr)),
        }
    }

    /// Runs `on-start` once, with a fresh CPU budget and clock. Returns the answer, with
    /// what the call observed if the answer may be remembered (see [`super::memo`]), and
    /// the spent instance.
    pub async fn call(
        mut self,
        engine: &PolicyEngine,
        timers: &tokio::runtime::Handle,
        budget: Duration,
        req: &WitRequest,
        ctx: &PolicyContext,
    ) -> (
        Result<(Verdict, Option<Observations>), Fault>,
        SpentInstance,
    ) {
        let state = self.store.data_mut();
        state.clock.arm(budget * WALL_CLOCK_FACTOR as u32);
        state.timed_out = None;
        state.call = CallFacts {
            workdir: req.workdir.clone(),
            agent_workdir: ctx.agent_workdir.clone(),
        };
        let meter = Arc::new(CpuMeter::default());
        arm_time_limit(&mut self.store, budget, meter.clone());
        let result = {
            let _running = engine.begin_call();
            let call = self.bindings.on_start(&mut self.store, req, ctx);
            meter.run(timers, call).await
        };
        let state = self.store.data_mut();
        warn_dropped_logs(&state.plugin, state.observed.logs_dropped);
        log_stdio(&state.plugin, "stdout", &self.stdout);
        log_stdio(&state.plugin, "stderr", &self.stderr);
        // What went to stdout or stderr is only a debugging aid (logged at debug level), so
        // an answer that also printed may still be remembered.
        let observed =
            (!state.nondeterminism.is_marked()).then(|| std::mem::take(&mut state.observed));
        let outcome = match result {
            Ok(Decision::Allow(r)) => Ok((Verdict::Allow(r), observed)),
            Ok(Decision::Deny(reason)) => {
                Ok((Verdict::Deny(truncate(reason, MAX_TEXT_BYTES)), observed))
            }
            Err(error) => Err(fault(error, false, self.store.data(), &self.stderr)),
        };
        (outcome, SpentInstance { _store: self.store })
    }
}

fn fault(
    error: wasmtime::Error,
    instantiating: bool,
    state: &HostState,
    stderr: &Capture,
) -> Fault {
    tracing::debug!(plugin = %state.plugin, instantiating, "policy plugin failed: {error:?}");
    Fault {
        error,
        instantiating,
        memory_denied: state.limiter.denied,
        timed_out: state.timed_out,
        stderr: stderr.summary(),
    }
}

/// The time budget is CPU time spent polling the call (see [`CpuMeter`]), so a plugin is
/// not cut short when the machine is busy and its thread is preempted; a real-time cap
/// of [`WALL_CLOCK_FACTOR`] × the budget still bounds every call. Epoch ticks (about
/// 1 ms) are when the budget is checked: the first check comes when the budget could
/// have been used up, later ones when the rest of it, or the real-time cap, could be
/// reached. Between checks the call yields to the executor, so a long call does not
/// keep other tasks of its thread waiting.
fn arm_time_limit(store: &mut Store<HostState>, budget: Duration, meter: Arc<CpuMeter>) {
    let wall_cap = budget * WALL_CLOCK_FACTOR as u32;
    let wall_start = Instant::now();
    store.set_epoch_deadline(u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1));
    store.epoch_deadline_callback(move |mut ctx| {
        let wall = wall_start.elapsed();
        let used = meter.used().unwrap_or(wall);
        if used >= budget || wall >= wall_cap {
            ctx.data_mut().timed_out = Some(used < budget);
            return Ok(UpdateDeadline::Interrupt);
        }
        // Check again when either limit could next be reached.
        let left = (budget - used).min(wall_cap - wall).as_millis();
        Ok(UpdateDeadline::Yield(
            u64::try_from(left).unwrap_or(1).max(1),
        ))
    });
}

/// Store data of one instance. The host side of the policy imports is in
/// [`super::wit::latest`].
pub(crate) struct HostState {
    pub(crate) plugin: Arc<str>,
    pub(crate) settings: Arc<BTreeMap<String, String>>,
    pub(crate) read_paths: Arc<[PathBuf]>,
    /// What `read-file` needs to know of the current call.
    pub(crate) call: CallFacts,
    /// Where the current call's `read-file` may read, once it has asked.
    pub(crate) read_scope: Option<Arc<ReadScope>>,
    /// Built on the first WASI call: a component that imports no WASI (the `no_std`
    /// samples) never pays for one.
    wasi: Option<WasiCtx>,
    wasi_seed: WasiSeed,
    clock: CallClock,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) logs_left: u32,
    /// What the call observed, to remember its answer with.
    pub(crate) observed: Observations,
    /// Marked when the instance reads a clock or random numbers.
    nondeterminism: Nondeterminism,
    /// Set when the time limit stopped the call: `true` if by the real-time cap.
    timed_out: Option<bool>,
}

/// The working directories of the call in progress.
#[derive(Default)]
pub(crate) struct CallFacts {
    pub workdir: Option<String>,
    pub agent_workdir: Option<String>,
}

/// What an instance's WASI context is built from, when it needs one.
struct WasiSeed {
    stdout: Capture,
    stderr: Capture,
    nondeterminism: Nondeterminism,
}

impl WasiSeed {
    fn build(&self) -> WasiCtx {
        WasiCtxBuilder::new()
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(WatchedWallClock::new(self.nondeterminism.clone()))
            .secure_random(WatchedRng::new(self.nondeterminism.clone()))
            .insecure_random(WatchedRng::new(self.nondeterminism.clone()))
            .insecure_random_seed(INSECURE_SEED)
            .build()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let seed = &self.wasi_seed;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| seed.build()),
            table: &mut self.table,
        }
    }
}

impl HasCallClock for HostState {
    fn call_clock(&mut self) -> CallClockView<'_> {
        CallClockView {
            clock: &self.clock,
            table: &mut self.table,
        }
    }
}

/// A line a plugin logged.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

impl LogLine {
    /// Roughly the heap bytes this takes.
    pub fn bytes(&self) -> usize {
        self.message.len() + 8
    }

    /// Writes the line to the agent's log, naming the plugin.
    pub fn emit(&self, plugin: &str) {
        let message = &self.message;
        match self.level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Warns that a call logged more lines than it may.
pub(crate) fn warn_dropped_logs(plugin: &str, dropped: u32) {
    if dropped > 0 {
        tracing::warn!(
            plugin,
            dropped,
            "policy plugin logged too much; lines dropped"
        );
    }
}

/// Bounds one instance's linear memory and remembers a refused growth, so the resulting
/// trap can be reported as "out of memory".
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) denied: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = maximum.map_or(self.limit, |m| m.min(self.limit));
        if desired > limit {
            // Growth fails (`memory.grow` returns -1); a Rust guest then aborts with a trap.
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the instance pool's `table_elements`.
        Ok(true)
    }
}

fn log_stdio(plugin: &str, stream: &'static str, capture: &Capture) {
    if let Some(text) = capture.summary() {
        tracing::debug!(plugin, stream, "policy plugin output: {text}");
    }
}

/// CPU time spent running one call. The call is a future that may be polled on different
/// threads (after a sleep or a yield), so each poll measures its own thread's CPU time: the
/// total of finished polls plus what the current poll has used so far.
#[derive(Default)]
pub(crate) struct CpuMeter {
    /// Nanoseconds used by finished polls.
    spent: AtomicU64,
    /// Thread CPU time, in nanoseconds, when the current poll began; `u64::MAX` if it
    /// could not be read.
    poll_start: AtomicU64,
}

impl CpuMeter {
    /// Polls `fut` to completion, metering every poll, inside `timers`' runtime context.
    pub(crate) async fn run<F: Future>(
        &self,
        timers: &tokio::runtime::Handle,
        fut: F,
    ) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let _timers = timers.enter();
            let start = thread_cpu_time().map_or(u64::MAX, duration_nanos);
            self.poll_start.store(start, Ordering::Relaxed);
            let poll = fut.as_mut().poll(cx);
            if poll.is_pending() {
                // Only a call that waits or yields is polled again; most finish at once.
                let used = match thread_cpu_time() {
                    Some(now) if start != u64::MAX => duration_nanos(now).saturating_sub(start),
                    _ => 0,
                };
                self.spent.fetch_add(used, Ordering::Relaxed);
            }
            poll
        })
        .await
    }

    /// CPU time used so far; called from inside a poll (the epoch callback). `None` if the
    /// thread's CPU clock cannot be read.
    pub(crate) fn used(&self) -> Option<Duration> {
        let start = self.poll_start.load(Ordering::Relaxed);
        let now = thread_cpu_time()?;
        if start == u64::MAX {
            return None;
        }
        let current = duration_nanos(now).saturating_sub(start);
        Some(Duration::from_nanos(
            self.spent.load(Ordering::Relaxed).saturating_add(current),
        ))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time consumed by the calling thread so far.
fn thread_cpu_time() -> Option<Duration> {
    use nix::time::{ClockId, clock_gettime};
    let ts = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(
        u64::try_from(ts.tv_sec()).ok()?,
        u32::try_from(ts.tv_nsec()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;
    use crate::policy::engine::EngineOptions;
    use wasmtime::component::Component;

    /// The built-in samples that are `no_std` components (all but `deny`, whose regular
    /// expressions need `std`).
    const NO_STD_SAMPLES: &[&str] = &["ampersand", "env", "workdir", "npm-ci"];

    fn engine() -> PolicyEngine {
        PolicyEngine::new(EngineOptions {
            max_instances: 4,
            max_memory_bytes: 16 << 20,
        })
        .unwrap()
    }

    fn sample(name: &str) -> &'static [u8] {
        builtin::all()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes)
            .unwrap()
    }

    #[test]
    fn no_std_samples_import_no_wasi() {
        let e = engine();
        for &name in NO_STD_SAMPLES {
            let component = Component::new(e.engine(), sample(name)).unwrap();
            let imports: Vec<String> = component
                .component_type()
                .imports(e.engine())
                .map(|(import, _)| import.to_owned())
                .collect();
            assert!(
                imports.iter().all(|i| !i.starts_with("wasi:")),
                "{name} imports {imports:?}"
            );
            assert!(!imports.is_empty(), "{name} imports nothing at all");
        }
    }

    #[test]
    fn an_instance_that_imports_no_wasi_gets_no_wasi_context() {
        let e = engine();
        let linker = super::super::plugin::new_linker(&e).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let component = Component::new(e.engine(), sample("ampersand")).unwrap();
        let pre = PolicyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let spec = InstanceSpec {
            pre: &pre,
            plugin: &Arc::from("ampersand"),
            settings: &Arc::new(BTreeMap::new()),
            read_paths: &Arc::from(Vec::new()),
            budget: Duration::from_secs(5),
            max_memory_bytes: 16 << 20,
        };
        let req = WitRequest::from(procwarden_process::StartRequest {
            command: "sleep 1 &".to_owned(),
            ..Default::default()
        });
        let handle = rt.handle().clone();
        let (outcome, spent) = rt.block_on(async {
            let ready = ReadyInstance::create(&spec, &e, &handle)
                .await
                .map_err(|f| f.error)
                .unwrap();
            ready
                .call(&e, &handle, spec.budget, &req, &PolicyContext::default())
                .await
        });
        match outcome.map_err(|f| f.error).unwrap().0 {
            Verdict::Allow(r) => assert_eq!(r.command, "sleep 1"),
            Verdict::Deny(reason) => panic!("denied: {reason}"),
        }
        assert!(spent._store.data().wasi.is_none());
    }

    #[test]
    fn thread_cpu_time_advances_with_work_not_sleep() {
        let start = thread_cpu_time().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time().unwrap() - start;
        assert!(slept < Duration::from_millis(15), "{slept:?}");
        let begin = Instant::now();
        while thread_cpu_time().unwrap() - start < Duration::from_millis(20) {
            assert!(
                begin.elapsed() < Duration::from_secs(20),
                "thread CPU time does not advance while working"
            );
        }
    }
}
