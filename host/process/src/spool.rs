//! The output spool: every process's whole combined output, on disk beside the in-memory
//! head+tail buffer, so the middle of a long log can still be read and searched.
//!
//! The pipe reader never touches the disk: it hands each chunk to a bounded queue served by
//! one writer thread. When the queue is full (a slow or full disk), the chunk is not queued
//! and that process's spool stops there, marked incomplete; the buffer goes on as before.
//!
//! Bounds: one spool keeps at most `max_bytes` (past it, the first half stays and the second
//! half is a ring of the latest bytes); all spools together at most `total_bytes` (past it,
//! the spools of the oldest exited processes are deleted first, then the writing one stops).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::heap;
use crate::sync::lock;

/// Where spools live and how large they may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Directory of the spool files; `None`: a directory of this agent under the system's
    /// temporary directory.
    pub dir: Option<PathBuf>,
    /// Most bytes kept per process; 0 turns the spool off.
    pub max_bytes: u64,
    /// Most bytes kept by all spools together.
    pub total_bytes: u64,
    /// Most bytes waiting for the writer thread, all processes together.
    pub queue_bytes: usize,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 64 * 1024 * 1024,
            total_bytes: 1024 * 1024 * 1024,
            queue_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What a reply says about a process's spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpoolInfo {
    /// Every byte of the output reached the spool (cut middles aside).
    pub complete: bool,
    /// Bytes of the output kept whole: in memory while the buffer holds all of the output,
    /// in the spool file once it outgrows the buffer.
    pub spooled_bytes: u64,
    /// Bytes from the middle dropped to stay within `spool_max_bytes`.
    pub cut_bytes: u64,
    /// Why the spool is incomplete, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SpoolInfo {
    /// All `bytes` of the output are kept, with nothing cut.
    pub fn whole(bytes: u64) -> Self {
        Self {
            complete: true,
            spooled_bytes: bytes,
            cut_bytes: 0,
            reason: None,
        }
    }
}

/// A contiguous run of output bytes at `start` (an offset in the whole output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub bytes: Vec<u8>,
}

impl Piece {
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

#[derive(Debug)]
enum Job {
    /// Bytes to append, and the newlines among them (counted once, by the pipe reader).
    Write(Arc<Spool>, Vec<u8>, u64),
    /// The output is complete: close the file once the writes before this are done, so a
    /// retained exited process holds no fd (reads open the file for themselves).
    Close(Arc<Spool>),
}

/// All spools of one agent, and the thread that writes them.
#[derive(Debug)]
pub struct SpoolStore {
    settings: SpoolSettings,
    dir: PathBuf,
    jobs: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

/// Every spool made, oldest first; some may have been dropped since.
#[derive(Debug, Default)]
struct SpoolList {
    list: Vec<Weak<Spool>>,
    /// Length at which dropped ones are cleared out next.
    compact_at: usize,
}

/// What the writer thread and the store share.
#[derive(Debug)]
struct Shared {
    total_bytes: u64,
    /// Every live spool in creation order, for eviction.
    spools: Mutex<SpoolList>,
    /// Bytes on disk across spools.
    used: AtomicU64,
}

impl SpoolStore {
    /// `None` when the spool is off (`max_bytes` 0) or its directory cannot be made (logged).
    pub fn new(settings: SpoolSettings) -> Option<Self> {
        Self::with_memory_return(settings, heap::return_free_memory)
    }

