//! Starting `sh -c` in its own session, and supervising it until its output pipe closes.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;
use tokio::net::unix::pipe;

use super::input::{Input, InputMode, open_pipe, open_terminal};
use super::os_spawn::{ChildStdin, SessionChild, SpawnError, spawn_with_stdin};
use super::record::{Phase, Process};

/// Capacity asked for the output pipe. The default 64 KiB makes a fast writer stop and wait for
/// the agent every 64 KiB; a larger pipe lets it run on while the agent copies into the buffer
/// and the spool. The kernel fills pipe pages lazily, so a quiet command costs no more.
const OUTPUT_PIPE_BYTES: i32 = 1024 * 1024;

/// Read size for the output pipe: up to a quarter of its capacity per read.
const READ_CHUNK: usize = 256 * 1024;

/// Most bytes read from one pipe before yielding to other tasks.
const READ_FAIRNESS_LIMIT: usize = 1024 * 1024;

/// After the shell exits, how much already-written output to drain before reporting the exit.
/// Bounded so a child that never stops writing cannot delay the exit report forever.
const EXIT_DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// What to run and how.
pub struct SpawnSpec<'a> {
    pub command: &'a str,
    pub workdir: &'a str,
    /// Added on top of the agent's own environment; later entries win.
    pub env: &'a [(String, String)],
    /// The command's own cgroup v2 directory, in cgroup mode.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// What its stdin is.
    pub input: InputMode,
}

/// A started shell, the read end of its combined stdout/stderr (a pipe, or a terminal's
/// master) and, when asked for, the agent's end of its stdin.
pub struct Spawned {
    pub child: SessionChild,
    pub output: pipe::Receiver,
    pub pgid: i32,
    pub input: Option<Input>,
}

/// Must be called inside a tokio runtime.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let (output_read, output_write, stdin_read, input) = match spec.input {
        InputMode::Terminal(size) => {
            let ends = open_terminal(size).map_err(setup("open a pseudo-terminal"))?;
            let master = ends.master.ok_or_else(|| {
                setup("open a pseudo-terminal")(std::io::ErrorKind::NotFound.into())
            })?;
            // The slave is stdin, stdout and stderr at once: output comes from the master.
            (master, ends.child, None, Some(ends.input))
        }
        mode => {
            // One pipe for both streams keeps stdout and stderr interleaved in write order.
            let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| setup("make the output pipe")(e.into()))?;
            // Best effort: past the user's pipe-page limit (non-root) the kernel refuses, and
            // the default capacity only costs speed.
            let _ = fcntl(&read_end, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_BYTES));
            if mode == InputMode::Pipe {
                let ends = open_pipe().map_err(setup("make the input pipe"))?;
                (read_end, write_end, Some(ends.child), Some(ends.input))
            } else {
                (read_end, write_end, None, None)
            }
        }
    };
    let child_stdin = match (spec.input, &stdin_read) {
        (InputMode::Terminal(_), _) => ChildStdin::Terminal(output_write.as_fd()),
        (_, Some(read_end)) => ChildStdin::Pipe(read_end.as_fd()),
        (_, None) => ChildStdin::Null,
    };
    let child = spawn_with_stdin(
        spec.command,
        spec.workdir,
        spec.env,
        &output_write,
        child_stdin,
        spec.cgroup,
    )?;
    // Our copies of the command's ends must go, or the pipe (or the terminal) would never
    // report end-of-file.
    drop(output_write);
    drop(stdin_read);
    Ok(Spawned {
        // The shell leads a new session, so its PID is also its process group ID.
        pgid: child.pid(),
        child,
        output: receiver(output_read).map_err(setup("watch the output pipe"))?,
        input,
    })
}

