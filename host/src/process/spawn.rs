//! Starting `sh -c` in its own session, and supervising it until its output pipe closes.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::group::signal_group;
use super::record::{Phase, Process};

/// Read size for the output pipe: a full default pipe buffer per read.
const READ_CHUNK: usize = 64 * 1024;

/// After the shell exits, how much already-written output to drain before reporting the exit.
/// Bounded so a child that never stops writing cannot delay the exit report forever.
const EXIT_DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// What to run and how.
pub struct SpawnSpec<'a> {
    pub command: &'a str,
    pub workdir: &'a str,
    /// Added on top of the agent's own environment; later entries win.
    pub env: &'a [(String, String)],
}

/// A started shell and the read end of its combined stdout/stderr pipe.
pub struct Spawned {
    pub child: Child,
    pub output: pipe::Receiver,
    pub pgid: i32,
}

pub fn spawn(spec: &SpawnSpec<'_>) -> std::io::Result<Spawned> {
    // One pipe for both streams keeps stdout and stderr interleaved in write order.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let write_end_for_stderr = write_end.try_clone()?;

    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(spec.command)
        .current_dir(spec.workdir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_end_for_stderr))
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe. A new session makes the shell the leader of a new process
    // group (pgid == pid), so one killpg reaches every pipeline member and `&` child, and it
    // detaches from the agent's controlling terminal.
    unsafe {
        command.as_std_mut().pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Dropping the command closes the parent's copies of the write end; otherwise the pipe
    // would never report end-of-file.
    drop(command);
    let pgid = child
        .id()
        .ok_or_else(|| std::io::Error::other("child exited before its PID was read"))?
        as i32;
    Ok(Spawned {
        child,
        output: receiver(read_end)?,
        pgid,
    })
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    pipe::Receiver::from_owned_fd(fd)
}

/// The shell's exit code as a shell reports it: 128 + N when killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(-1)
}

/// Copy output into the process's buffer until the pipe closes, and record the shell's exit
/// as soon as it happens — without waiting for children that keep the pipe open.
pub async fn supervise(process: Arc<Process>, spawned: Spawned) {
    let Spawned {
        mut child,
        output: mut pipe,
        ..
    } = spawned;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pipe_open = true;
    let mut shell_running = true;
    while pipe_open || shell_running {
        tokio::select! {
            read = pipe.read(&mut buf), if pipe_open => match read {
                Ok(0) => pipe_open = false,
                Ok(n) => process.append_output(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::warn!(id = process.id(), error = %err, "reading process output failed");
                    pipe_open = false;
                }
            },
            status = child.wait(), if shell_running => {
                shell_running = false;
                if pipe_open {
                    pipe_open = drain_ready_output(&process, &pipe, &mut buf);
                }
                let code = match status {
                    Ok(status) => exit_code(status),
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
}

/// Read whatever is already in the pipe, without waiting. The shell has been reaped, so every
/// byte it wrote is in the pipe now. Reads the fd directly: tokio's `try_read` trusts cached
/// readiness and could report "empty" for bytes the reactor has not noticed yet.
/// Returns whether the pipe is still open.
fn drain_ready_output(process: &Process, pipe: &pipe::Receiver, buf: &mut [u8]) -> bool {
    let mut drained = 0;
    while drained < EXIT_DRAIN_LIMIT {
        match nix::unistd::read(pipe.as_fd(), buf) {
            Ok(0) => return false,
            Ok(n) => {
                process.append_output(&buf[..n]);
                drained += n;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true, // EAGAIN: empty for now, a child may still write
        }
    }
    true
}

/// Terminate a group politely, then kill what is left after `grace`, unless it finishes first.
pub async fn terminate_then_kill(process: &Process, grace: std::time::Duration) {
    let pgid = process.identity.pgid;
    if !matches!(signal_group(pgid, Signal::SIGTERM), Ok(true)) {
        return;
    }
    if tokio::time::timeout(grace, process.wait_for(Phase::Finished))
        .await
        .is_ok()
        && !process.group_alive()
    {
        return;
    }
    let _ = signal_group(pgid, Signal::SIGKILL);
}
