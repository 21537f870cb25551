//! The command-policy chain: every start request passes through it before anything spawns.
//!
//! This module knows nothing of HTTP. Front ends build a [`StartRequest`] and a
//! [`PolicyContext`], call [`PolicyChain::evaluate`], and hand the allowed request to the
//! process manager.

mod audit;
mod cache;
mod chain;
pub mod config;
mod engine;
mod plugin;
mod stdio;
mod worker;

#[cfg(test)]
mod tests;

pub use cache::CacheStatus;
pub use chain::{Explanation, PluginInfo, PolicyChain, StepOutcome, StepReport};
pub use config::{OnError, PluginCode, PluginConfig, PluginSource, PolicyConfig};
pub use plugin::{LoadReport, PluginFailure, PluginHealth};

/// A request to start `sh -c command`, as it travels through the chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct StartRequest {
    pub command: String,
    pub workdir: Option<String>,
    /// Added on top of the agent's environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    pub background: bool,
    pub timeout_seconds: Option<u32>,
}

/// Facts plugins decide with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyContext {
    pub chat_id: Option<String>,
    pub agent_workdir: Option<String>,
    pub home: Option<String>,
}

/// A refusal, with the plugin that made it and the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub plugin: String,
    pub reason: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "denied by policy plugin \"{}\": {}",
            self.plugin, self.reason
        )
    }
}

/// Converts a Wasmtime error into an `anyhow` one, keeping its chain of causes.
pub(crate) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}
