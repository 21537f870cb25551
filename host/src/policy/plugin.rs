//! One loaded policy plugin: validated, compiled, pre-instantiated, with its settings and
//! limits, and how one call of it runs in a fresh, bounded instance.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::cache::{ArtifactCache, CacheStatus};
use super::clock::{self, CallClock, HasCallClock};
use super::config::{self, OnError, PluginCode, PluginSource, PolicyConfig, flatten_settings};
use super::engine::PolicyEngine;
use super::stdio::Capture;
use super::{PolicyContext, StartRequest, wasm_err};

mod bindings {
    wasmtime::component::bindgen!({
        world: "policy-plugin",
        path: "../wit/policy",
        // Calls run on a fiber, so a plugin that waits (WASI `poll`) does not block a
        // thread; the host functions stay synchronous.
        exports: { default: async },
    });
}

use bindings::procwarden::policy::{host, types};
use bindings::{PolicyPlugin, PolicyPluginPre};

/// The interface every plugin must export, as named in error messages.
pub const POLICY_EXPORT: &str = "procwarden:policy/policy@0.1.0";
/// The world plugins are built against, as named in error messages.
pub const POLICY_WORLD: &str = "procwarden:policy/policy-plugin@0.1.0";

/// A call is stopped after this many times its CPU budget in real time, however little CPU
/// it got.
pub const WALL_CLOCK_FACTOR: u64 = 10;

/// Bytes of a plugin's stdout and of its stderr kept per call (the rest is discarded).
const STDIO_CAPTURE_BYTES: usize = 4096;
/// `log` calls honoured per plugin call; later ones are dropped (and counted).
const LOG_LINES_PER_CALL: u32 = 64;
/// Longest log message or denial reason kept, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

/// A plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(StartRequest),
    Deny(String),
}

/// Why a plugin call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFailure {
    /// The call used more than its CPU-time budget, or (`wall_clock`) ran for more than
    /// [`WALL_CLOCK_FACTOR`] times the budget in real time, e.g. on an overloaded machine.
    Timeout { limit_ms: u64, wall_clock: bool },
    /// The instance tried to grow its memory beyond its bound.
    OutOfMemory {
        limit_bytes: u64,
        requested_bytes: u64,
    },
    /// The guest trapped (e.g. a Rust panic, which aborts); `stderr` is what it printed.
    Trap {
        message: String,
        stderr: Option<String>,
    },
    /// The guest called WASI `exit`.
    Exit { code: i32 },
    /// No instance could be created (e.g. the instance pool is exhausted).
    Instantiate { message: String },
    /// The component could not be loaded at start-up (unreadable, not a component, wrong
    /// world, ...): every call fails this way, so the plugin's `on_error` decides.
    NotLoaded { message: String },
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginFailure::Timeout {
                limit_ms,
                wall_clock: false,
            } => write!(
                f,
                "took longer than {limit_ms} ms (its CPU time limit) and was stopped"
            ),
            PluginFailure::Timeout {
                limit_ms,
                wall_clock: true,
            } => write!(
                f,
                "took longer than {} ms in real time ({WALL_CLOCK_FACTOR} times its {limit_ms} ms \
                 CPU time limit) and was stopped; it was waiting, or the machine is overloaded",
                limit_ms * WALL_CLOCK_FACTOR
            ),
            PluginFailure::OutOfMemory {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "out of memory: tried to grow its memory to {}, over its limit of {}",
                human_bytes(*requested_bytes),
                human_bytes(*limit_bytes)
            ),
            PluginFailure::NotLoaded { message } => {
                write!(f, "could not be loaded: {message}")
            }
            PluginFailure::Trap { message, stderr } => {
                write!(f, "trapped: {message}")?;
                if let Some(stderr) = stderr {
                    write!(f, " (stderr: {stderr})")?;
                }
                Ok(())
            }
            PluginFailure::Exit { code } => write!(f, "called exit({code}) instead of returning"),
            PluginFailure::Instantiate { message } => {
                write!(f, "could not be instantiated: {message}")
            }
        }
    }
}

/// How a plugin's code was loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Whether the compiled code came from the disk cache.
    pub cache: CacheStatus,
    /// Time to read, validate, compile or deserialize, and pre-instantiate, in microseconds.
    pub micros: u64,
    /// Size of the component, in bytes.
    pub component_bytes: usize,
}

/// Counters of one plugin's calls (evaluations only; dry runs are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginHealth {
    pub name: String,
    pub calls: u64,
    pub allowed: u64,
    pub denied: u64,
    pub failures: u64,
    /// Failures since the last successful call; a plugin that keeps failing shows here.
    pub consecutive_failures: u64,
    pub total_micros: u64,
    pub max_micros: u64,
    pub last_failure: Option<String>,
}

