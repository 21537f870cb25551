//! One tracked process: its identity, lifecycle state and output buffer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::buffer::{BufferLimits, HeadTailBuffer, Truncation};
use super::live::LiveGuard;
use nix::sys::signal::Signal;

use super::cgroup::ProcessCgroup;
use super::group;
use super::os_spawn::SessionChild;
use super::subreaper;
use crate::input::{Input, InputError, InputWritten};
use crate::spool::{Piece, Spool, SpoolInfo, SpoolStore, count_newlines};
use crate::stdin_wait;
use crate::sync::lock;

/// Where a process is in its life. Ordered: each phase follows the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The shell is running.
    Running,
    /// The shell has exited and its exit code is known; children may still hold the pipe.
    Exited,
    /// The shell has exited and the output pipe is closed: no more output can come.
    Finished,
}

/// What a client sees of a process in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInfo {
    pub id: String,
    pub command: String,
    pub workdir: String,
    pub background: bool,
    pub running: bool,
    pub group_alive: bool,
    /// Processes of this command still running, those that left its process group included
    /// (in cgroup mode: every member of its cgroup).
    pub members_alive: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub started_at_unix: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_at_unix: Option<i64>,
    /// What its stdin is: `null`, `pipe` or `tty`.
    pub stdin: &'static str,
    /// A member is blocked reading the stdin pipe or terminal (see [`Process::waiting_for_input`]).
    pub waiting_for_input: bool,
}

/// Output and state of one process at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputSnapshot {
    pub output: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    pub running: bool,
    pub group_alive: bool,
    pub members_alive: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub command: String,
    /// The bytes of the whole output this reply's `output` is drawn from.
    pub covers: crate::output_read::Covers,
    /// The on-disk copy of the whole output, when the agent keeps one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolInfo>,
    /// A line read: the lines returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<crate::output_read::LineSpan>,
    /// A grep: how many lines matched, were shown and were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grep: Option<crate::output_read::GrepCount>,
    /// A wait: which condition ended it (`exit`, `regex`, `quiet`, `port`, `output`,
    /// `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<&'static str>,
    /// How many changes the agent's output filters made to `output` (absent when no filter
    /// ran). Byte counts and `covers` still describe the process's real output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redactions: Option<u32>,
    /// A member is blocked reading the stdin pipe or terminal.
    pub waiting_for_input: bool,
}

/// Fixed facts about a process, known at spawn.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub chat_id: Option<String>,
    pub command: String,
    pub workdir: String,
    pub background: bool,
    /// Process group (and session) ID: the shell's PID, since it called `setsid`. Ours while
    /// any member lives: the shell is reaped only once the group is found gone (see
    /// [`Process::signal_group`]).
    pub pgid: i32,
    pub started_at_unix: i64,
    /// Start order, to sort processes started within the same second.
    pub sequence: u64,
}

#[derive(Debug, Default)]
struct ExitState {
    exit_code: Option<i32>,
    exited_at_unix: Option<i64>,
    exited_at: Option<Instant>,
    timed_out: bool,
    /// Set once no member of the group is alive; never unset. From then on the shell is
    /// reaped, its number may belong to someone else, and the group is never signalled.
    group_gone: bool,
    /// Runs once, when the shell's exit is recorded and before anyone waiting sees it.
    exit_hook: Option<ExitHook>,
}

/// Work to do as the shell's exit is recorded, before waiters wake: what it records (a
/// metric, a log line) is then already there for a client that saw the exit.
pub struct ExitHook(Box<dyn FnOnce(&Process) + Send>);

impl ExitHook {
    pub fn new(hook: impl FnOnce(&Process) + Send + 'static) -> Self {
        Self(Box::new(hook))
    }
}

impl std::fmt::Debug for ExitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExitHook")
    }
}

