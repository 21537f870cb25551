//! The ordered chain of plugins every start request passes through.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use super::audit::{AuditLog, AuditRecord, RequestId, changed_fields, now_unix};
use super::cache::ArtifactCache;
use super::config::{self, OnError, PluginSource, PolicyConfig};
use super::engine::{EngineOptions, PolicyEngine};
use super::instance::SpentInstance;
use super::observer::{CallObserver, CallOutcome, PluginCall};
use super::plugin::{
    Answer, LoadReport, Plugin, PluginFailure, PluginHealth, Verdict, micros_since,
};
use super::worker::{Workers, contained};
use super::{Denial, DenialCause, PolicyContext, StartRequest, WitRequest};

/// An ordered list of policy plugins. Cloning is cheap and shares the plugins.
#[derive(Clone, Default)]
pub struct PolicyChain {
    inner: Option<Arc<ChainInner>>,
}

struct ChainInner {
    plugins: Vec<Plugin>,
    audit: Option<AuditLog>,
    workers: Workers,
    cache_dir: Option<PathBuf>,
    /// Spent instances handed to a recycling task and not yet dropped.
    spent_pending: AtomicUsize,
    /// Most spent instances left for later at once; beyond this they are dropped at once.
    max_spent_pending: usize,
    engine: PolicyEngine,
    /// Sees every counted call (metrics); set once, after loading.
    observer: OnceLock<CallObserver>,
}

/// What one plugin did in a dry run ([`PolicyChain::explain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub plugin: String,
    pub outcome: StepOutcome,
    /// Time of the call, including creating the instance.
    pub micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum StepOutcome {
    /// The plugin let the request through, as it is here (possibly rewritten).
    Allowed { request: StartRequest },
    /// The plugin refused the request; the chain stops.
    Denied { reason: String },
    /// The plugin failed. With `on_error = deny` the chain stops with a denial; with
    /// `allow` the request went on unchanged.
    Failed { error: String, on_error: OnError },
}

/// The steps of a dry run and the result the chain would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub steps: Vec<StepReport>,
    pub result: Result<StartRequest, Denial>,
}

/// A loaded plugin, as configured.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    /// The component's path, `<built-in NAME>` (a native built-in) or `<built-in NAME.wasm>`
    /// (a component built into the binary).
    pub origin: String,
    /// `native` (the host's own code: no CPU budget or memory bound) or `component`.
    pub runs: &'static str,
    pub on_error: OnError,
    pub timeout_ms: u64,
    pub max_memory_bytes: u64,
    /// Keys the plugin can read with `config` (values are not shown: they may be secrets).
    pub setting_keys: Vec<String>,
    pub load: LoadReport,
    /// Why the component could not be loaded, if it could not.
    pub load_error: Option<String>,
}

impl PolicyChain {
    /// A chain that allows every request unchanged.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads `sources`, in order, into a chain. Fails for configuration errors (invalid
    /// `[policy]`, duplicate names, invalid memory limits). A plugin that cannot be loaded
    /// (unreadable, not a component, wrong world, ...) does not stop the agent: it is logged
    /// naming the plugin and its path, kept in the chain, and fails every call with that
    /// error, so its `on_error` applies ([`PluginInfo::load_error`] tells). Compiled code is
    /// cached per `config`.
    pub fn load(config: &PolicyConfig, sources: &[PluginSource]) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid [policy] configuration")?;
        if sources.is_empty() {
            return Ok(Self::empty());
        }
        let mut names = std::collections::BTreeSet::new();
        let mut pool_memory = config.default_max_memory_bytes;
        for src in sources {
            let name = src.effective_name();
            anyhow::ensure!(
                names.insert(name.clone()),
                "two policy plugins are named \"{name}\": give one a different `name`"
            );
            if let Some(m) = src.max_memory_bytes {
                config::check_memory(m, "max_memory_bytes").with_context(|| {
                    format!("policy plugin \"{name}\" ({})", src.code.describe())
                })?;
                pool_memory = pool_memory.max(m);
            }
        }

