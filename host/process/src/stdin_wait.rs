//! Whether a process is blocked reading the stdin the agent feeds it, told from /proc rather
//! than from what its output looks like (a prompt regex misses silent reads and fires on
//! text that only looks like a prompt).
//!
//! A process waits for input when it sleeps (`S`) inside a read of our pipe or terminal:
//! `/proc/PID/syscall` names the system call it sleeps in and the fd it reads, and that fd's
//! target must be our pipe (same inode) or our terminal (same device). Where `syscall` cannot
//! be read, the kernel function it sleeps in (`/proc/PID/wchan`: `pipe_read`,
//! `anon_pipe_read`, `n_tty_read`, `wait_woken`, …) with fd 0 on our pipe or terminal says
//! the same, less precisely. Reads /proc: not for async workers.

use std::fs;
use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::stat::{FileStat, fstat, stat};

/// The file a command's stdin is, as `stat` shows it through /proc/PID/fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinTarget {
    /// A pipe: its file system and inode.
    Pipe { dev: u64, ino: u64 },
    /// A terminal: its character device, however it was opened.
    Terminal { rdev: u64 },
}

impl StdinTarget {
    pub fn of_pipe(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let st = fstat(fd)?;
        Ok(Self::Pipe {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    pub fn of_terminal(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self::Terminal {
            rdev: fstat(fd)?.st_rdev,
        })
    }

    fn is(&self, st: &FileStat) -> bool {
        match *self {
            Self::Pipe { dev, ino } => st.st_dev == dev && st.st_ino == ino,
            Self::Terminal { rdev } => {
                st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == rdev
            }
        }
    }
}

/// Whether process `pid` is asleep reading `target`.
pub fn blocked_reading(pid: i32, target: &StdinTarget) -> bool {
    let Ok(stat_line) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if state(&stat_line) != Some('S') {
        return false;
    }
    let reads =
        |fd: i32| stat(format!("/proc/{pid}/fd/{fd}").as_str()).is_ok_and(|st| target.is(&st));
    match fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|text| parse_syscall(&text))
    {
        Some(Syscall::Read { fd }) => reads(fd),
        Some(Syscall::Other) => false,
        None => fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|wchan| is_read_wait(&wchan) && reads(0)),
    }
}

/// What `/proc/PID/syscall` says a sleeping process is doing.
#[derive(Debug, PartialEq, Eq)]
enum Syscall {
    /// A read of `fd` (`read`, `readv`, `pread64`, `preadv`, `preadv2`).
    Read { fd: i32 },
    /// Any other system call, or none (`-1`: asleep outside a system call).
    Other,
}

/// `NR ARG0 ARG1 … SP PC` in hexadecimal after the number; `running` while it runs.
fn parse_syscall(text: &str) -> Option<Syscall> {
    let mut fields = text.split_whitespace();
    let number: i64 = fields.next()?.parse().ok()?;
    let reads = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
    ];
    if !reads.contains(&number) {
        return Some(Syscall::Other);
    }
    let arg0 = fields.next()?.trim_start_matches("0x");
    let fd = i64::from_str_radix(arg0, 16).ok()?;
    Some(Syscall::Read {
        fd: i32::try_from(fd).ok()?,
    })
}

/// Kernel functions a read of a pipe or terminal sleeps in (names vary across kernels).
fn is_read_wait(wchan: &str) -> bool {
    let wchan = wchan.trim();
    [
        "pipe_read",
        "pipe_wait",
        "n_tty_read",
        "tty_read",
        "wait_woken",
    ]
    .iter()
    .any(|name| wchan.contains(name))
}

/// The state letter of a `/proc/PID/stat` line (after the command name, which may hold
/// spaces and parentheses).
fn state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn parses_the_syscall_file() {
        let read = format!(
            "{} 0x0 0x7f3ac95f4000 0x20000 0x0 0x0 0x0 0x7ffd 0x7f3a",
            libc::SYS_read
        );
        assert_eq!(parse_syscall(&read), Some(Syscall::Read { fd: 0 }));
        let readv = format!("{} 0xa 0x1 0x1 0x0 0x0 0x0 0x7ffd 0x7f3a", libc::SYS_readv);
        assert_eq!(parse_syscall(&readv), Some(Syscall::Read { fd: 10 }));
        let other = format!("{} 0x0 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x7f3a", libc::SYS_wait4);
        assert_eq!(parse_syscall(&other), Some(Syscall::Other));
        assert_eq!(parse_syscall("-1 0x7ffd 0x7f3a"), Some(Syscall::Other));
        assert_eq!(parse_syscall("running"), None);
    }

    #[test]
    fn knows_the_read_waits_of_several_kernels() {
        for wchan in [
            "pipe_read",
            "anon_pipe_read",
            "pipe_wait\n",
            "n_tty_read",
            "wait_woken",
        ] {
            assert!(is_read_wait(wchan), "{wchan}");
        }
        for wchan in ["do_wait", "hrtimer_nanosleep", "do_sys_poll", "0"] {
            assert!(!is_read_wait(wchan), "{wchan}");
        }
        assert_eq!(state("12 (a) b) S 1 2"), Some('S'));
    }

    /// Wait (bounded) until `cond` holds, yielding between looks.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn a_reader_of_our_pipe_is_seen_and_a_sleeper_is_not() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let target = StdinTarget::of_pipe(write.as_fd()).unwrap();
        let mut reader = std::process::Command::new("head")
            .args(["-c", "1"])
            .stdin(std::process::Stdio::from(read))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = reader.id() as i32;
        assert!(
            eventually(|| blocked_reading(pid, &target)),
            "head reads our pipe"
        );
        // The same process is not reading another pipe.
        let (_other_read, other_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let other = StdinTarget::of_pipe(other_write.as_fd()).unwrap();
        assert!(!blocked_reading(pid, &other));
        nix::unistd::write(&write, b"x").unwrap();
        reader.wait().unwrap();

        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let target = StdinTarget::of_pipe(write.as_fd()).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("1000")
            .stdin(std::process::Stdio::from(read))
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        // Asleep, on our pipe, but not reading it.
        assert!(eventually(|| fs::read_to_string(format!(
            "/proc/{pid}/stat"
        ))
        .is_ok_and(|s| state(&s) == Some('S'))));
        assert!(!blocked_reading(pid, &target));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
