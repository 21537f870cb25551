//! procwarden: a workspace agent that runs shell commands for AI coding agents, with command
//! policy extended by WebAssembly components.
//!
//! Layers: `procwarden-process` runs commands; `procwarden-extensions` runs the policy
//! plugins; [`agent`] ties them together for every front end; [`http`], [`mcp`] and the CLI
//! ([`client`]) are front ends, which call the agent and never each other. [`serve`] and
//! [`runtime`] assemble them into the long-running commands.

pub mod agent;
pub mod chat;
pub mod check;
pub mod client;
pub mod config;
pub mod front_end;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod runtime;
pub mod serve;
