//! cgroup v2 containment: every command gets its own cgroup, so every descendant is found and
//! stopped, whatever it does to its session, process group or parent (`setsid`, double forks,
//! daemons). No controller is needed: `cgroup.procs`, `cgroup.events` and `cgroup.kill` work
//! on any cgroup v2 directory.
//!
//! Layout: `<the agent's own cgroup>/procwarden-<name>/cmd-<N>`, on the cgroup2 mount
//! found in /proc/self/mountinfo (on a hybrid layout it sits beside the v1 controllers, often
//! under the name `unified`).
//!
//! Making and removing a cgroup is one of the dearer steps of a start (the kernel creates and
//! deletes a dozen control files), so the cgroup of a forgotten command, once proven empty,
//! is kept as a spare for the next command, up to [`SPARE_CGROUPS`]. cgroup v2 refuses to
//! rename a cgroup, so the names are a counter, not the process ID: a process's cgroup is in
//! `/proc/PID/cgroup`.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::sync::lock;

/// Empty cgroups kept for reuse.
pub const SPARE_CGROUPS: usize = 32;

/// The directory under which the agent makes one cgroup per command.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    spares: Arc<Spares>,
}

/// A cgroup's control files that are read on every look, kept open while the cgroup is in
/// use (and passed on with a spare): read again from offset 0, the kernel makes their text
/// anew, so a look costs one read instead of a walk of the long cgroup path.
#[derive(Debug)]
struct OpenFiles {
    events: File,
    procs: File,
}

impl OpenFiles {
    fn open(path: &Path) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            events: File::open(path.join("cgroup.events"))?,
            procs: File::open(path.join("cgroup.procs"))?,
        }))
    }
}

/// Empty cgroups of forgotten commands, ready for the next ones.
#[derive(Debug)]
struct Spares {
    dir: PathBuf,
    free: Mutex<Vec<(PathBuf, Arc<OpenFiles>)>>,
    named: AtomicU64,
}

impl Spares {
    /// A spare's path and its open control files.
    fn take(&self) -> Option<(PathBuf, Arc<OpenFiles>)> {
        lock(&self.free).pop()
    }

    /// A name no cgroup of this agent has had.
    fn new_path(&self) -> PathBuf {
        let n = self.named.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("cmd-{n}"))
    }

    /// Keep the cgroup at `path`, proven empty, as a spare if there is room. Returns whether
    /// it was kept.
    fn keep(&self, path: &Path, files: &Arc<OpenFiles>) -> bool {
        let mut free = lock(&self.free);
        if free.len() >= SPARE_CGROUPS {
            return false;
        }
        free.push((path.to_owned(), files.clone()));
        true
    }

    /// Remove every spare (at shutdown).
    fn remove_all(&self) {
        for (spare, _) in lock(&self.free).drain(..) {
            let _ = fs::remove_dir(spare);
        }
    }
}

/// Why cgroup mode is not available.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("no cgroup2 file system is mounted")]
    NoMount,
    #[error("the agent is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")]
    NoOwnCgroup,
    #[error("the agent's cgroup v2 {path} is not writable: {source}")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("cannot read {what}: {source}")]
    Read {
        what: &'static str,
        source: io::Error,
    },
}

