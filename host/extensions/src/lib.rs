//! procwarden's WebAssembly extension host: the Wasmtime engine, the plugin kinds and their
//! versioned WIT bindings. Knows nothing of HTTP or MCP; the agent calls it.

pub mod filter;
mod guest_log;
pub mod policy;
pub mod tool;
