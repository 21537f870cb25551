//! The loaded filters, in order, and one pass of an output through them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::FilterContext;
use super::config::{FilterCode, FilterSource};
use super::native::{self, NativeFilter};
use super::state::FilterState;
use super::wit::{FilterPlugin, FilterPluginPre, types};
use crate::policy::OnError;
use crate::policy::cache::ArtifactCache;
use crate::policy::clock::CallClock;
use crate::policy::config::flatten_settings;
use crate::policy::engine::{EngineOptions, PolicyEngine};
use crate::policy::instance::CpuMeter;
use crate::policy::memo::Nondeterminism;
use crate::policy::stdio::Capture;
use crate::policy::wasm_err;

/// Filter calls that may run at once (instance slots of the engine's pool, beyond the ready
/// instances).
const MAX_CONCURRENT_CALLS: u32 = 64;
/// Instances of each filter created ahead of the calls that will use them.
const READY_PER_FILTER: usize = 2;
/// A call is stopped after this many times its CPU budget in real time.
const WALL_CLOCK_FACTOR: u32 = 10;
/// Bytes of a filter's stderr kept per instance, to explain a trap.
const STDERR_CAPTURE_BYTES: usize = 2048;

/// An output after the chain: the text to send and how many changes the filters made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub text: String,
    pub redactions: u32,
}

/// A filter failed and its `on_error` is `deny`: the output is withheld. `Display` is the
/// sentence clients get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub filter: String,
    pub reason: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Output filter \"{}\" {}, so the output was withheld (the filter's on_error is \
             \"deny\").",
            self.filter, self.reason
        )
    }
}

impl std::error::Error for FilterError {}

/// One filter's counters, for `/api/v0/health`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilterHealth {
    pub name: String,
    pub origin: String,
    /// `native` (a built-in running as host code) or `component` (WebAssembly).
    pub runs: String,
    pub on_error: String,
    pub calls: u64,
    pub redactions: u64,
    pub failures: u64,
    /// Failures since the last successful call.
    pub consecutive_failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// The output filters in force, in order. Cloning shares them. The default has none.
#[derive(Clone, Default)]
pub struct FilterChain {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// The engine of the component filters; none when every filter is native.
    engine: Option<PolicyEngine>,
    filters: Vec<Loaded>,
}

struct Loaded {
    name: Arc<str>,
    origin: String,
    on_error: OnError,
    code: Code,
    counters: Counters,
}

enum Code {
    /// Called in place, on the caller's thread.
    Native(Arc<dyn NativeFilter>),
    Component(Box<Component>),
}

/// A loaded filter component and its limits.
struct Component {
    name: Arc<str>,
    pre: FilterPluginPre<FilterState>,
    settings: Arc<BTreeMap<String, String>>,
    budget: Duration,
    max_memory_bytes: u64,
    /// Instances nobody has called yet.
    ready: Mutex<Vec<Ready>>,
}

