//! The command-policy chain: every start request passes through it before anything spawns.
//!
//! This module knows nothing of HTTP. Front ends build a [`StartRequest`] and a
//! [`PolicyContext`], call [`PolicyChain::evaluate`] (or [`PolicyChain::evaluate_async`] from
//! async code), and hand the allowed request to the process manager.
//!
//! Wiring: deserialize a [`PolicyConfig`] (the `[policy]` table) and [`PluginConfig`]s (the
//! `[[plugin]]` array), turn each into a [`PluginSource`] (`PluginSource::from(&cfg)`, or
//! [`PluginSource::bytes`] for components built into the binary), and call
//! [`PolicyChain::load`] once at startup. Loading validates every component and fails with an
//! error naming the plugin and its path. [`PolicyChain::plugins`] tells how each was loaded
//! (cache hit or compiled), [`PolicyChain::health`] gives per-plugin counters and
//! [`PolicyChain::explain`] is a dry run for `procwarden plugin check`.
//!
//! Runtime model (see the submodules): one Wasmtime engine per chain with a pooling allocator;
//! every call gets a fresh instance from a pre-instantiated component, a CPU budget enforced
//! with epoch interruption, a memory bound, and WASI with nothing granted (no files,
//! environment, arguments or sockets; clocks and random numbers only; stdout/stderr captured
//! for the log). Plugins may be built against any version of `procwarden:policy` the host
//! serves (see `wit.rs`); one chain mixes them. A plugin that traps, runs out of time or memory, or cannot be instantiated
//! is a failure: by default the request is denied naming the plugin (`on_error = "deny"`),
//! or it passes that plugin unchanged (`on_error = "allow"`).

mod audit;
pub mod builtin;
pub(crate) mod cache;
mod chain;
pub(crate) mod clock;
pub mod config;
pub(crate) mod engine;
pub(crate) mod instance;
pub(crate) mod memo;
mod native;
mod observer;
mod plugin;
mod probe;
pub(crate) mod stdio;
pub(crate) mod wasi;
mod watched;
mod wit;
mod worker;

#[cfg(test)]
mod tests;

pub use audit::RequestId;
pub use cache::CacheStatus;
pub use chain::{Explanation, PluginInfo, PolicyChain, StepOutcome, StepReport};
pub use config::{OnError, PluginCode, PluginConfig, PluginSource, PolicyConfig};
pub use observer::{CallObserver, CallOutcome, PluginCall};
pub use plugin::{LoadReport, PluginFailure, PluginHealth};

/// The request the chain decides on: the process layer's one start request. The chain
/// moves it into the newest WIT's `start-request` record ([`WitRequest`]) on the way in and
/// back on the way out, so plugins get it without a copy.
pub use procwarden_process::StartRequest;
/// The chain's working form of a request: the `start-request` record of the newest
/// `procwarden:policy` version, generated from its WIT.
pub(crate) use wit::latest::StartRequest as WitRequest;

/// Facts plugins decide with: the `context` record of the newest `procwarden:policy`
/// version. `PolicyContext::default()` knows nothing (no chat, no directories, no front end).
pub use wit::latest::Context as PolicyContext;

/// The front end a request came in through ([`PolicyContext::front_end`]).
pub use wit::latest::FrontEnd;

/// Why the chain refused a request: a plugin said no, or could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The plugin that refused or failed.
    pub plugin: String,
    /// The plugin's own reason, or what went wrong with it (without its name).
    pub reason: String,
    pub cause: DenialCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialCause {
    /// The plugin decided to deny the request.
    Refused,
    /// The plugin failed (trap, CPU budget, memory) and its `on_error` is `deny`.
    PluginFailed,
    /// The policy runtime itself failed.
    RuntimeFailed,
}

/// The one wording of a refusal, for every front end.
impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            plugin,
            reason,
            cause,
        } = self;
        match cause {
            DenialCause::Refused => write!(f, "Denied by policy plugin \"{plugin}\": {reason}"),
            DenialCause::PluginFailed => write!(
                f,
                "Policy plugin \"{plugin}\" failed ({reason}), so the request was refused."
            ),
            DenialCause::RuntimeFailed => write!(f, "The policy runtime failed: {reason}"),
        }
    }
}

/// Converts a Wasmtime error into an `anyhow` one, keeping its chain of causes.
pub(crate) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}
