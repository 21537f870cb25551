//! Subreaper containment, where no cgroup v2 is writable: the agent is a child subreaper, so
//! orphaned descendants are re-parented to it rather than to init, and every command carries
//! a marker in its environment (`PROCWARDEN_OWNER=<agent instance>:<process id>`) that its
//! descendants inherit. Signals reach the command's process group plus every process whose
//! environment holds the marker, each pinned with a pidfd and checked against the start time
//! it was found with, so a reused PID is never hit.
//!
//! What it cannot catch: a descendant that clears or rewrites its environment (`env -i`,
//! `execve` with a fresh environment) and left the group; processes of other users whose
//! environment the agent may not read (it is not root); anything started through another
//! service (`systemd-run`, `at`, a container runtime).

use std::fs;
use std::io;

use crate::cgroup::{pidfd_open, pidfd_send_signal};
use crate::children;

/// The environment variable of the marker.
pub const MARKER_VARIABLE: &str = "PROCWARDEN_OWNER";

/// Make the agent a child subreaper: descendants whose parent exits become its children.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if done < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether this process is a child subreaper now.
fn is_subreaper() -> bool {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer, which lives here.
    let done = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int) };
    done == 0 && flag != 0
}

/// Whether the command whose shell (group `pgid`, marker value `marker`) has exited still has
/// a live member, told from the agent's own children alone; `None` when they cannot tell, and
/// /proc must be walked.
///
/// Each live descendant of the command descends from a live child of the agent that is no
/// shell it started (see [`children`]), and that child carries the command's marker or group
/// unless it rewrote them. So: a child in the group or with this marker is a member; one with
/// another marker belongs to another command, whose descendants are never this one's; a child
/// without a marker, or one that cannot be read, leaves the answer to the walk.
pub fn exited_command_alive(pgid: i32, marker: &str) -> Option<bool> {
    if !is_subreaper() {
        return None;
    }
    for pid in children::other_children()? {
        let Some(stat) = read_stat(pid) else {
            continue; // gone since it was listed
        };
        if stat.state == 'Z' || stat.state == 'X' {
            continue;
        }
        if stat.pgrp == pgid {
            return Some(true);
        }
        match marker_of(pid).ok()? {
            Some(value) if value == marker.as_bytes() => return Some(true),
            Some(_) => continue,
            None if children::is_being_started(pid) => continue,
            None => return None,
        }
    }
    Some(false)
}

/// A live process found by a scan, with its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub pid: i32,
    pub start: u64,
    pub pgrp: i32,
}

/// The fields of /proc/PID/stat this module uses.
struct Stat {
    state: char,
    ppid: i32,
    pgrp: i32,
    start: u64,
}

fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        // Field 22 of the line; the state is field 3.
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
}

/// The value of the first marker in /proc/PID/environ, if it carries one.
fn marker_of(pid: i32) -> io::Result<Option<Vec<u8>>> {
    let prefix = format!("{MARKER_VARIABLE}=");
    let environ = fs::read(format!("/proc/{pid}/environ"))?;
    Ok(environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(<[u8]>::to_vec))
}

/// Whether /proc/PID/environ holds exactly `entry` (`KEY=value`).
fn carries(pid: i32, entry: &[u8]) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|&b| b == 0).any(|e| e == entry))
}

/// Live (not zombie) processes in group `pgid` or carrying `marker` (the variable's value),
/// the group's leader `skip` left out; at most `enough`.
pub fn members(pgid: i32, skip: Option<i32>, marker: &str, enough: usize) -> Vec<Found> {
    let entry = format!("{MARKER_VARIABLE}={marker}").into_bytes();
    let mut found = Vec::new();
    for pid in pids() {
        if Some(pid) == skip {
            continue;
        }
        let Some(stat) = read_stat(pid) else { continue };
        if stat.state == 'Z' || stat.state == 'X' {
            continue;
        }
        if stat.pgrp == pgid || carries(pid, &entry) {
            found.push(Found {
                pid,
                start: stat.start,
                pgrp: stat.pgrp,
            });
            if found.len() >= enough {
                break;
            }
        }
    }
    found
}

