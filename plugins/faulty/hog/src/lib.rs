//! **Test fixture, not a sample.** A policy plugin whose `on-start` allocates memory
//! without bound.
//!
//! It keeps 16 MiB chunks, each written to, until an allocation fails. The host's
//! fault-containment tests load it to check that the memory limit stops it (a failed
//! `memory.grow` makes the allocator abort, which traps; a resource limiter may trap
//! first), that the error names the plugin, and that the host itself is unaffected.

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest};
use std::hint::black_box;

/// How much each step allocates.
pub const CHUNK: usize = 16 << 20;

/// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
pub struct Hog;

impl Guest for Hog {
    fn on_start(_req: StartRequest, _ctx: Context) -> Decision {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero bytes, so every page is really written.
            hoard.push(vec![0xA5; CHUNK]);
            black_box(&hoard);
        }
    }
}

procwarden_plugin_sdk::export!(Hog);