        // The pool holds, besides `max_instances` instances in calls, one ready instance
        // per plugin and one being created, and up to `max_instances` spent ones waiting to
        // be dropped.
        let plugin_slots = u32::try_from(sources.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(2);
        let engine = PolicyEngine::new(EngineOptions {
            max_instances: config
                .max_instances
                .saturating_mul(2)
                .saturating_add(plugin_slots),
            max_memory_bytes: pool_memory,
        })?;
        let cache = ArtifactCache::new(config.effective_cache_dir(), engine.fingerprint())
            .with_max_bytes(config.cache_max_bytes);
        let linker = super::plugin::new_linker(&engine)?;
        let plugins = sources
            .iter()
            .map(|src| {
                Plugin::load(&engine, &linker, &cache, src, config).unwrap_or_else(|err| {
                    let error = format!("{err:#}");
                    tracing::error!(on_error = %src.on_error, "{error}");
                    Plugin::unloadable(src, config, error)
                })
            })
            .collect::<Vec<_>>();
        let audit = config
            .audit_file
            .as_deref()
            .map(AuditLog::open)
            .transpose()?;
        let workers = Workers::new(config.workers).context("cannot start policy worker threads")?;
        Ok(Self {
            inner: Some(Arc::new(ChainInner {
                plugins,
                audit,
                workers,
                cache_dir: cache.dir().map(Path::to_owned),
                spent_pending: AtomicUsize::new(0),
                max_spent_pending: config.max_instances as usize,
                engine,
                observer: OnceLock::new(),
            })),
        })
    }

    /// Have `observer` see every plugin call from now on (dry runs excepted). A chain takes
    /// one observer; a second is ignored and `false` returned. An empty chain makes no calls.
    pub fn observe(&self, observer: CallObserver) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|i| i.observer.set(observer).is_ok())
    }

    /// Whether the chain has no plugins.
    pub fn is_empty(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.plugins.is_empty())
    }

    /// Plugins with an instance ready for their next call.
    #[cfg(test)]
    pub(crate) fn ready_instances(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| i.plugins.iter().filter(|p| p.has_spare()).count())
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.plugins.len())
    }

    /// Run the request through every plugin in order; the first denial stops the chain.
    ///
    /// Synchronous: each plugin call is bounded by its CPU budget (a few ms by default).
    /// Safe to call from anywhere. On a plain thread the plugins run on that thread; inside
    /// a Tokio runtime they run on the chain's worker threads while the thread waits (see
    /// `worker.rs`), so prefer [`evaluate_async`](Self::evaluate_async) in async code.
    pub fn evaluate(&self, req: StartRequest, ctx: &PolicyContext) -> Result<StartRequest, Denial> {
        let Some(inner) = &self.inner else {
            return Ok(req);
        };
        let job = {
            let inner = inner.clone();
            let ctx = ctx.clone();
            async move { inner.run(req, &ctx, Audited(&RequestId::new())).await }
        };
        inner
            .workers
            .run_blocking(job)
            .unwrap_or_else(|| Err(runtime_failure()))
    }

    /// [`evaluate`](Self::evaluate) for async code: the plugins run on the calling task (on
    /// a fiber per call), without a thread hop. A plugin that sleeps makes the task wait
    /// without blocking its thread; a long-running one yields at every budget check.
    pub async fn evaluate_async(
        &self,
        req: StartRequest,
        ctx: &PolicyContext,
    ) -> Result<StartRequest, Denial> {
        self.evaluate_request(&RequestId::new(), req, ctx).await
    }

    /// [`evaluate_async`](Self::evaluate_async) with the audit records carrying `request_id`:
    /// pass the same ID to [`audit_started_request`](Self::audit_started_request) so the
    /// `started` record joins them.
    pub async fn evaluate_request(
        &self,
        request_id: &RequestId,
        req: StartRequest,
        ctx: &PolicyContext,
    ) -> Result<StartRequest, Denial> {
        let Some(inner) = &self.inner else {
            return Ok(req);
        };
        contained(inner.run(req, ctx, Audited(request_id)))
            .await
            .unwrap_or_else(|| Err(runtime_failure()))
    }

    /// Dry run for `procwarden plugin check`: what each plugin decides, step by step, and the
    /// chain's result. Nothing is audited or counted in [`health`](Self::health).
    pub fn explain(&self, req: StartRequest, ctx: &PolicyContext) -> Explanation {
        let Some(inner) = &self.inner else {
            return Explanation {
                steps: Vec::new(),
                result: Ok(req),
            };
        };
        let job = {
            let inner = inner.clone();
            let ctx = ctx.clone();
            async move {
                let mut steps = Vec::new();
                let result = inner.run(req, &ctx, DryRun(&mut steps)).await;
                Explanation { steps, result }
            }
        };
        inner
            .workers
            .run_blocking(job)
            .unwrap_or_else(|| Explanation {
                steps: Vec::new(),
                result: Err(runtime_failure()),
            })
    }

    /// Per-plugin call counters, in chain order.
    pub fn health(&self) -> Vec<PluginHealth> {
        self.inner.as_ref().map_or_else(Vec::new, |i| {
            i.plugins
                .iter()
                .map(|p| p.health.snapshot(&p.name))
                .collect()
        })
    }

    /// The loaded plugins, in chain order, with how each was loaded (cache hit or compile).
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.inner.as_ref().map_or_else(Vec::new, |i| {
            i.plugins
                .iter()
                .map(|p| PluginInfo {
                    name: p.name.to_string(),
                    origin: p.origin.clone(),
                    runs: p.runs,
                    on_error: p.on_error,
                    timeout_ms: p.timeout_ms,
                    max_memory_bytes: p.max_memory_bytes,
                    setting_keys: p.settings.keys().cloned().collect(),
                    load: p.load.clone(),
                    load_error: p.load_error.clone(),
                })
                .collect()
        })
    }

    /// Append to the audit file (if any) the process an allowed request started, with the
    /// ID its plugins' records carry ([`evaluate_request`](Self::evaluate_request)), so those
    /// decisions lead to a process ID.
    pub fn audit_started_request(
        &self,
        request_id: &RequestId,
        chat_id: Option<&str>,
        process_id: &str,
        command: &str,
    ) {
        if let Some(audit) = self.inner.as_ref().and_then(|i| i.audit.as_ref()) {
            audit.record(&super::audit::StartedRecord {
                time_unix: now_unix(),
                request_id: request_id.as_str(),
                chat_id,
                decision: "started",
                process_id,
                command,
            });
        }
    }

    /// The directory compiled plugins are cached in, if caching is on and usable.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.as_ref()?.cache_dir.as_deref()
    }
}