/// One walk of /proc that answers the membership of many commands at once, for a list:
/// without it each running command of the list walks /proc by itself.
pub struct ProcWalk {
    /// Live processes, each with its marker's value if it carries one.
    live: Vec<(Found, Option<Vec<u8>>)>,
}

impl ProcWalk {
    /// Reads every process's `stat`, and the `environ` of each live one.
    pub fn take() -> Self {
        let live = pids()
            .filter_map(|pid| {
                let stat = read_stat(pid)?;
                if stat.state == 'Z' || stat.state == 'X' {
                    return None;
                }
                let marker = marker_of(pid).ok().flatten();
                let found = Found {
                    pid,
                    start: stat.start,
                    pgrp: stat.pgrp,
                };
                Some((found, marker))
            })
            .collect();
        Self { live }
    }

    /// What [`members`] would count, as of the walk.
    pub fn count_members(&self, pgid: i32, skip: Option<i32>, marker: &str) -> usize {
        self.live
            .iter()
            .filter(|(found, carried)| {
                Some(found.pid) != skip
                    && (found.pgrp == pgid || carried.as_deref() == Some(marker.as_bytes()))
            })
            .count()
    }
}

/// A process's start time (clock ticks since boot), while it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|stat| stat.start)
}

/// A pidfd for `pid` if it is still the process that started at `start`: held, the PID cannot
/// be reused.
pub fn pin(pid: i32, start: u64) -> Option<std::os::fd::OwnedFd> {
    let pidfd = pidfd_open(pid).ok()?;
    (start_time(pid) == Some(start)).then_some(pidfd)
}

/// Live (not zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<Found> {
    live_where(|_, stat| stat.pgrp == pgid)
}

/// Live processes whose environment holds an entry starting with `prefix` (`KEY=value…`).
pub fn carrying_prefix(prefix: &[u8]) -> Vec<Found> {
    live_where(|pid, _| {
        fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|environ| environ.split(|&b| b == 0).any(|e| e.starts_with(prefix)))
    })
}

fn live_where(wanted: impl Fn(i32, &Stat) -> bool) -> Vec<Found> {
    pids()
        .filter_map(|pid| {
            let stat = read_stat(pid)?;
            let live = stat.state != 'Z' && stat.state != 'X';
            (live && wanted(pid, &stat)).then_some(Found {
                pid,
                start: stat.start,
                pgrp: stat.pgrp,
            })
        })
        .collect()
}

/// Send `signal` to each of `found` that is still the process it was: pinned with a pidfd,
/// then its start time read again. Returns how many were signalled.
pub fn signal_found(found: &[Found], signal: libc::c_int) -> usize {
    found
        .iter()
        .filter(|f| {
            let Ok(pidfd) = pidfd_open(f.pid) else {
                return false;
            };
            read_stat(f.pid).is_some_and(|now| now.start == f.start)
                && pidfd_send_signal(&pidfd, signal).is_ok()
        })
        .count()
}

/// Reap zombie children of the agent that are not in `leaders` (re-parented orphans), by PID.
/// Leaders are left alone: they stay zombies until their record reaps them through its pidfd.
/// The caller makes sure no leader is being spawned meanwhile. Returns how many were reaped.
pub fn reap_orphans(leaders: &std::collections::HashSet<i32>) -> usize {
    let me = std::process::id() as i32;
    let mut reaped = 0;
    for pid in pids() {
        if leaders.contains(&pid) {
            continue;
        }
        let Some(stat) = read_stat(pid) else { continue };
        if stat.ppid != me || stat.state != 'Z' {
            continue;
        }
        if reap_zombie(pid) {
            reaped += 1;
        }
    }
    reaped
}

