//! The agent: what every front end (HTTP, MCP, CLI) calls. Validates start requests, applies
//! idempotency, runs the policy chain, resolves the working directory, and hands the result to
//! the process manager.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, ProcessLimits};
use crate::metrics::{Gauges, Metrics};
use procwarden_extensions::filter::FilterChain;
use procwarden_extensions::policy::{FrontEnd, PolicyChain, PolicyContext, RequestId};
use procwarden_extensions::tool::ToolSet;
use procwarden_process::{
    ExitHook, GroupSignal, InputMode, InputWritten, OutputSnapshot, Phase, Process, ProcessError,
    ProcessInfo, ProcessManager, Scope, StartRequest, TerminalSize,
};

mod error;
mod filters;
mod idempotency;
mod input_mode;
mod output_options;
mod reload;
mod tools;

pub use error::{AgentError, ErrorKind};
pub use filters::load_filters;
use idempotency::{IdempotencyKeys, KeyedStart, fingerprint};
pub use input_mode::{input_bytes, input_mode, terminal_size};
pub use output_options::{BadParameter, OutputOptions, UntilSpec};
pub use reload::{ReloadError, Reloaded, load_policy};
pub use tools::{BUILT_IN_TOOLS, ToolReply};

/// What became of a start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    /// The request as it runs, after policy: a plugin may have rewritten the command or
    /// moved it to the background, and the directory is resolved.
    pub request: StartRequest,
    /// The key had already started this process; nothing new was spawned.
    pub reused: bool,
}

/// The agent's state, for health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub shutting_down: bool,
    /// Processes tracked (running and exited, not yet reaped).
    pub processes: usize,
    /// Requests blocked waiting for an exit.
    pub waiters: usize,
    /// How descendants of commands are tracked: `cgroup` or `subreaper`.
    pub containment: &'static str,
    /// Successful configuration reloads since the agent started.
    pub reloads: u64,
}

/// What a reload may replace while processes run: read afresh by every request.
#[derive(Clone)]
struct Settings {
    policy: PolicyChain,
    /// Output filters every text sent to a client passes through.
    filters: FilterChain,
    agent_workdir: Option<PathBuf>,
    list_cap: usize,
    wait_cap: Duration,
    limits: ProcessLimits,
}

impl Settings {
    fn new(config: &Config, policy: PolicyChain, filters: FilterChain) -> Self {
        Self {
            policy,
            filters,
            agent_workdir: config.workdir.clone(),
            list_cap: config.list_cap,
            wait_cap: config.wait_cap(),
            limits: config.process_limits(),
        }
    }
}

