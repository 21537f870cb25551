//! One loaded policy plugin: validated, compiled, pre-instantiated, with its settings and
//! limits, and how one call of it runs in a fresh, bounded instance.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::Trap;
use wasmtime::component::Linker;

use super::cache::{ArtifactCache, CacheStatus};
use super::config::{self, OnError, PluginCode, PluginSource, PolicyConfig, flatten_settings};
use super::engine::PolicyEngine;
use super::instance::{Fault, HostState, InstanceSpec, ReadyInstance, SpentInstance};
use super::memo::{Memo, Remembered};
use super::native::{self, NativePolicy};
use super::wit::PolicyPre;
use super::{PolicyContext, WitRequest, wasm_err};
use procwarden_process::sync::lock;

/// A call is stopped after this many times its CPU budget in real time, however little CPU
/// it got.
pub const WALL_CLOCK_FACTOR: u64 = 10;

/// A plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(WitRequest),
    Deny(String),
}

/// A plugin's answer to one call, and whether it was remembered rather than computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub verdict: Verdict,
    pub remembered: bool,
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
    /// The version of `procwarden:policy` the component was built against (`0.1.0`,
    /// `0.2.0`); empty if it could not be loaded.
    pub wit_version: &'static str,
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
    /// Calls answered with a remembered answer instead of running the plugin.
    pub remembered: u64,
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
    remembered: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl HealthCounters {
    /// Counts one call; returns the number of consecutive failures including this one.
    pub fn record(&self, outcome: &Result<Answer, PluginFailure>, micros: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Ok(a) if a.remembered) {
            self.remembered.fetch_add(1, Ordering::Relaxed);
        }
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
        match outcome {
            Ok(a) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                match a.verdict {
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
            remembered: self.remembered.load(Ordering::Relaxed),
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
    /// Paths the operator allowed `read-file` under.
    pub read_paths: Arc<[std::path::PathBuf]>,
    pub load: LoadReport,
    pub health: HealthCounters,
    /// Why loading failed; `None` when `pre` (or `native`) is ready.
    pub load_error: Option<String>,
    /// `native` or `component` (see [`PluginCode::runs`]).
    pub runs: &'static str,
    pre: Option<PolicyPre>,
    /// A native built-in runs this instead of a component (see [`super::native`]).
    native: Option<Box<dyn NativePolicy>>,
    /// The instance the next call runs in, created after the previous call; or why creating
    /// it failed (the next call reports that).
    spare: Mutex<Option<Result<ReadyInstance, PluginFailure>>>,
    /// A spare is being created (one at a time is enough).
    refilling: AtomicBool,
    /// Answers given before, by request and context.
    memo: Memo,
}

/// Builds the linker every plugin is instantiated with: the granted WASI interfaces (see
/// [`super::wasi`]) plus the `host` interface of every version of the world.
pub(crate) fn new_linker(engine: &PolicyEngine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine.engine());
    super::wasi::add_to_linker(&mut linker).map_err(wasm_err)?;
    super::wit::add_to_linker(&mut linker).map_err(wasm_err)?;
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
            PluginCode::Native { name: builtin } => {
                return Self::load_native(src, defaults, name, origin, builtin, start);
            }
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
                "it imports something policy plugins are not granted (they may import the \
                 `host` interface of procwarden:policy, and WASI's cli, clocks, io and random \
                 interfaces: no files, no sockets)",
            )?;
        let pre = PolicyPre::new(pre)?;
        let load = LoadReport {
            cache: cache_status,
            micros: micros_since(start),
            component_bytes: wasm.len(),
            wit_version: pre.version(),
        };
        tracing::info!(
            plugin = name,
            origin,
            cache = %load.cache,
            micros = load.micros,
            bytes = load.component_bytes,
            wit = load.wit_version,
            "loaded policy plugin"
        );
        Ok(Self {
            name: name.into(),
            origin: origin.to_owned(),
            on_error: src.on_error,
            timeout_ms,
            max_memory_bytes,
            settings: Arc::new(flatten_settings(&src.settings)),
            read_paths: src.read_paths.clone().into(),
            load,
            health: HealthCounters::default(),
            load_error: None,
            runs: src.code.runs(),
            pre: Some(pre),
            native: None,
            spare: Mutex::new(None),
            refilling: AtomicBool::new(false),
            memo: Memo::new(defaults.remembered_answers),
        })
    }

    /// A native built-in: its settings parsed once, no component, no instances. Its
    /// `timeout_ms` and `max_memory_bytes` are kept for reports but do not apply.
    fn load_native(
        src: &PluginSource,
        defaults: &PolicyConfig,
        name: &str,
        origin: &str,
        builtin: &str,
        start: Instant,
    ) -> anyhow::Result<Self> {
        let settings = flatten_settings(&src.settings);
        let native = native::build(builtin, name, &settings)
            .with_context(|| format!("there is no native built-in plugin {builtin:?}"))?;
        let load = LoadReport {
            cache: CacheStatus::Off,
            micros: micros_since(start),
            component_bytes: 0,
            // The native built-ins are the logic of procwarden:policy@0.1.0 plugins.
            wit_version: "0.1.0",
        };
        tracing::info!(
            plugin = name,
            origin,
            micros = load.micros,
            "loaded native built-in policy plugin"
        );
        Ok(Self {
            native: Some(native),
            runs: src.code.runs(),
            ..Self::unloadable(src, defaults, String::new())
        }
        .loaded(load, settings))
    }

    /// Marks a plugin built by [`Plugin::unloadable`] as loaded.
    fn loaded(mut self, load: LoadReport, settings: BTreeMap<String, String>) -> Self {
        self.load = load;
        self.load_error = None;
        self.settings = Arc::new(settings);
        self
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
            read_paths: src.read_paths.clone().into(),
            load: LoadReport {
                cache: super::cache::CacheStatus::Off,
                micros: 0,
                component_bytes: 0,
                wit_version: "",
            },
            health: HealthCounters::default(),
            load_error: Some(error),
            runs: src.code.runs(),
            pre: None,
            native: None,
            spare: Mutex::new(None),
            refilling: AtomicBool::new(false),
            memo: Memo::new(0),
        }
    }

    /// Answers `req`: with the answer remembered from an earlier call if there is one
    /// (`recall`, see [`super::memo`]), else by running `on-start` once in an instance
    /// nobody has called, with this plugin's CPU and memory bounds. The spent instance goes
    /// to `spent`, for the caller to drop after the request has moved on.
    ///
    /// The call runs on the polling thread (a fiber switch, no thread hop). `timers` is the
    /// runtime whose clock the plugin's sleeps use: it is entered on every poll, so the
    /// caller's runtime needs no timers of its own.
    pub async fn call(
        &self,
        engine: &PolicyEngine,
        timers: &tokio::runtime::Handle,
        req: &WitRequest,
        ctx: &PolicyContext,
        spent: &mut Vec<SpentInstance>,
        recall: bool,
    ) -> Result<Answer, PluginFailure> {
        if let Some(native) = &self.native {
            // Answering costs less than looking up a remembered answer: nothing to recall.
            return native::call(native.as_ref(), &self.name, req, ctx).map(|verdict| Answer {
                verdict,
                remembered: false,
            });
        }
        if recall && let Some(known) = self.memo.recall(req, ctx) {
            for line in &known.observed.logs {
                line.emit(&self.name);
            }
            super::instance::warn_dropped_logs(&self.name, known.observed.logs_dropped);
            return Ok(Answer {
                verdict: known.verdict.clone(),
                remembered: true,
            });
        }
        let ready = match self.take_spare() {
            Some(ready) => ready?,
            None => self.create_instance(engine, timers).await?,
        };
        let (outcome, used) = ready.call(engine, timers, self.budget(), req, ctx).await;
        spent.push(used);
        let (verdict, observed) = outcome.map_err(|fault| self.classify(fault))?;
        if recall && let Some(observed) = observed {
            let verdict = verdict.clone();
            self.memo
                .remember(req, ctx, Remembered { verdict, observed });
        }
        Ok(Answer {
            verdict,
            remembered: false,
        })
    }

    /// Creates the instance the next call will run in, unless one is ready. A failure that
    /// says something about the plugin (a trap, a timeout, running out of memory) is kept
    /// for the next call to report; one that does not (the instance pool is full right now)
    /// is dropped, and the next call creates its own instance.
    pub async fn refill(&self, engine: &PolicyEngine, timers: &tokio::runtime::Handle) {
        if self.pre.is_none() || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however this ends: a refill dropped part-way (its runtime shutting down)
        // must not leave the plugin without ready instances for good.
        let _refilling = ClearOnDrop(&self.refilling);
        if lock(&self.spare).is_none() {
            let created = self.create_instance(engine, timers).await;
            if !matches!(created, Err(PluginFailure::Instantiate { .. })) {
                lock(&self.spare).get_or_insert(created);
            }
        }
    }

    /// Whether [`Plugin::refill`] has anything to do.
    pub fn needs_refill(&self) -> bool {
        self.pre.is_some() && !self.refilling.load(Ordering::Acquire) && lock(&self.spare).is_none()
    }

    #[cfg(test)]
    pub fn has_spare(&self) -> bool {
        matches!(*lock(&self.spare), Some(Ok(_)))
    }

    fn take_spare(&self) -> Option<Result<ReadyInstance, PluginFailure>> {
        lock(&self.spare).take()
    }

    async fn create_instance(
        &self,
        engine: &PolicyEngine,
        timers: &tokio::runtime::Handle,
    ) -> Result<ReadyInstance, PluginFailure> {
        let Some(pre) = &self.pre else {
            return Err(PluginFailure::NotLoaded {
                message: self.load_error.clone().unwrap_or_default(),
            });
        };
        let spec = InstanceSpec {
            pre,
            plugin: &self.name,
            settings: &self.settings,
            read_paths: &self.read_paths,
            budget: self.budget(),
            max_memory_bytes: self.max_memory_bytes,
        };
        ReadyInstance::create(&spec, engine, timers)
            .await
            .map_err(|fault| self.classify(fault))
    }

    fn budget(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn classify(&self, fault: Fault) -> PluginFailure {
        if let Some(requested) = fault.memory_denied {
            return PluginFailure::OutOfMemory {
                limit_bytes: self.max_memory_bytes,
                requested_bytes: requested as u64,
            };
        }
        if let Some(trap) = fault.error.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return PluginFailure::Timeout {
                    limit_ms: self.timeout_ms,
                    wall_clock: fault.timed_out.unwrap_or(false),
                };
            }
            let message = trap.to_string();
            return PluginFailure::Trap {
                message: message
                    .strip_prefix("wasm trap: ")
                    .map_or(message.clone(), str::to_owned),
                stderr: fault.stderr,
            };
        }
        if let Some(exit) = fault.error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return PluginFailure::Exit { code: exit.0 };
        }
        let message = fault.error.root_cause().to_string();
        if fault.instantiating {
            PluginFailure::Instantiate { message }
        } else {
            PluginFailure::Trap {
                message,
                stderr: fault.stderr,
            }
        }
    }
}

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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
