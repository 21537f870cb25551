//! `posix_spawn` of `sh` in a new session, and exit waits through a pidfd.
//!
//! Why not `std::process::Command`: creating a session needs a `pre_exec` hook, and any hook
//! forces std onto fork+exec, which copies the agent's page tables on every start and then
//! takes copy-on-write faults in the agent. `posix_spawn` uses `CLONE_VFORK` and glibc can
//! create the session itself (`POSIX_SPAWN_SETSID`), so starting a command costs about what
//! starting it from a shell does. Waiting on a pidfd wakes exactly the task whose child
//! exited, instead of every waiting task on every SIGCHLD.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;
use std::sync::OnceLock;

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

    let actions = FileActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.dup2(output.as_raw_fd(), 1)?;
    actions.dup2(output.as_raw_fd(), 2)?;
    actions.chdir(&workdir)?;
    let attrs = SpawnAttrs::new_session_with_default_signals()?;

    let mut pid: libc::pid_t = 0;
    let spawn = |pid: &mut libc::pid_t, path: Option<&CString>| {
        // SAFETY: every pointer is valid for the call: argv and envp are NULL-terminated
        // arrays of pointers into CStrings that outlive it (the base environment is static);
        // actions and attrs are initialised above and destroyed by their Drop after it.
        unsafe {
            match path {
                Some(path) => libc::posix_spawn(
                    pid,
                    path.as_ptr(),
                    &actions.0,
                    &attrs.0,
                    argv.as_ptr(),
                    envp.as_ptr(),
                ),
                None => libc::posix_spawnp(
                    pid,
                    c"sh".as_ptr(),
                    &actions.0,
                    &attrs.0,
                    argv.as_ptr(),
                    envp.as_ptr(),
                ),
            }
        }
    };
    let mut rc = spawn(&mut pid, shell_path());
    if rc == libc::ENOENT && shell_path().is_some() {
        // The shell found at start-up is gone (or the workdir is): search PATH as exec would.
        rc = spawn(&mut pid, None);
    }
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The child is ours until we reap it, so its PID cannot be reused before this call.
    let pidfd = pidfd_open(pid)?;
    // SAFETY: an OwnedFd always returns the same open fd until dropped, and the AsyncFd owns it.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    Ok(SessionChild { pid, pidfd })
}

/// Where `sh` is on the agent's PATH, found once: `posix_spawnp` would try every PATH entry
/// before it on every start, each a failed `execve` in the child while the agent waits for it.
/// `None` if PATH has no `sh` (then every start searches, and fails as a shell would).
fn shell_path() -> Option<&'static CString> {
    static SHELL: OnceLock<Option<CString>> = OnceLock::new();
    SHELL
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join("sh"))
                .find(|candidate| is_executable_file(candidate))
                .and_then(|found| CString::new(found.into_os_string().into_vec()).ok())
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

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us (pidfds are close-on-exec), nobody else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: a zeroed value is a valid argument to init, which fully initialises it.
        let mut actions: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions) })?;
        Ok(Self(actions))
    }

    fn open(&self, fd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: self.0 is initialised; glibc copies the path.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(self.ptr(), fd, path.as_ptr(), flags, 0)
        })
    }

    fn dup2(&self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: self.0 is initialised. dup2 onto another number clears close-on-exec on
        // the copy, so the child inherits only 0, 1 and 2 from us.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(self.ptr(), fd, target) })
    }

    fn chdir(&self, dir: &std::ffi::CStr) -> io::Result<()> {
        // SAFETY: self.0 is initialised; glibc (2.29+) copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(self.ptr(), dir.as_ptr()) })
    }

    fn ptr(&self) -> *mut libc::posix_spawn_file_actions_t {
        (&self.0 as *const libc::posix_spawn_file_actions_t).cast_mut()
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new and destroyed exactly once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttrs(libc::posix_spawnattr_t);

impl SpawnAttrs {
    /// A new session; an empty signal mask; every signal at its default disposition. The
    /// agent ignores SIGPIPE (as every Rust program does), and ignored dispositions survive
    /// exec: without the reset, `yes | head` would never end.
    fn new_session_with_default_signals() -> io::Result<Self> {
        // SAFETY: a zeroed value is a valid argument to init, which fully initialises it;
        // sigset_t values are initialised by sigemptyset/sigfillset before use.
        unsafe {
            let mut attrs: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut attrs))?;
            let attrs = Self(attrs);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigfillset(&mut all);
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
            check(libc::posix_spawnattr_setflags(attrs.ptr(), flags))?;
            check(libc::posix_spawnattr_setsigmask(attrs.ptr(), &empty))?;
            check(libc::posix_spawnattr_setsigdefault(attrs.ptr(), &all))?;
            Ok(attrs)
        }
    }

    fn ptr(&self) -> *mut libc::posix_spawnattr_t {
        (&self.0 as *const libc::posix_spawnattr_t).cast_mut()
    }
}

impl Drop for SpawnAttrs {
    fn drop(&mut self) {
        // SAFETY: initialised in new and destroyed exactly once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
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

    #[test]
    fn a_missing_directory_is_an_error_not_a_child() {
        let (_read, write) = pipe();
        let err = spawn_in_new_session("true", "/definitely/not/here", &[], &write)
            .err()
            .expect("spawn must fail");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
