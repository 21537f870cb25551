//! **Test fixture, not a sample.** A policy plugin whose `on-start` always traps.
//!
//! The host's fault-containment tests load it to check that a trapping plugin is reported
//! as an error naming the plugin, that `on_error = "deny"` refuses the request and
//! `on_error = "allow"` lets it through, and that the next call gets a fresh, working
//! instance. It panics; with `panic = "abort"` (always so on wasm32) a panic prints its
//! message to stderr and executes `unreachable`, which traps.

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest};

/// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
pub struct Trap;

impl Guest for Trap {
    fn on_start(req: StartRequest, _ctx: Context) -> Decision {
        panic!(
            "faulty_trap: deliberate panic (test fixture) for command {:?}",
            req.command
        );
    }
}

procwarden_plugin_sdk::export!(Trap);
