//! Process groups: signalling every member, and telling whether any member still lives.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgid};

/// Send `signal` to every process in group `pgid`.
/// Returns `false` when the group has no member left (ESRCH).
pub fn signal_group(pgid: i32, signal: Signal) -> std::io::Result<bool> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Whether group `pgid` has a member that is not a zombie. With `leader_exited`, the group's
/// leader (PID `pgid`) is known to have exited and is not looked at.
///
/// `kill(-pgid, 0)` also succeeds for zombies (an exited leader kept unreaped, or members
/// whose new parent is slow to reap them), so a positive answer is confirmed against /proc:
/// `getpgid` on every PID (a cheap system call) finds the members, and only their
/// /proc/PID/stat is read, for the state.
pub fn group_has_live_member(pgid: i32, leader_exited: bool) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => false,
        // EPERM: a member exists that we may not signal; treat it as alive.
        Err(_) => true,
        Ok(()) => proc_has_live_member(pgid, leader_exited).unwrap_or(true),
    }
}

/// How many members of group `pgid` are alive (zombies not counted); with `leader_exited`,
/// the leader is not looked at. Reads /proc: not for async workers.
pub fn count_live_members(pgid: i32, leader_exited: bool) -> usize {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => 0,
        _ => live_members(pgid, leader_exited, usize::MAX).unwrap_or(1),
    }
}

fn proc_has_live_member(pgid: i32, leader_exited: bool) -> std::io::Result<bool> {
    live_members(pgid, leader_exited, 1).map(|n| n > 0)
}

/// Live members of `pgid` found in /proc, counting up to `enough`.
fn live_members(pgid: i32, leader_exited: bool, enough: usize) -> std::io::Result<usize> {
    let mut found = 0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if leader_exited && pid == pgid {
            continue;
        }
        if getpgid(Some(Pid::from_raw(pid))).map(Pid::as_raw) != Ok(pgid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        if let Some((state, group)) = parse_state_and_pgrp(&stat)
            && group == pgid
            && state != 'Z'
            && state != 'X'
        {
            found += 1;
            if found >= enough {
                break;
            }
        }
    }
    Ok(found)
}

/// Parse the state and process group out of a `/proc/PID/stat` line. The command name is in
/// parentheses and may itself contain spaces or parentheses, so split after the last `)`.
fn parse_state_and_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (my) (cmd) S 1 4321 4321 0 -1 4194560 0 0";
        assert_eq!(parse_state_and_pgrp(stat), Some(('S', 4321)));
    }

    #[test]
    fn a_group_with_only_its_exited_leader_is_gone_and_with_a_member_alive() {
        use std::os::unix::process::CommandExt;
        // A leader that exits at once, leaving `sleep` in its group, both unreaped by us.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pgid = leader.id() as i32;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(leader.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleep: i32 = line.trim().parse().unwrap();
        // waitid WNOWAIT: the leader has exited but stays a zombie, as procwarden keeps it.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(Pid::from_raw(pgid)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(group_has_live_member(pgid, true), "sleep lives");
        assert!(signal_group(pgid, Signal::SIGKILL).unwrap());
        // The sleep was re-parented away from us; wait until it is no longer running.
        while std::fs::read_to_string(format!("/proc/{sleep}/stat"))
            .ok()
            .and_then(|s| parse_state_and_pgrp(&s))
            .is_some_and(|(state, _)| state != 'Z' && state != 'X')
        {
            std::thread::yield_now();
        }
        assert!(!group_has_live_member(pgid, true), "only the zombie leader");
        leader.wait().unwrap();
    }

    #[test]
    fn a_group_that_never_existed_is_not_alive() {
        // PIDs are capped well below i32::MAX - 1 on Linux.
        assert!(!group_has_live_member(i32::MAX - 1, false));
        assert!(!signal_group(i32::MAX - 1, Signal::SIGTERM).unwrap());
    }
}
