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
use procwarden_extensions::policy::{PolicyChain, PolicyContext};
use procwarden_process::{
    GroupSignal, OutputSnapshot, Phase, ProcessInfo, ProcessManager, Scope, StartRequest,
};

mod error;

pub use error::{AgentError, ErrorKind};

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
    /// (chat, key) -> (request fingerprint, what it started). Async lock: held across the
    /// policy chain and the spawn so two concurrent retries cannot both start a process.
    idempotency: tokio::sync::Mutex<HashMap<IdempotencySlot, (u64, Started)>>,
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

    /// The process table; the agent's owner starts its reaper.
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

    pub fn health(&self) -> Health {
        Health {
            shutting_down: self.manager.is_closed(),
            processes: self.manager.len(),
            waiters: self.waiters(),
        }
    }

    /// Start `request` for `chat`: validate it, run it through the policy chain, resolve its
    /// directory and spawn it. With an idempotency key, a retry of the same request in the
    /// same chat returns the process the first one started.
    pub async fn start(
        &self,
        chat: Option<&str>,
        request: StartRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Started, AgentError> {
        validate(&request)?;
        let Some(key) = idempotency_key else {
            return self.start_new(chat, request).await;
        };
        let fingerprint = fingerprint(&request);
        let slot = (chat.map(str::to_owned), key.to_owned());
        let mut keys = self.idempotency.lock().await;
        if let Some((known, started)) = keys.get(&slot)
            && self.manager.get(&started.id, Scope::All).is_ok()
        {
            if *known != fingerprint {
                return Err(AgentError::IdempotencyConflict {
                    key: key.to_owned(),
                });
            }
            return Ok(Started {
                reused: true,
                ..started.clone()
            });
        }
        let started = self.start_new(chat, request).await?;
        // Keys of reaped processes are dead weight; drop them as the map grows.
        if keys.len() >= 1024 {
            keys.retain(|_, (_, started)| self.manager.get(&started.id, Scope::All).is_ok());
        }
        keys.insert(slot, (fingerprint, started.clone()));
        Ok(started)
    }

    async fn start_new(
        &self,
        chat: Option<&str>,
        request: StartRequest,
    ) -> Result<Started, AgentError> {
        let context = PolicyContext {
            chat_id: chat.map(str::to_owned),
            agent_workdir: self.agent_workdir.as_deref().map(path_string),
            home: self.home.as_deref().map(path_string),
        };
        let mut request = self
            .policy
            .evaluate_async(request, &context)
            .await
            .map_err(AgentError::Denied)?;
        validate(&request)?;
        request.workdir = Some(self.resolve_workdir(request.workdir.as_deref())?);
        let process = self
            .manager
            .start(request.clone(), chat.map(str::to_owned))?;
        Ok(Started {
            id: process.id().to_owned(),
            request,
            reused: false,
        })
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
            return Err(AgentError::NotADirectory {
                workdir: requested.to_owned(),
            });
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
