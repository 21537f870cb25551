//! Waits that end on more than exit: a line of output matching a pattern, a quiet spell, a
//! TCP port the process listens on. Every wait also ends at exit and at its time limit.

use std::collections::HashSet;
use std::time::Duration;

use regex::bytes::Regex;
use tokio::time::Instant;

use crate::record::{Phase, Process};

/// How often a port wait looks at /proc: listening sockets raise no event we could wait on.
const PORT_POLL: Duration = Duration::from_millis(50);
/// How soon a pattern wait looks again at output the spool writer has not written yet.
const GAP_RESCAN: Duration = Duration::from_millis(10);

/// How often a wait on a process with a stdin pipe looks whether it blocks reading it.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// What ends a wait (besides exit and the time limit).
#[derive(Debug, Clone)]
pub enum Until {
    /// The shell exits.
    Exit,
    /// A line of output from `from` on matches.
    Regex { regex: Regex, from: u64 },
    /// No output for this long.
    Quiet(Duration),
    /// A member of the process listens on this TCP port.
    Port(u16),
    /// Any output past this cursor.
    Output { after: u64 },
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Exit,
    Regex,
    Quiet,
    Port,
    Output,
    /// A member blocks reading the stdin pipe or terminal: nothing more happens until the
    /// client writes to it.
    Input,
    Timeout,
}

impl EndedBy {
    pub fn name(self) -> &'static str {
        match self {
            EndedBy::Exit => "exit",
            EndedBy::Regex => "regex",
            EndedBy::Quiet => "quiet",
            EndedBy::Port => "port",
            EndedBy::Output => "output",
            EndedBy::Input => "input",
            EndedBy::Timeout => "timeout",
        }
    }
}

impl Process {
    /// Wait until `until` holds, the shell exits, or `limit` passes. Cancel-safe.
    pub async fn wait_until(&self, until: &Until, limit: Duration) -> EndedBy {
        let deadline = Instant::now() + limit;
        let condition = async {
            match until {
                Until::Exit => std::future::pending::<EndedBy>().await,
                Until::Regex { regex, from } => self.wait_for_match(regex, *from).await,
                Until::Quiet(quiet) => self.wait_for_quiet(*quiet).await,
                Until::Port(port) => self.wait_for_port(*port).await,
                Until::Output { after } => self.wait_for_output(*after).await,
            }
        };
        tokio::select! {
            biased;
            ended = condition => ended,
            ended = self.wait_for_input_read(), if self.has_input() => ended,
            () = self.wait_for(Phase::Exited) => {
                // Output written just before the exit may still satisfy the condition.
                match until {
                    Until::Regex { regex, from } if self.scan(regex, *from, true).found => EndedBy::Regex,
                    Until::Output { after } if self.output_len() > *after => EndedBy::Output,
                    _ => EndedBy::Exit,
                }
            }
            () = tokio::time::sleep_until(deadline) => EndedBy::Timeout,
        }
    }

    /// Until a member blocks reading its stdin, seen on two looks in a row: a reader that was
    /// just written to may still show as asleep in its read for a moment.
    async fn wait_for_input_read(&self) -> EndedBy {
        let Some(probe) = self.input_probe() else {
            return std::future::pending().await;
        };
        let probe = std::sync::Arc::new(probe);
        let mut seen = false;
        loop {
            tokio::time::sleep(INPUT_POLL).await;
            let look = probe.clone();
            let waiting = tokio::task::spawn_blocking(move || look.waiting())
                .await
                .unwrap_or(false);
            if waiting && seen {
                return EndedBy::Input;
            }
            seen = waiting;
        }
    }

    async fn wait_for_output(&self, after: u64) -> EndedBy {
        let mut rx = self.subscribe_output();
        let _ = rx.wait_for(|len| *len > after).await;
        EndedBy::Output
    }

    async fn wait_for_quiet(&self, quiet: Duration) -> EndedBy {
        let mut rx = self.subscribe_output();
        loop {
            rx.borrow_and_update();
            match tokio::time::timeout(quiet, rx.changed()).await {
                Err(_) => return EndedBy::Quiet,
                Ok(Ok(())) => {}
                Ok(Err(_)) => return std::future::pending().await,
            }
        }
    }