impl std::fmt::Debug for PolicyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .inner
            .as_ref()
            .map(|i| i.plugins.iter().map(|p| &*p.name).collect())
            .unwrap_or_default();
        f.debug_struct("PolicyChain")
            .field("plugins", &names)
            .finish()
    }
}

fn runtime_failure() -> Denial {
    Denial {
        plugin: String::new(),
        reason: "it failed unexpectedly while evaluating the request.".into(),
        cause: DenialCause::RuntimeFailed,
    }
}

/// How the chain runs a request.
enum Run<'a> {
    /// For real: decisions are audited under the request's ID, and counted.
    Audited(&'a RequestId),
    /// A dry run: steps are collected, nothing is recorded.
    DryRun(&'a mut Vec<StepReport>),
}
use Run::{Audited, DryRun};

impl ChainInner {
    async fn run(
        self: &Arc<Self>,
        req: StartRequest,
        ctx: &PolicyContext,
        how: Run<'_>,
    ) -> Result<StartRequest, Denial> {
        let mut spent = Vec::with_capacity(self.plugins.len());
        let result = self.run_plugins(req.into(), ctx, how, &mut spent).await;
        self.recycle(spent);
        result.map(Into::into)
    }

    /// Drops spent instances and creates the next ready ones after the request has moved
    /// on: on a task of the caller's runtime, which runs when the request next waits (for
    /// its process, say), or else of the chain's own runtime. Nothing is saved in CPU; the
    /// request just does not wait for it. If too many spent instances are already waiting,
    /// these are dropped here, which keeps the instance pool from filling up.
    fn recycle(self: &Arc<Self>, spent: Vec<SpentInstance>) {
        let count = spent.len();
        // Answered from remembered answers, with every plugin's next instance ready: no
        // task needed.
        if count == 0 && !self.plugins.iter().any(Plugin::needs_refill) {
            return;
        }
        if self.spent_pending.fetch_add(count, Ordering::AcqRel) + count > self.max_spent_pending {
            drop(spent);
            self.spent_pending.fetch_sub(count, Ordering::AcqRel);
            return;
        }
        let inner = self.clone();
        let task = async move {
            drop(spent);
            inner.spent_pending.fetch_sub(count, Ordering::AcqRel);
            for p in &inner.plugins {
                p.refill(&inner.engine, inner.workers.handle()).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(task)),
            Err(_) => drop(self.workers.handle().spawn(task)),
        }
    }

    async fn run_plugins(
        &self,
        mut req: WitRequest,
        ctx: &PolicyContext,
        how: Run<'_>,
        spent: &mut Vec<SpentInstance>,
    ) -> Result<WitRequest, Denial> {
        let (request_id, mut steps) = match how {
            Audited(id) => (Some(id.as_str()), None),
            DryRun(steps) => (None, Some(steps)),
        };
        let dry_run = steps.is_some();
        let chat_id = ctx.chat_id.as_deref();
        for p in &self.plugins {
            let start = Instant::now();
            let outcome = p
                .call(
                    &self.engine,
                    self.workers.handle(),
                    &req,
                    ctx,
                    spent,
                    !dry_run,
                )
                .await;
            let micros = micros_since(start);
            let plugin = &*p.name;
            if !dry_run {
                if let Some(observer) = self.observer.get() {
                    observer(&PluginCall {
                        plugin: &p.name,
                        outcome: match &outcome {
                            Ok(Answer {
                                verdict: Verdict::Allow(_),
                                ..
                            }) => CallOutcome::Allowed,
                            Ok(Answer {
                                verdict: Verdict::Deny(_),
                                ..
                            }) => CallOutcome::Denied,
                            Err(_) => CallOutcome::Failed,
                        },
                        duration: start.elapsed(),
                    });
                }
                let failing = p.health.record(&outcome, micros);
                // A plugin that keeps failing is reported, at 10, 100, 1000, ... in a row.
                if failing >= 10 && is_power_of_ten(failing) {
                    tracing::error!(plugin, consecutive_failures = failing, on_error = %p.on_error,
                        "policy plugin keeps failing; check it with `procwarden plugin check`");
                }
            }
            let audit = self.audit.as_ref().zip(request_id);
            let remembered = matches!(
                outcome,
                Ok(Answer {
                    remembered: true,
                    ..
                })
            );
            let record = |decision, reason, on_error, after: Option<&WitRequest>| {
                if let Some((audit, request_id)) = audit {
                    audit.record(&AuditRecord {
                        time_unix: now_unix(),
                        request_id,
                        chat_id,
                        plugin,
                        front_end: ctx.front_end.as_ref().map(front_end_name),
                        decision,
                        reason,
                        on_error,
                        micros,
                        remembered,
                        command_before: &req.command,
                        command_after: after.map(|a| a.command.as_str()),
                        changed: after.map(|a| changed_fields(&req, a)).unwrap_or_default(),
                    });
                }
            };
            match outcome {
                Ok(Answer {
                    verdict: Verdict::Allow(next),
                    ..
                }) => {
                    let changed = changed_fields(&req, &next);
                    tracing::debug!(
                        plugin,
                        chat_id,
                        micros,
                        ?changed,
                        dry_run,
                        remembered,
                        "policy decision: allow"
                    );
                    record("allow", None, None, Some(&next));
                    if let Some(steps) = steps.as_deref_mut() {
                        steps.push(StepReport {
                            plugin: plugin.to_owned(),
                            outcome: StepOutcome::Allowed {
                                request: next.clone().into(),
                            },
                            micros,
                        });
                    }
                    req = next;
                }
                Ok(Answer {
                    verdict: Verdict::Deny(reason),
                    ..
                }) => {
                    tracing::info!(
                        plugin,
                        chat_id,
                        micros,
                        reason,
                        dry_run,
                        remembered,
                        "policy decision: deny"
                    );
                    record("deny", Some(&reason), None, None);
                    if let Some(steps) = steps.as_deref_mut() {
                        steps.push(StepReport {
                            plugin: plugin.to_owned(),
                            outcome: StepOutcome::Denied {
                                reason: reason.clone(),
                            },
                            micros,
                        });
                    }
                    return Err(Denial {
                        plugin: plugin.to_owned(),
                        reason,
                        cause: DenialCause::Refused,
                    });
                }
                Err(failure) => {
                    let error = failure.to_string();
                    tracing::warn!(plugin, chat_id, micros, on_error = %p.on_error, dry_run,
                        "policy plugin failed: {error}");
                    let on_error = match p.on_error {
                        OnError::Deny => "deny",
                        OnError::Allow => "allow",
                    };
                    let passed = (p.on_error == OnError::Allow).then_some(&req);
                    record("error", Some(&error), Some(on_error), passed);
                    if let Some(steps) = steps.as_deref_mut() {
                        steps.push(StepReport {
                            plugin: plugin.to_owned(),
                            outcome: StepOutcome::Failed {
                                error: error.clone(),
                                on_error: p.on_error,
                            },
                            micros,
                        });
                    }
                    if p.on_error == OnError::Deny {
                        return Err(failure_denial(plugin, &failure));
                    }
                }
            }
        }
        Ok(req)
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

fn failure_denial(plugin: &str, failure: &PluginFailure) -> Denial {
    Denial {
        plugin: plugin.to_owned(),
        reason: failure.to_string(),
        cause: DenialCause::PluginFailed,
    }
}

/// How the audit file names a front end.
fn front_end_name(f: &super::FrontEnd) -> String {
    match f {
        super::FrontEnd::Http => "http".into(),
        super::FrontEnd::Mcp => "mcp".into(),
        super::FrontEnd::Cli => "cli".into(),
        super::FrontEnd::Tool(name) => format!("tool:{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn powers_of_ten() {
        let hits: Vec<u64> = (0..=1000).filter(|&n| super::is_power_of_ten(n)).collect();
        assert_eq!(hits, [1, 10, 100, 1000]);
    }
}
