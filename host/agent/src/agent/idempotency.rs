//! Idempotency keys: a retry of the same tool call (same chat, same key, same request) gets
//! the process the first call started instead of a second one.
//!
//! Each (chat, key) has its own async lock, held across the policy chain and the spawn, so two
//! concurrent retries cannot both start a process, while keyed starts of different keys never
//! wait on each other. The map is pruned of keys whose process is gone by the agent's reaper,
//! and on growth (amortised O(1) per start).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use procwarden_process::StartRequest;
use procwarden_process::sync::lock;

use super::Started;

/// Keys live within their chat: the same key in two chats names two different calls.
type Slot = (Option<String>, String);

/// What a key started, and which request that was.
#[derive(Debug, Clone)]
pub struct KeyedStart {
    pub fingerprint: u64,
    pub started: Started,
}

/// One key's entry; empty until its first start succeeds.
pub type KeyEntry = Arc<tokio::sync::Mutex<Option<KeyedStart>>>;

/// Fewest keys at which growth triggers a prune.
const PRUNE_FLOOR: usize = 1024;

pub struct IdempotencyKeys {
    inner: Mutex<Keys>,
}

struct Keys {
    slots: HashMap<Slot, KeyEntry>,
    /// Prune when the map reaches this size; doubled after each prune, so the scans cost
    /// O(1) amortised per start however many keys are live.
    prune_at: usize,
}

impl Default for IdempotencyKeys {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Keys {
                slots: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }
}

impl IdempotencyKeys {
    /// The entry of `key` in `chat`, created empty if new. `tracked` tells whether a process
    /// ID is still known, for pruning on growth.
    pub fn entry(&self, chat: Option<&str>, key: &str, tracked: impl Fn(&str) -> bool) -> KeyEntry {
        let mut keys = lock(&self.inner);
        let slot = (chat.map(str::to_owned), key.to_owned());
        if let Some(entry) = keys.slots.get(&slot) {
            return entry.clone();
        }
        if keys.slots.len() >= keys.prune_at {
            prune_locked(&mut keys.slots, &tracked);
            keys.prune_at = PRUNE_FLOOR.max(2 * keys.slots.len());
        }
        keys.slots.entry(slot).or_default().clone()
    }

    /// Forget keys whose process is gone (or that never started one), except those a start
    /// is using right now. Returns how many were forgotten.
    pub fn prune(&self, tracked: impl Fn(&str) -> bool) -> usize {
        let mut keys = lock(&self.inner);
        let before = keys.slots.len();
        prune_locked(&mut keys.slots, &tracked);
        before - keys.slots.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).slots.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn prune_locked(slots: &mut HashMap<Slot, KeyEntry>, tracked: &impl Fn(&str) -> bool) {
    slots.retain(|_, entry| {
        // New references to an entry are only made under the map's lock, which we hold: a
        // count of one means no start holds it, so its contents cannot change under us.
        if Arc::strong_count(entry) > 1 {
            return true;
        }
        match entry.try_lock() {
            Ok(known) => known.as_ref().is_some_and(|k| tracked(&k.started.id)),
            Err(_) => true,
        }
    });
}

/// Identifies a request for idempotency: the same command, directory, environment (in any
/// order), background flag and timeout.
pub fn fingerprint(request: &StartRequest) -> u64 {
    let mut env = request.env.clone();
    env.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &request.command,
        &request.workdir,
        env,
        request.background,
        request.timeout_seconds,
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: &str) -> KeyedStart {
        KeyedStart {
            fingerprint: 1,
            started: Started {
                id: id.to_owned(),
                request: StartRequest::default(),
                reused: false,
            },
        }
    }

    #[tokio::test]
    async fn keys_are_per_chat_and_pruned_once_their_process_is_gone() {
        let keys = IdempotencyKeys::default();
        let all = |_: &str| true;
        *keys.entry(Some("a"), "k", all).lock().await = Some(started("p1"));
        assert!(keys.entry(Some("b"), "k", all).lock().await.is_none());
        assert_eq!(
            keys.entry(Some("a"), "k", all)
                .lock()
                .await
                .as_ref()
                .map(|k| k.started.id.clone()),
            Some("p1".to_owned())
        );
        // p1 is gone; chat b's key never started anything.
        assert_eq!(keys.prune(|id| id != "p1"), 2);
        assert!(keys.is_empty());
    }

    #[tokio::test]
    async fn a_key_in_use_is_never_pruned() {
        let keys = IdempotencyKeys::default();
        let entry = keys.entry(None, "k", |_| true);
        let _held = entry.lock().await;
        assert_eq!(keys.prune(|_| false), 0);
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn growth_prunes_with_a_doubling_threshold() {
        let keys = IdempotencyKeys::default();
        // Every key's process is still tracked: nothing can go, so the threshold doubles
        // instead of scanning the whole map on every new key.
        for i in 0..PRUNE_FLOOR * 3 {
            let entry = keys.entry(None, &i.to_string(), |_| true);
            *entry.try_lock().unwrap() = Some(started(&i.to_string()));
        }
        let threshold = lock(&keys.inner).prune_at;
        assert_eq!(
            threshold,
            2 * 2 * PRUNE_FLOOR,
            "pruned at 1024 and 2048 only"
        );
        // Keys of processes that are gone go at the next growth prune.
        let keys = IdempotencyKeys::default();
        for i in 0..PRUNE_FLOOR {
            keys.entry(None, &i.to_string(), |_| true);
        }
        keys.entry(None, "one more", |_| false);
        assert_eq!(keys.len(), 1, "the never-started keys were pruned");
    }
}
