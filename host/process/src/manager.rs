//! The process table: start, look up, signal, list, reap, shut down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::Signal;

use super::buffer::BufferLimits;
use super::limits::{check_lengths, too_long_together};
use super::log_text::loggable_command;
use super::os_spawn::SpawnError;
use super::record::{Identity, Phase, Process, ProcessInfo, unix_now};
use super::request::StartRequest;
use super::spawn::{SpawnSpec, Spawned, spawn, supervise, terminate_then_kill};
use crate::sync::lock;

/// Tunables of the process table.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    pub buffer: BufferLimits,
    /// Exited processes older than this are forgotten.
    pub reap_age: Duration,
    /// Between SIGTERM and SIGKILL, on timeouts and shutdown.
    pub kill_grace: Duration,
    /// Most exited processes kept; past it the oldest exited are forgotten first, even
    /// before `reap_age`, so a burst of short commands cannot hold memory for the whole age.
    pub max_exited: usize,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            buffer: BufferLimits::default(),
            reap_age: Duration::from_secs(300),
            kill_grace: Duration::from_secs(5),
            max_exited: 1000,
        }
    }
}

/// Which signal a client asked for. `terminate` and `kill` are the API's names of TERM and
/// KILL; the others go by their short names, as `kill -s` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    Terminate,
    Kill,
    Interrupt,
    Hangup,
    Quit,
    User1,
    User2,
}

impl GroupSignal {
    /// Every signal, in the order messages list them.
    pub const ALL: [Self; 7] = [
        Self::Terminate,
        Self::Kill,
        Self::Interrupt,
        Self::Hangup,
        Self::Quit,
        Self::User1,
        Self::User2,
    ];

    /// `terminate`, `kill`, or a signal name in any case, with or without `SIG`
    /// (`TERM`, `sigint`, `USR1`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "terminate" => return Some(Self::Terminate),
            "kill" => return Some(Self::Kill),
            _ => {}
        }
        let upper = name.trim().to_ascii_uppercase();
        let short = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL.into_iter().find(|s| s.short_name() == short)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Kill => "kill",
            other => other.short_name(),
        }
    }

    /// `TERM`, `KILL`, `INT`, ...
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Terminate => "TERM",
            Self::Kill => "KILL",
            Self::Interrupt => "INT",
            Self::Hangup => "HUP",
            Self::Quit => "QUIT",
            Self::User1 => "USR1",
            Self::User2 => "USR2",
        }
    }

    fn signal(self) -> Signal {
        match self {
            Self::Terminate => Signal::SIGTERM,
            Self::Kill => Signal::SIGKILL,
            Self::Interrupt => Signal::SIGINT,
            Self::Hangup => Signal::SIGHUP,
            Self::Quit => Signal::SIGQUIT,
            Self::User1 => Signal::SIGUSR1,
            Self::User2 => Signal::SIGUSR2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("Process \"{0}\" not found.")]
    NotFound(String),
    #[error("Process \"{0}\" is not running.")]
    NotRunning(String),
    #[error("The agent is shutting down.")]
    ShuttingDown,
    /// The working directory could not be entered when the command started (it vanished, or
    /// is not a directory or not accessible).
    #[error("Cannot enter the working directory \"{workdir}\": {source}.")]
    Workdir {
        workdir: String,
        source: std::io::Error,
    },
    /// A string `execve` cannot pass: one argument or environment entry over
    /// `MAX_ARG_STRLEN`, or all of them together over `ARG_MAX`. The caller's fault.
    #[error(
        "The {what} is {length} bytes; the kernel passes at most {limit} bytes ({limit_name}) \
         to a command."
    )]
    TooLong {
        what: String,
        length: usize,
        limit: usize,
        limit_name: &'static str,
    },
    #[error("Failed to start the command: {0}.")]
    Spawn(SpawnError),
    #[error("Failed to signal the process: {0}.")]
    Signal(std::io::Error),
}

/// Which processes a caller may see: a chat sees only its own, no chat sees all.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Chat(&'a str),
}

impl<'a> Scope<'a> {
    pub fn from_chat(chat: Option<&'a str>) -> Self {
        chat.map_or(Scope::All, Scope::Chat)
    }

