//! Process groups: signalling every member, and telling whether any member still lives.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Send `signal` to every process in group `pgid`.
/// Returns `false` when the group has no member left (ESRCH).
pub fn signal_group(pgid: i32, signal: Signal) -> std::io::Result<bool> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Whether group `pgid` has a member that is not a zombie.
///
/// `kill(-pgid, 0)` also succeeds for zombies, which linger when their new parent is slow
/// to reap them, so a positive answer is confirmed against /proc.
pub fn group_has_live_member(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => false,
        // EPERM: a member exists that we may not signal; treat it as alive.
        Err(_) => true,
        Ok(()) => proc_has_live_member(pgid).unwrap_or(true),
    }
}

fn proc_has_live_member(pgid: i32) -> std::io::Result<bool> {
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_state_and_pgrp(&stat)
            && group == pgid
            && state != 'Z'
            && state != 'X'
        {
            return Ok(true);
        }
    }
    Ok(false)
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
    fn a_group_that_never_existed_is_not_alive() {
        // PIDs are capped well below i32::MAX - 1 on Linux.
        assert!(!group_has_live_member(i32::MAX - 1));
        assert!(!signal_group(i32::MAX - 1, Signal::SIGTERM).unwrap());
    }
}