pub struct Agent {
    manager: Arc<ProcessManager>,
    /// Swapped whole by a reload; a request works with the settings it read at its start.
    settings: RwLock<Arc<Settings>>,
    home: Option<PathBuf>,
    waiters: AtomicUsize,
    idempotency: IdempotencyKeys,
    /// Tool plugins (`[[tool]]`); a reload does not replace them.
    tools: ToolSet,
    reloader: reload::Reloader,
    reloads: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Agent {
    /// An agent; containment `auto` falls back to `subreaper` where no cgroup v2 is writable.
    pub fn new(config: &Config, policy: PolicyChain) -> Arc<Self> {
        Self::with_manager(
            config,
            policy,
            ToolSet::default(),
            ProcessManager::new(config.manager_settings()),
        )
    }

    /// An agent serving the tools of `tools`, or an error when containment `cgroup` is
    /// configured and unavailable.
    pub fn try_new(
        config: &Config,
        policy: PolicyChain,
        tools: ToolSet,
    ) -> anyhow::Result<Arc<Self>> {
        let manager = ProcessManager::try_new(config.manager_settings())
            .map_err(|why| anyhow::anyhow!("containment = \"cgroup\" is unavailable: {why}"))?;
        Ok(Self::with_manager(config, policy, tools, manager))
    }

    fn with_manager(
        config: &Config,
        policy: PolicyChain,
        tools: ToolSet,
        manager: Arc<ProcessManager>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        policy.observe(metrics.plugin_observer());
        Arc::new(Self {
            manager,
            settings: RwLock::new(Arc::new(Settings::new(
                config,
                policy,
                FilterChain::default(),
            ))),
            home: std::env::var_os("HOME").map(PathBuf::from),
            waiters: AtomicUsize::new(0),
            idempotency: IdempotencyKeys::default(),
            tools,
            reloader: reload::Reloader::new(config),
            reloads: AtomicU64::new(0),
            metrics,
        })
    }

    /// The agent's metrics, for `/metrics` and the front ends that count their own events.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every metric in the Prometheus text format, states read now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&Gauges {
            census: self.manager.census(),
            waiters: self.waiters(),
        })
    }

    /// The settings in force now.
    fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(settings) => settings.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The process table, for the agent's owner (shutdown, benchmarks); front ends go
    /// through the agent's own methods.
    pub fn manager(&self) -> &Arc<ProcessManager> {
        &self.manager
    }

    /// The policy chain in force now (a reload may replace it).
    pub fn policy(&self) -> PolicyChain {
        self.settings().policy.clone()
    }

    pub fn wait_cap(&self) -> Duration {
        self.settings().wait_cap
    }

    /// Most processes one list returns.
    pub fn list_cap(&self) -> usize {
        self.settings().list_cap
    }

    pub fn health(&self) -> Health {
        Health {
            shutting_down: self.manager.is_closed(),
            processes: self.manager.len(),
            waiters: self.waiters(),
            containment: self.manager.containment().name(),
            reloads: self.reloads.load(Ordering::SeqCst),
        }
    }

    /// Start `request` for `chat`: validate it, run it through the policy chain, resolve its
    /// directory and spawn it. With an idempotency key, a retry of the same request in the
    /// same chat returns the process the first one started.
    /// `front_end` tells policy plugins where the request came from.
    pub async fn start(
        &self,
        chat: Option<&str>,
        front_end: FrontEnd,
        request: StartRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Started, AgentError> {
        self.start_with_input(chat, front_end, request, idempotency_key, InputMode::Null)
            .await
    }

    /// [`Self::start`] with stdin as `input` says: /dev/null (the default), a pipe the
    /// client writes to with [`Self::input`], or a pseudo-terminal.
    pub async fn start_with_input(
        &self,
        chat: Option<&str>,
        front_end: FrontEnd,
        request: StartRequest,
        idempotency_key: Option<&str>,
        input: InputMode,
    ) -> Result<Started, AgentError> {
        validate(&request)?;
        let Some(key) = idempotency_key else {
            return self.start_new(chat, front_end, request, input).await;
        };
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (fingerprint(&request), input).hash(&mut hasher);
            hasher.finish()
        };
        let entry = self.idempotency.entry(chat, key, |id| self.is_tracked(id));
        let mut known = entry.lock().await;
        if let Some(k) = known.as_ref()
            && self.is_tracked(&k.started.id)
        {
            if k.fingerprint != fingerprint {
                return Err(AgentError::IdempotencyConflict {
                    key: key.to_owned(),
                });
            }
            return Ok(Started {
                reused: true,
                ..k.started.clone()
            });
        }
        let started = self.start_new(chat, front_end, request, input).await?;
        *known = Some(KeyedStart {
            fingerprint,
            started: started.clone(),
        });
        Ok(started)
    }

    fn is_tracked(&self, id: &str) -> bool {
        self.manager.get(id, Scope::All).is_ok()
    }

    async fn start_new(
        &self,
        chat: Option<&str>,
        front_end: FrontEnd,
        request: StartRequest,
        input: InputMode,
    ) -> Result<Started, AgentError> {
        let settings = self.settings();
        self.check_limits(&settings.limits, chat).await?;
        let context = PolicyContext {
            chat_id: chat.map(str::to_owned),
            agent_workdir: settings.agent_workdir.as_deref().map(path_string),
            home: self.home.as_deref().map(path_string),
            front_end: Some(front_end),
        };
        // Joins this request's audit records, the final `started` one included.
        let request_id = RequestId::new();
        let mut request = settings
            .policy
            .evaluate_request(&request_id, request, &context)
            .await
            .inspect_err(|denial| self.metrics.denied(denial))
            .map_err(AgentError::Denied)?;
        validate(&request)?;
        request.workdir = Some(self.resolve_workdir(
            settings.agent_workdir.as_deref(),
            request.workdir.as_deref(),
        )?);
        let process =
            self.manager
                .start_with_input(request.clone(), chat.map(str::to_owned), input)?;
        self.manager.forget_finished_over_cap();
        settings
            .policy
            .audit_started_request(&request_id, chat, process.id(), &request.command);
        if let Some(front_end) = &context.front_end {
            self.metrics.started(front_end);
        }
        log_exit(&process, self.metrics.clone());
        Ok(Started {
            id: process.id().to_owned(),
            request,
            reused: false,
        })
    }

    /// The request's directory (relative ones against the default), else the agent's
    /// directory if it exists, else the home directory, else the agent's own.
    fn resolve_workdir(
        &self,
        agent_workdir: Option<&Path>,
        requested: Option<&str>,
    ) -> Result<String, AgentError> {
        let default = [agent_workdir, self.home.as_deref()]
            .into_iter()
            .flatten()
            .find(|dir| dir.is_dir())
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let Some(requested) = requested else {
            return Ok(path_string(&default));
        };
        let dir = default.join(requested);
        if !dir.is_dir() {
            return Err(AgentError::NotADirectory {
                workdir: requested.to_owned(),
            });
        }
        Ok(path_string(&dir))
    }

    /// Refuse a start that would take the agent, or the caller's chat, over its number of
    /// live processes. Checked before the policy chain: a flood costs no plugin calls.
    async fn check_limits(
        &self,
        limits: &ProcessLimits,
        chat: Option<&str>,
    ) -> Result<(), AgentError> {
        self.check_limit(Scope::All, "the agent", limits.max_processes)
            .await?;
        if let Some(chat) = chat {
            self.check_limit(
                Scope::Chat(chat),
                "this chat",
                limits.max_processes_per_chat,
            )
            .await?;
        }
        Ok(())
    }

    /// One limit. The running count is cheap but may still hold commands whose last escaped
    /// member died since anyone looked; at the limit they are looked at again before refusing.
    async fn check_limit(
        &self,
        scope: Scope<'_>,
        name: &str,
        limit: usize,
    ) -> Result<(), AgentError> {
        if self.manager.count_live(scope) < limit {
            return Ok(());
        }
        let manager = self.manager.clone();
        let owned_chat = match scope {
            Scope::Chat(chat) => Some(chat.to_owned()),
            Scope::All => None,
        };
        // The look may walk /proc (subreaper mode): a blocking thread, not an async worker.
        let live = tokio::task::spawn_blocking(move || {
            manager.recount_live(Scope::from_chat(owned_chat.as_deref()))
        })
        .await
        .unwrap_or(limit);
        if live < limit {
            return Ok(());
        }
        Err(AgentError::TooManyProcesses {
            scope: name.into(),
            live,
            limit,
        })
    }

    /// The caller's processes, running first. Telling whether a group is alive reads /proc,
    /// which can take milliseconds with many processes on the machine, so it runs on a
    /// blocking thread rather than an async worker.
    pub async fn list(&self, chat: Option<&str>) -> Vec<ProcessInfo> {
        let manager = self.manager.clone();
        let chat = chat.map(str::to_owned);
        let cap = self.list_cap();
        tokio::task::spawn_blocking(move || manager.list(Scope::from_chat(chat.as_deref()), cap))
            .await
            .unwrap_or_default()
    }

    /// How many processes the caller may see, before the list cap.
    pub fn count(&self, chat: Option<&str>) -> usize {
        self.manager.count(Scope::from_chat(chat))
    }

    /// Forget exited processes past their age (and past the retention cap) and the
    /// idempotency keys that named them, every `every`. The task ends with the agent.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(agent) = agent.upgrade() else {
                    return;
                };
                let manager = agent.manager.clone();
                let reaped = tokio::task::spawn_blocking(move || manager.reap())
                    .await
                    .unwrap_or(0);
                let keys = agent.idempotency.prune(|id| agent.is_tracked(id));
                if reaped + keys > 0 {
                    tracing::debug!(reaped, keys, "reaped exited processes");
                }
            }
        })
    }

    pub async fn output(&self, id: &str, chat: Option<&str>) -> Result<OutputSnapshot, AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        Ok(snapshot_of(process).await)
    }

    /// Block until the shell exits or `limit` (at most the wait cap) passes, then snapshot.
    /// Dropping the future (a client that went away) releases the waiter at once.
    pub async fn wait_output(
        &self,
        id: &str,
        chat: Option<&str>,
        limit: Option<Duration>,
    ) -> Result<OutputSnapshot, AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        let wait_cap = self.wait_cap();
        let limit = limit.map_or(wait_cap, |l| l.min(wait_cap));
        {
            let _waiting = WaiterGuard::enter(&self.waiters);
            let ended_by = match tokio::time::timeout(limit, process.wait_for(Phase::Exited)).await
            {
                Ok(_) => "exit",
                Err(_) => "timeout",
            };
            self.metrics.waited(ended_by);
        }
        Ok(snapshot_of(process).await)
    }

    /// The output as `options` reads it, after waiting (with `wait`, capped by the wait cap)
    /// until the condition of `options` holds or the shell exits. The reply says what ended
    /// the wait and which bytes of the whole output it covers. Dropping the future releases
    /// the waiter at once.
    pub async fn read_output(
        &self,
        id: &str,
        chat: Option<&str>,
        options: &OutputOptions,
        wait: Option<Duration>,
    ) -> Result<OutputSnapshot, AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        let mut ended_by = None;
        if let Some(limit) = wait {
            let limit = limit.min(self.wait_cap());
            let _waiting = WaiterGuard::enter(&self.waiters);
            let ended = process.wait_until(&options.until(), limit).await.name();
            self.metrics.waited(ended);
            ended_by = Some(ended);
        }
        let mut snapshot = snapshot_of(process.clone()).await;
        snapshot.ended_by = ended_by;
        if process.has_input() {
            // Looks at every member in /proc: off the async workers.
            let look = process.clone();
            snapshot.waiting_for_input =
                tokio::task::spawn_blocking(move || look.waiting_for_input())
                    .await
                    .unwrap_or(false);
        }
        if let Some(mode) = options.read.clone() {
            let limits = self.manager.settings().buffer;
            // Reads go through the spool file, off the async workers.
            let read = tokio::task::spawn_blocking(move || process.read_output(&mode, limits));
            match read.await {
                Ok(read) => snapshot = snapshot.with_read(read),
                Err(err) => tracing::warn!(id, error = %err, "reading the output failed"),
            }
        }
        Ok(snapshot)
    }

    pub async fn signal(
        &self,
        id: &str,
        chat: Option<&str>,
        signal: GroupSignal,
    ) -> Result<(), AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        let manager = self.manager.clone();
        let (id, chat) = (id.to_owned(), chat.map(str::to_owned));
        off_workers_if_walking(&process, move || {
            manager.signal(&id, Scope::from_chat(chat.as_deref()), signal)
        })
        .await
        .map_err(|err| ProcessError::Signal(std::io::Error::other(err.to_string())))??;
        Ok(())
    }

    /// Write `data` to the stdin of a process started with a stdin pipe or terminal, then
    /// with `eof` end it. A command that does not read is waited for up to
    /// [`INPUT_WRITE_LIMIT`]; the reply says how much was written by then.
    pub async fn input(
        &self,
        id: &str,
        chat: Option<&str>,
        data: &[u8],
        eof: bool,
    ) -> Result<InputWritten, AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        Ok(process.write_input(data, eof, INPUT_WRITE_LIMIT).await?)
    }

    /// Set the window size of a process's terminal (started with `tty`); its foreground
    /// process group gets SIGWINCH.
    pub fn resize(
        &self,
        id: &str,
        chat: Option<&str>,
        size: TerminalSize,
    ) -> Result<(), AgentError> {
        let process = self.manager.get(id, Scope::from_chat(chat))?;
        Ok(process.resize_terminal(size)?)
    }

    /// Requests blocked in `wait_output` right now.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    pub async fn shutdown(&self) {
        self.manager.shutdown().await;
    }
}