/// Reap `pid`, a zombie child of the agent and no record's leader. Returns whether it was.
fn reap_zombie(pid: i32) -> bool {
    let reaping = children::reaping();
    // SAFETY: waitpid on one PID that is our zombie child and no record's leader.
    let done = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    if done == pid {
        // A shell whose record let go of it while it ran ends here: its number is free.
        reaping.shell_reaped(pid);
    }
    done == pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_orphan_keeps_its_exited_command_alive_until_it_dies() {
        use std::os::unix::process::CommandExt;
        become_subreaper().unwrap();
        let marker = format!("unit-orphan-{}", std::process::id());
        // The shell leaves a `sleep` in a session of its own, and exits: the sleep is
        // re-parented to this process, the subreaper.
        let shell = std::process::Command::new("sh")
            .args([
                "-c",
                "setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $!",
            ])
            .env(MARKER_VARIABLE, &marker)
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pgid = shell.id() as i32;
        let out = shell.wait_with_output().unwrap();
        let sleep: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Until then it may still be in the shell's group about to call setsid, or in the
        // middle of its execve with no environment to read yet.
        let entry = format!("{MARKER_VARIABLE}={marker}").into_bytes();
        while read_stat(sleep).is_some_and(|s| {
            s.ppid != std::process::id() as i32 || s.pgrp != sleep || !carries(sleep, &entry)
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "never re-parented, in a session of its own, with its marker"
            );
            std::thread::yield_now();
        }
        // Other tests of this binary may have children of their own, which can leave the
        // answer to the /proc walk (`None`); it must never be "gone" while the orphan lives.
        assert_ne!(exited_command_alive(pgid, &marker), Some(false));
        assert_eq!(
            members(pgid, Some(pgid), &marker, usize::MAX)
                .iter()
                .map(|f| f.pid)
                .collect::<Vec<_>>(),
            vec![sleep]
        );
        // Another command's marker does not claim it.
        assert_ne!(exited_command_alive(pgid, "another-command"), Some(true));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleep), nix::sys::signal::SIGKILL)
            .unwrap();
        let reaping = children::reaping();
        // ECHILD: an orphan reaper of another test took it first.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(sleep), None);
        drop(reaping);
        assert_ne!(exited_command_alive(pgid, &marker), Some(true));
    }

    #[test]
    fn a_shell_reaped_as_an_orphan_is_no_longer_counted_a_shell() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        children::shell_started(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read_stat(pid).is_some_and(|s| s.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "never exited");
            std::thread::yield_now();
        }
        assert!(children::is_being_started(pid), "a shell while unreaped");
        assert!(reap_zombie(pid));
        assert!(!children::is_being_started(pid), "its number is free");
        std::mem::forget(child); // reaped above
    }

    #[test]
    fn parses_the_fields_it_needs() {
        let stat = "77 (a) b) S 1 70 70 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let stat = parse_stat(stat).unwrap();
        assert_eq!(
            (stat.state, stat.ppid, stat.pgrp, stat.start),
            ('S', 1, 70, 123456)
        );
    }

    #[test]
    fn finds_a_marked_process_outside_the_group_and_signals_it_only_while_it_is_the_same() {
        use std::os::unix::process::CommandExt;
        let marker = format!("unit-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .env(MARKER_VARIABLE, &marker)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = members(-1, None, &marker, usize::MAX);
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, pid);
        // A shared walk counts the same, and leaves out the PID it is told to skip.
        let walk = ProcWalk::take();
        assert_eq!(walk.count_members(-1, None, &marker), 1);
        assert_eq!(walk.count_members(-1, Some(pid), &marker), 0);
        // A stale start time is refused.
        let stale = Found {
            start: found[0].start + 1,
            ..found[0]
        };
        assert_eq!(signal_found(&[stale], libc::SIGKILL), 0);
        assert_eq!(signal_found(&found, libc::SIGKILL), 1);
        child.wait().unwrap();
        assert!(members(-1, None, &marker, usize::MAX).is_empty());
    }
}