fn setup(stage: &'static str) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Setup { stage, source }
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    // Only the read end: the write end is the child's stdout, which must stay blocking (the
    // flag belongs to the open pipe end, which dup2 shares). A fresh pipe end has no other
    // status flags to preserve; a terminal's master is already non-blocking.
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// Copy output into the process's buffer until the pipe closes, and record the shell's exit
/// as soon as it happens — without waiting for children that keep the pipe open. The shell
/// itself stays unreaped until its group is gone (see [`Process::signal_group`]).
pub async fn supervise(process: Arc<Process>, pipe: pipe::Receiver) {
    let child = process.leader();
    let mut pipe_open = true;
    let mut shell_running = true;
    while pipe_open || shell_running {
        tokio::select! {
            ready = pipe.readable(), if pipe_open => {
                pipe_open = match ready.and_then(|()| read_available(&process, &pipe)) {
                    Ok(still_open) => still_open,
                    Err(err) => {
                        tracing::warn!(id = process.id(), error = %err, "reading process output failed");
                        false
                    }
                };
            },
            status = child.wait(), if shell_running => {
                shell_running = false;
                if pipe_open {
                    pipe_open = drain_ready_output(&process, &pipe);
                }
                let code = match status {
                    Ok(code) => code,
                    Err(err) => {
                        tracing::warn!(id = process.id(), error = %err, "waiting for the shell failed");
                        -1
                    }
                };
                process.mark_exited(code);
            }
        }
    }
    process.mark_finished();
    // A client waiting for this exit was just woken onto this worker: let it reply first.
    tokio::task::yield_now().await;
    // Most commands leave no member behind: find that out now, so the shell is reaped, its
    // PID freed and its cgroup handed to the next command instead of waiting until someone
    // asks or the record is forgotten. Kernel files answer here; a walk of /proc goes to a
    // blocking thread, off the async workers.
    if process.group_alive_if_cheap().is_none() {
        let _ = tokio::task::spawn_blocking(move || process.group_alive()).await;
    }
}

thread_local! {
    /// Read buffer shared by every pipe served on this thread: an idle process costs no
    /// read buffer, which matters with a thousand of them.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Read what the pipe has, up to a fairness limit so one chatty process cannot starve the
/// others on this thread. Returns whether the pipe is still open.
fn read_available(process: &Process, pipe: &pipe::Receiver) -> std::io::Result<bool> {
    SCRATCH.with_borrow_mut(|buf| {
        let mut taken = 0;
        while taken < READ_FAIRNESS_LIMIT {
            match pipe.try_read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    process.append_output(&buf[..n]);
                    taken += n;
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // A terminal's master reads EIO once every slave fd is closed: its end-of-file.
                Err(err) if err.raw_os_error() == Some(libc::EIO) => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    })
}

/// Read whatever is already in the pipe, without waiting. The shell has been reaped, so every
/// byte it wrote is in the pipe now. Reads the fd directly: tokio's `try_read` trusts cached
/// readiness and could report "empty" for bytes the reactor has not noticed yet.
/// Returns whether the pipe is still open.
fn drain_ready_output(process: &Process, pipe: &pipe::Receiver) -> bool {
    SCRATCH.with_borrow_mut(|buf| {
        let mut drained = 0;
        while drained < EXIT_DRAIN_LIMIT {
            match nix::unistd::read(pipe.as_fd(), buf) {
                Ok(0) => return false,
                Ok(n) => {
                    process.append_output(&buf[..n]);
                    drained += n;
                }
                Err(nix::errno::Errno::EINTR) => {}
                // A terminal's master once every slave fd is closed: end-of-file.
                Err(nix::errno::Errno::EIO) => return false,
                Err(_) => return true, // EAGAIN: empty for now, a child may still write
            }
        }
        true
    })
}

/// Terminate a group politely, then kill what is left after `grace`, unless it finishes first.
pub async fn terminate_then_kill(process: &Arc<Process>, grace: std::time::Duration) {
    if !matches!(process.signal_group(Signal::SIGTERM), Ok(true)) {
        return;
    }
    kill_after(process, grace).await;
}

/// SIGKILL what is left of a terminated group after `grace`, unless it is gone by then.
pub async fn kill_after(process: &Arc<Process>, grace: std::time::Duration) {
    let gone = async {
        process.wait_for(Phase::Finished).await;
        // The pipe closed, but a member that closed its fds (a daemon) may still run: look
        // again now and then, off the async workers (it reads /proc or the cgroup).
        loop {
            let process = process.clone();
            if !tokio::task::spawn_blocking(move || process.group_alive())
                .await
                .unwrap_or(true)
            {
                return;
            }
            tokio::time::sleep(MEMBER_POLL).await;
        }
    };
    if tokio::time::timeout(grace, gone).await.is_ok() {
        return;
    }
    let _ = process.signal_group(Signal::SIGKILL);
}

/// How often a group whose output pipe has closed is checked for members during a grace period.
const MEMBER_POLL: std::time::Duration = std::time::Duration::from_millis(25);
