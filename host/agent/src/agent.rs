//! The agent: what every front end (HTTP, MCP, CLI) calls. Validates start requests, applies
//! idempotency, runs the policy chain, resolves the working directory, and hands the result to
//! the process manager.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Config;
use procwarden_extensions::policy::{Denial, PolicyChain, PolicyContext, StartRequest};
use procwarden_process::{
    GroupSignal, LaunchSpec, OutputSnapshot, Phase, ProcessError, ProcessInfo, ProcessManager,
    Scope,
};

/// A start request as a front end received it.
#[derive(Debug, Clone, Default)]
pub struct StartCall {
    pub request: StartRequest,
    pub chat_id: Option<String>,
    /// Retries of the same tool call carry the same key and get the same process.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    /// Whether the process runs in the background, after policy (a plugin may have moved
    /// a trailing-`&` command there).
    pub background: bool,
    /// The key had already started this process; nothing new was spawned.
    pub reused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(Denial),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// An idempotency key within its chat: keys never cross chats.
type IdempotencySlot = (Option<String>, String);

pub struct Agent {
    manager: Arc<ProcessManager>,
    policy: PolicyChain,
    agent_workdir: Option<PathBuf>,
    home: Option<PathBuf>,
    list_cap: usize,
    wait_cap: Duration,
    waiters: AtomicUsize,
    /// (chat, key) -> (request fingerprint, process ID). Async lock: held across the
    /// policy chain and the spawn so two concurrent retries cannot both start a process.
    idempotency: tokio::sync::Mutex<HashMap<IdempotencySlot, (u64, String)>>,
}

impl Agent {
    pub fn new(config: &Config, policy: PolicyChain) -> Arc<Self> {
        Arc::new(Self {
            manager: ProcessManager::new(config.manager_settings()),
            policy,
            agent_workdir: config.workdir.clone(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            list_cap: config.list_cap,
            wait_cap: config.wait_cap(),
            waiters: AtomicUsize::new(0),
            idempotency: tokio::sync::Mutex::default(),
        })
    }

    pub fn manager(&self) -> &Arc<ProcessManager> {
        &self.manager
    }

    pub fn policy(&self) -> &PolicyChain {
        &self.policy
    }

    pub fn wait_cap(&self) -> Duration {
        self.wait_cap
    }

    /// Most processes one list returns.
    pub fn list_cap(&self) -> usize {
        self.list_cap
    }

    pub async fn start(&self, call: StartCall) -> Result<Started, AgentError> {
        validate(&call.request)?;
        let Some(key) = call.idempotency_key.clone() else {
            let (id, background) = self.start_new(call).await?;
            return Ok(Started {
                id,
                background,
                reused: false,
            });
        };
        let fingerprint = fingerprint(&call.request);
        let slot = (call.chat_id.clone(), key.clone());
        let mut keys = self.idempotency.lock().await;
        if let Some((known, id)) = keys.get(&slot)
            && let Ok(existing) = self.manager.get(id, Scope::All)
        {
            if *known != fingerprint {
                return Err(AgentError::Conflict(format!(
                    "Idempotency key \"{key}\" was already used for a different request."
                )));
            }
            return Ok(Started {
                id: id.clone(),
                background: existing.identity.background,
                reused: true,
            });
        }
        let (id, background) = self.start_new(call).await?;
        // Keys of reaped processes are dead weight; drop them as the map grows.
        if keys.len() >= 1024 {
            keys.retain(|_, (_, id)| self.manager.get(id, Scope::All).is_ok());
        }
        keys.insert(slot, (fingerprint, id.clone()));
        Ok(Started {
            id,
            background,
            reused: false,
        })
    }

    /// Returns the new process's ID and whether it runs in the background.
    async fn start_new(&self, call: StartCall) -> Result<(String, bool), AgentError> {
        let context = PolicyContext {
            chat_id: call.chat_id.clone(),
            agent_workdir: self.agent_workdir.as_deref().map(path_string),
            home: self.home.as_deref().map(path_string),
            front_end: None,
        };
        let request = self
            .policy
            .evaluate_async(call.request, &context)
            .await
            .map_err(AgentError::Denied)?;
        validate(&request)?;
        let workdir = self.resolve_workdir(request.workdir.as_deref())?;
        let process = self.manager.start(LaunchSpec {
            command: request.command,
            workdir,
            env: request.env,
            background: request.background,
            timeout: request
                .timeout_seconds
                .map(|s| Duration::from_secs(s.into())),
            chat_id: call.chat_id,
        })?;
        Ok((process.id().to_owned(), process.identity.background))
    }

    /// The request's directory (relative ones against the default), else the agent's
    /// directory if it exists, else the home directory, else the agent's own.
    fn resolve_workdir(&self, requested: Option<&str>) -> Result<String, AgentError> {
        let default = [self.agent_workdir.as_deref(), self.home.as_deref()]
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
            return Err(AgentError::Invalid(format!(
                "Workdir \"{requested}\" is not a directory. Pass an existing directory, or omit workdir to use the default."
            )));
        }
        Ok(path_string(&dir))
    }

    pub fn list(&self, chat: Option<&str>) -> Vec<ProcessInfo> {
        self.manager.list(Scope::from_chat(chat), self.list_cap)
    }

    pub fn output(&self, id: &str, chat: Option<&str>) -> Result<OutputSnapshot, AgentError> {
        Ok(self.manager.get(id, Scope::from_chat(chat))?.snapshot())
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
        let limit = limit.map_or(self.wait_cap, |l| l.min(self.wait_cap));
        {
            let _waiting = WaiterGuard::enter(&self.waiters);
            let _ = tokio::time::timeout(limit, process.wait_for(Phase::Exited)).await;
        }
        Ok(process.snapshot())
    }

    pub fn signal(
        &self,
        id: &str,
        chat: Option<&str>,
        signal: GroupSignal,
    ) -> Result<(), AgentError> {
        Ok(self.manager.signal(id, Scope::from_chat(chat), signal)?)
    }

    /// Requests blocked in `wait_output` right now.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    pub async fn shutdown(&self) {
        self.manager.shutdown().await;
    }
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
    if request.command.trim().is_empty() {
        return Err(AgentError::Invalid("Command is required.".into()));
    }
    if request.command.contains('\0') {
        return Err(AgentError::Invalid(
            "Command must not contain NUL bytes.".into(),
        ));
    }
    if request.workdir.as_deref().is_some_and(|w| w.contains('\0')) {
        return Err(AgentError::Invalid(
            "Workdir must not contain NUL bytes.".into(),
        ));
    }
    for (name, value) in &request.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(AgentError::Invalid(format!(
                "Invalid environment variable name {name:?}: it must be non-empty and contain no '=' or NUL."
            )));
        }
        if value.contains('\0') {
            return Err(AgentError::Invalid(format!(
                "Environment variable {name} must not contain NUL bytes."
            )));
        }
    }
    if request.timeout_seconds == Some(0) {
        return Err(AgentError::Invalid(
            "timeout_seconds must be at least 1.".into(),
        ));
    }
    Ok(())
}

/// Identifies a request for idempotency: the same command, directory, environment (in any
/// order), background flag and timeout.
fn fingerprint(request: &StartRequest) -> u64 {
    let mut env = request.env.clone();
    env.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &request.command,
        &request.workdir,
        env,
        request.background,
        request.timeout_seconds,
    )
        .hash(&mut hasher);
    hasher.finish()
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