    async fn wait_for_port(&self, port: u16) -> EndedBy {
        let pgid = self.identity.pgid;
        loop {
            let found = tokio::task::spawn_blocking(move || listens_on(pgid, port))
                .await
                .unwrap_or(false);
            if found {
                return EndedBy::Port;
            }
            tokio::time::sleep(PORT_POLL).await;
        }
    }

    /// Woken by every append, without polling; scans only complete lines not seen yet.
    async fn wait_for_match(&self, regex: &Regex, from: u64) -> EndedBy {
        let mut rx = self.subscribe_output();
        let mut scanned = from;
        loop {
            rx.borrow_and_update();
            let scan = self.scan(regex, scanned, false);
            if scan.found {
                return EndedBy::Regex;
            }
            scanned = scan.next;
            if !scan.gap {
                // At most a partial last line is left: new output completes it.
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
            // Output past the scan is not held yet: the spool writer is still writing what
            // the buffer has dropped. Look again shortly, or on new output.
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
                () = tokio::time::sleep(GAP_RESCAN) => {}
            }
        }
    }

    /// Look for a line matching `regex` in the output from `from` on: complete lines only,
    /// unless `to_end`. Bytes no longer held (a cut middle, a spool that is off or stopped)
    /// are skipped; bytes the spool writer has yet to write stop the scan there (`gap`).
    fn scan(&self, regex: &Regex, from: u64, to_end: bool) -> Scan {
        let loaded = self.load(from, u64::MAX);
        let catching_up = self.spool_catching_up();
        let mut next = from;
        for piece in &loaded.pieces {
            if piece.start > next {
                if catching_up {
                    return Scan::gap(next);
                }
                next = piece.start;
            }
            let bytes = &piece.bytes[(next - piece.start) as usize..];
            let complete = if to_end {
                bytes.len()
            } else {
                match memchr::memrchr(b'\n', bytes) {
                    Some(i) => i + 1,
                    None => 0,
                }
            };
            if regex.is_match(&bytes[..complete]) {
                return Scan {
                    found: true,
                    next: next + complete as u64,
                    gap: false,
                };
            }
            let partial = complete < bytes.len();
            next += complete as u64;
            if partial {
                if piece.end() >= loaded.total {
                    break; // the last line is not complete yet
                }
                if catching_up {
                    return Scan::gap(next);
                }
                next = piece.end(); // a line cut by bytes no longer held
            }
        }
        Scan {
            found: false,
            next,
            gap: catching_up && next < loaded.total,
        }
    }
}

/// What a scan for a line found.
struct Scan {
    found: bool,
    /// Where the next scan starts: after the last complete line looked at.
    next: u64,
    /// It stopped at output not held yet (the spool catching up), not at the end.
    gap: bool,
}

impl Scan {
    fn gap(next: u64) -> Self {
        Self {
            found: false,
            next,
            gap: true,
        }
    }
}

/// The PIDs of the process's members. The one place that says who belongs to a process:
/// today the members of its process group.
pub fn members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid)))
                .is_ok_and(|g| g.as_raw() == pgid)
        })
        .collect()
}

/// Whether a member of group `pgid` has a TCP socket listening on `port` (IPv4 or IPv6).
pub fn listens_on(pgid: i32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    members(pgid).into_iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .any(|inode| inodes.contains(&inode))
    })
}

/// Inodes of the TCP sockets in LISTEN on `port`, from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| listening_inode(line, port)),
        );
    }
    inodes
}

/// The inode of one /proc/net/tcp line when it is a LISTEN socket on `port`.
fn listening_inode(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = fields.get(1)?;
    let state = fields.get(3)?;
    let inode = fields.get(9)?;
    let (_, local_port) = local.rsplit_once(':')?;
    (u16::from_str_radix(local_port, 16).ok()? == port && *state == "0A")
        .then(|| inode.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_line_is_recognised_by_port_and_state() {
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_inode(listen, 8080), Some(12345));
        assert_eq!(listening_inode(listen, 8081), None);
        let established = listen.replace(" 0A ", " 01 ");
        assert_eq!(listening_inode(&established, 8080), None);
    }

    #[test]
    fn a_listening_socket_of_a_group_member_is_found() {
        use std::os::unix::process::CommandExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Our own listener belongs to this test's group, not to a fresh one.
        let me = nix::unistd::getpgrp().as_raw();
        assert!(listens_on(me, port));
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(!listens_on(other.id() as i32, port));
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