    /// [`SpoolStore::new`], with the writer calling `return_memory` after each burst.
    fn with_memory_return(settings: SpoolSettings, return_memory: fn()) -> Option<Self> {
        if settings.max_bytes == 0 {
            return None;
        }
        let dir = settings.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("procwarden-spool-{}", std::process::id()))
        });
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot make the spool directory; output is kept in memory only");
            return None;
        }
        // Jobs are bounded by bytes (`queued`); the channel bound only caps their number.
        let (jobs, rx) = sync_channel(4096);
        let queued = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            total_bytes: settings.total_bytes,
            spools: Mutex::default(),
            used: AtomicU64::new(0),
        });
        let thread_queued = queued.clone();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("procwarden-spool".into())
            .spawn(move || writer(rx, &thread_queued, &thread_shared, return_memory));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start the spool writer; output is kept in memory only");
            return None;
        }
        Some(Self {
            settings,
            dir,
            jobs,
            queued,
            shared,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk across spools.
    pub fn used_bytes(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// The spool of process `id`. Its file is made by the writer thread with the first bytes
    /// it gets, off the path that starts the command.
    pub fn create(&self, id: &str) -> Arc<Spool> {
        let max = self.settings.max_bytes.max(2);
        let spool = Arc::new(Spool {
            path: self.dir.join(format!("{id}.out")),
            file: RwLock::new(SpoolFile::NotMade),
            head: max / 2,
            ring: max - max / 2,
            state: RwLock::default(),
            stopped_at: AtomicU64::new(u64::MAX),
            accepted: AtomicU64::new(0),
            exited: AtomicBool::new(false),
            shared: Arc::downgrade(&self.shared),
            caught_up: (Mutex::new(()), Condvar::new()),
        });
        let mut spools = lock(&self.shared.spools);
        // Dropped spools are cleared out once the list has doubled since the last time, so
        // a start does not walk every spool.
        if spools.list.len() >= spools.compact_at {
            spools.list.retain(|s| s.strong_count() > 0);
            spools.compact_at = (spools.list.len() * 2).max(64);
        }
        spools.list.push(Arc::downgrade(&spool));
        spool
    }

    /// Hand `data`, which holds `newlines` newlines (the pipe reader has counted them), to
    /// the writer. Never blocks: when the queue is full the spool stops here.
    pub fn offer(&self, spool: &Arc<Spool>, data: &[u8], newlines: u64) {
        if data.is_empty() || spool.is_stopped() {
            return;
        }
        let len = data.len();
        let queued = self.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.settings.queue_bytes {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            spool.stop("the disk did not keep up with the output");
            return;
        }
        match self
            .jobs
            .try_send(Job::Write(spool.clone(), data.to_vec(), newlines))
        {
            Ok(()) => {
                spool.accepted.fetch_add(len as u64, Ordering::AcqRel);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                spool.stop("the disk did not keep up with the output");
            }
        }
    }

    /// The process's output is complete: the writer closes its file after what is queued.
    /// If the queue is full the file stays open until the spool is dropped.
    pub fn finish(&self, spool: &Arc<Spool>) {
        let _ = self.jobs.try_send(Job::Close(spool.clone()));
    }

    /// Delete every spool file and the directory (at shutdown).
    pub fn remove_all(&self) {
        let spools: Vec<Arc<Spool>> = lock(&self.shared.spools)
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for spool in spools {
            spool.discard("the agent shut down");
        }
        if self.settings.dir.is_none() {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Newlines in `bytes`; a plain loop the compiler vectorises (dense newlines, as `yes`
/// prints, would make a search per newline slow).
pub fn count_newlines(bytes: &[u8]) -> u64 {
    bytecount::count(bytes, b'\n') as u64
}

fn writer(rx: Receiver<Job>, queued: &AtomicUsize, shared: &Shared, return_memory: fn()) {
    let mut burst = heap::BurstTracker::default();
    while let Some(job) = next_job(&rx, &mut burst, return_memory) {
        let (spool, data, newlines) = match job {
            Job::Write(spool, data, newlines) => (spool, data, newlines),
            Job::Close(spool) => {
                *spool.file.write().unwrap_or_else(|e| e.into_inner()) = SpoolFile::Closed;
                continue;
            }
        };
        let added = spool.write(&data, newlines);
        queued.fetch_sub(data.len(), Ordering::AcqRel);
        burst.passed(data.len());
        drop(data);
        {
            // Under the mutex, so a reader between its check and its wait cannot miss it.
            let _guard = lock(&spool.caught_up.0);
            spool.caught_up.1.notify_all();
        }
        if added > 0 {
            let used = shared.used.fetch_add(added, Ordering::AcqRel) + added;
            if used > shared.total_bytes {
                shared.evict(&spool);
            }
        }
    }
}

/// The writer's next job; `None` once the store is gone. When the queue has stayed empty
/// for a moment after a burst, the memory its chunks held is handed back (see [`heap`])
/// before waiting on.
fn next_job(
    rx: &Receiver<Job>,
    burst: &mut heap::BurstTracker,
    return_memory: fn(),
) -> Option<Job> {
    if burst.return_owed() {
        match rx.recv_timeout(heap::QUIET_BEFORE_RETURN) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) => {
                return_memory();
                burst.returned();
            }
        }
    }
    rx.recv().ok()
}

impl Shared {
    /// Over the total: delete the oldest exited processes' spools, then stop `writing`.
    fn evict(&self, writing: &Arc<Spool>) {
        let spools: Vec<Arc<Spool>> = lock(&self.spools)
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for spool in spools.iter().filter(|s| s.exited.load(Ordering::Acquire)) {
            if self.used.load(Ordering::Acquire) <= self.total_bytes {
                return;
            }
            spool.discard("deleted to stay within spool_total_bytes");
        }
        if self.used.load(Ordering::Acquire) > self.total_bytes {
            writing.stop("spool_total_bytes reached");
        }
    }
}

#[derive(Debug, Default)]
struct SpoolState {
    /// Bytes of output written to the file (or dropped from its middle ring).
    written: u64,
    /// Newlines among the `written` bytes, to number lines after a cut middle.
    newlines: u64,
    /// Why it stopped, once it has.
    reason: Option<String>,
    /// The file is gone: nothing can be read from it.
    removed: bool,
}

/// The file behind a spool.
#[derive(Debug)]
enum SpoolFile {
    /// No bytes have come yet.
    NotMade,
    /// Open while output may still come.
    Open(File),
    /// The output is complete (see [`Job::Close`]); reads open the path for themselves.
    Closed,
}

/// One process's spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: RwLock<SpoolFile>,
    /// Bytes of the file holding the start of the output.
    head: u64,
    /// Bytes of the file holding a ring of the latest output, after the head.
    ring: u64,
    state: RwLock<SpoolState>,
    /// Output offset where the spool stopped taking bytes (`u64::MAX`: it has not).
    stopped_at: AtomicU64,
    /// Bytes handed to the writer.
    accepted: AtomicU64,
    exited: AtomicBool,
    shared: Weak<Shared>,
    /// Signalled by the writer after each write, for readers waiting for it to catch up.
    caught_up: (Mutex<()>, Condvar),
}

impl Spool {
    /// Wait (at most `limit`) until the writer has written every byte handed to it so far:
    /// a read right after a burst of output then sees all of it, not only the buffer's ends.
    pub fn catch_up(&self, limit: Duration) {
        let target = self
            .accepted
            .load(Ordering::Acquire)
            .min(self.stopped_at.load(Ordering::Acquire));
        let deadline = Instant::now() + limit;
        let (mutex, condvar) = &self.caught_up;
        let mut guard = lock(mutex);
        loop {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.removed || state.written >= target || state.reason.is_some() {
                return;
            }
            drop(state);
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            guard = match condvar.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn is_stopped(&self) -> bool {
        self.stopped_at.load(Ordering::Acquire) != u64::MAX
    }

    /// Stop taking bytes, keeping what is there; the first reason given is kept.
    fn stop(&self, reason: &str) {
        let at = self.accepted.load(Ordering::Acquire);
        if self
            .stopped_at
            .compare_exchange(u64::MAX, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            state.reason.get_or_insert_with(|| reason.to_owned());
            tracing::debug!(path = %self.path.display(), reason, "spool stopped");
        }
    }

    /// The process's shell has exited: its spool may be evicted for space.
    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    /// Delete the file; reads from now on find nothing in the spool.
    pub fn discard(&self, reason: &str) {
        self.stopped_at
            .compare_exchange(u64::MAX, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.removed {
            return;
        }
        state.removed = true;
        state.reason.get_or_insert_with(|| reason.to_owned());
        let _ = std::fs::remove_file(&self.path);
        if let SpoolFile::Open(file) = &*self.file.read().unwrap_or_else(|e| e.into_inner()) {
            let _ = file.set_len(0);
        }
        if let Some(shared) = self.shared.upgrade() {
            shared
                .used
                .fetch_sub(self.disk_bytes(state.written), Ordering::AcqRel);
        }
    }

    fn disk_bytes(&self, written: u64) -> u64 {
        written.min(self.head + self.ring)
    }

    /// Writer thread, under the state lock (so a discard cannot slip in between): make the
    /// file if this is the first write.
    fn make_file(&self) -> std::io::Result<()> {
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        if matches!(*file, SpoolFile::NotMade) {
            *file = SpoolFile::Open(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&self.path)?,
            );
        }
        Ok(())
    }

    /// Writer thread: append `data`, which holds `newlines` newlines. Returns how many
    /// bytes the file grew by.
    fn write(&self, whole: &[u8], newlines: u64) -> u64 {
        let mut data = whole;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.removed || state.written >= self.stopped_at.load(Ordering::Acquire) {
            return 0;
        }
        let before = self.disk_bytes(state.written);
        if let Err(err) = self.make_file() {
            self.stopped_at.fetch_min(state.written, Ordering::AcqRel);
            state
                .reason
                .get_or_insert_with(|| format!("the spool file could not be made: {err}"));
            return 0;
        }
        let file = self.file.read().unwrap_or_else(|e| e.into_inner());
        let SpoolFile::Open(file) = &*file else {
            return 0; // closed: the output was complete before these bytes (cannot happen)
        };
        while !data.is_empty() {
            let at = state.written;
            let (pos, room) = if at < self.head {
                (at, self.head - at)
            } else {
                let in_ring = (at - self.head) % self.ring;
                (self.head + in_ring, self.ring - in_ring)
            };
            let n = (room as usize).min(data.len());
            if let Err(err) = file.write_all_at(&data[..n], pos) {
                // Nothing after a failed write may land in the file, or offsets would shift.
                let landed = whole.len() - data.len();
                state.newlines += count_newlines(&whole[..landed]);
                self.stopped_at.fetch_min(state.written, Ordering::AcqRel);
                state
                    .reason
                    .get_or_insert_with(|| format!("writing the spool failed: {err}"));
                return self.disk_bytes(state.written) - before;
            }
            state.written += n as u64;
            data = &data[n..];
        }
        state.newlines += newlines;
        self.disk_bytes(state.written) - before
    }

    /// Bytes of the output the spool holds up to now: where it ends, and whether its middle
    /// was cut.
    pub fn info(&self) -> SpoolInfo {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        SpoolInfo {
            complete: state.reason.is_none(),
            spooled_bytes: state.written,
            cut_bytes: state.written.saturating_sub(self.head + self.ring),
            reason: state.reason.clone(),
        }
    }

    /// Bytes written so far (the spool covers none past this).
    pub fn written(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).written
    }

    /// The bytes of `[from, to)` the spool holds, in order. A cut middle or a removed file
    /// leaves gaps.
    pub fn read(&self, from: u64, to: u64) -> Vec<Piece> {
        self.read_counted(from, to).0
    }

    /// As [`Spool::read`], with the bytes written and the newlines among them at that moment.
    pub fn read_counted(&self, from: u64, to: u64) -> (Vec<Piece>, u64, u64) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if state.removed {
            return (Vec::new(), 0, 0);
        }
        let w = state.written;
        let open = self.file.read().unwrap_or_else(|e| e.into_inner());
        let reopened;
        let file = match &*open {
            SpoolFile::Open(file) => file,
            SpoolFile::NotMade => return (Vec::new(), 0, 0),
            SpoolFile::Closed => match File::open(&self.path) {
                Ok(file) => {
                    reopened = file;
                    &reopened
                }
                Err(_) => return (Vec::new(), 0, 0),
            },
        };
        let mut regions = vec![(0, w.min(self.head))];
        if w > self.head {
            regions.push((self.head.max(w.saturating_sub(self.ring)), w));
        }
        let mut pieces = Vec::new();
        for (start, end) in regions {
            let (a, b) = (start.max(from), end.min(to));
            if a >= b {
                continue;
            }
            let mut bytes = vec![0; (b - a) as usize];
            let mut filled = 0usize;
            let mut at = a;
            while at < b {
                let (pos, room) = if at < self.head {
                    (at, self.head - at)
                } else {
                    let in_ring = (at - self.head) % self.ring;
                    (self.head + in_ring, self.ring - in_ring)
                };
                let n = (room.min(b - at)) as usize;
                if file
                    .read_exact_at(&mut bytes[filled..filled + n], pos)
                    .is_err()
                {
                    bytes.truncate(filled);
                    break;
                }
                filled += n;
                at += n as u64;
            }
            if !bytes.is_empty() {
                pieces.push(Piece { start: a, bytes });
            }
        }
        (pieces, w, state.newlines)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.discard("the process was forgotten");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: u64, total: u64) -> (SpoolStore, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let store = SpoolStore::new(SpoolSettings {
            dir: Some(dir.0.clone()),
            max_bytes: max,
            total_bytes: total,
            queue_bytes: 1 << 20,
        })
        .unwrap();
        (store, dir)
    }

    /// A temporary directory removed at the end of a test.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir =
                    std::env::temp_dir().join(format!("pw-spool-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Self(dir)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn settle(spool: &Spool, bytes: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spool.written() < bytes && !spool.is_stopped() {
            assert!(std::time::Instant::now() < deadline, "spool writer stuck");
            std::thread::yield_now();
        }
    }

    /// [`SpoolStore::offer`] with the newlines counted, as the pipe reader does.
    fn offer(store: &SpoolStore, spool: &Arc<Spool>, data: &[u8]) {
        store.offer(spool, data, count_newlines(data));
    }

    fn joined(pieces: &[Piece]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.bytes.clone()).collect()
    }

    /// Calls of the memory-return hook, for the tests below (a `fn()` cannot capture).
    static RETURNS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

    fn count_return() {
        *RETURNS.0.lock().unwrap() += 1;
        RETURNS.1.notify_all();
    }

    #[test]
    fn a_burst_through_the_queue_hands_its_memory_back_once_the_queue_is_empty() {
        let dir = tempfile_dir::Dir::new();
        let store = SpoolStore::with_memory_return(
            SpoolSettings {
                dir: Some(dir.0.clone()),
                max_bytes: 64 << 20,
                total_bytes: 1 << 30,
                queue_bytes: 64 << 20,
            },
            count_return,
        )
        .unwrap();
        // Small output first: not worth a walk of the arenas.
        let quiet = store.create("quiet");
        offer(&store, &quiet, b"a line\n");
        settle(&quiet, 7);
        assert_eq!(*RETURNS.0.lock().unwrap(), 0, "returned after a few bytes");
        let spool = store.create("burst");
        let chunk = vec![b'x'; 256 * 1024];
        let chunks = heap::RETURN_AFTER_BYTES / chunk.len() + 1;
        for _ in 0..chunks {
            offer(&store, &spool, &chunk);
        }
        settle(&spool, (chunks * chunk.len()) as u64);
        let returns = RETURNS.0.lock().unwrap();
        let (returns, timeout) = RETURNS
            .1
            .wait_timeout_while(returns, Duration::from_secs(10), |n| *n == 0)
            .unwrap();
        assert!(!timeout.timed_out(), "the writer never handed memory back");
        assert_eq!(*returns, 1);
    }

    #[test]
    fn a_finished_spool_closes_its_file_and_is_still_read() {
        let (store, _dir) = store(1024, 1 << 20);
        let spool = store.create("done");
        offer(&store, &spool, b"all of it\n");
        store.finish(&spool);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(*spool.file.read().unwrap(), SpoolFile::Closed) {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never closed the file"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            spool.written(),
            10,
            "the write queued before the close landed"
        );
        assert_eq!(joined(&spool.read(0, 100)), b"all of it\n");
        spool.discard("test");
        assert!(
            spool.read(0, 100).is_empty(),
            "a discarded spool reads nothing"
        );
    }

    #[test]
    fn small_output_is_spooled_whole_and_read_back_by_range() {
        let (store, _dir) = store(1024, 1 << 20);
        let spool = store.create("a");
        offer(&store, &spool, b"hello ");
        offer(&store, &spool, b"world\n");
        settle(&spool, 12);
        assert_eq!(joined(&spool.read(0, 100)), b"hello world\n");
        assert_eq!(
            spool.read(6, 11),
            vec![Piece {
                start: 6,
                bytes: b"world".to_vec()
            }]
        );
        let info = spool.info();
        assert!(info.complete && info.cut_bytes == 0 && info.spooled_bytes == 12);
    }

    #[test]
    fn newlines_are_counted_over_every_byte_written_a_cut_middle_included() {
        let (store, _dir) = store(20, 1 << 20);
        let spool = store.create("lines");
        let text: String = (1..=100).map(|n| format!("{n}\n")).collect();
        // Chunks that straddle the end of the head and the ring's wrap.
        for chunk in text.as_bytes().chunks(7) {
            offer(&store, &spool, chunk);
        }
        settle(&spool, text.len() as u64);
        let (_, written, newlines) = spool.read_counted(0, text.len() as u64);
        assert_eq!(written, text.len() as u64);
        assert_eq!(newlines, 100);
    }

    #[test]
    fn past_the_cap_keeps_the_first_half_and_a_rolling_last_half() {
        let (store, _dir) = store(20, 1 << 20);
        let spool = store.create("b");
        let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        for chunk in data.chunks(7) {
            offer(&store, &spool, chunk);
        }
        settle(&spool, 100);
        let pieces = spool.read(0, 100);
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[0],
            Piece {
                start: 0,
                bytes: data[..10].to_vec()
            }
        );
        assert_eq!(
            pieces[1],
            Piece {
                start: 90,
                bytes: data[90..].to_vec()
            }
        );
        assert_eq!(spool.info().cut_bytes, 80);
        assert_eq!(std::fs::metadata(spool.path()).unwrap().len(), 20);
    }

    #[test]
    fn the_total_bound_deletes_the_oldest_exited_spool_first() {
        let (store, _dir) = store(100, 150);
        let old = store.create("old");
        let running = store.create("running");
        offer(&store, &old, &[b'o'; 100]);
        settle(&old, 100);
        old.mark_exited();
        offer(&store, &running, &[b'r'; 60]);
        settle(&running, 60);
        assert!(old.read(0, 100).is_empty(), "evicted");
        assert!(!old.path().exists());
        assert!(!old.info().complete);
        assert_eq!(joined(&running.read(0, 60)), vec![b'r'; 60]);
        assert_eq!(store.used_bytes(), 60);
    }

    #[test]
    fn a_full_queue_stops_the_spool_instead_of_blocking() {
        let dir = tempfile_dir::Dir::new();
        let store = SpoolStore::new(SpoolSettings {
            dir: Some(dir.0.clone()),
            max_bytes: 1 << 20,
            total_bytes: 1 << 30,
            queue_bytes: 10,
        })
        .unwrap();
        let spool = store.create("c");
        offer(&store, &spool, &[b'x'; 11]);
        let info = spool.info();
        assert!(!info.complete);
        assert!(info.reason.unwrap().contains("did not keep up"));
    }

    #[test]
    fn dropping_or_removing_deletes_the_files() {
        let (store, dir) = store(100, 1000);
        let spool = store.create("d");
        let path = spool.path().to_owned();
        offer(&store, &spool, b"out");
        settle(&spool, 3);
        assert!(path.exists());
        // The writer may still hold the last job's reference for a moment.
        drop(spool);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the file outlived its spool"
            );
            std::thread::yield_now();
        }
        let kept = store.create("e");
        offer(&store, &kept, b"out");
        settle(&kept, 3);
        assert!(kept.path().exists());
        store.remove_all();
        assert!(!kept.path().exists());
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    }

    #[test]
    fn the_file_is_made_by_the_writer_with_the_first_bytes() {
        let (store, _dir) = store(100, 1000);
        let spool = store.create("lazy");
        assert!(!spool.path().exists(), "made before any output");
        assert!(spool.read(0, 10).is_empty());
        offer(&store, &spool, b"first");
        settle(&spool, 5);
        assert!(spool.path().exists());
        assert_eq!(joined(&spool.read(0, 10)), b"first");
    }

    #[test]
    fn a_file_that_cannot_be_made_stops_the_spool_and_says_why() {
        let (store, dir) = store(100, 1000);
        let spool = store.create("nowhere");
        std::fs::remove_dir(&dir.0).unwrap();
        offer(&store, &spool, b"lost");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spool.info().reason.is_none() {
            assert!(std::time::Instant::now() < deadline, "spool writer stuck");
            std::thread::yield_now();
        }
        let info = spool.info();
        assert!(!info.complete);
        assert!(info.reason.unwrap().contains("could not be made"));
        assert_eq!(info.spooled_bytes, 0);
    }
}
