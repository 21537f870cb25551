//! The process table: start, look up, signal, list, reap, shut down.

use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::Signal;

use super::buffer::BufferLimits;
use super::cgroup::{CgroupRoot, Unavailable};
use super::input::InputMode;
use super::limits::{check_lengths, too_long_together};
use super::live::LiveCounts;
use super::log_text::loggable_command;
use super::os_spawn::SpawnError;
use super::record::{Identity, Phase, Process, ProcessInfo, Tracking, unix_now};
use super::request::StartRequest;
use super::spawn::{SpawnSpec, Spawned, kill_after, spawn, supervise, terminate_then_kill};
use super::spool::{SpoolSettings, SpoolStore};
use super::state_file::{self, StateFile};
use super::subreaper::{self, MARKER_VARIABLE, become_subreaper, reap_orphans};
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
    /// How descendants are tracked.
    pub containment: Containment,
    /// Names the agent's cgroup directory (`procwarden-<instance>`). Stable for one
    /// configuration, so the next agent finds (and kills) what a crashed one left; unique
    /// among agents running at once, or one would kill another's commands at start.
    pub instance: String,
    /// The on-disk copy of every process's whole output.
    pub spool: SpoolSettings,
    /// Subreaper mode: the file of running commands' groups, read by the next agent of this
    /// instance to kill what a crashed one left. `None`: not kept (the instance is not stable).
    pub state_file: Option<PathBuf>,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            buffer: BufferLimits::default(),
            reap_age: Duration::from_secs(300),
            kill_grace: Duration::from_secs(5),
            max_exited: 1000,
            spool: SpoolSettings::default(),
            containment: Containment::Auto,
            instance: default_instance(),
            state_file: None,
        }
    }
}

/// How descendants of a command are tracked, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Containment {
    /// cgroup where one is writable, else the process group.
    #[default]
    Auto,
    /// A cgroup v2 per command; the agent does not start without a writable one.
    Cgroup,
    /// The process group plus the environment marker, the agent a child subreaper; even where
    /// cgroups work.
    Subreaper,
}

impl Containment {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "cgroup" => Some(Self::Cgroup),
            "subreaper" => Some(Self::Subreaper),
            _ => None,
        }
    }
}

/// How descendants are tracked, as it turned out on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainmentMode {
    Cgroup,
    Subreaper,
}

impl ContainmentMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::Subreaper => "subreaper",
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
    /// A write to the process's stdin was refused or failed.
    #[error("Cannot write to the input of process \"{id}\": {error}.")]
    Input {
        id: String,
        error: crate::input::InputError,
    },
    /// A terminal's window size could not be set.
    #[error("Cannot resize the terminal of process \"{id}\": {error}.")]
    Resize {
        id: String,
        error: crate::input::InputError,
    },
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

/// How many tracked processes are in each phase, and how many chats own them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// The shell runs.
    pub running: usize,
    /// The shell exited; output may still come from what it left.
    pub exited: usize,
    /// Exited and its output complete.
    pub finished: usize,
    /// Distinct chats among the tracked processes.
    pub chats: usize,
}

pub struct ProcessManager {
    settings: ManagerSettings,
    /// Subreaper mode: whether the orphan reaper runs.
    reaper_started: AtomicBool,
    /// In cgroup mode, the directory of the commands' cgroups.
    cgroups: Option<CgroupRoot>,
    table: Mutex<HashMap<String, Arc<Process>>>,
    sequence: AtomicU64,
    closed: AtomicBool,
    spools: Option<Arc<SpoolStore>>,
    /// Subreaper mode with a stable instance: the groups the next agent would clean up.
    state: Option<StateFile>,
    /// Processes whose shell runs or whose group is not known to be gone, overall and per chat.
    live: Arc<LiveCounts>,
    /// Held by the one [`Self::recount_live`] look running.
    recounting: Mutex<()>,
    /// How many such looks have finished: a start that waited while another look ran takes
    /// that look's result instead of its own, so a flood at a limit costs few looks.
    recounts: AtomicU64,
    /// Set while [`Self::forget_finished_over_cap`] runs.
    trimming: AtomicBool,
}

