//! The loaded tool components and the tools they offer; one call of a tool in a fresh,
//! bounded instance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::args::ArgNames;
use super::config::ToolSource;
use super::host::{MemoryLimiter, ToolState};
use super::wit::{ToolPlugin, ToolPluginPre, types};
use super::{CallScope, ProcessHost};
use crate::policy::clock::CallClock;
use crate::policy::config::flatten_settings;
use crate::policy::engine::{EngineOptions, PolicyEngine};
use crate::policy::instance::CpuMeter;
use crate::policy::memo::Nondeterminism;
use crate::policy::stdio::Capture;
use crate::policy::wasm_err;

/// Tool calls that may run at once (instance slots of the engine's pool).
const MAX_CONCURRENT_CALLS: u32 = 64;
/// Bytes of a tool's stderr kept per call, to explain a trap.
const STDERR_CAPTURE_BYTES: usize = 4096;
/// Real-time limit of the `tools` call made when loading.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One tool, as front ends list it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolSpec {
    pub name: String,
    /// Written for a model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// The component that offers it (its `[[tool]]` name).
    pub component: String,
}

/// A tool's successful result.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutput {
    Text(String),
    Json(Value),
}

/// Why a tool call produced no result. `Display` is the sentence clients see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCallError {
    /// No loaded tool has this name.
    UnknownTool {
        name: String,
        available: Vec<String>,
    },
    /// The arguments do not fit the tool (checked by the host, or refused by the tool).
    InvalidArguments { tool: String, message: String },
    /// The tool ran and reported a failure.
    Failed { tool: String, message: String },
    /// The tool's component misbehaved (trap, CPU or real-time limit, memory) or could not
    /// be loaded or instantiated.
    Fault { tool: String, reason: String },
}

impl std::fmt::Display for ToolCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownTool { name, available } if available.is_empty() => {
                write!(f, "Unknown tool \"{name}\": no tool plugins are loaded.")
            }
            Self::UnknownTool { name, available } => write!(
                f,
                "Unknown tool \"{name}\". Tools: {}.",
                available.join(", ")
            ),
            Self::InvalidArguments { message, .. } => f.write_str(message),
            Self::Failed { tool, message } => write!(f, "Tool \"{tool}\" failed: {message}"),
            Self::Fault { tool, reason } => write!(
                f,
                "Tool plugin \"{tool}\" {reason}. Processes it started are still tracked \
                 (list them with process_list)."
            ),
        }
    }
}

/// What makes a call of a component.
struct LoadedComponent {
    name: Arc<str>,
    pre: ToolPluginPre<ToolState>,
    settings: Arc<BTreeMap<String, String>>,
    timeout: Duration,
    cpu_budget: Duration,
    max_memory_bytes: u64,
}

struct Entry {
    spec: ToolSpec,
    args: ArgNames,
    /// Index into `components`.
    component: usize,
}

/// A component that could not be loaded: calls of a tool of that name fail naming why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadFailure {
    pub component: String,
    pub origin: String,
    pub error: String,
}

/// Every loaded tool component and the tools they offer.
#[derive(Default)]
pub struct ToolSet {
    inner: Option<Inner>,
    failures: Vec<LoadFailure>,
}

struct Inner {
    engine: PolicyEngine,
    components: Vec<LoadedComponent>,
    tools: Vec<Entry>,
}

/// Why one call stopped without an answer.
struct Fault {
    error: Option<wasmtime::Error>,
    timed_out: bool,
    memory_denied: Option<usize>,
    stderr: Option<String>,
}

