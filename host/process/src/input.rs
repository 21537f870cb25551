//! A command's stdin when the client writes to it: a pipe, or a pseudo-terminal that is also
//! the command's output and controlling terminal. The default stays /dev/null, so a command
//! that reads stdin without being asked to gets end-of-file at once instead of hanging.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use serde::Serialize;
use tokio::net::unix::pipe;

use crate::stdin_wait::StdinTarget;

/// What a command's stdin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum InputMode {
    /// /dev/null: reads get end-of-file at once.
    #[default]
    Null,
    /// A pipe the client writes to through the input endpoint.
    Pipe,
    /// A pseudo-terminal of this size: stdin, stdout and stderr, and the controlling terminal.
    Terminal(TerminalSize),
}

impl InputMode {
    /// `null`, `pipe` or `tty`, as replies name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Pipe => "pipe",
            Self::Terminal(_) => "tty",
        }
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for TerminalSize {
    /// The classic 24×80.
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InputWritten {
    /// Bytes written; fewer than given only when the command stopped reading for the whole
    /// time limit of the write.
    pub written: usize,
    /// Whether the input is now at end-of-file.
    pub eof: bool,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "it was started without a stdin pipe (start it with stdin \"pipe\" or tty true to \
         write to it)"
    )]
    NoStdin,
    #[error("its input is already at end-of-file")]
    AfterEof,
    #[error("it has exited, and its input is closed")]
    Exited,
    #[error("it closed its input")]
    Closed,
    #[error("{0}")]
    Write(io::Error),
}

/// The agent's end of a command's stdin, kept in its record until the shell exits.
#[derive(Debug)]
pub struct Input {
    terminal: bool,
    /// Identifies the command's end, to tell from /proc whether a member reads it.
    target: StdinTarget,
    /// One write at a time, so two clients' writes never interleave.
    writer: tokio::sync::Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    /// `None` once closed: at end-of-file on a pipe, or when the shell exited.
    sender: Option<pipe::Sender>,
    eof: bool,
    /// The last byte written did not end a line: on a terminal, the first ^D would only
    /// hand the partial line to the reader, and a second one is end-of-file.
    mid_line: bool,
}

/// The end-of-file character of a terminal in canonical mode (^D, the default `VEOF`).
const TERMINAL_EOF: u8 = 0x04;

impl Input {
    /// Whether this is a pseudo-terminal rather than a pipe.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    pub fn target(&self) -> &StdinTarget {
        &self.target
    }

    /// Write all of `data`, waiting while the command does not read (never blocking a
    /// thread), for at most `limit`; then, with `eof`, end the input: a pipe is closed, a
    /// terminal gets its end-of-file character (^D; twice after a partial line, whose first ^D
    /// only hands the line to the reader).
    pub async fn write(
        &self,
        data: &[u8],
        eof: bool,
        limit: Duration,
    ) -> Result<InputWritten, InputError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut writer = tokio::time::timeout_at(deadline, self.writer.lock())
            .await
            .map_err(|_| InputError::Write(io::ErrorKind::TimedOut.into()))?;
        if writer.eof {
            return Err(InputError::AfterEof);
        }
        let Some(sender) = writer.sender.as_ref() else {
            return Err(InputError::Exited);
        };
        let written = write_until(sender, data, deadline).await?;
        if let Some(&last) = data[..written].last() {
            // In canonical mode a carriage return ends a line too (ICRNL).
            writer.mid_line = last != b'\n' && last != b'\r';
        }
        let mut at_eof = false;
        if eof && written == data.len() {
            if self.terminal {
                let ending: &[u8] = if writer.mid_line {
                    &[TERMINAL_EOF, TERMINAL_EOF]
                } else {
                    &[TERMINAL_EOF]
                };
                let Some(sender) = writer.sender.as_ref() else {
                    return Err(InputError::Exited);
                };
                if write_until(sender, ending, deadline).await? == ending.len() {
                    at_eof = true;
                }
            } else {
                // Closing the only write end is what end-of-file is on a pipe.
                writer.sender = None;
                at_eof = true;
            }
        }
        if at_eof {
            writer.eof = true;
        }
        Ok(InputWritten {
            written,
            eof: writer.eof,
        })
    }

    /// Close the agent's end: the shell has exited.
    pub async fn close(&self) {
        self.writer.lock().await.sender = None;
    }
}

/// Write as much of `data` as the reader takes before `deadline`. `Closed` when nobody
/// reads the pipe any more (EPIPE; the agent ignores SIGPIPE) or the terminal hung up (EIO).
async fn write_until(
    sender: &pipe::Sender,
    data: &[u8],
    deadline: tokio::time::Instant,
) -> Result<usize, InputError> {
    let mut written = 0;
    while written < data.len() {
        match tokio::time::timeout_at(deadline, sender.writable()).await {
            Err(_) => break,
            Ok(Err(err)) => return Err(InputError::Write(err)),
            Ok(Ok(())) => {}
        }
        match sender.try_write(&data[written..]) {
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(err.raw_os_error(), Some(libc::EPIPE | libc::EIO))
                    || err.kind() == io::ErrorKind::BrokenPipe =>
            {
                return Err(InputError::Closed);
            }
            Err(err) => return Err(InputError::Write(err)),
        }
    }
    Ok(written)
}

/// The two ends of a command's stdin before the spawn: the child's, and the agent's.
pub struct StdinEnds {
    /// The child's end: a pipe's read end, or a terminal's slave (also its output).
    pub child: OwnedFd,
    /// A terminal's master, read for the output (non-blocking); `None` for a pipe.
    pub master: Option<OwnedFd>,
    pub input: Input,
}

/// A pipe for stdin. Must be called inside a tokio runtime.
pub fn open_pipe() -> io::Result<StdinEnds> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Both ends share the pipe's inode: /proc/PID/fd/0 of a reader shows it.
    let target = StdinTarget::of_pipe(write_end.as_fd())?;
    // Only our end is non-blocking: the flag belongs to the open end, and the command's
    // stdin must block as any pipe would.
    fcntl(&write_end, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(StdinEnds {
        child: read_end,
        master: None,
        input: Input {
            terminal: false,
            target,
            writer: tokio::sync::Mutex::new(Writer {
                sender: Some(pipe::Sender::from_owned_fd_unchecked(write_end)?),
                eof: false,
                mid_line: false,
            }),
        },
    })
}

/// A pseudo-terminal of `size`. The master is read for the output and written for the
/// input (through a second fd, as the reactor watches each fd once). Must be called inside a
/// tokio runtime.
pub fn open_terminal(size: TerminalSize) -> io::Result<StdinEnds> {
    let (master, slave) = openpty(size)?;
    for fd in [&master, &slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    // The open master is shared by both fds: non-blocking for reads and writes alike.
    fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let writer = fcntl(&master, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; nobody else owns it.
    let writer = unsafe { OwnedFd::from_raw_fd(writer) };
    let target = StdinTarget::of_terminal(slave.as_fd())?;
    Ok(StdinEnds {
        child: slave,
        master: Some(master),
        input: Input {
            terminal: true,
            target,
            writer: tokio::sync::Mutex::new(Writer {
                sender: Some(pipe::Sender::from_owned_fd_unchecked(writer)?),
                eof: false,
                mid_line: false,
            }),
        },
    })
}

/// `openpty(3)`: a master and slave pair, the slave's window set to `size`.
fn openpty(size: TerminalSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let window = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: the out-pointers are valid for the call; a NULL name and termios are allowed
    // (default settings); `window` lives for the call.
    let done = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &window,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty just opened both fds for us; nobody else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}