impl ProcessManager {
    /// A process table, in the configured containment mode. `Auto` without a writable
    /// cgroup v2 falls back to the process group; `Cgroup` without one is an error.
    pub fn try_new(settings: ManagerSettings) -> Result<Arc<Self>, Unavailable> {
        let cgroups = match settings.containment {
            Containment::Subreaper => None,
            Containment::Cgroup => Some(CgroupRoot::open(&settings.instance)?),
            Containment::Auto => match CgroupRoot::open(&settings.instance) {
                Ok(root) => Some(root),
                Err(why) => {
                    tracing::info!(reason = %why, "no writable cgroup v2: containment falls back");
                    None
                }
            },
        };
        if let Some(root) = &cgroups {
            // What an earlier agent of this configuration left when it was killed.
            let left = root.kill_leftovers();
            if left > 0 {
                tracing::warn!(
                    cgroups = left,
                    path = %root.path().display(),
                    "killed the commands a previous agent left running"
                );
            }
        }
        Ok(Self::with_cgroups(settings, cgroups))
    }

    /// [`Self::try_new`], falling back to the process group if a forced cgroup mode is
    /// unavailable.
    pub fn new(settings: ManagerSettings) -> Arc<Self> {
        let cgroups = match settings.containment {
            Containment::Subreaper => None,
            _ => CgroupRoot::open(&settings.instance).ok(),
        };
        Self::with_cgroups(settings, cgroups)
    }

    fn with_cgroups(settings: ManagerSettings, cgroups: Option<CgroupRoot>) -> Arc<Self> {
        if cgroups.is_none()
            && let Err(err) = become_subreaper()
        {
            tracing::warn!(error = %err, "cannot become a child subreaper");
        }
        let spools = SpoolStore::new(settings.spool.clone()).map(Arc::new);
        let state = match (&cgroups, &settings.state_file) {
            (None, Some(path)) => open_state_file(path, &settings.instance),
            _ => None,
        };
        let manager = Arc::new(Self {
            settings,
            reaper_started: AtomicBool::new(false),
            cgroups,
            table: Mutex::default(),
            sequence: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            spools,
            state,
            live: Arc::default(),
            recounting: Mutex::default(),
            recounts: AtomicU64::new(0),
            trimming: AtomicBool::new(false),
        });
        // Every table, whatever its mode: a subreaper-mode table's orphan reaper must leave a
        // cgroup-mode table's pinned shells alone too, where both live in one process.
        lock(&TABLES).push(Arc::downgrade(&manager));
        manager
    }

    /// The spools, when output is spooled to disk.
    pub fn spools(&self) -> Option<&Arc<SpoolStore>> {
        self.spools.as_ref()
    }

    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// How descendants are tracked.
    pub fn containment(&self) -> ContainmentMode {
        if self.cgroups.is_some() {
            ContainmentMode::Cgroup
        } else {
            ContainmentMode::Subreaper
        }
    }

    /// Spawn and track a process for `chat_id`. The request's workdir is an existing
    /// directory (the agent resolved it); without one the command runs in the agent's own.
    /// Must be called inside a tokio runtime.
    pub fn start(
        self: &Arc<Self>,
        request: StartRequest,
        chat_id: Option<String>,
    ) -> Result<Arc<Process>, ProcessError> {
        self.start_with_input(request, chat_id, InputMode::Null)
    }

