//! Subreaper mode's memory across a crash: the running commands' process groups, each with its
//! leader's start time, kept in a file named after the agent's instance. If the agent is
//! SIGKILLed, the next agent of the same instance reads the file and kills what the dead one
//! left. A group is only signalled while its leader still runs with the recorded start time: a
//! reused PID (or process-group number) is never hit. Descendants that left the group are found
//! by the environment marker, which names the instance, and checked the same way.
//!
//! The file is a log of lines, `+ PGID START ID` when a command starts and `- ID` when its
//! group is gone, compacted when it grows. No fsync: it must survive the agent, not the
//! machine, and a reboot ends every command anyway.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::subreaper::{self, Found};
use crate::sync::lock;

/// Lines written beyond the live entries before the file is rewritten from them.
const COMPACT_SLACK: usize = 4096;

/// One running command as the file records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub pgid: i32,
    /// The leader's start time (clock ticks since boot), from /proc/PGID/stat.
    pub start: u64,
}

pub struct StateFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    live: HashMap<String, Entry>,
    lines: usize,
}

impl StateFile {
    /// A fresh, empty file at `path` (its directory made if missing). Call
    /// [`kill_leftovers`] first: this truncates what an earlier agent left.
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                file,
                live: HashMap::new(),
                lines: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Note a started command. A failure is logged, never fatal: the command runs either way.
    pub fn record(&self, id: &str, entry: Entry) {
        let mut inner = lock(&self.inner);
        inner.live.insert(id.to_owned(), entry);
        let line = format!("+ {} {} {id}\n", entry.pgid, entry.start);
        self.append(&mut inner, &line);
    }

    /// Note that a command's group is gone.
    pub fn forget(&self, id: &str) {
        let mut inner = lock(&self.inner);
        if inner.live.remove(id).is_some() {
            self.append(&mut inner, &format!("- {id}\n"));
        }
    }

    /// Empty the file (at a clean shutdown, once every group is stopped).
    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.live.clear();
        self.rewrite(&mut inner);
    }

    /// Delete the file (at a clean shutdown, once every group is stopped).
    pub fn remove(&self) {
        let mut inner = lock(&self.inner);
        inner.live.clear();
        let _ = fs::remove_file(&self.path);
    }

    fn append(&self, inner: &mut Inner, line: &str) {
        inner.lines += 1;
        if inner.lines > inner.live.len() + COMPACT_SLACK {
            self.rewrite(inner);
        } else if let Err(err) = inner.file.write_all(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot write the state file");
        }
    }

    /// Replace the file with the live entries (write beside it, then rename over it).
    fn rewrite(&self, inner: &mut Inner) {
        let text: String = inner
            .live
            .iter()
            .map(|(id, e)| format!("+ {} {} {id}\n", e.pgid, e.start))
            .collect();
        let tmp = self.path.with_extension("tmp");
        let replaced = fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &self.path))
            .and_then(|()| OpenOptions::new().append(true).open(&self.path));
        match replaced {
            Ok(file) => {
                inner.file = file;
                inner.lines = inner.live.len();
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot rewrite the state file")
            }
        }
    }
}

/// Make `dir` (mode 0700) if missing, and refuse one that another user owns or others may write
/// to: the default lives under the shared temporary directory, where anyone could have made it
/// first to plant a file for us to trust.
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of this user closed to others",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The entries still live in a state file's text.
pub fn parse(text: &str) -> HashMap<String, Entry> {
    let mut live = HashMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("+"), Some(pgid), Some(start), Some(id)) => {
                if let (Ok(pgid), Ok(start)) = (pgid.parse(), start.parse()) {
                    live.insert(id.to_owned(), Entry { pgid, start });
                }
            }
            (Some("-"), Some(id), None, None) => {
                live.remove(id);
            }
            // A line cut short by the crash, or anything else: ignored.
            _ => {}
        }
    }
    live
}

