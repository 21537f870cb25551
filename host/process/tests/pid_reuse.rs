//! procwarden never signals a process group number it cannot prove it still owns.
//!
//! The attack: a command's shell exits, its PID (also its group's ID) is freed, a foreign
//! process is given that number and makes it its group, and signalling the record or shutting
//! the agent down kills the foreign group. Rather than forking tens of thousands of times until
//! the kernel hands the number out again, the tests ask for the number outright with
//! `clone3(set_tid)` (Linux 5.5, needs CAP_SYS_ADMIN): the kernel gives it whenever it is free,
//! which is exactly when a fork storm would reach it.

// A test file: a failed set-up step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

mod common;

use procwarden_process::{
    Containment, GroupSignal, ManagerSettings, Phase, ProcessError, ProcessManager, Scope,
    StartRequest,
};

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// A foreign process: `setsid sleep 1000` with PID `pid`, so its group is `pid` too.
struct Foreign {
    pidfd: OwnedFd,
}

impl Foreign {
    /// Start it with exactly PID `pid`; the errno when the kernel will not.
    fn start_as(pid: i32) -> Result<Self, i32> {
        let sleep = CString::new("/bin/sleep").unwrap();
        let arg0 = CString::new("sleep").unwrap();
        let arg1 = CString::new("1000").unwrap();
        let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
        // Closes (close-on-exec) when the child has exec'd, so the parent knows setsid ran.
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let wanted: libc::pid_t = pid;
        let mut pidfd: libc::c_int = -1;
        let args = CloneArgs {
            flags: libc::CLONE_PIDFD as u64,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            set_tid: &wanted as *const libc::pid_t as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: a fork-like clone3 (no CLONE_VM, no stack): the child is a copy of this
        // process and calls only async-signal-safe functions (setsid, execv, _exit) on data
        // prepared before the call. `args` and what it points to live across the call.
        let got = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                size_of::<CloneArgs>(),
            )
        };
        if got == 0 {
            // SAFETY: in the child, see above.
            unsafe {
                libc::setsid();
                libc::execv(sleep.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        if got < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        assert_eq!(got as i32, pid);
        drop(ready_write);
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&ready_read, &mut byte).unwrap(), 0);
        // SAFETY: CLONE_PIDFD gave us this fd; nobody else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Self { pidfd })
    }

    /// Whether it still runs (has not exited).
    fn alive(&self) -> bool {
        use std::os::fd::AsFd;
        matches!(
            nix::sys::wait::waitid(
                nix::sys::wait::Id::PIDFd(self.pidfd.as_fd()),
                nix::sys::wait::WaitPidFlag::WEXITED
                    | nix::sys::wait::WaitPidFlag::WNOHANG
                    | nix::sys::wait::WaitPidFlag::WNOWAIT,
            ),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        )
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        use std::os::fd::{AsFd, AsRawFd};
        // SAFETY: plain integers and a NULL siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
        }
        let _ = nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(self.pidfd.as_fd()),
            nix::sys::wait::WaitPidFlag::WEXITED,
        );
    }
}

fn quick_exit(command: &str) -> StartRequest {
    StartRequest {
        command: command.into(),
        workdir: Some("/".into()),
        ..StartRequest::default()
    }
}

/// The state letter of /proc/PID/stat, if the PID exists.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn skip_reuse(errno: i32) {
    common::skip(
        "pid_reuse (reuse part)",
        &format!(
            "clone3 with set_tid is not available here (errno {errno}: needs Linux 5.5 and \
             CAP_SYS_ADMIN), so a PID cannot be chosen; the rest is checked"
        ),
    );
}

async fn a_foreign_process_given_a_gone_groups_number_survives_signal_and_shutdown(
    containment: Containment,
) {
    let manager = ProcessManager::new(ManagerSettings {
        containment,
        kill_grace: Duration::from_millis(200),
        ..ManagerSettings::default()
    });
    let process = manager.start(quick_exit("exit 3"), None).unwrap();
    process.wait_for(Phase::Finished).await;
    let (id, pgid) = (process.id().to_owned(), process.identity.pgid);
    assert_eq!(process.info().exit_code, Some(3), "exit reported at once");
    // The group is gone, so the shell has been reaped and its number is free.
    assert!(!process.group_alive());
    assert_eq!(proc_state(pgid), None, "reaped once its group is gone");

    // Reuse: a foreign session takes the number, and so leads a group with our record's PGID.
    let foreign = match Foreign::start_as(pgid) {
        Ok(foreign) => foreign,
        Err(errno @ (libc::EPERM | libc::ENOSYS | libc::EINVAL)) => {
            skip_reuse(errno);
            let err = manager
                .signal(&id, Scope::All, GroupSignal::Kill)
                .unwrap_err();
            assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
            return;
        }
        Err(errno) => panic!("clone3 with set_tid {pgid}: errno {errno}"),
    };
    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pgid))).unwrap();
    assert_eq!(
        group.as_raw(),
        pgid,
        "the foreign process leads group {pgid}"
    );

    // The record still exists; a signal to it answers "not running" (HTTP 409)...
    let err = manager
        .signal(&id, Scope::All, GroupSignal::Kill)
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
    assert!(process.info().exit_code == Some(3) && !process.info().group_alive);
    // ...and shutdown leaves the foreign group alone.
    manager.shutdown().await;
    assert!(
        foreign.alive(),
        "the foreign group survived signal and shutdown"
    );
}

