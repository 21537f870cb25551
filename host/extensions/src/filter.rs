//! Output filters: code that rewrites process output before it leaves the agent, typically
//! to mask secrets: components of world `procwarden:filter/filter-plugin` (`wit/filter/v0.1.0`),
//! or the built-in `redact` running natively ([`native`]; its component build stays available
//! as `builtin:redact.wasm`).
//!
//! This module knows nothing of HTTP or MCP. The agent loads a [`FilterChain`] from
//! [`FilterSource`]s (`[[filter]]` entries, plus the built-in `redact` unless
//! `[filters] builtins = false`) and passes every output text it hands a client through
//! [`FilterChain::apply`]; the reply keeps the process's real byte counts and adds the
//! number of changes (`redactions`).
//!
//! Runtime model of components: one Wasmtime engine for the chain (none when every filter is
//! native); each call runs in an instance that has never served a call before, with a memory
//! bound and a CPU budget (checked at epoch ticks; a real-time cap of ten times the budget
//! bounds it too). Instances are created ahead, off the request's path, so a read pays only
//! for the call itself: copying the text in, the scan, copying the result out. A native
//! filter is called in place, with no limits (it is the host's own code). A filter that
//! traps, panics, spins, exhausts its memory, or does not implement the world is named in
//! the error; by default (`on_error = "deny"`) the client gets that error instead of the
//! unfiltered text, and the agent keeps serving.

pub mod builtin;
mod chain;
mod config;
pub mod native;
mod state;
mod wit;

pub use chain::{FilterChain, FilterError, FilterHealth, Filtered};
pub use config::{FilterConfig, FilterSource, FiltersConfig};
pub use wit::types::Context as FilterContext;

#[cfg(test)]
mod tests;
