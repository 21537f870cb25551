//! procwarden: a workspace agent that runs shell commands for AI coding agents, with command
//! policy extended by WebAssembly components.
//!
//! Layers: [`process`] runs commands; [`policy`] decides on start requests; [`agent`] ties
//! them together for every front end; [`http`], [`mcp`] and the CLI ([`client`]) are front
//! ends.

pub mod agent;
pub mod check;
pub mod client;
pub mod config;
pub mod http;
pub mod mcp;
pub mod server;