    fn admits(&self, process: &Process) -> bool {
        match self {
            Scope::All => true,
            Scope::Chat(chat) => process.identity.chat_id.as_deref() == Some(*chat),
        }
    }
}

pub struct ProcessManager {
    settings: ManagerSettings,
    table: Mutex<HashMap<String, Arc<Process>>>,
    sequence: AtomicU64,
    closed: AtomicBool,
}

impl ProcessManager {
    pub fn new(settings: ManagerSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            table: Mutex::default(),
            sequence: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// Spawn and track a process for `chat_id`. The request's workdir is an existing
    /// directory (the agent resolved it); without one the command runs in the agent's own.
    /// Must be called inside a tokio runtime.
    pub fn start(
        self: &Arc<Self>,
        request: StartRequest,
        chat_id: Option<String>,
    ) -> Result<Arc<Process>, ProcessError> {
        if self.is_closed() {
            return Err(ProcessError::ShuttingDown);
        }
        let StartRequest {
            command,
            workdir,
            mut env,
            background,
            timeout_seconds,
        } = request;
        let workdir = match workdir {
            Some(dir) => dir,
            None => std::env::current_dir()
                .map_err(|source| ProcessError::Workdir {
                    workdir: ".".into(),
                    source,
                })?
                .to_string_lossy()
                .into_owned(),
        };
        if let Some(chat) = &chat_id {
            env.push(("PROCWARDEN_CHAT_ID".into(), chat.clone()));
            env.push(("CODER_CHAT_ID".into(), chat.clone()));
        }
        check_lengths(&command, &env)?;
        let spawned = spawn(&SpawnSpec {
            command: &command,
            workdir: &workdir,
            env: &env,
        })
        .map_err(|err| match err {
            SpawnError::Workdir(source) => ProcessError::Workdir {
                workdir: workdir.clone(),
                source,
            },
            SpawnError::Exec(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                too_long_together(&command, &env)
            }
            other => ProcessError::Spawn(other),
        })?;
        let Spawned {
            child,
            output,
            pgid,
        } = spawned;
        let process = Arc::new(Process::new(
            Identity {
                id: uuid::Uuid::new_v4().to_string(),
                chat_id,
                command,
                workdir,
                background,
                pgid,
                started_at_unix: unix_now(),
                sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            },
            self.settings.buffer,
            child,
        ));
        lock(&self.table).insert(process.id().to_owned(), process.clone());
        tokio::spawn(supervise(process.clone(), output));
        if let Some(seconds) = timeout_seconds {
            tokio::spawn(enforce_timeout(
                process.clone(),
                Duration::from_secs(seconds.into()),
                self.settings.kill_grace,
            ));
        }
        // Shutdown may have begun while we spawned; make sure this one does not escape it.
        if self.is_closed() {
            let _ = process.signal_group(Signal::SIGKILL);
            return Err(ProcessError::ShuttingDown);
        }
        tracing::info!(
            id = process.id(),
            pgid = process.identity.pgid,
            chat_id = process.identity.chat_id.as_deref().unwrap_or(""),
            "process started"
        );
        // The command only at DEBUG, and cut: it can be huge and can carry secrets.
        tracing::debug!(
            id = process.id(),
            command = %loggable_command(&process.identity.command),
            "process command"
        );
        Ok(process)
    }

    /// A process the caller may see.
    pub fn get(&self, id: &str, scope: Scope<'_>) -> Result<Arc<Process>, ProcessError> {
        lock(&self.table)
            .get(id)
            .filter(|p| scope.admits(p))
            .cloned()
            .ok_or_else(|| ProcessError::NotFound(id.to_owned()))
    }

    /// Signal the whole group while any member lives (not only while the shell does).
    pub fn signal(
        &self,
        id: &str,
        scope: Scope<'_>,
        signal: GroupSignal,
    ) -> Result<(), ProcessError> {
        let process = self.get(id, scope)?;
        if !process.group_alive() {
            return Err(ProcessError::NotRunning(id.to_owned()));
        }
        match process.signal_group(signal.signal()) {
            Ok(true) => {
                tracing::info!(id, signal = signal.name(), "signal sent to process group");
                Ok(())
            }
            Ok(false) => Err(ProcessError::NotRunning(id.to_owned())),
            Err(err) => Err(ProcessError::Signal(err)),
        }
    }

    /// Running processes first, then newest first; at most `cap`.
    pub fn list(&self, scope: Scope<'_>, cap: usize) -> Vec<ProcessInfo> {
        self.reap();
        let mut visible: Vec<Arc<Process>> = lock(&self.table)
            .values()
            .filter(|p| scope.admits(p))
            .cloned()
            .collect();
        visible.sort_by_key(|p| {
            (
                p.phase() != Phase::Running,
                std::cmp::Reverse(p.identity.sequence),
            )
        });
        visible.iter().take(cap).map(|p| p.info()).collect()
    }

    /// Processes in `scope` whose shell still runs, or whose group was last seen alive.
    /// Cheap: reads no /proc, so it can gate every start.
    pub fn count_live(&self, scope: Scope<'_>) -> usize {
        lock(&self.table)
            .values()
            .filter(|p| scope.admits(p) && p.phase() != Phase::Finished)
            .count()
    }

    /// Processes `scope` may see, running or exited (what `list` returns before its cap).
    pub fn count(&self, scope: Scope<'_>) -> usize {
        lock(&self.table)
            .values()
            .filter(|p| scope.admits(p))
            .count()
    }

    /// Number of tracked processes.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget processes that exited longer ago than the reap age and left no live member,
    /// and, past `max_exited` finished ones, the oldest finished first. Returns how many were
    /// forgotten.
    pub fn reap(&self) -> usize {
        let (mut candidates, mut finished): (Vec<Arc<Process>>, Vec<Arc<Process>>) = {
            let table = lock(&self.table);
            let aged = table
                .values()
                .filter(|p| p.exited_longer_than(self.settings.reap_age))
                .cloned()
                .collect();
            let finished = table
                .values()
                .filter(|p| p.phase() == Phase::Finished)
                .cloned()
                .collect();
            (aged, finished)
        };
        if finished.len() > self.settings.max_exited {
            finished.sort_by_key(|p| p.identity.sequence);
            let excess = finished.len() - self.settings.max_exited;
            candidates.extend(finished.into_iter().take(excess));
        }
        // Checking group liveness reads /proc, so do it outside the table lock.
        let expired: Vec<&Arc<Process>> = candidates.iter().filter(|p| !p.group_alive()).collect();
        if expired.is_empty() {
            return 0;
        }
        let mut table = lock(&self.table);
        expired
            .iter()
            .filter(|p| table.remove(p.id()).is_some())
            .count()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Refuse new processes, terminate every live group, kill what is left after the grace
    /// period, and wait (bounded) until every output pipe has closed.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let all: Vec<Arc<Process>> = lock(&self.table).values().cloned().collect();
        let live: Vec<Arc<Process>> = all.into_iter().filter(|p| p.group_alive()).collect();
        tracing::info!(
            groups = live.len(),
            "shutting down: terminating process groups"
        );
        let grace = self.settings.kill_grace;
        let stops = live.iter().map(|p| terminate_then_kill(p, grace));
        join_all(stops).await;
        // After SIGKILL every member is gone, so pipes close promptly; the bound only matters
        // for a member that escaped the group (its own setsid) while holding the pipe.
        let finished = live.iter().map(|p| p.wait_for(Phase::Finished));
        if tokio::time::timeout(Duration::from_secs(2), join_all(finished))
            .await
            .is_err()
        {
            tracing::warn!("some output pipes stayed open after their groups were killed");
        }
    }
}

async fn enforce_timeout(process: Arc<Process>, limit: Duration, grace: Duration) {
    if tokio::time::timeout(limit, process.wait_for(Phase::Finished))
        .await
        .is_ok()
        && !process.group_alive()
    {
        return;
    }
    if !process.group_alive() {
        return;
    }
    process.mark_timed_out();
    tracing::info!(
        id = process.id(),
        seconds = limit.as_secs_f64(),
        "timeout reached: stopping process group"
    );
    terminate_then_kill(&process, grace).await;
}
