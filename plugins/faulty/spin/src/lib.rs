//! **Test fixture, not a sample.** A policy plugin whose `on-start` never returns.
//!
//! The host's fault-containment tests load it to check that the CPU budget (epoch
//! deadline or fuel) interrupts a plugin stuck in a loop, that the error names the plugin,
//! and that the request is then handled as `on_error` says.

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest};
use std::hint::black_box;

/// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
pub struct Spin;

impl Guest for Spin {
    fn on_start(_req: StartRequest, _ctx: Context) -> Decision {
        // `black_box` keeps the optimizer from proving the loop pointless.
        let mut counter = 0u64;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

procwarden_plugin_sdk::export!(Spin);
