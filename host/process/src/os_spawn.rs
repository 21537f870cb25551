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
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::unix::AsyncFd;

/// A child started by [`spawn_in_new_session`], not yet reaped.
pub struct SessionChild {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

impl SessionChild {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the child to exit and reap it. Returns the exit code as a shell reports it:
    /// the status, or 128 + N when killed by signal N. Cancel-safe: dropping the future
    /// before completion leaves the child unreaped and waitable again.
    pub async fn wait(&self) -> io::Result<i32> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            match waitid(
                Id::PIDFd(self.pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) => ready.clear_ready(), // not exited yet (spurious readiness)
                Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Run `sh -c command` in `workdir` as the leader of a new session (and so of a new process
/// group), stdin from /dev/null, stdout and stderr both to `output`, with the agent's
/// environment plus `env` (later entries win) and every signal disposition reset to default.
pub fn spawn_in_new_session(
    command: &str,
    workdir: &str,
    env: &[(String, String)],
    output: &OwnedFd,
) -> io::Result<SessionChild> {
    let argv_owned = [
        CString::new("sh")?,
        CString::new("-c")?,
        CString::new(command)?,
    ];
    let overrides = env
        .iter()
        .map(|(key, value)| env_entry(key.as_bytes(), value.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let workdir = CString::new(workdir)?;
    let argv = null_terminated(&argv_owned);
    let envp = environment(&overrides);

    let workdir_ptr = workdir.as_ptr();
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
            failure: AtomicI32::new(0),
        };
        clone_child(&plan)
    };
    let found = match shell_path() {
        Some(sh) => attempt(&[sh.as_ptr()]),
        None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    };
    let (pid, pidfd) = match found {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // The shell found at start-up is gone (or the workdir is): search PATH as exec
            // would, trying each directory in order.
            let candidates = shell_candidates();
            attempt(&candidates.iter().map(|c| c.as_ptr()).collect::<Vec<_>>())?
        }
        other => other?,
    };
    // SAFETY: an OwnedFd always returns the same open fd until dropped, and the AsyncFd owns it.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    Ok(SessionChild { pid, pidfd })
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
    /// Set by the child when it could not exec: the errno.
    failure: AtomicI32,
}

/// Bytes of the stack a child runs on until it execs. What runs there is `child_main` and
/// the system call wrappers it calls, a few hundred bytes deep.
const CHILD_STACK_BYTES: usize = 64 << 10;

/// A child's stack, 16-byte aligned as the ABI requires.
#[repr(C, align(16))]
struct ChildStack([u8; CHILD_STACK_BYTES]);

thread_local! {
    /// This thread's child stack, allocated once. `CLONE_VFORK` suspends the thread until
    /// its child has exec'd or exited, so one stack per thread is never used twice at once.
    /// (`posix_spawn` maps and unmaps a stack for every child; the unmap makes the kernel
    /// interrupt every other CPU running the agent to flush its TLB.)
    static CHILD_STACK: std::cell::Cell<Option<Box<ChildStack>>> =
        const { std::cell::Cell::new(None) };
}

/// Starts the child described by `plan` with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`:
/// like `posix_spawn`, the child borrows the agent's memory instead of copying its page
/// tables, and this returns once it has exec'd. Returns its PID and pidfd.
fn clone_child(plan: &ChildPlan) -> io::Result<(libc::pid_t, OwnedFd)> {
    let mut stack = CHILD_STACK
        .take()
        .unwrap_or_else(|| Box::new(ChildStack([0; CHILD_STACK_BYTES])));
    let mut pidfd: libc::c_int = -1;
    // Block every signal for the clone: the child starts with them blocked, so no handler of
    // the agent runs in the child (on the agent's memory) before it has reset them.
    // SAFETY: an all-zero sigset_t is a valid value; both are filled before being read.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads `all` and writes `old`,
    // both valid for the call. The clone: `stack` is ours, unused by anyone else while the
    // thread is suspended (CLONE_VFORK), and its top is 16-byte aligned; `plan` and the
    // strings it points to outlive the call, which returns only after the child has exec'd or
    // exited; `pidfd` receives the pidfd (CLONE_PIDFD writes it to the parent_tid argument).
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack
            .0
            .as_mut_ptr()
            .add(CHILD_STACK_BYTES)
            .cast::<libc::c_void>();
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (plan as *const ChildPlan).cast_mut().cast::<libc::c_void>(),
            &mut pidfd as *mut libc::c_int,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            CHILD_STACK.set(Some(stack));
            return Err(clone_error);
        }
        pid
    };
    CHILD_STACK.set(Some(stack));
    // SAFETY: the kernel just created this pidfd (close-on-exec) for us; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let failure = plan.failure.load(Ordering::Acquire);
    if failure != 0 {
        // The child has exited (status 127) without exec'ing: reap it and report why.
        let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
        return Err(io::Error::from_raw_os_error(failure));
    }
    Ok((pid, pidfd))
}

/// The child, between `clone` and `execve`: on a borrowed stack and the agent's memory, so
/// only system calls. Resets every signal disposition to default (ignored ones would survive
/// exec: the agent ignores SIGPIPE, and `yes | head` would never end), starts a new session,
/// sets up stdin from /dev/null and stdout and stderr to the output pipe, changes directory,
/// unblocks every signal and execs. On failure it records errno in the plan and exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` the parent passed to clone, alive until we exec or
    // exit; every pointer in it is valid and NULL-terminated where a list. Only
    // async-signal-safe system call wrappers are called.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        let fail = |errno: libc::c_int| -> ! {
            plan.failure.store(errno.max(1), Ordering::Release);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();

        // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, empty mask. The system
        // call directly, because glibc's wrapper refuses its own signals (32 and 33), which
        // can be ignored in the agent all the same.
        let default = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        if libc::setsid() < 0 {
            fail(errno());
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
                fail(errno());
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            fail(errno());
        }
        if null != 0 {
            libc::close(null);
        }
        if libc::chdir(plan.workdir) < 0 {
            fail(errno());
        }
        // Unblock everything, glibc's own signals included (its wrapper would keep them).
        let none = 0u64;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            ptr::null_mut::<u64>(),
            8usize,
        );
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
        fail(last)
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

/// The agent's own environment as `KEY=value` strings, read once: the agent never changes it,
/// and copying it for every start showed up in the cost of a start.
fn base_environment() -> &'static [(OsString, CString)] {
    static BASE: OnceLock<Vec<(OsString, CString)>> = OnceLock::new();
    BASE.get_or_init(|| {
        std::env::vars_os()
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
    fn run_with_shells(shells: &[&std::ffi::CStr], command: &str) -> io::Result<(i32, String)> {
        let (read, write) = pipe();
        let argv_owned = [c"sh".to_owned(), c"-c".to_owned(), CString::new(command)?];
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
            workdir: c"/".as_ptr(),
            output: write.as_raw_fd(),
            failure: AtomicI32::new(0),
        };
        let (_pid, pidfd) = clone_child(&plan)?;
        drop(write);
        let status = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED)?;
        let WaitStatus::Exited(_, code) = status else {
            panic!("{status:?}");
        };
        Ok((code, read_all(read)))
    }

    #[test]
    fn shells_are_tried_in_order_like_a_path_search() {
        let sh = shell_path().expect("sh on PATH");
        let (code, out) =
            run_with_shells(&[c"/definitely/not/here/sh", sh.as_c_str()], "echo found").unwrap();
        assert_eq!((code, out.as_str()), (0, "found\n"));
        let err = run_with_shells(&[c"/definitely/not/here/sh"], "true").unwrap_err();
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
    fn a_missing_directory_is_an_error_not_a_child() {
        let (_read, write) = pipe();
        let err = spawn_in_new_session("true", "/definitely/not/here", &[], &write)
            .err()
            .expect("spawn must fail");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
