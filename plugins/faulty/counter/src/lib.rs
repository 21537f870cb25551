//! **Test fixture, not a sample.** A policy plugin that keeps a counter in a static and
//! appends `# call N` to every command it allows, N being the counter after this call.
//!
//! The host's tests load it to check that every call runs in a fresh instance: state a call
//! writes into the instance (here, the static) is never seen by the next call, so every
//! answer says `# call 1`.

use std::sync::atomic::{AtomicU32, Ordering};

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest};

/// Calls this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
pub struct Counter;

impl Guest for Counter {
    fn on_start(mut req: StartRequest, _ctx: Context) -> Decision {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        req.command = format!("{} # call {n}", req.command);
        Decision::Allow(req)
    }
}

procwarden_plugin_sdk::export!(Counter);