#[derive(Default)]
pub(crate) struct HealthCounters {
    calls: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl HealthCounters {
    /// Counts one call; returns the number of consecutive failures including this one.
    pub fn record(&self, outcome: &Result<Verdict, PluginFailure>, micros: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
        match outcome {
            Ok(v) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                match v {
                    Verdict::Allow(_) => &self.allowed,
                    Verdict::Deny(_) => &self.denied,
                }
                .fetch_add(1, Ordering::Relaxed);
                0
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(e.to_string());
                }
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
            }
        }
    }

    pub fn snapshot(&self, name: &str) -> PluginHealth {
        PluginHealth {
            name: name.to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            total_micros: self.total_micros.load(Ordering::Relaxed),
            max_micros: self.max_micros.load(Ordering::Relaxed),
            last_failure: self.last_failure.lock().ok().and_then(|l| l.clone()),
        }
    }
}

/// A plugin ready to be called.
pub(crate) struct Plugin {
    pub name: Arc<str>,
    /// Where the code came from (path or built-in label), for messages.
    pub origin: String,
    pub on_error: OnError,
    pub timeout_ms: u64,
    pub max_memory_bytes: u64,
    pub settings: Arc<BTreeMap<String, String>>,
    pub load: LoadReport,
    pub health: HealthCounters,
    /// Why loading failed; `None` when `pre` is ready.
    pub load_error: Option<String>,
    pre: Option<PolicyPluginPre<HostState>>,
}

/// Builds the linker every plugin is instantiated with: WASI (nothing granted) plus `host`.
pub(crate) fn new_linker(engine: &PolicyEngine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
    clock::add_to_linker(&mut linker).map_err(wasm_err)?;
    PolicyPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(wasm_err)?;
    Ok(linker)
}

impl Plugin {
    /// Reads, validates, compiles (or loads from the cache) and pre-instantiates a plugin.
    /// Every error names the plugin and where it came from.
    pub fn load(
        engine: &PolicyEngine,
        linker: &Linker<HostState>,
        cache: &ArtifactCache,
        src: &PluginSource,
        defaults: &PolicyConfig,
    ) -> anyhow::Result<Self> {
        let name = src.effective_name();
        let origin = src.code.describe();
        Self::load_inner(engine, linker, cache, src, defaults, &name, &origin)
            .with_context(|| format!("policy plugin \"{name}\" ({origin})"))
    }

    fn load_inner(
        engine: &PolicyEngine,
        linker: &Linker<HostState>,
        cache: &ArtifactCache,
        src: &PluginSource,
        defaults: &PolicyConfig,
        name: &str,
        origin: &str,
    ) -> anyhow::Result<Self> {
        let start = Instant::now();
        anyhow::ensure!(!name.trim().is_empty(), "the plugin name is empty");
        let timeout_ms = src.timeout_ms.unwrap_or(defaults.default_timeout_ms);
        config::check_timeout(timeout_ms, "timeout_ms")?;
        let max_memory_bytes = src
            .max_memory_bytes
            .unwrap_or(defaults.default_max_memory_bytes);
        config::check_memory(max_memory_bytes, "max_memory_bytes")?;

        let file_bytes;
        let wasm: &[u8] = match &src.code {
            PluginCode::File(path) => {
                file_bytes = std::fs::read(path).context("cannot read the component file")?;
                &file_bytes
            }
            PluginCode::Bytes { bytes, .. } => bytes,
        };
        check_component_header(wasm)?;
        let (component, cache_status) = cache
            .load(engine.engine(), wasm, name)
            .context("not a valid WebAssembly component")?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(wasm_err)
            .context(
                "it imports something this host does not provide (plugins may import \
             procwarden:policy/host@0.1.0 and WASI 0.2 only)",
            )?;
        let pre = PolicyPluginPre::new(pre)
            .map_err(wasm_err)
            .with_context(|| {
                format!(
                    "it does not implement the world {POLICY_WORLD}: it must export \
                 {POLICY_EXPORT} with `on-start`"
                )
            })?;
        let load = LoadReport {
            cache: cache_status,
            micros: micros_since(start),
            component_bytes: wasm.len(),
        };
        tracing::info!(
            plugin = name,
            origin,
            cache = %load.cache,
            micros = load.micros,
            bytes = load.component_bytes,
            "loaded policy plugin"
        );
        Ok(Self {
            name: name.into(),
            origin: origin.to_owned(),
            on_error: src.on_error,
            timeout_ms,
            max_memory_bytes,
            settings: Arc::new(flatten_settings(&src.settings)),
            load,
            health: HealthCounters::default(),
            load_error: None,
            pre: Some(pre),
        })
    }