impl ToolSet {
    /// Loads every source, calling each component's `tools`. A component that cannot be
    /// loaded (unreadable, not a component, wrong world, imports not granted, a bad tool
    /// list) is logged and kept as a [`LoadFailure`]; the others serve. `reserved` are names
    /// tools may not take (the agent's built-in tools).
    pub fn load(sources: &[ToolSource], reserved: &[&str]) -> anyhow::Result<Self> {
        if sources.is_empty() {
            return Ok(Self::default());
        }
        let max_memory_bytes = sources
            .iter()
            .map(|s| s.max_memory_bytes)
            .max()
            .unwrap_or(0);
        let engine = PolicyEngine::new(EngineOptions {
            max_instances: MAX_CONCURRENT_CALLS,
            max_memory_bytes,
        })?;
        let linker = new_linker(&engine)?;
        let mut inner = Inner {
            engine,
            components: Vec::new(),
            tools: Vec::new(),
        };
        let mut failures = Vec::new();
        // `tools` runs on a fiber with timers; on its own thread, so that `load` may be called
        // from inside an async runtime or outside one.
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a runtime to load tool plugins")?;
                for src in sources {
                    let origin = src.code.describe();
                    let loaded = runtime.block_on(inner.load_one(&linker, src, reserved));
                    match loaded {
                        Ok(names) => tracing::info!(
                            component = %src.name, %origin, tools = ?names, "loaded tool plugin"
                        ),
                        Err(e) => {
                            let error = format!("{e:#}");
                            tracing::error!(component = %src.name, %origin, "cannot load tool plugin: {error}");
                            failures.push(LoadFailure {
                                component: src.name.clone(),
                                origin,
                                error,
                            });
                        }
                    }
                }
                anyhow::Ok(())
            })
            .join()
        })
        .map_err(|_| anyhow::anyhow!("loading tool plugins panicked"))??;
        Ok(Self {
            inner: Some(inner),
            failures,
        })
    }

    /// Every tool, in load order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.inner
            .as_ref()
            .map(|i| i.tools.iter().map(|t| t.spec.clone()).collect())
            .unwrap_or_default()
    }

    /// Components that could not be loaded.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// Whether `name` is a loaded tool.
    pub fn contains(&self, name: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.tools.iter().any(|t| t.spec.name == name))
    }

    /// Runs tool `name` for `chat` with `args` (a JSON object). The tool's process calls go
    /// to `host`, scoped to `chat`.
    pub async fn invoke(
        &self,
        host: Arc<dyn ProcessHost>,
        name: &str,
        args: Value,
        chat: Option<&str>,
        agent_workdir: Option<&str>,
    ) -> Result<ToolOutput, ToolCallError> {
        let entry = self
            .inner
            .as_ref()
            .and_then(|i| i.tools.iter().find(|t| t.spec.name == name).map(|t| (i, t)));
        let Some((inner, entry)) = entry else {
            if let Some(f) = self.failures.iter().find(|f| f.component == name) {
                return Err(ToolCallError::Fault {
                    tool: name.to_owned(),
                    reason: format!("could not be loaded ({}): {}", f.origin, f.error),
                });
            }
            return Err(ToolCallError::UnknownTool {
                name: name.to_owned(),
                available: self.specs().into_iter().map(|s| s.name).collect(),
            });
        };
        let args =
            entry
                .args
                .check(name, args)
                .map_err(|message| ToolCallError::InvalidArguments {
                    tool: name.to_owned(),
                    message,
                })?;
        let args = Value::Object(args).to_string();
        let component = &inner.components[entry.component];
        let scope = CallScope {
            tool: name.into(),
            chat: chat.map(str::to_owned),
        };
        let ctx = types::Context {
            chat_id: scope.chat.clone(),
            agent_workdir: agent_workdir.map(str::to_owned),
            deadline_ms: u64::try_from(component.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let fault = |reason: String| ToolCallError::Fault {
            tool: name.to_owned(),
            reason,
        };
        let tool = name.to_owned();
        let result = inner
            .call(component, Some(host), scope, move |bindings, store| {
                Box::pin(async move {
                    bindings
                        .procwarden_tool_tools()
                        .call_invoke(store, &tool, &args, &ctx)
                        .await
                })
            })
            .await
            .map_err(|f| fault(describe(component, &f)))?;
        match result {
            Ok(types::ToolResult::Text(text)) => Ok(ToolOutput::Text(text)),
            Ok(types::ToolResult::Json(text)) => serde_json::from_str(&text)
                .map(ToolOutput::Json)
                .map_err(|e| fault(format!("returned JSON that does not parse ({e})"))),
            Err(types::ToolError::InvalidArguments(message)) => {
                Err(ToolCallError::InvalidArguments {
                    tool: name.to_owned(),
                    message: format!("Tool \"{name}\" refused its arguments: {message}"),
                })
            }
            Err(types::ToolError::Failed(message)) => Err(ToolCallError::Failed {
                tool: name.to_owned(),
                message,
            }),
        }
    }
}

type CallFn<R> = for<'a> fn(
    &'a ToolPlugin,
    &'a mut Store<ToolState>,
) -> futures::future::BoxFuture<'a, wasmtime::Result<R>>;

