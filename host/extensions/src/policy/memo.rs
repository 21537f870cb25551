//! Remembered answers of a plugin, so a request it has already decided is not run again.
//!
//! Every call runs in a fresh instance, and WebAssembly code is deterministic: what an
//! instance answers depends only on the request, the context, its settings (fixed for the
//! plugin's life) and what its imports return. The imports that can return something new
//! for the same input are few, and all are watched:
//!
//! - The questions about the machine (`is-dir`, `is-file`, `exists`, `which`, `read-file`;
//!   see [`super::probe`]): each one asked is remembered with its answer (a file's contents
//!   as a digest), and a remembered answer is used only if every one of them is still
//!   answered the same way.
//! - WASI clocks and random numbers: an instance that reads any of them (a sleep reads the
//!   monotonic clock) is [`Nondeterminism`]-marked, and its answer is not remembered. The
//!   `insecure-seed` is fixed, so the hash tables of a Rust guest stay deterministic.
//! - Everything else the linker grants a plugin answers the same way every time: an empty
//!   environment and stdin, no terminal (see [`super::wasi`]). Files, sockets and any other
//!   interface are not granted: a component that imports one does not load.
//!
//! So a remembered answer is the answer a fresh instance would give. What the instance did
//! besides answering is kept too: its `log` lines are logged again, so a remembered answer
//! logs what a call would. Failures (traps, timeouts, running out of memory) are never
//! remembered: they can depend on the machine's load and the instance pool.

use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::instance::LogLine;
use super::plugin::Verdict;
use super::probe::{Answer, Question};
use super::{PolicyContext, WitRequest};
use procwarden_process::sync::lock;

/// What one call observed besides its arguments: enough to replay it, or to tell that it
/// cannot be replayed.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// Every question about the machine and its answer, in order.
    pub probes: Vec<(Question, Answer)>,
    /// Every `log` line the call wrote (after the per-call cap).
    pub logs: Vec<LogLine>,
    /// `log` lines over the per-call cap.
    pub logs_dropped: u32,
}

/// Set when an instance reads a clock or random numbers, which makes its answer one that a
/// later call need not repeat. Clones share the mark.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nondeterminism(Arc<AtomicBool>);

impl Nondeterminism {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A remembered answer and what producing it observed.
#[derive(Debug)]
pub(crate) struct Remembered {
    pub verdict: Verdict,
    pub observed: Observations,
}

/// Largest remembered entry (request, context and what the call observed), in bytes, so
/// the memory all remembered answers take stays small however large requests get: a
/// plugin keeps at most `capacity` × this. Commands are usually far shorter; a larger
/// request is simply run every time.
const MAX_ENTRY_BYTES: usize = 4096;

/// One plugin's remembered answers, least recently used forgotten first.
pub(crate) struct Memo {
    /// `None` when remembering is turned off.
    entries: Option<Mutex<LruCache<u64, Arc<Entry>>>>,
    hasher: std::hash::RandomState,
}

struct Entry {
    req: WitRequest,
    ctx: PolicyContext,
    remembered: Arc<Remembered>,
}

impl Memo {
    /// Remembers up to `capacity` answers; none if `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The remembered answer to `req` in `ctx`, if there is one and the machine still
    /// answers the plugin's questions as it did then.
    pub fn recall(&self, req: &WitRequest, ctx: &PolicyContext) -> Option<Arc<Remembered>> {
        let entries = self.entries.as_ref()?;
        let key = self.key(req, ctx);
        let entry = lock(entries).get(&key).cloned()?;
        if entry.req != *req || entry.ctx != *ctx {
            return None;
        }
        // Checked outside the lock: these are system calls.
        let still = entry
            .remembered
            .observed
            .probes
            .iter()
            .all(|(question, was)| question.answer() == *was);
        if !still {
            lock(entries).pop(&key);
            return None;
        }
        Some(entry.remembered.clone())
    }

    /// Remembers the answer to `req` in `ctx`, unless the entry would be over
    /// [`MAX_ENTRY_BYTES`].
    pub fn remember(&self, req: &WitRequest, ctx: &PolicyContext, remembered: Remembered) {
        let Some(entries) = &self.entries else { return };
        if request_bytes(req) + context_bytes(ctx) + remembered.bytes() > MAX_ENTRY_BYTES {
            return;
        }
        let key = self.key(req, ctx);
        let entry = Arc::new(Entry {
            req: req.clone(),
            ctx: ctx.clone(),
            remembered: Arc::new(remembered),
        });
        lock(entries).put(key, entry);
    }

    fn key(&self, req: &WitRequest, ctx: &PolicyContext) -> u64 {
        let mut h = self.hasher.build_hasher();
        req.hash(&mut h);
        ctx.hash(&mut h);
        h.finish()
    }
}

impl Remembered {
    /// Roughly the heap bytes this takes.
    fn bytes(&self) -> usize {
        let verdict = match &self.verdict {
            Verdict::Allow(req) => request_bytes(req),
            Verdict::Deny(reason) => reason.len(),
        };
        let probes: usize = self.observed.probes.iter().map(|(q, _)| q.bytes()).sum();
        let logs: usize = self.observed.logs.iter().map(|l| l.bytes()).sum();
        verdict + probes + logs
    }
}

fn request_bytes(req: &WitRequest) -> usize {
    let env: usize = req.env.iter().map(|(k, v)| k.len() + v.len()).sum();
    req.command.len() + req.workdir.as_ref().map_or(0, String::len) + env
}

fn context_bytes(ctx: &PolicyContext) -> usize {
    let front_end = match &ctx.front_end {
        Some(super::FrontEnd::Tool(name)) => name.len(),
        _ => 0,
    };
    [&ctx.chat_id, &ctx.agent_workdir, &ctx.home]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>()
        + front_end
}