    /// [`Self::start`] with stdin as `input` says: /dev/null, a pipe, or a pseudo-terminal.
    pub fn start_with_input(
        self: &Arc<Self>,
        request: StartRequest,
        chat_id: Option<String>,
        input: InputMode,
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
        let id = uuid::Uuid::new_v4().to_string();
        let tracking = match &self.cgroups {
            Some(root) => Tracking::Cgroup(root.create().map_err(|source| {
                ProcessError::Spawn(SpawnError::Setup {
                    stage: "make the command's cgroup",
                    source,
                })
            })?),
            None => {
                let marker = format!("{}:{id}", self.settings.instance);
                env.push((MARKER_VARIABLE.into(), marker.clone()));
                self.start_orphan_reaper();
                Tracking::Marker(marker)
            }
        };
        // Held until the leader is in the table, so the orphan reaper never takes it.
        let gate = SPAWN_GATE.read().unwrap_or_else(|p| p.into_inner());
        let mut tracking = tracking;
        let spawned = spawn(&SpawnSpec {
            command: &command,
            workdir: &workdir,
            env: &env,
            cgroup: tracking_fd(&tracking),
            input,
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
            input,
        } = spawned;
        if let Tracking::Cgroup(cgroup) = &mut tracking {
            cgroup.close_fd();
        }
        let spool = self
            .spools
            .as_ref()
            .map(|store| (store.clone(), store.create(&id)));
        let process = Process::new(
            Identity {
                id,
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
            tracking,
        )
        .with_input(input);
        let live = self.live.enter(process.identity.chat_id.as_deref());
        let process = process.counted_as(live);
        let process = Arc::new(match spool {
            Some((store, spool)) => process.with_spool(store, spool),
            None => process,
        });
        lock(&self.table).insert(process.id().to_owned(), process.clone());
        drop(gate);
        if let Some(state) = &self.state
            && let Some(start) = subreaper::start_time(pgid)
        {
            state.record(process.id(), state_file::Entry { pgid, start });
        }
        tokio::spawn(supervise(process.clone(), output));
        if process.has_input() {
            // Once the shell exits its stdin is closed: an exited record holds no fd for it,
            // and whatever the shell left running reads end-of-file rather than hanging.
            let process = process.clone();
            tokio::spawn(async move {
                process.wait_for(Phase::Exited).await;
                process.close_input().await;
            });
        }
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

    /// Subreaper mode: reap re-parented orphans now and then (they are not counted alive,
    /// but a zombie holds its PID). Started with the first command, inside the runtime.
    fn start_orphan_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ORPHAN_REAP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || manager.reap_orphans()).await;
            }
        });
    }

    /// Reap zombie children of the agent that are no record's leader (re-parented
    /// orphans). Leaders of every table in the process are left alone.
    pub fn reap_orphans(&self) -> usize {
        let _gate = SPAWN_GATE.write().unwrap_or_else(|p| p.into_inner());
        let mut leaders = HashSet::new();
        lock(&TABLES).retain(|table| {
            let Some(manager) = table.upgrade() else {
                return false;
            };
            leaders.extend(lock(&manager.table).values().map(|p| p.leader().pid()));
            true
        });
        reap_orphans(&leaders)
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
    /// `Terminate` is followed by SIGKILL to whatever is left after the grace period.
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
                if signal == GroupSignal::Terminate
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    // What ignores SIGTERM is killed after the grace period, as at shutdown.
                    let grace = self.settings.kill_grace;
                    runtime.spawn(async move { kill_after(&process, grace).await });
                }
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
        visible.truncate(cap);
        // In subreaper mode one walk of /proc counts every listed command's members.
        let walk = visible
            .iter()
            .any(|p| p.counts_members_from_proc())
            .then(subreaper::ProcWalk::take);
        visible
            .iter()
            .map(|p| ProcessInfo {
                waiting_for_input: p.waiting_for_input(),
                ..p.info_from(walk.as_ref())
            })
            .collect()
    }

    /// Processes in `scope` whose shell still runs, or whose group was last seen alive.
    /// Cheap: reads no /proc, so it can gate every start.
    pub fn count_live(&self, scope: Scope<'_>) -> usize {
        match scope {
            Scope::All => self.live.total(),
            Scope::Chat(chat) => self.live.of_chat(chat),
        }
    }

    /// Look again at every process whose shell has exited but whose group was last seen
    /// alive, so that members that died since stop counting as live, then
    /// [`Self::count_live`] of `scope`. For a start that met a limit. One look at a time, over
    /// every chat, so a start that waited for another look takes its result. May walk /proc:
    /// not for async workers.
    pub fn recount_live(&self, scope: Scope<'_>) -> usize {
        let seen = self.recounts.load(Ordering::Acquire);
        let _looking = lock(&self.recounting);
        if self.recounts.load(Ordering::Acquire) != seen {
            return self.count_live(scope);
        }
        let exited: Vec<Arc<Process>> = lock(&self.table)
            .values()
            .filter(|p| p.phase() != Phase::Running)
            .cloned()
            .collect();
        for process in exited {
            process.group_alive();
        }
        self.recounts.fetch_add(1, Ordering::Release);
        self.count_live(scope)
    }

    /// Processes `scope` may see, running or exited (what `list` returns before its cap).
    pub fn count(&self, scope: Scope<'_>) -> usize {
        lock(&self.table)
            .values()
            .filter(|p| scope.admits(p))
            .count()
    }

    /// Tracked processes by phase, and the chats they belong to, in one pass over the table
    /// (for metrics). Reads no /proc.
    pub fn census(&self) -> Census {
        let table = lock(&self.table);
        let mut census = Census::default();
        let mut chats = std::collections::HashSet::new();
        for p in table.values() {
            match p.phase() {
                Phase::Running => census.running += 1,
                Phase::Exited => census.exited += 1,
                Phase::Finished => census.finished += 1,
            }
            if let Some(chat) = p.identity.chat_id.as_deref() {
                chats.insert(chat);
            }
        }
        census.chats = chats.len();
        census
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
        self.reap_down_to(self.settings.max_exited)
    }

    /// Called after a start: when the finished records kept, with the one just started
    /// counted as finished already, reach past `max_exited`, forget the oldest now, on a
    /// blocking thread, rather than at the next reaper tick: a burst of starts must not hold
    /// thousands of finished records until then. It forgets down to 15/16 of the cap, so the
    /// starts that follow do not each pay for a look at the table. One at a time.
    pub fn forget_finished_over_cap(self: &Arc<Self>) {
        let retained = lock(&self.table).len();
        if retained < self.live.total() + self.settings.max_exited
            || self.trimming.swap(true, Ordering::AcqRel)
        {
            return;
        }
        /// Lets the next start trim again, even if this trim panicked.
        struct Trimmed(Arc<ProcessManager>);
        impl Drop for Trimmed {
            fn drop(&mut self) {
                self.0.trimming.store(false, Ordering::Release);
            }
        }
        let trimmed = Trimmed(self.clone());
        tokio::task::spawn_blocking(move || {
            let cap = trimmed.0.settings.max_exited;
            trimmed.0.reap_down_to(cap - cap / 16);
        });
    }

    fn reap_down_to(&self, keep_finished: usize) -> usize {
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
        if finished.len() > keep_finished {
            finished.sort_by_key(|p| p.identity.sequence);
            let excess = finished.len() - keep_finished;
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
            .inspect(|p| {
                p.discard_spool();
                if let Some(state) = &self.state {
                    state.forget(p.id());
                }
            })
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
        if let Some(root) = &self.cgroups {
            // Every command's cgroup was killed above; remove them and the agent's directory
            // now (a record's cgroup is removed when it is dropped, which at exit may never
            // happen).
            let remaining: Vec<Arc<Process>> = lock(&self.table).values().cloned().collect();
            for process in remaining {
                if let Some(cgroup) = process.cgroup()
                    && !cgroup.kill_and_remove()
                {
                    tracing::warn!(id = process.id(), "a command's cgroup outlived shutdown");
                }
            }
            root.remove();
        }
        if let Some(store) = &self.spools {
            store.remove_all();
        }
        if let Some(state) = &self.state {
            state.remove();
        }
    }
}

