//! The agent's own children: which of them are shells it started, and a listing of the others
//! that no reap can make skip an entry.
//!
//! In subreaper mode the agent inherits every orphan of its commands. So once a command's
//! shell has exited, each live descendant of it has a live ancestor that is a child of the
//! agent and no shell the agent started (the shell is a zombie, and zombies have no children).
//! Listing the agent's children costs a read per agent thread, where a walk of /proc costs two
//! reads per process on the machine, twice per command.
//!
//! The kernel lists a thread's children (`/proc/self/task/TID/children`) one entry at a time,
//! and an entry reaped meanwhile can make it skip the next one. Every reap of a child by this
//! process goes through [`reaping`], which the listing excludes, so nothing leaves the lists
//! while they are read; entries only arrive (new shells, new orphans), which skips nothing.

use std::collections::BTreeSet;
use std::fs;
use std::sync::{Mutex, RwLock, RwLockWriteGuard};

use crate::sync::lock;

/// Shells started and not reaped, across every table in the process.
static SHELLS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Shared while the children are listed, exclusive while one is reaped.
static REAP_GATE: RwLock<()> = RwLock::new(());

/// A shell was started with this PID.
pub(crate) fn shell_started(pid: i32) {
    lock(&SHELLS).insert(pid);
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

/// The agent's children that are no shell it started (live or zombie), or `None` when the
/// listing cannot be trusted: no children files (a kernel without `CONFIG_PROC_CHILDREN`), or
/// a thread came or went while they were read (a thread's children move to another as it
/// exits).
pub(crate) fn other_children() -> Option<Vec<i32>> {
    let _listing = REAP_GATE.read().unwrap_or_else(|p| p.into_inner());
    let threads = thread_ids()?;
    let mut children = Vec::new();
    for tid in &threads {
        let text = fs::read_to_string(format!("/proc/self/task/{tid}/children")).ok()?;
        children.extend(
            text.split_ascii_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    if thread_ids()? != threads {
        return None;
    }
    let shells = lock(&SHELLS);
    children.retain(|pid| !shells.contains(pid));
    Some(children)
}

/// `KCMP_VM` of `<linux/kcmp.h>`: whether two processes share one address space.
const KCMP_VM: libc::c_int = 1;

/// Whether child `pid` still runs in the agent's own address space: a shell being started
/// (`CLONE_VM | CLONE_VFORK`), between the clone and its `execve`, before the agent knows its
/// PID. Its /proc files then show the agent's environment, not its command's.
pub(crate) fn is_being_started(pid: i32) -> bool {
    let me = std::process::id() as libc::pid_t;
    // SAFETY: kcmp compares two processes' kernel objects; it reads no user memory.
    let same = unsafe { libc::syscall(libc::SYS_kcmp, me, pid as libc::pid_t, KCMP_VM, 0, 0) };
    same == 0
}

fn thread_ids() -> Option<Vec<i32>> {
    let mut ids: Vec<i32> = fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_shell_is_not_listed_and_another_child_is_until_reaped() {
        let mut shell = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let (shell_pid, other_pid) = (shell.id() as i32, other.id() as i32);
        shell_started(shell_pid);
        let Some(listed) = other_children() else {
            eprintln!("SKIP: no /proc/self/task/*/children on this kernel");
            for child in [&mut shell, &mut other] {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            return;
        };
        assert!(listed.contains(&other_pid), "{listed:?}");
        assert!(!listed.contains(&shell_pid), "{listed:?}");
        for child in [&mut shell, &mut other] {
            child.kill().unwrap();
            let reaping = reaping();
            child.wait().unwrap();
            reaping.shell_reaped(child.id() as i32);
        }
        let listed = other_children().unwrap();
        assert!(!listed.contains(&other_pid), "{listed:?}");
    }
}
