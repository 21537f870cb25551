//! Starting `sh` in a new session with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, and
//! exit waits through the pidfd.
//!
//! Why not `std::process::Command`: creating a session needs a `pre_exec` hook, and any hook
//! forces std onto fork+exec, which copies the agent's page tables on every start and then
//! takes copy-on-write faults in the agent. A vfork-style clone, as `posix_spawn` does it,
//! lets the child borrow the agent's memory until it execs, so starting a command costs
//! about what starting it from a shell does. Doing the clone here rather than through
//! `posix_spawn` saves what glibc adds around it: a child stack mapped and unmapped for every
//! start (the unmap interrupts every CPU running the agent to flush its TLB) and a separate
//! `pidfd_open`. Waiting on a pidfd wakes exactly the task whose child exited, instead of
//! every waiting task on every SIGCHLD.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::unix::AsyncFd;

use crate::child_stack::with_child_stack;
use crate::children;
use crate::kernel;
use crate::sync::lock;

/// A child started by [`spawn_in_new_session`]. It is reaped only by [`SessionChild::reap`] or
/// when this is dropped: until then an exited child stays a zombie, so its PID (which is also
/// its process group's and session's ID) cannot be given to another process, and signalling
/// the group by that number can only reach processes this child started.
pub struct SessionChild {
    pid: i32,
    /// Closed once the child is reaped: a record kept after its command ended then holds no
    /// fd, and every later start's child has no such fd to inherit and close.
    pidfd: Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    /// The exit code, once the child is reaped.
    reaped: OnceLock<i32>,
}