/// An instance that has never been called.
struct Ready {
    store: Store<FilterState>,
    bindings: FilterPlugin,
    stderr: Capture,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    redactions: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FilterChain {
    /// Loads every source and creates each component filter's first instances. A filter that
    /// cannot be loaded (unreadable, not a component, wrong world, imports not granted, traps
    /// while instantiating) fails the load naming it, unless its `on_error` is `allow`: then
    /// it is left out with an error in the log. Compiled code is cached under `cache_dir`.
    /// Native built-ins need no engine: a chain of only those starts none.
    pub fn load(
        sources: &[FilterSource],
        cache_dir: Option<PathBuf>,
        cache_max_bytes: u64,
    ) -> anyhow::Result<Self> {
        if sources.is_empty() {
            return Ok(Self::default());
        }
        let components: Vec<&FilterSource> = sources
            .iter()
            .filter(|s| !matches!(s.code, FilterCode::Native { .. }))
            .collect();
        let engine = if components.is_empty() {
            None
        } else {
            let max_memory_bytes = components
                .iter()
                .map(|s| s.max_memory_bytes)
                .max()
                .unwrap_or(0);
            let ready_slots =
                u32::try_from(components.len() * READY_PER_FILTER).unwrap_or(u32::MAX);
            let engine = PolicyEngine::new(EngineOptions {
                max_instances: MAX_CONCURRENT_CALLS.saturating_add(ready_slots),
                max_memory_bytes,
            })?;
            let cache =
                ArtifactCache::new(cache_dir, engine.fingerprint()).with_max_bytes(cache_max_bytes);
            let linker = new_linker(&engine)?;
            Some((engine, cache, linker))
        };
        let mut filters = Vec::new();
        for src in sources {
            let loaded = match (&src.code, &engine) {
                (FilterCode::Native { make, .. }, _) => Ok(load_native(src, *make)),
                (_, Some((engine, cache, linker))) => load_one(engine, linker, cache, src),
                (_, None) => Err(anyhow::anyhow!("no engine for a component filter")),
            };
            match loaded {
                Ok(loaded) => filters.push(loaded),
                Err(e) if src.on_error == OnError::Allow => tracing::error!(
                    filter = %src.name, origin = %src.origin(),
                    "cannot load output filter; running without it (on_error = allow): {e:#}"
                ),
                Err(e) => anyhow::bail!(
                    "output filter \"{}\" ({}) cannot be loaded: {e:#}; fix it, remove it, or \
                     give it on_error = \"allow\" to run without it",
                    src.name,
                    src.origin()
                ),
            }
        }
        let inner = Arc::new(Inner {
            engine: engine.map(|(engine, _, _)| engine),
            filters,
        });
        if inner.engine.is_none() {
            return Ok(Self { inner: Some(inner) });
        }
        // Creating instances runs guest code on a fiber with timers; on its own thread, so
        // that `load` may be called from inside an async runtime or outside one.
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a runtime to load output filters")?;
                for (index, f) in inner.filters.iter().enumerate() {
                    if matches!(f.code, Code::Native(_)) {
                        continue;
                    }
                    runtime.block_on(inner.refill(index)).map_err(|reason| {
                        anyhow::anyhow!(
                            "output filter \"{}\" ({}) cannot be instantiated: it {reason}",
                            f.name,
                            f.origin
                        )
                    })?;
                }
                anyhow::Ok(())
            })
            .join()
        })
        .map_err(|_| anyhow::anyhow!("loading output filters panicked"))??;
        Ok(Self { inner: Some(inner) })
    }

    /// Whether no filter runs.
    pub fn is_empty(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.filters.is_empty())
    }

    /// The filters, in order.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .as_ref()
            .map(|i| i.filters.iter().map(|f| f.name.to_string()).collect())
            .unwrap_or_default()
    }

    /// Every filter's counters, in order.
    pub fn health(&self) -> Vec<FilterHealth> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        inner
            .filters
            .iter()
            .map(|f| {
                let c = &f.counters;
                FilterHealth {
                    name: f.name.to_string(),
                    origin: f.origin.clone(),
                    runs: match f.code {
                        Code::Native(_) => "native",
                        Code::Component(_) => "component",
                    }
                    .into(),
                    on_error: f.on_error.to_string(),
                    calls: c.calls.load(Ordering::Relaxed),
                    redactions: c.redactions.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                    consecutive_failures: c.consecutive_failures.load(Ordering::Relaxed),
                    last_failure: lock(&c.last_failure).clone(),
                }
            })
            .collect()
    }

    /// Passes `text` through every filter in order. A filter that fails is skipped if its
    /// `on_error` is `allow`; otherwise the output is withheld with an error naming it.
    pub async fn apply(&self, text: String, ctx: &FilterContext) -> Result<Filtered, FilterError> {
        let mut out = Filtered {
            text,
            redactions: 0,
        };
        let Some(inner) = &self.inner else {
            return Ok(out);
        };
        for (index, f) in inner.filters.iter().enumerate() {
            let c = &f.counters;
            c.calls.fetch_add(1, Ordering::Relaxed);
            let result = match &f.code {
                Code::Native(filter) => native::call(filter.as_ref(), &out.text, ctx),
                Code::Component(_) => inner
                    .call(index, &out.text, ctx)
                    .await
                    .map(|f| Some((f.text, f.redactions))),
            };
            match result {
                Ok(changed) => {
                    c.consecutive_failures.store(0, Ordering::Relaxed);
                    if let Some((text, redactions)) = changed {
                        c.redactions.fetch_add(redactions.into(), Ordering::Relaxed);
                        out.text = text;
                        out.redactions = out.redactions.saturating_add(redactions);
                    }
                }
                Err(reason) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    c.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                    *lock(&c.last_failure) = Some(reason.clone());
                    tracing::warn!(filter = %f.name, on_error = %f.on_error, "output filter failed: {reason}");
                    if f.on_error == OnError::Deny {
                        return Err(FilterError {
                            filter: f.name.to_string(),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Inner {
    /// One call of filter `index` in an instance nobody has called: a ready one if there is
    /// one, else one made now. The spent instance is dropped, and the ready ones refilled,
    /// after the call, off the caller's path.
    async fn call(
        self: &Arc<Self>,
        index: usize,
        text: &str,
        ctx: &FilterContext,
    ) -> Result<types::Filtered, String> {
        let f = self.component(index)?;
        let ready = lock(&f.ready).pop();
        let mut instance = match ready {
            Some(instance) => instance,
            None => self.instantiate(f).await?,
        };
        let result = self.run(f, &mut instance, text, ctx).await;
        let this = self.clone();
        tokio::spawn(async move {
            drop(instance);
            if let Err(reason) = this.refill(index).await {
                tracing::debug!(filter = %this.filters[index].name, "cannot create a filter instance ahead: {reason}");
            }
        });
        result
    }

    /// Filter `index`, which is a component.
    fn component(&self, index: usize) -> Result<&Component, String> {
        match &self.filters[index].code {
            Code::Component(c) => Ok(c),
            Code::Native(_) => Err("is native and has no instances".into()),
        }
    }

    /// The engine of the component filters.
    fn engine(&self) -> Result<&PolicyEngine, String> {
        self.engine
            .as_ref()
            .ok_or_else(|| "has no engine to run in".into())
    }

    /// Creates instances of filter `index` until it has its ready ones.
    async fn refill(&self, index: usize) -> Result<(), String> {
        let f = self.component(index)?;
        while lock(&f.ready).len() < READY_PER_FILTER {
            let instance = self.instantiate(f).await?;
            let mut ready = lock(&f.ready);
            if ready.len() < READY_PER_FILTER {
                ready.push(instance);
            }
        }
        Ok(())
    }

    /// A new instance, created within the filter's CPU and memory limits.
    async fn instantiate(&self, f: &Component) -> Result<Ready, String> {
        let engine = self.engine()?;
        let stderr = Capture::new(STDERR_CAPTURE_BYTES);
        let wall = f.budget * WALL_CLOCK_FACTOR;
        let mut store = Store::new(
            engine.engine(),
            FilterState::new(
                f.name.clone(),
                f.settings.clone(),
                WasiCtxBuilder::new()
                    .stderr(stderr.clone())
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .build(),
                CallClock::new(wall, Nondeterminism::default()),
                f.max_memory_bytes,
            ),
        );
        store.limiter(|s| &mut s.limiter);
        let meter = Arc::new(CpuMeter::default());
        arm_cpu_budget(&mut store, f.budget, meter.clone());
        let timers = tokio::runtime::Handle::current();
        let created = {
            let _running = engine.begin_call();
            tokio::time::timeout(
                wall,
                meter.run(&timers, f.pre.instantiate_async(&mut store)),
            )
            .await
        };
        match created {
            Ok(Ok(bindings)) => Ok(Ready {
                store,
                bindings,
                stderr,
            }),
            Ok(Err(e)) => Err(describe(f, &store, Some(&e), &stderr)),
            Err(_elapsed) => Err(describe(f, &store, None, &stderr)),
        }
    }

    /// `on-output` once, with a fresh CPU budget and real-time cap.
    async fn run(
        &self,
        f: &Component,
        instance: &mut Ready,
        text: &str,
        ctx: &FilterContext,
    ) -> Result<types::Filtered, String> {
        let wall = f.budget * WALL_CLOCK_FACTOR;
        instance.store.data().clock.arm(wall);
        let meter = Arc::new(CpuMeter::default());
        arm_cpu_budget(&mut instance.store, f.budget, meter.clone());
        let timers = tokio::runtime::Handle::current();
        let result = {
            let _running = self.engine()?.begin_call();
            let call = instance.bindings.procwarden_filter_filter().call_on_output(
                &mut instance.store,
                text,
                ctx,
            );
            tokio::time::timeout(wall, meter.run(&timers, call)).await
        };
        match result {
            Ok(Ok(filtered)) => Ok(filtered),
            Ok(Err(e)) => Err(describe(f, &instance.store, Some(&e), &instance.stderr)),
            Err(_elapsed) => Err(describe(f, &instance.store, None, &instance.stderr)),
        }
    }
}

/// A native built-in, made from its flattened settings as its component would read them.
fn load_native(src: &FilterSource, make: native::MakeNative) -> Loaded {
    tracing::debug!(filter = %src.name, origin = %src.origin(), "loaded output filter (native)");
    Loaded {
        name: src.name.as_str().into(),
        origin: src.origin(),
        on_error: src.on_error,
        code: Code::Native(make(&flatten_settings(&src.settings))),
        counters: Counters::default(),
    }
}

fn load_one(
    engine: &PolicyEngine,
    linker: &Linker<FilterState>,
    cache: &ArtifactCache,
    src: &FilterSource,
) -> anyhow::Result<Loaded> {
    let bytes: std::borrow::Cow<'_, [u8]> = match &src.code {
        FilterCode::File(path) => std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into(),
        FilterCode::Bytes { bytes, .. } => (&bytes[..]).into(),
        FilterCode::Native { .. } => anyhow::bail!("a native built-in is not a component"),
    };
    anyhow::ensure!(
        bytes.starts_with(b"\0asm\x0d\0\x01\0"),
        "not a WebAssembly component (build the filter for wasm32-wasip2)"
    );
    let (component, _status) = cache
        .load(engine.engine(), &bytes, &src.name)
        .context("not a valid WebAssembly component")?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(wasm_err)
        .context(
            "it imports something output filters are not granted (they may import the `host` \
         interface of procwarden:filter and WASI's cli, clocks, io and random interfaces)",
        )?;
    let pre = FilterPluginPre::new(pre).map_err(wasm_err).context(
        "it does not implement the output filter world procwarden:filter/filter-plugin@0.1.0 \
         (it must export the `filter` interface)",
    )?;
    tracing::debug!(filter = %src.name, origin = %src.origin(), "loaded output filter");
    let name: Arc<str> = src.name.as_str().into();
    Ok(Loaded {
        name: name.clone(),
        origin: src.origin(),
        on_error: src.on_error,
        code: Code::Component(Box::new(Component {
            name,
            pre,
            settings: Arc::new(flatten_settings(&src.settings)),
            budget: Duration::from_millis(src.cpu_budget_ms),
            max_memory_bytes: src.max_memory_bytes,
            ready: Mutex::new(Vec::new()),
        })),
        counters: Counters::default(),
    })
}

/// Checks the CPU budget at every epoch tick (thread CPU time spent polling the call); in
/// between, the call yields so the real-time cap can stop a guest that spins.
fn arm_cpu_budget(store: &mut Store<FilterState>, budget: Duration, meter: Arc<CpuMeter>) {
    let start = std::time::Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_ctx| {
        let used = meter.used().unwrap_or_else(|| start.elapsed());
        if used >= budget {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Why a call or an instantiation stopped without an answer (`error` is `None` when the
/// real-time cap stopped it), as words after the filter's name.
fn describe(
    f: &Component,
    store: &Store<FilterState>,
    error: Option<&wasmtime::Error>,
    stderr: &Capture,
) -> String {
    let Some(error) = error else {
        return format!(
            "took longer than {} ms in real time and was stopped",
            (f.budget * WALL_CLOCK_FACTOR).as_millis()
        );
    };
    if let Some(requested) = store.data().limiter.denied {
        return format!(
            "ran out of memory: tried to grow its memory to {requested} bytes, over its limit \
             of {} bytes (max_memory_bytes)",
            f.max_memory_bytes
        );
    }
    let stderr = stderr
        .summary()
        .map(|s| format!(" (stderr: {s})"))
        .unwrap_or_default();
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "used more than its {} ms of CPU time (cpu_budget_ms) and was stopped",
            f.budget.as_millis()
        ),
        Some(trap) => {
            let message = trap.to_string();
            let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
            format!("trapped: {message}{stderr}")
        }
        None => format!("failed: {}{stderr}", error.root_cause()),
    }
}

/// The granted WASI interfaces (the same as policy plugins': no files, sockets or
/// environment) plus the filter package's `host`.
fn new_linker(engine: &PolicyEngine) -> anyhow::Result<Linker<FilterState>> {
    let mut linker = Linker::new(engine.engine());
    crate::policy::wasi::add_to_linker(&mut linker).map_err(wasm_err)?;
    FilterPlugin::add_to_linker::<FilterState, HasSelf<FilterState>>(&mut linker, |s| s)
        .map_err(wasm_err)?;
    Ok(linker)
}
