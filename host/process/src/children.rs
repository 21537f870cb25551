//! The agent's own children: which of them are shells it started, and a listing of the others
//! that no reap can make skip an entry.
//!
//! In subreaper mode the agent inherits every orphan of its commands. So once a command's
//! shell has exited, each live descendant of it has a live ancestor that is a child of the
//! agent and no shell the agent started (the shell is a zombie, and zombies have no children).
//! Listing the agent's orphans costs one read, where a walk of /proc costs two reads per
//! process on the machine.
//!
//! The kernel lists a thread's children (`/proc/self/task/TID/children`) one entry at a time,
//! and an entry reaped meanwhile can make it skip the next one. Every reap of a child by this
//! process goes through [`reaping`], which the listing excludes, so nothing leaves the lists
//! while they are read; entries only arrive (new shells, new orphans), which skips nothing.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, RwLock, RwLockWriteGuard};

use crate::sync::lock;

/// Shells started and not reaped, across every table in the process.
static SHELLS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Slots for shells being started, before the agent has their PID: the child writes its own
/// PID into its slot first thing, while it still runs in the agent's address space. 0 is a
/// free slot, -1 one claimed and not written yet. More concurrent starts than slots go
/// without one, and a listing that meets such a child leaves the answer to the /proc walk.
static STARTING: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// Shared while the children are listed, exclusive while one is reaped.
static REAP_GATE: RwLock<()> = RwLock::new(());

/// A shell was started with this PID.
pub(crate) fn shell_started(pid: i32) {
    lock(&SHELLS).insert(pid);
}

/// A claimed slot of [`STARTING`] (or none), freed when dropped.
pub(crate) struct StartingSlot(Option<&'static AtomicI32>);

/// A slot for a shell about to be cloned.
pub(crate) fn starting() -> StartingSlot {
    StartingSlot(STARTING.iter().find(|slot| {
        slot.compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }))
}

impl StartingSlot {
    /// Where the child writes its PID; NULL without a slot.
    pub(crate) fn as_ptr(&self) -> *const AtomicI32 {
        self.0
            .map_or(std::ptr::null(), |slot| slot as *const AtomicI32)
    }

    /// The shell is started: listed among the shells before its slot is freed, so a listing
    /// always finds it in one or the other.
    pub(crate) fn started(self, pid: i32) {
        shell_started(pid);
    }
}

impl Drop for StartingSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::Release);
        }
    }
}

/// Held while reaping children; while held, no listing runs.
pub(crate) struct Reaping {
    _gate: RwLockWriteGuard<'static, ()>,
}

/// Exclusive access for reaping the agent's children.
pub(crate) fn reaping() -> Reaping {
    Reaping {
        _gate: REAP_GATE.write().unwrap_or_else(|p| p.into_inner()),
    }
}

impl Reaping {
    /// The shell `pid` is about to be reaped: from now on its number may be anybody's. Undone
    /// by [`shell_started`] if the reap finds it still running.
    pub(crate) fn shell_reaped(&self, pid: i32) {
        lock(&SHELLS).remove(&pid);
    }
}

/// The agent's children that are no shell it started (live or zombie), where orphans go, or
/// `None` without children files (a kernel without `CONFIG_PROC_CHILDREN`).
///
/// Only the main thread's children are read. The kernel hands an orphan to the first live
/// thread of its subreaper (`find_new_reaper`, `find_alive_thread`), which is the thread
/// group's leader while it lives, and it lives as long as the agent; the children of a thread
/// that exits go the same way. The other threads' own children are shells this agent started
/// or other children of its own, never a command's descendants. One file instead of one per
/// thread matters: the blocking pool can hold dozens of threads.
pub(crate) fn other_children() -> Option<Vec<i32>> {
    let _listing = REAP_GATE.read().unwrap_or_else(|p| p.into_inner());
    let main_thread = std::process::id();
    let text = fs::read_to_string(format!("/proc/self/task/{main_thread}/children")).ok()?;
    let shells = lock(&SHELLS);
    Some(
        text.split_ascii_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .filter(|pid| !shells.contains(pid))
            .collect(),
    )
}

/// `KCMP_VM` of `<linux/kcmp.h>`: whether two processes share one address space.
const KCMP_VM: libc::c_int = 1;

/// Whether child `pid` is a shell being started that was not yet among the shells when the
/// children were listed. Until its `execve` is done its /proc files show the agent's
/// environment, or none, rather than its command's. In order: it still runs in the agent's
/// address space (`CLONE_VM | CLONE_VFORK`, before it could write its slot, or before its
/// `execve`); it wrote its slot (always before leaving that address space); it was listed as a
/// shell since (always before its slot is freed).
pub(crate) fn is_being_started(pid: i32) -> bool {
    let me = std::process::id() as libc::pid_t;
    // SAFETY: kcmp compares two processes' kernel objects; it reads no user memory.
    let same = unsafe { libc::syscall(libc::SYS_kcmp, me, pid as libc::pid_t, KCMP_VM, 0, 0) };
    same == 0
        || STARTING
            .iter()
            .any(|slot| slot.load(Ordering::Acquire) == pid)
        || lock(&SHELLS).contains(&pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphan_is_listed_until_reaped_and_a_started_shell_never_is() {
        if !std::path::Path::new("/proc/thread-self/children").exists() {
            crate::test_skip::skip(
                "an_orphan_is_listed_until_reaped_and_a_started_shell_never_is",
                "no /proc/PID/task/TID/children on this kernel",
            );
            return;
        }
        crate::subreaper::become_subreaper().unwrap();
        // The shell exits at once, leaving its `sleep` to this process's main thread.
        let shell = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 >/dev/null 2>&1 </dev/null & echo $!"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = shell.wait_with_output().unwrap();
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !other_children().unwrap().contains(&orphan) {
            assert!(std::time::Instant::now() < deadline, "never listed");
            std::thread::yield_now();
        }
        // Had the agent started it, it would not be listed.
        shell_started(orphan);
        assert!(!other_children().unwrap().contains(&orphan));
        let gate = reaping();
        gate.shell_reaped(orphan);
        drop(gate);
        assert!(other_children().unwrap().contains(&orphan));

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(orphan),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        let gate = reaping();
        // ECHILD: an orphan reaper of another test took it first.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(orphan), None);
        drop(gate);
        assert!(!other_children().unwrap().contains(&orphan));
    }
}