#[derive(Debug)]
pub struct Process {
    pub identity: Identity,
    state: Mutex<ExitState>,
    output: Mutex<HeadTailBuffer>,
    phase: watch::Sender<Phase>,
    /// The shell, unreaped until its group is found gone (or this record is dropped): an
    /// unreaped zombie keeps its PID, so `identity.pgid` cannot name anyone else's group.
    leader: SessionChild,
    /// How the command's descendants are found beyond its process group.
    tracking: Tracking,
    /// Newlines in the whole output, updated under the `output` lock.
    newlines: AtomicU64,
    /// Bytes of output so far; changes wake waiters for output.
    progress: watch::Sender<u64>,
    spool: Option<(Arc<SpoolStore>, Arc<Spool>)>,
    /// The spool has been handed the output: it outgrew the buffer. Until then the buffer
    /// holds all of it, and most commands never need a spool file.
    spilled: AtomicBool,
    /// The agent's end of its stdin, with stdin `pipe` or `tty`.
    input: Option<Input>,
    /// Counts it among the manager's live processes until its group is known to be gone.
    live: Mutex<Option<LiveGuard>>,
}

/// A look at /proc for a member blocked reading the stdin pipe or terminal.
#[derive(Debug)]
pub(crate) struct InputProbe {
    target: stdin_wait::StdinTarget,
    members: Members,
}

/// Where the members of a running command are listed.
#[derive(Debug)]
enum Members {
    Cgroup(crate::cgroup::MemberList),
    Marker { pgid: i32, marker: String },
}

impl InputProbe {
    /// Reads /proc: not for async workers.
    pub(crate) fn waiting(&self) -> bool {
        let pids = match &self.members {
            Members::Cgroup(list) => list.members(),
            Members::Marker { pgid, marker } => subreaper::members(*pgid, None, marker, usize::MAX)
                .into_iter()
                .map(|found| found.pid)
                .collect(),
        };
        pids.into_iter()
            .any(|pid| stdin_wait::blocked_reading(pid, &self.target))
    }
}

/// How a command's descendants are found, wherever they went.
#[derive(Debug)]
pub enum Tracking {
    /// Its own cgroup: every descendant is in it. Handed back (for the next command, or
    /// removed) once its last member is gone, or when the record is dropped.
    Cgroup(ProcessCgroup),
    /// The marker (`PROCWARDEN_OWNER` value) in the environment of every descendant, found
    /// through /proc beside the process group.
    Marker(String),
}

/// Output bytes with their offsets, and the line count before each where known.
#[derive(Debug, Default)]
pub struct Loaded {
    pub pieces: Vec<NumberedPiece>,
    /// Bytes of the whole output when loaded.
    pub total: u64,
    /// Newlines in the whole output when loaded.
    pub newlines: u64,
}

#[derive(Debug, Clone)]
pub struct NumberedPiece {
    pub start: u64,
    pub bytes: Vec<u8>,
    /// Newlines in the output before `start`, when known.
    pub lines_before: Option<u64>,
}

impl NumberedPiece {
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl Process {
    pub fn new(
        identity: Identity,
        limits: BufferLimits,
        leader: SessionChild,
        tracking: Tracking,
    ) -> Self {
        Self {
            identity,
            leader,
            tracking,
            state: Mutex::default(),
            output: Mutex::new(HeadTailBuffer::new(limits)),
            phase: watch::Sender::new(Phase::Running),
            newlines: AtomicU64::new(0),
            progress: watch::Sender::new(0),
            spool: None,
            spilled: AtomicBool::new(false),
            input: None,
            live: Mutex::new(None),
        }
    }

    /// It counts among the live processes of `guard` until its group is known to be gone: a
    /// detached daemon whose shell exited long ago still holds a place under the limits.
    pub fn counted_as(self, guard: LiveGuard) -> Self {
        *lock(&self.live) = Some(guard);
        self
    }

    /// Its stdin is `input`, which the client writes to.
    pub fn with_input(mut self, input: Option<Input>) -> Self {
        self.input = input;
        self
    }

    /// `null`, `pipe` or `tty`.
    pub fn stdin_name(&self) -> &'static str {
        match &self.input {
            None => "null",
            Some(input) if input.is_terminal() => "tty",
            Some(_) => "pipe",
        }
    }