impl Inner {
    async fn load_one(
        &mut self,
        linker: &Linker<ToolState>,
        src: &ToolSource,
        reserved: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let bytes: std::borrow::Cow<'_, [u8]> = match &src.code {
            super::ToolCode::File(path) => std::fs::read(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .into(),
            super::ToolCode::Bytes { bytes, .. } => (&bytes[..]).into(),
        };
        anyhow::ensure!(
            bytes.starts_with(b"\0asm\x0d\0\x01\0"),
            "not a WebAssembly component (build the tool for wasm32-wasip2)"
        );
        let component = Component::new(self.engine.engine(), &bytes)
            .map_err(wasm_err)
            .context("not a valid WebAssembly component")?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(wasm_err)
            .context(
                "it imports something tool plugins are not granted (they may import \
                 procwarden:host/process, the `host` interface of procwarden:tool, and WASI's \
                 cli, clocks, io and random interfaces)",
            )?;
        let pre = ToolPluginPre::new(pre).map_err(wasm_err).context(
            "it does not implement the tool plugin world procwarden:tool/tool-plugin@0.1.0 \
             (it must export the `tools` interface)",
        )?;
        let component = LoadedComponent {
            name: src.name.as_str().into(),
            pre,
            settings: Arc::new(flatten_settings(&src.settings)),
            timeout: Duration::from_secs(src.timeout_seconds.into()),
            cpu_budget: Duration::from_millis(src.cpu_budget_ms),
            max_memory_bytes: src.max_memory_bytes,
        };
        let scope = CallScope {
            tool: component.name.clone(),
            chat: None,
        };
        let list: CallFn<Vec<types::ToolSpec>> = |bindings, store| {
            Box::pin(async move { bindings.procwarden_tool_tools().call_tools(store).await })
        };
        let listed = self
            .call_with(&component, None, scope, list, LIST_TIMEOUT)
            .await
            .map_err(|f| anyhow::anyhow!("its `tools` {}", describe(&component, &f)))?;
        let index = self.components.len();
        let mut names = Vec::new();
        let mut entries = Vec::new();
        for spec in listed {
            let name = spec.name;
            anyhow::ensure!(
                valid_name(&name),
                "tool name {name:?} is not lowercase letters, digits and `_` starting with a letter (at most 64)"
            );
            anyhow::ensure!(
                !reserved.contains(&name.as_str())
                    && !names.contains(&name)
                    && !self.tools.iter().any(|t| t.spec.name == name),
                "tool name \"{name}\" is already taken"
            );
            let schema: Value = serde_json::from_str(&spec.input_schema)
                .with_context(|| format!("tool \"{name}\": its input schema is not JSON"))?;
            let args = ArgNames::from_schema(&schema)
                .map_err(|e| anyhow::anyhow!("tool \"{name}\": {e}"))?;
            names.push(name.clone());
            entries.push(Entry {
                spec: ToolSpec {
                    name,
                    description: spec.description,
                    input_schema: schema,
                    component: src.name.clone(),
                },
                args,
                component: index,
            });
        }
        self.components.push(component);
        self.tools.extend(entries);
        Ok(names)
    }