    /// A plugin whose component could not be loaded. It stays in the chain so a broken file
    /// is contained instead of stopping the agent: each call fails naming the plugin and the
    /// cause, and its `on_error` decides (by default every start is denied, fail-closed).
    pub fn unloadable(src: &PluginSource, defaults: &PolicyConfig, error: String) -> Self {
        Self {
            name: src.effective_name().into(),
            origin: src.code.describe(),
            on_error: src.on_error,
            timeout_ms: src.timeout_ms.unwrap_or(defaults.default_timeout_ms),
            max_memory_bytes: src
                .max_memory_bytes
                .unwrap_or(defaults.default_max_memory_bytes),
            settings: Arc::new(flatten_settings(&src.settings)),
            load: LoadReport {
                cache: super::cache::CacheStatus::Off,
                micros: 0,
                component_bytes: 0,
            },
            health: HealthCounters::default(),
            load_error: Some(error),
            pre: None,
        }
    }

    /// Runs `on-start` once in a fresh instance with this plugin's CPU and memory bounds.
    ///
    /// The call runs on the polling thread (a fiber switch, no thread hop). `timers` is the
    /// runtime whose clock the plugin's sleeps use: it is entered on every poll, so the
    /// caller's runtime needs no timers of its own.
    pub async fn call(
        &self,
        engine: &PolicyEngine,
        timers: &tokio::runtime::Handle,
        req: &StartRequest,
        ctx: &PolicyContext,
    ) -> Result<Verdict, PluginFailure> {
        let Some(pre) = &self.pre else {
            return Err(PluginFailure::NotLoaded {
                message: self.load_error.clone().unwrap_or_default(),
            });
        };
        let stdout = Capture::new(STDIO_CAPTURE_BYTES);
        let stderr = Capture::new(STDIO_CAPTURE_BYTES);
        let budget = Duration::from_millis(self.timeout_ms);
        let clock = CallClock::new(budget * WALL_CLOCK_FACTOR as u32);
        let mut store = Store::new(
            engine.engine(),
            HostState {
                plugin: self.name.clone(),
                settings: self.settings.clone(),
                wasi: WasiCtxBuilder::new()
                    .stdout(stdout.clone())
                    .stderr(stderr.clone())
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .monotonic_clock(clock)
                    .build(),
                clock,
                table: ResourceTable::new(),
                limiter: MemoryLimiter {
                    limit: usize::try_from(self.max_memory_bytes).unwrap_or(usize::MAX),
                    denied: None,
                },
                logs_left: LOG_LINES_PER_CALL,
                logs_dropped: 0,
                timed_out: None,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let meter = Arc::new(CpuMeter::default());
        Self::arm_time_limit(&mut store, budget, meter.clone());

        let result = {
            let _running = engine.begin_call();
            let (wit_req, wit_ctx) = (to_wit_request(req), to_wit_context(ctx));
            let run = async {
                match pre.instantiate_async(&mut store).await {
                    Err(e) => Err((e, true)),
                    Ok(instance) => instance
                        .procwarden_policy_policy()
                        .call_on_start(&mut store, &wit_req, &wit_ctx)
                        .await
                        .map_err(|e| (e, false)),
                }
            };
            meter.run(timers, run).await
        };

        let state = store.data();
        if state.logs_dropped > 0 {
            tracing::warn!(plugin = %self.name, dropped = state.logs_dropped,
                "policy plugin logged too much; lines dropped");
        }
        log_stdio(&self.name, "stdout", &stdout);
        log_stdio(&self.name, "stderr", &stderr);
        match result {
            Ok(types::Decision::Allow(r)) => Ok(Verdict::Allow(from_wit_request(r))),
            Ok(types::Decision::Deny(reason)) => {
                Ok(Verdict::Deny(truncate(reason, MAX_TEXT_BYTES)))
            }
            Err((err, instantiating)) => {
                tracing::debug!(plugin = %self.name, "policy plugin failed: {err:?}");
                Err(self.classify(err, state, &stderr, instantiating))
            }
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

    fn classify(
        &self,
        err: wasmtime::Error,
        state: &HostState,
        stderr: &Capture,
        instantiating: bool,
    ) -> PluginFailure {
        if let Some(requested) = state.limiter.denied {
            return PluginFailure::OutOfMemory {
                limit_bytes: self.max_memory_bytes,
                requested_bytes: requested as u64,
            };
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return PluginFailure::Timeout {
                    limit_ms: self.timeout_ms,
                    wall_clock: state.timed_out.unwrap_or(false),
                };
            }
            let message = trap.to_string();
            return PluginFailure::Trap {
                message: message
                    .strip_prefix("wasm trap: ")
                    .map_or(message.clone(), str::to_owned),
                stderr: stderr.summary(),
            };
        }
        if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return PluginFailure::Exit { code: exit.0 };
        }
        let message = err.root_cause().to_string();
        if instantiating {
            PluginFailure::Instantiate { message }
        } else {
            PluginFailure::Trap {
                message,
                stderr: stderr.summary(),
            }
        }
    }
}

/// Rejects bytes that are not a binary component before handing them to the compiler, with
/// a message that says what they are instead.
fn check_component_header(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    anyhow::ensure!(
        bytes.len() >= 8 && bytes.starts_with(MAGIC),
        "not a WebAssembly component: the file does not start with the wasm magic bytes \
         (text format, truncated or corrupt file?)"
    );
    anyhow::ensure!(
        bytes[4..8] != CORE_MODULE,
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    );
    // Components have layer 1 in bytes 6..8; anything else is a format we do not know.
    anyhow::ensure!(
        bytes[6..8] == [1, 0],
        "not a WebAssembly component: unknown binary layer/version {:02x?}",
        &bytes[4..8]
    );
    Ok(())
}

/// Store data of one plugin call.
pub(crate) struct HostState {
    plugin: Arc<str>,
    settings: Arc<BTreeMap<String, String>>,
    wasi: WasiCtx,
    clock: CallClock,
    table: ResourceTable,
    limiter: MemoryLimiter,
    logs_left: u32,
    logs_dropped: u32,
    /// Set when the time limit stopped the call: `true` if by the real-time cap.
    timed_out: Option<bool>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HasCallClock for HostState {
    fn call_clock(&mut self) -> (CallClock, &mut ResourceTable) {
        (self.clock, &mut self.table)
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        if self.logs_left == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.logs_left -= 1;
        let plugin = &*self.plugin;
        let message = truncate(message, MAX_TEXT_BYTES);
        match level {
            host::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            host::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            host::LogLevel::Info => tracing::info!(plugin, "{message}"),
            host::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            host::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn is_dir(&mut self, path: String) -> bool {
        !path.is_empty() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.settings.keys().cloned().collect()
    }
}

/// Bounds one instance's linear memory and remembers a refused growth, so the resulting
/// trap can be reported as "out of memory".
struct MemoryLimiter {
    limit: usize,
    denied: Option<usize>,
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

fn to_wit_request(r: &StartRequest) -> types::StartRequest {
    types::StartRequest {
        command: r.command.clone(),
        workdir: r.workdir.clone(),
        env: r.env.clone(),
        background: r.background,
        timeout_seconds: r.timeout_seconds,
    }
}

fn from_wit_request(r: types::StartRequest) -> StartRequest {
    StartRequest {
        command: r.command,
        workdir: r.workdir,
        env: r.env,
        background: r.background,
        timeout_seconds: r.timeout_seconds,
    }
}

fn to_wit_context(c: &PolicyContext) -> types::Context {
    types::Context {
        chat_id: c.chat_id.clone(),
        agent_workdir: c.agent_workdir.clone(),
        home: c.home.clone(),
    }
}

/// CPU time spent running one call. The call is a future that may be polled on different
/// threads (after a sleep or a yield), so each poll measures its own thread's CPU time: the
/// total of finished polls plus what the current poll has used so far.
#[derive(Default)]
struct CpuMeter {
    /// Nanoseconds used by finished polls.
    spent: AtomicU64,
    /// Thread CPU time, in nanoseconds, when the current poll began; `u64::MAX` if it
    /// could not be read.
    poll_start: AtomicU64,
}

impl CpuMeter {
    /// Polls `fut` to completion, metering every poll, inside `timers`' runtime context.
    async fn run<F: Future>(&self, timers: &tokio::runtime::Handle, fut: F) -> F::Output {
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
    fn used(&self) -> Option<Duration> {
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that lives across the call, and
    // `CLOCK_THREAD_CPUTIME_ID` is a clock id the kernel knows; the call writes only `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

pub(crate) fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" [truncated]");
    }
    s
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_what_the_bytes_are() {
        let e = check_component_header(b"(component)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("magic"), "{e}");
        let e = check_component_header(b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = check_component_header(b"\0asm\x0d\0\x02\0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown"), "{e}");
        check_component_header(b"\0asm\x0d\0\x01\0").unwrap();
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

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h [truncated]");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }

    #[test]
    fn failures_read_well() {
        let oom = PluginFailure::OutOfMemory {
            limit_bytes: 64 << 20,
            requested_bytes: (64 << 20) + (64 << 10),
        };
        assert_eq!(
            oom.to_string(),
            "out of memory: tried to grow its memory to 64.1 MiB, over its limit of 64 MiB"
        );
        assert_eq!(
            PluginFailure::Timeout {
                limit_ms: 10,
                wall_clock: false
            }
            .to_string(),
            "took longer than 10 ms (its CPU time limit) and was stopped"
        );
    }
}