    /// Whether the client can write to its stdin (a pipe or a terminal).
    pub fn has_input(&self) -> bool {
        self.input.is_some()
    }

    /// Write `data` to its stdin (waiting at most `limit` for the command to read), then
    /// with `eof` end it. Refused without a stdin pipe, after end-of-file, and once the shell
    /// has exited.
    pub async fn write_input(
        &self,
        data: &[u8],
        eof: bool,
        limit: std::time::Duration,
    ) -> Result<InputWritten, crate::ProcessError> {
        let refuse = |error| crate::ProcessError::Input {
            id: self.identity.id.clone(),
            error,
        };
        let Some(input) = &self.input else {
            return Err(refuse(InputError::NoStdin));
        };
        if self.phase() != Phase::Running {
            return Err(refuse(InputError::Exited));
        }
        input.write(data, eof, limit).await.map_err(refuse)
    }

    /// Set the window size of its terminal; the foreground process group gets SIGWINCH.
    /// Refused without a terminal, and once the shell has exited.
    pub fn resize_terminal(&self, size: crate::TerminalSize) -> Result<(), crate::ProcessError> {
        let refuse = |error| crate::ProcessError::Resize {
            id: self.identity.id.clone(),
            error,
        };
        let Some(input) = self.input.as_ref().filter(|input| input.is_terminal()) else {
            return Err(refuse(InputError::NoTerminal));
        };
        if self.phase() != Phase::Running {
            return Err(refuse(InputError::Exited));
        }
        input.resize(size).map_err(refuse)
    }

    /// Close the agent's end of its stdin (the shell has exited), so an exited record holds
    /// no fd for it.
    pub async fn close_input(&self) {
        if let Some(input) = &self.input {
            input.close().await;
        }
    }

    /// Whether a member is asleep reading the stdin the agent feeds it (see
    /// [`crate::stdin_wait`]). Always false without a stdin pipe, and once the shell has
    /// exited (its stdin is closed then). Reads /proc: not for async workers.
    pub fn waiting_for_input(&self) -> bool {
        self.input_probe().is_some_and(|probe| probe.waiting())
    }

    /// What a look for a blocked read needs, detached from the record so it can move to a
    /// blocking thread; `None` when there is nothing to look for.
    pub(crate) fn input_probe(&self) -> Option<InputProbe> {
        let input = self.input.as_ref()?;
        if self.phase() != Phase::Running {
            return None;
        }
        let members = match &self.tracking {
            Tracking::Cgroup(cgroup) => Members::Cgroup(cgroup.member_list()),
            Tracking::Marker(marker) => Members::Marker {
                pgid: self.identity.pgid,
                marker: marker.clone(),
            },
        };
        Some(InputProbe {
            target: *input.target(),
            members,
        })
    }

    /// Also write the whole output to `spool`.
    pub fn with_spool(mut self, store: Arc<SpoolStore>, spool: Arc<Spool>) -> Self {
        self.spool = Some((store, spool));
        self
    }

    /// The spool's state, when there is one. Before the output outgrows the buffer it is
    /// all in memory: whole, with no file yet.
    pub fn spool_info(&self) -> Option<SpoolInfo> {
        let (_, spool) = self.spool.as_ref()?;
        if !self.spilled.load(Ordering::Acquire) {
            return Some(SpoolInfo::whole(self.output_len()));
        }
        Some(spool.info())
    }

    /// Delete the spool file (the process is being forgotten).
    pub fn discard_spool(&self) {
        if let Some((_, spool)) = &self.spool {
            spool.discard("the process was forgotten");
        }
    }