    async fn call<R: Send>(
        &self,
        component: &LoadedComponent,
        host: Option<Arc<dyn ProcessHost>>,
        scope: CallScope,
        f: impl for<'a> FnOnce(
            &'a ToolPlugin,
            &'a mut Store<ToolState>,
        ) -> futures::future::BoxFuture<'a, wasmtime::Result<R>>
        + Send,
    ) -> Result<R, Fault> {
        self.call_with(component, host, scope, f, component.timeout)
            .await
    }

    /// One call in a fresh instance: instantiation and `f` share the CPU budget and the
    /// real-time limit `timeout`.
    async fn call_with<R: Send>(
        &self,
        component: &LoadedComponent,
        host: Option<Arc<dyn ProcessHost>>,
        scope: CallScope,
        f: impl for<'a> FnOnce(
            &'a ToolPlugin,
            &'a mut Store<ToolState>,
        ) -> futures::future::BoxFuture<'a, wasmtime::Result<R>>
        + Send,
        timeout: Duration,
    ) -> Result<R, Fault> {
        let stderr = Capture::new(STDERR_CAPTURE_BYTES);
        let deadline = Instant::now() + timeout;
        let mut store = Store::new(
            self.engine.engine(),
            ToolState {
                scope,
                host,
                settings: component.settings.clone(),
                deadline,
                wasi: WasiCtxBuilder::new()
                    .stderr(stderr.clone())
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .build(),
                clock: CallClock::new(timeout, Nondeterminism::default()),
                table: ResourceTable::new(),
                limiter: MemoryLimiter {
                    limit: usize::try_from(component.max_memory_bytes).unwrap_or(usize::MAX),
                    denied: None,
                },
                logs_left: super::host::LOG_LINES_PER_CALL,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let meter = Arc::new(CpuMeter::default());
        arm_cpu_budget(&mut store, component.cpu_budget, meter.clone());
        let timers = tokio::runtime::Handle::current();
        let result = {
            let _running = self.engine.begin_call();
            let pre = &component.pre;
            let call = async {
                let bindings = pre.instantiate_async(&mut store).await?;
                f(&bindings, &mut store).await
            };
            tokio::time::timeout(timeout, meter.run(&timers, call)).await
        };
        let fault = |error, timed_out| Fault {
            error,
            timed_out,
            memory_denied: store.data().limiter.denied,
            stderr: stderr.summary(),
        };
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(fault(Some(e), false)),
            Err(_elapsed) => Err(fault(None, true)),
        }
    }
}

/// Checks the CPU budget at every epoch tick: thread CPU time spent polling the call, so
/// time blocked in host calls (which run as their own tasks) does not count. Between checks
/// the call yields, so the real-time limit can stop a guest that spins.
fn arm_cpu_budget(store: &mut Store<ToolState>, budget: Duration, meter: Arc<CpuMeter>) {
    let start = Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_ctx| {
        let used = meter.used().unwrap_or_else(|| start.elapsed());
        if used >= budget {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

fn describe(component: &LoadedComponent, fault: &Fault) -> String {
    if fault.timed_out {
        return format!(
            "took longer than {} s (its real-time limit, timeout_seconds) and was stopped",
            component.timeout.as_secs()
        );
    }
    if let Some(requested) = fault.memory_denied {
        return format!(
            "ran out of memory: tried to grow its memory to {requested} bytes, over its limit \
             of {} bytes (max_memory_bytes)",
            component.max_memory_bytes
        );
    }
    let Some(error) = &fault.error else {
        return "failed".into();
    };
    let stderr = fault
        .stderr
        .as_deref()
        .map(|s| format!(" (stderr: {s})"))
        .unwrap_or_default();
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "used more than its {} ms of CPU time (cpu_budget_ms) and was stopped",
            component.cpu_budget.as_millis()
        ),
        Some(trap) => {
            let message = trap.to_string();
            let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
            format!("trapped: {message}{stderr}")
        }
        None => format!("failed: {}{stderr}", error.root_cause()),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The granted WASI interfaces (the same as policy plugins': no files, sockets or
/// environment) plus `procwarden:host/process` and the tool package's `host`.
fn new_linker(engine: &PolicyEngine) -> anyhow::Result<Linker<ToolState>> {
    let mut linker = Linker::new(engine.engine());
    crate::policy::wasi::add_to_linker(&mut linker).map_err(wasm_err)?;
    ToolPlugin::add_to_linker::<ToolState, HasSelf<ToolState>>(&mut linker, |s| s)
        .map_err(wasm_err)?;
    Ok(linker)
}