impl CgroupRoot {
    /// Find the cgroup2 mount and the agent's own cgroup on it, and make (or reuse) the
    /// directory `procwarden-<name>` in it. Fails when cgroup v2 is absent or not writable.
    pub fn open(name: &str) -> Result<Self, Unavailable> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| Unavailable::Read {
                what: "/proc/self/mountinfo",
                source,
            })?;
        let (mount_root, mount_point) = cgroup2_mount(&mountinfo).ok_or(Unavailable::NoMount)?;
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|source| Unavailable::Read {
            what: "/proc/self/cgroup",
            source,
        })?;
        let own = own_cgroup(&own).ok_or(Unavailable::NoOwnCgroup)?;
        let own_dir = own_directory(&mount_root, &mount_point, &own);
        sweep_dead_agents(&own_dir);
        let dir = own_dir.join(format!("procwarden-{name}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Unavailable::NotWritable { path: dir, source }),
        }
        // A directory we can make is one whose cgroup.procs we can move processes into only
        // if it is a real cgroup: check for the file the kernel creates.
        if !dir.join("cgroup.procs").exists() {
            return Err(Unavailable::NotWritable {
                path: dir,
                source: io::Error::from(ErrorKind::Unsupported),
            });
        }
        Ok(Self::at(dir))
    }

    fn at(dir: PathBuf) -> Self {
        Self {
            spares: Arc::new(Spares {
                dir: dir.clone(),
                free: Mutex::default(),
                named: AtomicU64::new(0),
            }),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The cgroup of one command: a spare, or a new one.
    pub fn create(&self) -> io::Result<ProcessCgroup> {
        let (path, files) = match self.spares.take() {
            Some(spare) => (spare.0, Some(spare.1)),
            None => (self.make_new()?, None),
        };
        let opened = open_dir(&path).and_then(|dir| {
            let files = match files {
                Some(files) => files,
                None => OpenFiles::open(&path)?,
            };
            Ok((dir, files))
        });
        match opened {
            Ok((dir, files)) => Ok(ProcessCgroup {
                slot: Arc::new(Slot {
                    path,
                    files,
                    spares: Arc::downgrade(&self.spares),
                    released: RwLock::new(false),
                    killed: AtomicBool::new(false),
                }),
                dir: Some(dir),
            }),
            Err(err) => {
                let _ = fs::remove_dir(&path);
                Err(err)
            }
        }
    }

    /// A new cgroup, under a name not in use (one left by an earlier agent of this instance
    /// that could not be removed keeps its name).
    fn make_new(&self) -> io::Result<PathBuf> {
        loop {
            let path = self.spares.new_path();
            match fs::create_dir(&path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The cgroups of commands in this directory, left by an earlier agent (a crash) or by
    /// this one: kill every member and remove each one that is empty. Returns how many
    /// cgroups held a live process.
    pub fn kill_leftovers(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut populated = 0;
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if is_populated(&path) {
                populated += 1;
                let _ = fs::write(path.join("cgroup.kill"), "1");
                wait_empty(&path, std::time::Duration::from_secs(2));
            }
            let _ = fs::remove_dir(&path);
        }
        populated
    }

    /// Remove the spares, then the agent's directory if no command cgroup is left in it.
    pub fn remove(&self) {
        self.spares.remove_all();
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Drop for CgroupRoot {
    /// Leave nothing behind when empty; a non-empty directory stays for the next agent.
    fn drop(&mut self) {
        self.remove();
    }
}

/// The cgroup of one command. Handed back (kept as a spare, or removed) once its last member
/// is gone ([`release`](Self::release)), or when dropped if still empty then; the kernel
/// refuses to remove a cgroup that holds a process.
#[derive(Debug)]
pub struct ProcessCgroup {
    slot: Arc<Slot>,
    /// Open only until the command is started in it: a retained record holds no extra fd.
    dir: Option<OwnedFd>,
}

/// A command's cgroup directory and whether the command still owns it.
#[derive(Debug)]
struct Slot {
    path: PathBuf,
    files: Arc<OpenFiles>,
    spares: Weak<Spares>,
    /// Set once the cgroup was handed back: its path may then be another command's cgroup, so
    /// nothing reads, signals or removes it on this command's behalf. Every look at the
    /// directory holds the read lock, so a hand-back cannot happen in the middle of one.
    released: RwLock<bool>,
    /// Set once `cgroup.kill` was written. Such a cgroup is removed, never kept as a spare:
    /// some kernels (seen on 6.18) compare the kill count of the cgroup a child is cloned
    /// into with that of its parent's cgroup, so every command later cloned into a cgroup
    /// that was once killed would be killed at birth.
    killed: AtomicBool,
}

impl Slot {
    /// Runs `look` on the path while this command owns it; `None` once it was handed back.
    fn while_owned<T>(&self, look: impl FnOnce(&Path) -> T) -> Option<T> {
        let released = self.released.read().unwrap_or_else(|e| e.into_inner());
        (!*released).then(|| look(&self.path))
    }

    /// Writes `cgroup.kill` for the cgroup at `path` (this slot's, looked at while owned),
    /// marking the slot so it is never reused (see `killed`).
    fn kill_all(&self, path: &Path) -> io::Result<()> {
        self.killed.store(true, Ordering::SeqCst);
        fs::write(path.join("cgroup.kill"), "1")
    }

    /// Hands the cgroup back if no process is left in it: kept as a spare (an empty cgroup
    /// is as good as new) or removed. Returns whether it was handed back.
    fn release(&self) -> bool {
        let mut released = self.released.write().unwrap_or_else(|e| e.into_inner());
        if *released {
            return true;
        }
        match read_from_start(&self.files.events) {
            Ok(events) if events_say_populated(&events) => return false,
            Ok(_) => {}
            // Removed already (by a sweep of leftovers): nothing to hand back.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                *released = true;
                return true;
            }
            // Unreadable: not proven empty, so it stays this command's.
            Err(_) => return false,
        }
        *released = true;
        if !self.killed.load(Ordering::SeqCst)
            && self
                .spares
                .upgrade()
                .is_some_and(|spares| spares.keep(&self.path, &self.files))
        {
            return true;
        }
        if let Err(err) = fs::remove_dir(&self.path)
            && err.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "a command's cgroup could not be removed");
        }
        true
    }
}

/// Lists the members of a command's cgroup from another thread, for as long as the command
/// owns it.
#[derive(Debug, Clone)]
pub(crate) struct MemberList {
    slot: Arc<Slot>,
}

impl MemberList {
    /// PIDs of the live members; empty once the cgroup was handed back.
    pub(crate) fn members(&self) -> Vec<i32> {
        self.slot
            .while_owned(|_| members_from(&self.slot.files))
            .unwrap_or_default()
    }
}

impl ProcessCgroup {
    /// The open directory, for `clone3(CLONE_INTO_CGROUP)`; `None` once closed.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir.as_ref().map(|dir| dir.as_fd())
    }

    /// Close the directory once the command is started in it.
    pub fn close_fd(&mut self) {
        self.dir = None;
    }

    pub fn path(&self) -> &Path {
        &self.slot.path
    }

    /// A handle that lists the members from another thread.
    pub(crate) fn member_list(&self) -> MemberList {
        MemberList {
            slot: self.slot.clone(),
        }
    }

    /// PIDs of the live members (zombies have left their cgroup); empty once handed back.
    pub fn members(&self) -> Vec<i32> {
        self.slot
            .while_owned(|_| members_from(&self.slot.files))
            .unwrap_or_default()
    }

    /// Whether any process lives in the cgroup; `false` once handed back.
    pub fn populated(&self) -> bool {
        self.slot
            .while_owned(|_| events_populated(&self.slot.files.events))
            .unwrap_or(false)
    }

    /// Hands the cgroup back now if its last member is gone, instead of when the record is
    /// forgotten (minutes later): the next command then reuses it instead of making one, and
    /// the command's record no longer pins a kernel object. Returns whether it was handed
    /// back; afterwards every look at it finds no member.
    pub fn release(&self) -> bool {
        self.slot.release()
    }

    /// SIGKILL to every member at once (`cgroup.kill`, Linux 5.14): the kernel also reaches
    /// members forked while it runs. Returns whether any member lived.
    pub fn kill(&self) -> io::Result<bool> {
        self.slot
            .while_owned(|path| {
                if !events_populated(&self.slot.files.events) {
                    return Ok(false);
                }
                self.slot.kill_all(path)?;
                Ok(true)
            })
            .unwrap_or(Ok(false))
    }

    /// Kill every member, wait (bounded) until none is left and remove the cgroup. Returns
    /// whether it is gone (a cgroup already handed back counts as gone).
    pub fn kill_and_remove(&self) -> bool {
        self.slot
            .while_owned(|path| {
                if is_populated(path) {
                    let _ = self.slot.kill_all(path);
                    wait_empty(path, std::time::Duration::from_secs(2));
                }
                match fs::remove_dir(path) {
                    Ok(()) => true,
                    Err(e) => e.kind() == ErrorKind::NotFound,
                }
            })
            .unwrap_or(true)
    }

    /// `signal` to every member. Each PID read from `cgroup.procs` is pinned with a pidfd and
    /// signalled only if it is still listed afterwards: a number whose process exited (and
    /// was perhaps reused by someone else) between the two reads is left alone. Returns how
    /// many members were signalled.
    pub fn signal_members(&self, signal: libc::c_int) -> io::Result<usize> {
        let sent = self.slot.while_owned(|_| {
            let pinned: Vec<(i32, OwnedFd)> = members_from(&self.slot.files)
                .into_iter()
                .filter_map(|pid| pidfd_open(pid).ok().map(|fd| (pid, fd)))
                .collect();
            let still = members_from(&self.slot.files);
            pinned
                .into_iter()
                .filter(|(pid, pidfd)| {
                    still.contains(pid) && pidfd_send_signal(pidfd, signal).is_ok()
                })
                .count()
        });
        Ok(sent.unwrap_or(0))
    }
}

impl Drop for ProcessCgroup {
    fn drop(&mut self) {
        if !self.slot.release() {
            tracing::warn!(path = %self.slot.path.display(), "a forgotten command's cgroup still holds a process; left in place");
        }
    }
}

/// Directories of agents named after their PID (`procwarden-pid<PID>-<n>`, the default when
/// the configuration names no stable instance) whose agent is dead: kill what they hold and
/// remove them. A PID in use again only delays this; a dead agent's name is never reused
/// while it lives.
fn sweep_dead_agents(own_dir: &Path) {
    let Ok(entries) = fs::read_dir(own_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("procwarden-pid"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let root = CgroupRoot::at(entry.path());
        let left = root.kill_leftovers();
        if left > 0 {
            tracing::warn!(cgroups = left, path = %root.dir.display(), "killed the commands a dead agent left running");
        }
        // Dropping `root` removes the directory.
    }
}

/// The root and mount point of the first cgroup2 mount in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((unescape(root), unescape(point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of the `0::` (cgroup v2) line of a /proc/PID/cgroup text.
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_end().to_owned())
}