impl std::fmt::Debug for SessionChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionChild")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl SessionChild {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the child to exit, without reaping it. Returns the exit code as a shell
    /// reports it: the status, or 128 + N when killed by signal N. May be called again, and
    /// is cancel-safe.
    pub async fn wait(&self) -> io::Result<i32> {
        let pidfd = lock(&self.pidfd).clone();
        let Some(pidfd) = pidfd else {
            return self
                .reaped
                .get()
                .copied()
                .ok_or_else(unreaped_without_pidfd);
        };
        loop {
            let mut ready = pidfd.readable().await?;
            match waitid(
                Id::PIDFd(pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ) {
                Ok(status) if let Some(code) = exit_code(status) => return Ok(code),
                Ok(_) => ready.clear_ready(), // not exited yet (spurious readiness)
                Err(nix::errno::Errno::EINTR) => {}
                // Reaped meanwhile by `reap`, which kept the code.
                Err(nix::errno::Errno::ECHILD) if let Some(code) = self.reaped.get() => {
                    return Ok(*code);
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl SessionChild {
    /// Reap the exited child, freeing its PID for reuse: from here on, its number says nothing
    /// about who owns it. Returns whether the child is reaped (now or before); `false` while it
    /// still runs.
    pub fn reap(&self) -> bool {
        let mut pidfd = lock(&self.pidfd);
        let Some(fd) = pidfd.as_ref() else {
            return true;
        };
        let reaping = children::reaping();
        reaping.shell_reaped(self.pid);
        let reaped = waitid(
            Id::PIDFd(fd.get_ref().as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        );
        match reaped {
            Ok(status) if let Some(code) = exit_code(status) => {
                let _ = self.reaped.set(code);
                // A `wait` in progress keeps its own reference until it sees the code.
                *pidfd = None;
                true
            }
            other => {
                children::shell_started(self.pid);
                tracing::warn!(pid = self.pid, result = ?other, "a started shell could not be reaped");
                false
            }
        }
    }
}

/// The code a shell would report for an exited child: its status, or 128 + N when killed by
/// signal N. `None` while it has not exited.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

fn unreaped_without_pidfd() -> io::Error {
    io::Error::other("the child has no pidfd and was never reaped")
}

impl Drop for SessionChild {
    /// Reap the child if nobody has. Owners drop it only after it has exited; one still
    /// running is left to exit unreaped rather than block here.
    fn drop(&mut self) {
        self.reap();
    }
}

/// Why a start failed, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The child could not enter the working directory (gone, not a directory, no access).
    #[error("cannot enter the working directory: {0}")]
    Workdir(#[source] io::Error),
    /// `execve` of the shell failed on every candidate (`E2BIG`: arguments plus environment
    /// over the kernel's limit; `ENOENT`: no `sh` on PATH).
    #[error("cannot run sh: {0}")]
    Exec(#[source] io::Error),
    /// Any other step: making the pipe or the child, or setting the child up.
    #[error("{stage}: {source}")]
    Setup {
        stage: &'static str,
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    fn setup(stage: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Setup { stage, source }
    }
}

/// Run `sh -c command` in `workdir` as the leader of a new session (and so of a new process
/// group), stdin from /dev/null, stdout and stderr both to `output`, no other fd open, with the
/// agent's environment plus `env` (later entries win), every signal disposition reset to
/// default and no signal blocked.
pub fn spawn_in_new_session(
    command: &str,
    workdir: &str,
    env: &[(String, String)],
    output: &OwnedFd,
) -> Result<SessionChild, SpawnError> {
    spawn_in_new_session_in(command, workdir, env, output, None)
}

/// [`spawn_in_new_session`], the child placed in the cgroup v2 directory `cgroup` by the clone
/// itself (`clone3(CLONE_INTO_CGROUP)`): it is a member before it runs a single instruction,
/// so nothing it starts can be outside.
pub fn spawn_in_new_session_in(
    command: &str,
    workdir: &str,
    env: &[(String, String)],
    output: &OwnedFd,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<SessionChild, SpawnError> {
    spawn_with_stdin(command, workdir, env, output, ChildStdin::Null, cgroup)
}

/// What the child's fd 0 is.
#[derive(Debug, Clone, Copy)]
pub enum ChildStdin<'a> {
    /// /dev/null: a command that reads stdin gets end-of-file at once.
    Null,
    /// The read end of a pipe the agent writes to.
    Pipe(BorrowedFd<'a>),
    /// The slave of a pseudo-terminal, which also becomes the session's controlling
    /// terminal (the output is then the same slave).
    Terminal(BorrowedFd<'a>),
}

/// [`spawn_in_new_session_in`] with `stdin` as the child's fd 0.
pub fn spawn_with_stdin(
    command: &str,
    workdir: &str,
    env: &[(String, String)],
    output: &OwnedFd,
    stdin: ChildStdin<'_>,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<SessionChild, SpawnError> {
    let (stdin_fd, terminal) = match stdin {
        ChildStdin::Null => (-1, false),
        ChildStdin::Pipe(fd) => (fd.as_raw_fd(), false),
        ChildStdin::Terminal(fd) => (fd.as_raw_fd(), true),
    };
    let nul = SpawnError::setup("prepare the arguments");
    let argv_owned = [
        c"sh".to_owned(),
        c"-c".to_owned(),
        CString::new(command).map_err(|e| nul(e.into()))?,
    ];
    let overrides = env
        .iter()
        .map(|(key, value)| env_entry(key.as_bytes(), value.as_bytes()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(SpawnError::setup("prepare the environment"))?;
    let workdir =
        CString::new(workdir).map_err(|e| SpawnError::setup("prepare the workdir")(e.into()))?;
    let argv = null_terminated(&argv_owned);
    let envp = environment(&overrides);

    let workdir_ptr = workdir.as_ptr();
    let starting = children::starting();
    let attempt = |shells: &[*const libc::c_char]| {
        let shells = shells
            .iter()
            .copied()
            .chain(std::iter::once(ptr::null()))
            .collect::<Vec<_>>();
        let plan = ChildPlan {
            shells: shells.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            workdir: workdir_ptr,
            output: output.as_raw_fd(),
            stdin: stdin_fd,
            terminal,
            cgroup: cgroup.map_or(-1, |fd| fd.as_raw_fd()),
            failure: ChildFailure::default(),
            status_probe: ptr::null_mut(),
            starting: starting.as_ptr(),
        };
        clone_child(&plan)
    };
    let found = match shell_path() {
        Some(sh) => attempt(&[sh.as_ptr()]),
        None => Err(SpawnError::Exec(io::Error::from_raw_os_error(libc::ENOENT))),
    };
    let (pid, pidfd) = match found {
        Err(SpawnError::Exec(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
            // The shell found at start-up is gone: search PATH as exec would, trying each
            // directory in order. (A missing workdir fails before exec, and is not retried.)
            let candidates = shell_candidates();
            attempt(&candidates.iter().map(|c| c.as_ptr()).collect::<Vec<_>>())?
        }
        other => other?,
    };
    starting.started(pid);
    // SAFETY: an OwnedFd always returns the same open fd until dropped, and the AsyncFd owns it.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| SpawnError::setup("watch the pidfd")(e.into()))?;
    Ok(SessionChild {
        pid,
        pidfd: Mutex::new(Some(Arc::new(pidfd))),
        reaped: OnceLock::new(),
    })
}

/// The steps of the child between `clone` and `execve`, as reported when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Stage {
    Signals = 1,
    Session,
    Output,
    Stdin,
    Terminal,
    Workdir,
    CloseFds,
    Mask,
    Exec,
}

impl Stage {
    const ALL: [Stage; 9] = [
        Stage::Signals,
        Stage::Session,
        Stage::Output,
        Stage::Stdin,
        Stage::Terminal,
        Stage::Workdir,
        Stage::CloseFds,
        Stage::Mask,
        Stage::Exec,
    ];

    fn describe(self) -> &'static str {
        match self {
            Stage::Signals => "reset signal dispositions in the child",
            Stage::Session => "start a new session",
            Stage::Output => "connect stdout and stderr",
            Stage::Stdin => "connect stdin",
            Stage::Terminal => "make the pseudo-terminal the controlling terminal",
            Stage::Workdir => "enter the working directory",
            Stage::CloseFds => "close inherited fds",
            Stage::Mask => "unblock signals in the child",
            Stage::Exec => "exec sh",
        }
    }

    fn into_error(self, errno: libc::c_int) -> SpawnError {
        let source = io::Error::from_raw_os_error(errno);
        match self {
            Stage::Workdir => SpawnError::Workdir(source),
            Stage::Exec => SpawnError::Exec(source),
            other => SpawnError::Setup {
                stage: other.describe(),
                source,
            },
        }
    }
}

/// Where the child reports a failure before it exits: which step, and its errno. The parent
/// reads it after clone returns (the child has exited by then: `CLONE_VFORK`).
#[derive(Default)]
struct ChildFailure {
    stage: AtomicU32,
    errno: AtomicI32,
}

impl ChildFailure {
    fn record(&self, stage: Stage, errno: libc::c_int) {
        self.errno.store(errno.max(1), Ordering::Relaxed);
        self.stage.store(stage as u32, Ordering::Release);
    }

    fn take(&self) -> Option<SpawnError> {
        let stage = self.stage.load(Ordering::Acquire);
        let stage = Stage::ALL.into_iter().find(|s| *s as u32 == stage)?;
        Some(stage.into_error(self.errno.load(Ordering::Relaxed)))
    }
}

/// Everything the child needs, prepared by the parent: between `clone` and `execve` the
/// child shares the agent's memory and may not allocate, lock or unwind.
struct ChildPlan {
    /// Paths to try `execve` on, in order, NULL-terminated.
    shells: *const *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    workdir: *const libc::c_char,
    output: RawFd,
    /// What becomes fd 0, or -1 for /dev/null.
    stdin: RawFd,
    /// `stdin` is a pseudo-terminal's slave, to become the controlling terminal.
    terminal: bool,
    /// A cgroup v2 directory to start the child in, or -1 for the agent's own cgroup.
    cgroup: RawFd,
    failure: ChildFailure,
    /// Tests only (NULL otherwise): where the child copies its /proc status just before it
    /// unblocks signals, to show what it ran with.
    #[cfg_attr(not(test), allow(dead_code))]
    status_probe: *mut StatusProbe,
    /// Where the child writes its PID before anything else, or NULL (see
    /// `children::starting`).
    starting: *const AtomicI32,
}

/// A copy of the child's `/proc/thread-self/status`, taken just before it unblocks signals.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct StatusProbe {
    bytes: [u8; 8192],
    len: usize,
}

/// Starts the child described by `plan` with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`:
/// like `posix_spawn`, the child borrows the agent's memory instead of copying its page
/// tables, and this returns once it has exec'd. Returns its PID and pidfd.
fn clone_child(plan: &ChildPlan) -> Result<(libc::pid_t, OwnedFd), SpawnError> {
    let mut pidfd: libc::c_int = -1;
    let cloned = with_child_stack(|stack| {
        // Block every signal, glibc's own included, for the clone: the child starts with them
        // blocked, so no handler of the agent runs in the child (on the agent's memory)
        // before it has reset them all.
        let old = kernel::set_signal_mask(kernel::ALL_SIGNALS)
            .map_err(|e| SpawnError::setup("block signals")(io::Error::from_raw_os_error(e)))?;
        // SAFETY: `stack` is this thread's, unused by anyone else while the thread is
        // suspended (CLONE_VFORK), and its top is 16-byte aligned with a guard page below;
        // `plan` and the strings it points to outlive the call, which returns only after the
        // child has exec'd or exited; `pidfd` receives the pidfd (CLONE_PIDFD writes it to
        // the parent_tid argument).
        let arg = (plan as *const ChildPlan).cast_mut().cast::<libc::c_void>();
        let (pid, clone_error) = if plan.cgroup < 0 {
            // SAFETY: as above.
            let pid = unsafe {
                libc::clone(
                    child_main,
                    stack.top(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                    arg,
                    &mut pidfd as *mut libc::c_int,
                )
            };
            (pid, io::Error::last_os_error())
        } else {
            into_cgroup(plan.cgroup, stack, arg, &mut pidfd)
        };
        let restored = kernel::set_signal_mask(old);
        Ok((pid, clone_error, restored))
    })
    .map_err(SpawnError::setup("map the child stack"))?;
    let (pid, clone_error, restored) = cloned?;
    if pid < 0 {
        return Err(SpawnError::setup("create the child")(clone_error));
    }
    // SAFETY: the kernel just created this pidfd (close-on-exec) for us; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let reap = |pidfd: &OwnedFd| {
        waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED)
            .map(drop)
            .map_err(|e| SpawnError::setup("reap the failed child")(e.into()))
    };
    if let Err(errno) = restored {
        // Never seen (the arguments are valid), but a thread left with every signal blocked
        // must not pretend the start worked: stop the child and report it.
        if plan.failure.take().is_none() {
            pidfd_kill(&pidfd).map_err(SpawnError::setup("stop the child"))?;
        }
        reap(&pidfd)?;
        return Err(SpawnError::setup("restore the signal mask")(
            io::Error::from_raw_os_error(errno),
        ));
    }
    if let Some(failure) = plan.failure.take() {
        // The child has exited (status 127) without exec'ing: reap it and report why.
        reap(&pidfd)?;
        return Err(failure);
    }
    Ok((pid, pidfd))
}

/// The clone of [`clone_child`] with `clone3`, the child started in the cgroup `cgroup`; the
/// same flags otherwise. Returns the PID (negative on failure) and the error.
fn into_cgroup(
    cgroup: RawFd,
    stack: &crate::child_stack::ChildStack,
    arg: *mut libc::c_void,
    pidfd: &mut libc::c_int,
) -> (libc::pid_t, io::Error) {
    let top = stack.top() as u64;
    let size = crate::child_stack::STACK_BYTES as u64;
    let mut args = kernel::CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64
            | kernel::CLONE_INTO_CGROUP,
        pidfd: pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: top - size,
        stack_size: size,
        cgroup: cgroup as u64,
        ..Default::default()
    };
    // SAFETY: the stack is the caller's guard-paged child stack (`stack_size` bytes below its
    // aligned top), unused until the child execs or exits (CLONE_VFORK); `arg` is the plan,
    // alive for the call; `child_main` only makes system calls.
    let result = unsafe { kernel::clone3(&mut args, child_main, arg) };
    if result < 0 {
        (-1, io::Error::from_raw_os_error(-result as i32))
    } else {
        (result as libc::pid_t, io::Error::from_raw_os_error(0))
    }
}

/// SIGKILL through a pidfd, which cannot hit a reused PID.
fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain integers and a NULL siginfo, as pidfd_send_signal allows.
    let done = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if done < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child, between `clone` and `execve`: on a borrowed stack and the agent's memory, so
/// only system calls. Every signal is blocked on entry. Resets every disposition to default
/// (ignored ones would survive exec: the agent ignores SIGPIPE, and `yes | head` would never
/// end; glibc's handlers for its own signals would run agent code here), starts a new session,
/// sets up stdin (/dev/null, a pipe or a terminal that becomes the controlling one) and stdout and stderr to the output pipe, changes directory,
/// closes every other fd, unblocks every signal and execs. On failure it records the step and errno in the plan and
/// exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` the parent passed to clone, alive until we exec or
    // exit; every pointer in it is valid and NULL-terminated where a list. Only
    // async-signal-safe system call wrappers are called.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        if let Some(slot) = plan.starting.as_ref() {
            // Before it can leave the agent's memory: see `children::is_being_started`.
            slot.store(libc::getpid(), Ordering::Release);
        }
        let fail = |stage: Stage, errno: libc::c_int| -> ! {
            plan.failure.record(stage, errno);
            libc::_exit(127)
        };
        let errno = kernel::last_errno;

        for signal in 1..=kernel::MAX_SIGNAL {
            if signal != libc::SIGKILL
                && signal != libc::SIGSTOP
                && let Err(e) = kernel::reset_disposition(signal)
            {
                fail(Stage::Signals, e);
            }
        }
        if libc::setsid() < 0 {
            fail(Stage::Session, errno());
        }
        // A stdin fd that is 1 or 2 (an agent started with those closed) would be replaced by
        // the output below: move it out of the way first.
        let mut stdin = plan.stdin;
        if (stdin == 1 || stdin == 2) && stdin != plan.output {
            stdin = libc::fcntl(stdin, libc::F_DUPFD_CLOEXEC, 3);
            if stdin < 0 {
                fail(Stage::Stdin, errno());
            }
        }
        // Output first, in case the pipe is fd 0, 1 or 2 (an agent started with those closed).
        for target in [1, 2] {
            let copied = if plan.output == target {
                // dup2 onto itself would keep close-on-exec.
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(plan.output, target)
            };
            if copied < 0 {
                fail(Stage::Output, errno());
            }
        }
        if stdin < 0 {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null < 0 || libc::dup2(null, 0) < 0 {
                fail(Stage::Stdin, errno());
            }
            if null != 0 {
                libc::close(null);
            }
        } else {
            let copied = if stdin == 0 {
                // dup2 onto itself would keep close-on-exec.
                libc::fcntl(0, libc::F_SETFD, 0)
            } else {
                libc::dup2(stdin, 0)
            };
            if copied < 0 {
                fail(Stage::Stdin, errno());
            }
        }
        // The new session has no controlling terminal yet: the slave becomes it, so the
        // command's job control, ^C and window size work as in a terminal.
        if plan.terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(Stage::Terminal, errno());
        }
        if libc::chdir(plan.workdir) < 0 {
            fail(Stage::Workdir, errno());
        }
        // Nothing but stdin, stdout and stderr goes to the command: fds the agent inherited
        // without close-on-exec (a launcher's pipe, say) would otherwise reach every command.
        if let Err(e) = kernel::close_from(3) {
            fail(Stage::CloseFds, e);
        }
        #[cfg(test)]
        if !plan.status_probe.is_null() {
            copy_status(&mut *plan.status_probe);
        }
        // Unblock everything, glibc's own signals included (its wrapper would keep them):
        // a command starts with no signal blocked, whatever the agent's threads block.
        if let Err(e) = kernel::set_signal_mask(kernel::NO_SIGNALS) {
            fail(Stage::Mask, e);
        }
        let mut last = libc::ENOENT;
        let mut shell = plan.shells;
        while !(*shell).is_null() {
            libc::execve(*shell, plan.argv.cast(), plan.envp.cast());
            last = errno();
            if last != libc::ENOENT && last != libc::ENOTDIR {
                break;
            }
            shell = shell.add(1);
        }
        fail(Stage::Exec, last)
    }
}

/// Copy `/proc/thread-self/status` into `probe` with system calls only (runs in the child).
#[cfg(test)]
fn copy_status(probe: &mut StatusProbe) {
    // SAFETY: a NUL-terminated path; `probe.bytes` is valid for writes of its length.
    unsafe {
        let fd = libc::open(
            c"/proc/thread-self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        while probe.len < probe.bytes.len() {
            let n = libc::read(
                fd,
                probe.bytes.as_mut_ptr().add(probe.len).cast(),
                probe.bytes.len() - probe.len,
            );
            if n <= 0 {
                break;
            }
            probe.len += n as usize;
        }
        libc::close(fd);
    }
}

/// `DIR/sh` for every absolute directory on the agent's PATH, in order.
fn shell_candidates() -> Vec<CString> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .filter_map(|dir| CString::new(dir.join("sh").into_os_string().into_vec()).ok())
        .collect()
}

/// Where `sh` is on the agent's PATH, found once: searching would try every PATH entry
/// before it on every start, each a failed `execve` in the child while the agent waits for it.
/// `None` if PATH has no `sh` (then every start searches, and fails as a shell would).
fn shell_path() -> Option<&'static CString> {
    static SHELL: OnceLock<Option<CString>> = OnceLock::new();
    SHELL
        .get_or_init(|| {
            shell_candidates().into_iter().find(|candidate| {
                is_executable_file(std::path::Path::new(std::ffi::OsStr::from_bytes(
                    candidate.as_bytes(),
                )))
            })
        })
        .as_ref()
}

fn is_executable_file(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The agent's own environment as `KEY=value` strings (the variables `[env]` lets commands
/// inherit), read once: the agent never changes it,
/// and copying it for every start showed up in the cost of a start.
fn base_environment() -> &'static [(OsString, CString)] {
    static BASE: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    BASE.get_or_init(|| {
        let inheritance = crate::environment::inheritance();
        std::env::vars_os()
            .filter(|(key, _)| inheritance.keeps(key))
            .filter_map(|(key, value)| {
                let entry = env_entry(key.as_bytes(), value.as_bytes()).ok()?;
                Some((key, entry))
            })
            .collect()
    })
}

/// The `KEY` of a `KEY=value` entry.
fn key_of(entry: &CString) -> &[u8] {
    let bytes = entry.as_bytes();
    let end = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
    &bytes[..end]
}

fn env_entry(key: &[u8], value: &[u8]) -> io::Result<CString> {
    let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
    entry.extend_from_slice(key);
    entry.push(b'=');
    entry.extend_from_slice(value);
    CString::new(entry).map_err(io::Error::from)
}

/// `envp` for the child: the agent's environment with `overrides` (`KEY=value`, later entries
/// win) applied; pointers into the base environment and into `overrides`.
fn environment(overrides: &[CString]) -> Vec<*mut libc::c_char> {
    let overridden = |key: &[u8]| overrides.iter().any(|o| key_of(o) == key);
    let last_of_its_key = |i: usize| {
        let key = key_of(&overrides[i]);
        !overrides[i + 1..].iter().any(|later| key_of(later) == key)
    };
    base_environment()
        .iter()
        .filter(|(key, _)| !overridden(key.as_bytes()))
        .map(|(_, entry)| entry)
        .chain(
            overrides
                .iter()
                .enumerate()
                .filter(|&(i, _)| last_of_its_key(i))
                .map(|(_, entry)| entry),
        )
        .map(|entry| entry.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn runs_in_its_own_session_with_merged_output_and_env() {
        let (read, write) = pipe();
        let child = spawn_in_new_session(
            "echo out; echo err >&2; echo \"$PW_TEST_VAR\"; ps -o sid= -p $$; pwd; exit 7",
            "/tmp",
            &[
                ("PW_TEST_VAR".into(), "first".into()),
                ("PW_TEST_VAR".into(), "second".into()),
            ],
            &write,
        )
        .unwrap();
        drop(write);
        assert_eq!(child.wait().await.unwrap(), 7);
        let out = read_all(read);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..3], ["out", "err", "second"]);
        assert_eq!(
            lines[3].trim(),
            child.pid().to_string(),
            "shell leads its own session"
        );
        assert_eq!(lines[4], "/tmp");
    }

    #[tokio::test]
    async fn stdin_is_empty_and_sigpipe_is_default() {
        let (read, write) = pipe();
        let child = spawn_in_new_session("cat; yes | head -n 2", "/", &[], &write).unwrap();
        drop(write);
        assert_eq!(child.wait().await.unwrap(), 0);
        assert_eq!(read_all(read), "y\ny\n");
    }

    #[tokio::test]
    async fn signals_are_reported_as_128_plus_n() {
        let (_read, write) = pipe();
        let child = spawn_in_new_session("kill -9 $$", "/", &[], &write).unwrap();
        assert_eq!(child.wait().await.unwrap(), 137);
    }

    #[tokio::test]
    async fn an_override_replaces_the_agent_variable_instead_of_adding_a_second() {
        let (read, write) = pipe();
        let child = spawn_in_new_session(
            "env | grep -c '^HOME='; echo \"$HOME\"",
            "/",
            &[("HOME".into(), "/elsewhere".into())],
            &write,
        )
        .unwrap();
        drop(write);
        assert_eq!(child.wait().await.unwrap(), 0);
        assert_eq!(read_all(read), "1\n/elsewhere\n");
    }

    #[test]
    fn the_shell_is_found_once_on_path_as_an_absolute_executable() {
        let sh = shell_path().expect("sh on PATH");
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(sh.as_bytes()));
        assert!(path.is_absolute(), "{path:?}");
        assert!(path.ends_with("sh"), "{path:?}");
        assert!(is_executable_file(path), "{path:?}");
        assert!(std::ptr::eq(sh, shell_path().unwrap()), "resolved once");
    }

    /// Runs `command` through [`clone_child`] with the given shells to try.
    fn run_with_shells(
        shells: &[&std::ffi::CStr],
        command: &str,
    ) -> Result<(i32, String), SpawnError> {
        run_in(shells, c"/", command, ptr::null_mut(), ptr::null())
    }

    /// Runs `command` in `workdir` through [`clone_child`], with an optional status probe and
    /// starting slot.
    fn run_in(
        shells: &[&std::ffi::CStr],
        workdir: &std::ffi::CStr,
        command: &str,
        status_probe: *mut StatusProbe,
        starting: *const AtomicI32,
    ) -> Result<(i32, String), SpawnError> {
        let (read, write) = pipe();
        let argv_owned = [
            c"sh".to_owned(),
            c"-c".to_owned(),
            CString::new(command).unwrap(),
        ];
        let argv = null_terminated(&argv_owned);
        let envp = environment(&[]);
        let shells: Vec<_> = shells
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect();
        let plan = ChildPlan {
            shells: shells.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            workdir: workdir.as_ptr(),
            output: write.as_raw_fd(),
            stdin: -1,
            terminal: false,
            cgroup: -1,
            failure: ChildFailure::default(),
            status_probe,
            starting,
        };
        let (_pid, pidfd) = clone_child(&plan)?;
        drop(write);
        let status = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED).unwrap();
        let WaitStatus::Exited(_, code) = status else {
            panic!("{status:?}");
        };
        Ok((code, read_all(read)))
    }

    /// The hexadecimal mask on the `field:` line of a /proc status text.
    fn status_mask(status: &str, field: &str) -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    }

    #[test]
    fn shells_are_tried_in_order_like_a_path_search() {
        let sh = shell_path().expect("sh on PATH");
        let (code, out) =
            run_with_shells(&[c"/definitely/not/here/sh", sh.as_c_str()], "echo found").unwrap();
        assert_eq!((code, out.as_str()), (0, "found\n"));
        let err = run_with_shells(&[c"/definitely/not/here/sh"], "true").unwrap_err();
        let SpawnError::Exec(err) = err else {
            panic!("{err:?}");
        };
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_child_unblocks_and_resets_every_signal_the_agent_blocks_or_ignores() {
        // Rust ignores SIGPIPE in the agent; this thread also blocks SIGUSR1 and SIGTERM.
        let shown = std::thread::spawn(|| {
            // SAFETY: sigset_t is plain data; all zeroes is a valid (empty) value, and
            // sigemptyset below makes it one by definition. The mask change is confined to
            // this thread.
            let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: see above.
            unsafe {
                libc::sigemptyset(&mut blocked);
                libc::sigaddset(&mut blocked, libc::SIGUSR1);
                libc::sigaddset(&mut blocked, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, ptr::null_mut());
            }
            let sh = shell_path().expect("sh on PATH");
            run_with_shells(
                &[sh.as_c_str()],
                // Builtins only: a forked command would show the shell's mask while forking.
                "while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; \
                 done < /proc/$$/status",
            )
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(shown.0, 0);
        for line in shown.1.lines() {
            let mask = line.split_whitespace().nth(1).unwrap();
            assert!(mask.chars().all(|c| c == '0'), "{line}");
        }
    }

    #[test]
    fn threads_spawning_at_once_each_get_their_own_child() {
        let sh = shell_path().expect("sh on PATH");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let (code, out) =
                            run_with_shells(&[sh.as_c_str()], &format!("echo {t}-{i}")).unwrap();
                        assert_eq!((code, out), (0, format!("{t}-{i}\n")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn fds_the_agent_inherited_without_close_on_exec_do_not_reach_the_command() {
        // As a launcher would leave it: fd 251 open without close-on-exec.
        let inherited = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: nothing in the test process uses fd 251 (the tests open a few dozen fds at
        // most), so taking it over closes nobody's file; the OwnedFd is its only owner.
        let fd = unsafe { nix::unistd::dup2_raw(&inherited, 251) }.unwrap();
        assert_eq!(
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap(),
            0,
            "inheritable"
        );
        let sh = shell_path().expect("sh on PATH");
        let (code, out) = run_with_shells(
            &[sh.as_c_str()],
            "for n in 3 4 5 251; do [ -e /proc/$$/fd/$n ] && echo \"open: $n\"; done; echo checked",
        )
        .unwrap();
        drop(fd);
        assert_eq!((code, out.as_str()), (0, "checked\n"));
    }

    #[test]
    fn the_child_writes_its_pid_into_its_starting_slot() {
        let sh = shell_path().expect("sh on PATH");
        let slot = AtomicI32::new(-1);
        let (code, out) =
            run_in(&[sh.as_c_str()], c"/", "echo $$", ptr::null_mut(), &slot).unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            slot.load(Ordering::Acquire),
            out.trim().parse::<i32>().unwrap()
        );
    }

    #[test]
    fn a_missing_directory_is_a_workdir_error_found_with_one_clone() {
        let (_read, write) = pipe();
        let err = spawn_in_new_session("true", "/definitely/not/here", &[], &write)
            .expect_err("spawn must fail");
        let SpawnError::Workdir(err) = err else {
            panic!("not a workdir error: {err:?}");
        };
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_workdir_that_vanished_is_reported_as_such_not_as_a_missing_shell() {
        let dir = std::env::temp_dir().join(format!("pw-vanish-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let workdir = CString::new(dir.as_os_str().as_bytes()).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let sh = shell_path().expect("sh on PATH");
        // Several shells to try: a workdir failure must not go on to try them.
        let err = run_in(
            &[sh.as_c_str(), sh.as_c_str(), sh.as_c_str()],
            &workdir,
            "true",
            ptr::null_mut(),
            ptr::null(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, SpawnError::Workdir(e) if e.raw_os_error() == Some(libc::ENOENT)),
            "{err:?}"
        );
        assert!(err.to_string().contains("working directory"), "{err}");
    }

    #[test]
    fn every_signal_is_blocked_and_every_handler_reset_until_just_before_exec() {
        // The test harness catches SIGSEGV and SIGBUS and ignores SIGPIPE; the child must
        // show none of that, and every signal but SIGKILL and SIGSTOP blocked (glibc's 32
        // and 33 included, which its sigfillset + pthread_sigmask would leave open).
        let sh = shell_path().expect("sh on PATH");
        let mut probe = Box::new(StatusProbe {
            bytes: [0; 8192],
            len: 0,
        });
        let (code, after) = run_in(
            &[sh.as_c_str()],
            c"/",
            "while read -r k v; do echo \"$k $v\"; done < /proc/$$/status",
            &mut *probe,
            ptr::null(),
        )
        .unwrap();
        assert_eq!(code, 0);
        let before = std::str::from_utf8(&probe.bytes[..probe.len]).unwrap();
        let bit = |signal: i32| 1u64 << (signal - 1);
        assert_eq!(
            status_mask(before, "SigBlk:"),
            !(bit(libc::SIGKILL) | bit(libc::SIGSTOP)),
            "blocked before exec"
        );
        assert_eq!(status_mask(before, "SigCgt:"), 0, "no handler left");
        assert_eq!(status_mask(before, "SigIgn:"), 0, "nothing ignored");
        // After exec, the shell itself (builtins only, so no fork) runs with nothing blocked.
        assert_eq!(status_mask(&after, "SigBlk:"), 0, "unblocked after exec");
    }
}