async fn while_a_member_lingers_the_exited_shell_pins_the_groups_number(containment: Containment) {
    let manager = ProcessManager::new(ManagerSettings {
        containment,
        ..ManagerSettings::default()
    });
    // The shell exits at once; `sleep` stays in its group, holding the pipe.
    let process = manager
        .start(
            quick_exit("exec >/dev/null 2>&1; sleep 1000 & exit 0"),
            None,
        )
        .unwrap();
    process.wait_for(Phase::Finished).await;
    let (id, pgid) = (process.id().to_owned(), process.identity.pgid);
    assert_eq!(process.info().exit_code, Some(0), "exit reported at once");
    assert!(process.group_alive(), "sleep lives on in the group");
    assert_eq!(proc_state(pgid), Some('Z'), "the shell is kept unreaped");
    match Foreign::start_as(pgid) {
        Err(libc::EEXIST) => {}
        Err(errno @ (libc::EPERM | libc::ENOSYS | libc::EINVAL)) => skip_reuse(errno),
        Err(errno) => panic!("clone3 with set_tid {pgid}: errno {errno}"),
        Ok(_) => panic!("PID {pgid} was given away while its group lives"),
    }
    // The group is still ours to signal; once it is gone, the shell is reaped.
    manager.signal(&id, Scope::All, GroupSignal::Kill).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while process.group_alive() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the group dies of SIGKILL");
    assert_eq!(proc_state(pgid), None, "reaped once its group is gone");
    let err = manager
        .signal(&id, Scope::All, GroupSignal::Kill)
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
}

async fn a_forgotten_record_leaves_no_zombie(containment: Containment) {
    let manager = ProcessManager::new(ManagerSettings {
        containment,
        reap_age: Duration::ZERO,
        ..ManagerSettings::default()
    });
    let process = manager
        .start(
            quick_exit("exec >/dev/null 2>&1; sleep 1000 & exit 0"),
            None,
        )
        .unwrap();
    process.wait_for(Phase::Exited).await;
    let pgid = process.identity.pgid;
    assert_eq!(proc_state(pgid), Some('Z'), "pinned while sleep lives");
    manager
        .signal(process.id(), Scope::All, GroupSignal::Kill)
        .unwrap();
    process.wait_for(Phase::Finished).await;
    let record = Arc::downgrade(&process);
    drop(process);
    tokio::time::timeout(Duration::from_secs(10), async {
        // Forgotten once the group is seen gone; dropped once the supervising task lets go.
        while manager.reap() == 0 && !manager.is_empty() {
            tokio::task::yield_now().await;
        }
        while record.strong_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the record is forgotten and dropped");
    assert_eq!(proc_state(pgid), None, "no zombie left behind");
}

async fn shutdown_leaves_exited_groups_alone_and_still_stops_live_ones(containment: Containment) {
    let manager = ProcessManager::new(ManagerSettings {
        containment,
        kill_grace: Duration::from_millis(200),
        ..ManagerSettings::default()
    });
    let done = manager.start(quick_exit("true"), None).unwrap();
    done.wait_for(Phase::Finished).await;
    let live = manager.start(quick_exit("exec sleep 1000"), None).unwrap();
    assert!(live.group_alive());
    manager.shutdown().await;
    live.wait_for(Phase::Finished).await;
    assert_eq!(live.info().exit_code, Some(128 + libc::SIGTERM));
    assert_eq!(done.info().exit_code, Some(0));
}

/// Each test in both containment modes: the one the machine picks (cgroup where one is
/// writable) and subreaper mode, forced.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod auto {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Containment::Auto).await;
                }
            )*
        }
        mod subreaper {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Containment::Subreaper).await;
                }
            )*
        }
    };
}

in_both_modes!(
    a_foreign_process_given_a_gone_groups_number_survives_signal_and_shutdown,
    while_a_member_lingers_the_exited_shell_pins_the_groups_number,
    a_forgotten_record_leaves_no_zombie,
    shutdown_leaves_exited_groups_alone_and_still_stops_live_ones
);