/// Where the agent's own cgroup is in the file system: its path is relative to the mount's
/// root (a container may see only part of the hierarchy).
fn own_directory(mount_root: &str, mount_point: &str, own: &str) -> PathBuf {
    let relative = own
        .strip_prefix(mount_root)
        .unwrap_or(own)
        .trim_start_matches('/');
    Path::new(mount_point).join(relative)
}

fn is_populated(path: &Path) -> bool {
    populated_by(fs::read_to_string(path.join("cgroup.events")))
}

/// Whether an open `cgroup.events` says a process lives in the cgroup; like [`is_populated`].
fn events_populated(events: &File) -> bool {
    populated_by(read_from_start(events))
}

/// What a read of `cgroup.events` says about the cgroup's members.
fn populated_by(events: io::Result<String>) -> bool {
    match events {
        Ok(events) => events_say_populated(&events),
        // Gone: nothing lives there.
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        // Unreadable: assume alive rather than report a live command gone.
        Err(_) => true,
    }
}

/// The whole text of an open control file, read from its start: the kernel makes it anew
/// on every read from offset 0.
fn read_from_start(file: &File) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut text = Vec::with_capacity(128);
    let mut buf = [0u8; 4096];
    loop {
        let n = file.read_at(&mut buf, text.len() as u64).map_err(|e| {
            // A removed cgroup's open file answers ENODEV: gone, as a missing path is.
            if e.raw_os_error() == Some(libc::ENODEV) {
                io::Error::from(ErrorKind::NotFound)
            } else {
                e
            }
        })?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// PIDs in a `cgroup.procs` text.
fn parse_members(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The live members, from the cgroup's open `cgroup.procs`.
fn members_from(files: &OpenFiles) -> Vec<i32> {
    read_from_start(&files.procs)
        .map(|text| parse_members(&text))
        .unwrap_or_default()
}

fn events_say_populated(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "populated 1")
}

/// Wait (bounded) until the cgroup at `path` is empty, polling `cgroup.events`.
pub(crate) fn wait_empty(path: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !is_populated(path) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path; the fd returned is new and owned by nobody else.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd for `pid`: from here on it names that process, never a later owner of the number.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this fd (close-on-exec) for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Send `signal` through a pidfd.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integers and a NULL siginfo, as pidfd_send_signal allows.
    let done = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if done < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_control_file_is_read_whole_from_its_start_each_time() {
        // Longer than one read: a cgroup with many members lists many lines.
        let path =
            std::env::temp_dir().join(format!("procwarden-open-file-{}", std::process::id()));
        let text: String = (1000..4000).map(|pid| format!("{pid}\n")).collect();
        fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(read_from_start(&file).unwrap(), text);
        assert_eq!(parse_members(&read_from_start(&file).unwrap()).len(), 3000);
        fs::write(&path, "populated 0\nfrozen 0\n").unwrap();
        assert!(!events_populated(&file));
        fs::write(&path, "populated 1\nfrozen 0\n").unwrap();
        assert!(events_populated(&file));
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn finds_a_hybrid_cgroup2_mount_by_type_not_by_name() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        assert_eq!(cgroup2_mount("30 25 0:26 / /x rw - tmpfs tmpfs rw\n"), None);
        assert_eq!(
            cgroup2_mount("41 31 0:38 /a\\040b /mnt/c\\040g rw - cgroup2 none rw\n"),
            Some(("/a b".into(), "/mnt/c g".into()))
        );
    }

    #[test]
    fn reads_the_v2_line_and_maps_it_under_the_mount() {
        let text = "4:memory:/x\n0::/user.slice/agent.service\n";
        let own = own_cgroup(text).unwrap();
        assert_eq!(own, "/user.slice/agent.service");
        assert_eq!(
            own_directory("/", "/sys/fs/cgroup", &own),
            Path::new("/sys/fs/cgroup/user.slice/agent.service")
        );
        // A container whose mount shows only its own subtree.
        assert_eq!(
            own_directory("/user.slice", "/sys/fs/cgroup", &own),
            Path::new("/sys/fs/cgroup/agent.service")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }
}