/// Longest an input write waits for a command that does not read its stdin.
pub const INPUT_WRITE_LIMIT: Duration = Duration::from_secs(10);

/// One log line and the output metric when a process's shell exits, both recorded before a
/// client waiting for the exit is woken, so what it reads next already counts this process.
fn log_exit(process: &Process, metrics: Arc<Metrics>) {
    let started = Instant::now();
    process.on_exit(ExitHook::new(move |process| {
        // Cheap reads only: this runs on the exit's path to every waiting client.
        let output_bytes = process.output_len();
        metrics.output_produced(output_bytes);
        tracing::info!(
            id = process.id(),
            exit_code = process.exit_code(),
            timed_out = process.timed_out(),
            seconds = started.elapsed().as_secs_f64(),
            output_bytes,
            "process exited"
        );
    }));
}

struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn validate(request: &StartRequest) -> Result<(), AgentError> {
    let nul = |field: String| Err(AgentError::NulByte { field });
    if request.command.trim().is_empty() {
        return Err(AgentError::EmptyCommand);
    }
    if request.command.contains('\0') {
        return nul("Command".into());
    }
    if request.workdir.as_deref().is_some_and(|w| w.contains('\0')) {
        return nul("Workdir".into());
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(AgentError::InvalidEnvName { name: name.clone() });
        }
        if value.contains('\0') {
            return nul(format!("Environment variable {name}"));
        }
    }
    if request.timeout_seconds == Some(0) {
        return Err(AgentError::ZeroTimeout);
    }
    // Before the policy chain too: a plugin should never spend its CPU budget on input the
    // kernel would refuse anyway.
    procwarden_process::limits::check_lengths(&request.command, &request.env)?;
    Ok(())
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The output and state of `process` now.
async fn snapshot_of(process: Arc<Process>) -> OutputSnapshot {
    let look = process.clone();
    off_workers_if_walking(&process, move || look.snapshot())
        .await
        .unwrap_or_else(|_| process.snapshot())
}

/// Run `work` on `process` here, or on a blocking thread when looking at the process walks
/// /proc (subreaper mode, command not known to be gone): with many processes on the machine
/// that takes milliseconds, too long for an async worker. The cgroup's own files are cheap.
async fn off_workers_if_walking<T: Send + 'static>(
    process: &Process,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if process.counts_members_from_proc() {
        tokio::task::spawn_blocking(work).await
    } else {
        Ok(work())
    }
}