    /// Whether output the buffer dropped is still on its way to the spool: the spool took the
    /// output over, is whole so far, and has not written all it was handed.
    pub fn spool_catching_up(&self) -> bool {
        let Some((_, spool)) = &self.spool else {
            return false;
        };
        if !self.spilled.load(Ordering::Acquire) {
            return false;
        }
        let info = spool.info();
        info.complete && info.cut_bytes == 0 && info.spooled_bytes < self.output_len()
    }

    /// Let the spool writer catch up with the output so far (bounded by `limit`).
    pub fn spool_catch_up(&self, limit: std::time::Duration) {
        if let Some((_, spool)) = &self.spool {
            spool.catch_up(limit);
        }
    }

    /// Bytes of output so far.
    pub fn output_len(&self) -> u64 {
        *self.progress.borrow()
    }

    /// Changes whenever output arrives (the value: bytes so far).
    pub fn subscribe_output(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The output bytes of `[from, to)` still held (spool first, then the in-memory buffer
    /// for what the spool lacks), contiguous runs merged, with line counts where known.
    pub fn load(&self, from: u64, to: u64) -> Loaded {
        // Recent output (what waiters scan) is usually all in the buffer's tail: no file read.
        if let Some(recent) = self.load_from_buffer(from, to) {
            return recent;
        }
        // The spool before the buffer: it only ever holds bytes the buffer has seen, so its
        // end is never past the buffer's total read after it.
        let (spooled, spool_end, spool_newlines) = match &self.spool {
            Some((_, spool)) => spool.read_counted(from, to),
            None => (Vec::new(), 0, 0),
        };
        let (buffered, total, newlines) = {
            let out = lock(&self.output);
            let newlines = self.newlines.load(Ordering::Acquire);
            (out.pieces(), out.total_written(), newlines)
        };
        let to = to.min(total);
        let clip = |mut p: Piece, low: u64| -> Option<Piece> {
            let (a, b) = (p.start.max(low).max(from), p.end().min(to));
            if a >= b {
                return None;
            }
            // Cut in place: a 64 MiB spool read is not copied again.
            p.bytes.truncate((b - p.start) as usize);
            p.bytes.drain(..(a - p.start) as usize);
            p.start = a;
            Some(p)
        };
        let mut merged: Vec<Piece> = Vec::new();
        let all = spooled
            .into_iter()
            .filter_map(|p| clip(p, 0))
            .chain(buffered.into_iter().filter_map(|p| clip(p, spool_end)));
        for piece in all {
            match merged.last_mut() {
                Some(last) if last.end() == piece.start => {
                    last.bytes.extend_from_slice(&piece.bytes)
                }
                _ => merged.push(piece),
            }
        }
        let pieces = merged
            .into_iter()
            .map(|p| {
                let lines_before = if p.start == 0 {
                    Some(0)
                } else if p.end() == total {
                    newlines.checked_sub(count_newlines(&p.bytes))
                } else if p.end() == spool_end {
                    spool_newlines.checked_sub(count_newlines(&p.bytes))
                } else {
                    None
                };
                NumberedPiece {
                    start: p.start,
                    bytes: p.bytes,
                    lines_before,
                }
            })
            .collect();
        Loaded {
            pieces,
            total,
            newlines,
        }
    }

    /// The shell that leads the group.
    pub fn leader(&self) -> &SessionChild {
        &self.leader
    }

    pub fn id(&self) -> &str {
        &self.identity.id
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn append_output(&self, data: &[u8]) {
        let newlines = count_newlines(data);
        let (total, earlier) = {
            let mut out = lock(&self.output);
            let earlier = self.spill_before(&out, data.len());
            out.write(data);
            let before = self.newlines.fetch_add(newlines, Ordering::AcqRel);
            (out.total_written(), earlier.map(|bytes| (bytes, before)))
        };
        if let Some((store, spool)) = &self.spool
            && self.spilled.load(Ordering::Acquire)
        {
            if let Some((earlier, earlier_newlines)) = earlier {
                store.offer(spool, &earlier, earlier_newlines);
            }
            store.offer(spool, data, newlines);
        }
        self.progress.send_replace(total);
    }

    /// When `more` bytes would make the output outgrow the buffer: start the spool, and
    /// return every byte so far (which the buffer still holds) for it to take first. Only
    /// the pipe reader appends, so this happens once and in order.
    fn spill_before(&self, out: &HeadTailBuffer, more: usize) -> Option<Vec<u8>> {
        if self.spool.is_none()
            || self.spilled.load(Ordering::Acquire)
            || out.total_written() + more as u64 <= out.capacity()
        {
            return None;
        }
        self.spilled.store(true, Ordering::Release);
        // Nothing was dropped yet, so head and tail meet: one piece from offset 0.
        let mut pieces = out.pieces().into_iter();
        let whole = pieces.next().filter(|p| p.start == 0)?;
        debug_assert!(pieces.next().is_none(), "the buffer had dropped bytes");
        Some(whole.bytes)
    }

    /// `[from, to)` from the buffer alone, when it holds all of it (and it is not empty).
    fn load_from_buffer(&self, from: u64, to: u64) -> Option<Loaded> {
        let out = lock(&self.output);
        let total = out.total_written();
        let to = to.min(total);
        if from >= to {
            return None;
        }
        let bytes = out.copy_range(from, to)?;
        let newlines = self.newlines.load(Ordering::Acquire);
        let lines_before = if from == 0 {
            Some(0)
        } else if to == total {
            newlines.checked_sub(count_newlines(&bytes))
        } else {
            None
        };
        Some(Loaded {
            pieces: vec![NumberedPiece {
                start: from,
                bytes,
                lines_before,
            }],
            total,
            newlines,
        })
    }

    /// Record the shell's exit. Callers must have appended all output the shell wrote first,
    /// so that anyone who sees the exit also sees the final output.
    pub fn mark_exited(&self, exit_code: i32) {
        let mut state = lock(&self.state);
        state.exit_code = Some(exit_code);
        state.exited_at_unix = Some(unix_now());
        state.exited_at = Some(Instant::now());
        let hook = state.exit_hook.take();
        drop(state);
        if let Some((_, spool)) = &self.spool {
            spool.mark_exited();
        }
        if let Some(ExitHook(hook)) = hook {
            hook(self);
        }
        self.phase
            .send_if_modified(|phase| advance(phase, Phase::Exited));
    }

    /// Run `hook` when the shell's exit is recorded, before anyone waiting for the exit
    /// wakes; at once if it has already exited.
    pub fn on_exit(&self, hook: ExitHook) {
        let mut state = lock(&self.state);
        if state.exit_code.is_none() {
            state.exit_hook = Some(hook);
            return;
        }
        drop(state);
        (hook.0)(self);
    }

    /// Record that the output pipe closed: the output is complete.
    pub fn mark_finished(&self) {
        // Only a spool that was handed output has a file to close; most commands never
        // outgrow the buffer, and telling the writer thread would wake it for nothing.
        if let Some((store, spool)) = &self.spool
            && self.spilled.load(Ordering::Acquire)
        {
            store.finish(spool);
        }
        self.phase
            .send_if_modified(|phase| advance(phase, Phase::Finished));
    }

    /// The shell's exit code, once it has exited.
    pub fn exit_code(&self) -> Option<i32> {
        lock(&self.state).exit_code
    }

    /// Whether the agent killed it for running past its timeout.
    pub fn timed_out(&self) -> bool {
        lock(&self.state).timed_out
    }

    pub fn mark_timed_out(&self) {
        lock(&self.state).timed_out = true;
    }

    /// Wait until the phase reaches `phase` (returns at once if it already has).
    pub async fn wait_for(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        // `wait_for` checks the current value first, so no wake-up is lost between a
        // check and the wait; the sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|current| *current >= phase).await;
    }

    /// Whether the shell has exited for longer than `age`.
    pub fn exited_longer_than(&self, age: std::time::Duration) -> bool {
        lock(&self.state)
            .exited_at
            .is_some_and(|at| at.elapsed() > age)
    }

    /// Whether any member of the process group is alive. Cheap while the shell runs;
    /// afterwards checks the group, and once it is gone remembers that and reaps the shell.
    /// In subreaper mode this may walk /proc: see [`Self::group_alive_if_cheap`].
    pub fn group_alive(&self) -> bool {
        // Allowed to walk /proc, the check always answers.
        self.check_group(true).unwrap_or(true)
    }

    /// [`Self::group_alive`] when it costs a few reads of kernel files that never wait on a
    /// disk (the command's cgroup, or the agent's own children in subreaper mode); `None`
    /// when only a walk of /proc can tell.
    pub fn group_alive_if_cheap(&self) -> Option<bool> {
        self.check_group(false)
    }

    fn check_group(&self, may_walk_proc: bool) -> Option<bool> {
        if self.phase() == Phase::Running {
            return Some(true);
        }
        let mut state = lock(&self.state);
        if state.group_gone {
            return Some(false);
        }
        // Past Running: the shell has exited and is kept unreaped (a zombie).
        let alive = match &self.tracking {
            Tracking::Cgroup(cgroup) => cgroup.populated(),
            Tracking::Marker(marker) => {
                match subreaper::exited_command_alive(self.identity.pgid, marker) {
                    Some(alive) => alive,
                    None if may_walk_proc => {
                        group::group_has_live_member(self.identity.pgid, true)
                            || !self.marked(marker, 1).is_empty()
                    }
                    None => return None,
                }
            }
        };
        if !alive {
            self.forget_group(&mut state);
        }
        Some(alive)
    }

    /// Send `signal` to every member of the group. `Ok(false)` when no member lives. The
    /// state lock is held across the check and the signal, and the shell is reaped only under
    /// it after the group is marked gone: the number signalled is always still pinned by our
    /// own unreaped shell, so it cannot be another process's group.
    pub fn signal_group(&self, signal: Signal) -> std::io::Result<bool> {
        let mut state = lock(&self.state);
        if state.group_gone {
            return Ok(false);
        }
        let sent = match &self.tracking {
            // The cgroup holds the group and every escaped descendant.
            Tracking::Cgroup(cgroup) if signal == Signal::SIGKILL => cgroup.kill()?,
            Tracking::Cgroup(cgroup) => cgroup.signal_members(signal as libc::c_int)? > 0,
            Tracking::Marker(marker) => {
                // Found before the group is signalled, so none of it is mistaken for gone.
                let escaped: Vec<_> = self
                    .marked(marker, usize::MAX)
                    .into_iter()
                    .filter(|found| found.pgrp != self.identity.pgid)
                    .collect();
                let group = group::signal_group(self.identity.pgid, signal)?;
                subreaper::signal_found(&escaped, signal as libc::c_int) > 0 || group
            }
        };
        if !sent && self.phase() != Phase::Running {
            // Not while the shell is pinned (a zombie is a member); kept for safety.
            self.forget_group(&mut state);
        }
        Ok(sent)
    }

    /// The group has no live member: remember it, and free the shell's PID. Only after the
    /// shell has exited (phase past Running), so the reap does not wait.
    fn forget_group(&self, state: &mut ExitState) {
        state.group_gone = true;
        lock(&self.live).take();
        self.leader.reap();
        if let Tracking::Cgroup(cgroup) = &self.tracking {
            // Its last member is gone: the next command may have the cgroup now rather than
            // when this record is forgotten.
            cgroup.release();
        }
    }

    /// How many processes of this command are alive. Reads /proc or the cgroup: not for
    /// async workers.
    pub fn members_alive(&self) -> usize {
        self.members_alive_from(None)
    }

    /// [`Self::members_alive`], counted from `walk` (taken by the caller for many records)
    /// rather than a walk of its own, in subreaper mode.
    fn members_alive_from(&self, walk: Option<&subreaper::ProcWalk>) -> usize {
        let running = self.phase() == Phase::Running;
        if !running && lock(&self.state).group_gone {
            return 0;
        }
        match &self.tracking {
            Tracking::Cgroup(cgroup) => cgroup.members().len(),
            Tracking::Marker(marker) => {
                let skip = (!running).then_some(self.identity.pgid);
                match walk {
                    Some(walk) => walk.count_members(self.identity.pgid, skip, marker),
                    None => subreaper::members(self.identity.pgid, skip, marker, usize::MAX).len(),
                }
            }
        }
    }

    /// Whether [`Self::info`] would walk /proc to count the members: subreaper mode, and the
    /// command not known to be gone.
    pub fn counts_members_from_proc(&self) -> bool {
        matches!(self.tracking, Tracking::Marker(_)) && !lock(&self.state).group_gone
    }

    /// Live processes of the group or carrying `marker`, the exited leader left out.
    fn marked(&self, marker: &str, enough: usize) -> Vec<subreaper::Found> {
        let skip = (self.phase() != Phase::Running).then_some(self.identity.pgid);
        subreaper::members(self.identity.pgid, skip, marker, enough)
    }

    /// The command's cgroup, in cgroup mode.
    pub fn cgroup(&self) -> Option<&ProcessCgroup> {
        match &self.tracking {
            Tracking::Cgroup(cgroup) => Some(cgroup),
            Tracking::Marker(_) => None,
        }
    }

    pub fn info(&self) -> ProcessInfo {
        self.info_from(None)
    }

    /// [`Self::info`], with members counted from `walk` in subreaper mode (see
    /// [`Self::counts_members_from_proc`]).
    pub fn info_from(&self, walk: Option<&subreaper::ProcWalk>) -> ProcessInfo {
        let group_alive = self.group_alive();
        let members_alive = if group_alive {
            self.members_alive_from(walk)
        } else {
            0
        };
        let state = lock(&self.state);
        ProcessInfo {
            id: self.identity.id.clone(),
            command: self.identity.command.clone(),
            workdir: self.identity.workdir.clone(),
            background: self.identity.background,
            running: state.exit_code.is_none(),
            group_alive,
            members_alive,
            exit_code: state.exit_code,
            timed_out: state.timed_out,
            started_at_unix: self.identity.started_at_unix,
            exited_at_unix: state.exited_at_unix,
            stdin: self.stdin_name(),
            // Costs /proc reads per member: the callers that may block ask for it.
            waiting_for_input: false,
        }
    }

    /// State first, then the buffer: an exited state then always comes with the final output.
    pub fn snapshot(&self) -> OutputSnapshot {
        let info = self.info();
        let (rendered, total) = {
            let out = lock(&self.output);
            (out.render(), out.total_written())
        };
        OutputSnapshot {
            covers: crate::output_read::Covers {
                missing_bytes: rendered.truncated.as_ref().map_or(0, |t| t.omitted_bytes),
                ..crate::output_read::Covers::whole(total)
            },
            spool: self.spool_info(),
            lines: None,
            grep: None,
            ended_by: None,
            redactions: None,
            waiting_for_input: false,
            output: rendered.text,
            truncated: rendered.truncated,
            running: info.running,
            group_alive: info.group_alive,
            members_alive: info.members_alive,
            exit_code: info.exit_code,
            timed_out: info.timed_out,
            command: info.command,
        }
    }
}

fn advance(phase: &mut Phase, to: Phase) -> bool {
    if *phase < to {
        *phase = to;
        true
    } else {
        false
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