/// What [`kill_leftovers`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Processes killed.
    pub killed: usize,
    /// Recorded groups whose leader is gone or is another process now: not signalled, since
    /// the number cannot be proven ours.
    pub unproven_groups: usize,
}

/// Kill what an earlier agent of `instance` left running: the groups in the state file at
/// `path` whose leader still runs with the recorded start time, and every process carrying
/// the instance's marker. Rounds repeat while a round found someone, so a fork racing the
/// kill is caught by the next round (bounded).
pub fn kill_leftovers(path: &Path, instance: &str) -> Leftovers {
    let entries = match fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => HashMap::new(),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read the state file");
            HashMap::new()
        }
    };
    let proven: Vec<Entry> = entries
        .values()
        .filter(|e| subreaper::start_time(e.pgid) == Some(e.start))
        .copied()
        .collect();
    let mut found = Leftovers {
        unproven_groups: entries.len() - proven.len(),
        ..Leftovers::default()
    };
    let prefix = format!("{}={instance}:", subreaper::MARKER_VARIABLE);
    // A process still dying is found again by the next round; count it once.
    let mut killed = std::collections::HashSet::new();
    for _round in 0..16 {
        let mut targets: Vec<Found> = subreaper::carrying_prefix(prefix.as_bytes());
        for entry in &proven {
            // Pinned before its members are listed: while the leader is the recorded process,
            // the group number is its.
            if let Some(pinned) = subreaper::pin(entry.pgid, entry.start) {
                targets.extend(subreaper::group_members(entry.pgid));
                drop(pinned);
            }
        }
        targets.sort_by_key(|f| f.pid);
        targets.dedup_by_key(|f| f.pid);
        if targets.is_empty() {
            break;
        }
        subreaper::signal_found(&targets, libc::SIGKILL);
        killed.extend(targets.iter().map(|f| (f.pid, f.start)));
    }
    found.killed = killed.len();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_what_was_not_forgotten_and_skips_a_torn_line() {
        let live = parse("+ 10 500 a\n+ 11 501 b\n- a\n+ 12 5");
        assert_eq!(live.len(), 1);
        assert_eq!(
            live["b"],
            Entry {
                pgid: 11,
                start: 501
            }
        );
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "pw-state-test-{}-{name}/agent.groups",
            std::process::id()
        ))
    }

    #[test]
    fn the_file_holds_exactly_the_live_entries_after_compaction() {
        let path = temp_path("compact");
        let state = StateFile::create(&path).unwrap();
        for n in 0..(COMPACT_SLACK + 10) {
            state.record(
                &format!("p{n}"),
                Entry {
                    pgid: 1,
                    start: n as u64,
                },
            );
            if n % 2 == 0 {
                state.forget(&format!("p{n}"));
            }
        }
        let live = parse(&fs::read_to_string(&path).unwrap());
        assert_eq!(live.len(), (COMPACT_SLACK + 10) / 2);
        assert!(live.contains_key("p1") && !live.contains_key("p0"));
        state.clear();
        assert!(parse(&fs::read_to_string(&path).unwrap()).is_empty());
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_group_is_killed_only_while_its_leader_is_the_recorded_process() {
        use std::os::unix::process::CommandExt;
        let mut leader = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id() as i32;
        let start = subreaper::start_time(pgid).unwrap();
        let path = temp_path("kill");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A stale start time: the number is someone else's now, as far as we can prove.
        fs::write(&path, format!("+ {pgid} {} stale\n", start + 1)).unwrap();
        let left = kill_leftovers(&path, "unit-no-such-instance");
        assert_eq!(
            left,
            Leftovers {
                killed: 0,
                unproven_groups: 1
            }
        );
        assert!(
            leader.try_wait().unwrap().is_none(),
            "an unproven group was signalled"
        );
        fs::write(&path, format!("+ {pgid} {start} ours\n")).unwrap();
        let left = kill_leftovers(&path, "unit-no-such-instance");
        assert_eq!(
            left,
            Leftovers {
                killed: 1,
                unproven_groups: 0
            }
        );
        assert!(
            leader.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