/// Kill what a crashed agent of `instance` left (from its state file and the marker), then
/// start a fresh file. Without one (logged) crash recovery is off; the agent runs either way.
fn open_state_file(path: &Path, instance: &str) -> Option<StateFile> {
    let left = state_file::kill_leftovers(path, instance);
    if left.killed > 0 || left.unproven_groups > 0 {
        tracing::warn!(
            processes = left.killed,
            unproven_groups_left_alone = left.unproven_groups,
            path = %path.display(),
            "killed the commands a previous agent left running"
        );
    }
    match StateFile::create(path) {
        Ok(state) => Some(state),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "no state file: commands left by a crash will not be found by the next agent");
            None
        }
    }
}

/// Unique among the agents (and the tables of one process) running at once.
fn default_instance() -> String {
    static TABLES: AtomicU64 = AtomicU64::new(0);
    format!(
        "pid{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Subreaper mode: starts hold it shared from the clone until the leader is in its table; the
/// orphan reaper holds it exclusively, so it never reaps a leader it cannot see. Process-wide,
/// as the agent's children are.
static SPAWN_GATE: RwLock<()> = RwLock::new(());

/// Every table in the process, whose leaders the subreaper-mode orphan reaper leaves alone.
static TABLES: Mutex<Vec<Weak<ProcessManager>>> = Mutex::new(Vec::new());

/// How often re-parented orphans are reaped in subreaper mode.
const ORPHAN_REAP_INTERVAL: Duration = Duration::from_millis(500);

fn tracking_fd(tracking: &Tracking) -> Option<BorrowedFd<'_>> {
    match tracking {
        Tracking::Cgroup(cgroup) => cgroup.fd(),
        Tracking::Marker(_) => None,
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
