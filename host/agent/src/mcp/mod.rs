//! The MCP front end: the agent's tools for models (`execute`, `process_output`,
//! `process_list`, `process_signal`) over stdio and streamable HTTP, built on the `rmcp` SDK.
//!
//! Like the HTTP API it only translates: every call goes to the shared [`crate::agent::Agent`],
//! so MCP starts pass through the same policy chain and process manager.

pub mod args;
pub mod format;
pub mod guard;
pub mod handler;
pub mod plugin_tools;
pub mod sessions;
pub mod tools;
pub mod transport;

pub use handler::{ChatSource, ProcwardenMcp};
