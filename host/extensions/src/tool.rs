//! Tool plugins: components that offer models new tools (world `procwarden:tool/tool-plugin`,
//! `wit/tool/v0.1.0`), and the host side of `procwarden:host/process` they drive processes
//! with.
//!
//! This module knows nothing of HTTP or MCP. The agent implements [`ProcessHost`] (start
//! through the policy chain with front end `tool:NAME`, signal, output, wait, list, all scoped
//! to the calling chat) and passes it to [`ToolSet::invoke`]; front ends list
//! [`ToolSet::specs`] and call [`ToolSet::invoke`].
//!
//! Runtime model: one Wasmtime engine for every tool component; each call gets a fresh
//! instance with a memory bound, a CPU budget (thread CPU time spent running the guest,
//! checked at epoch ticks) and a separate real-time limit (`timeout_seconds`). Host calls
//! (`start`, `wait`, `list`) run as their own tasks: the time they take, blocked or not, is
//! neither guest CPU time nor a thread held, so a tool may `wait` for a process for as long
//! as its real-time limit allows. A tool that traps, spins, exhausts its memory, or cannot
//! be loaded fails its call with an error naming it; the agent keeps serving, and the
//! processes it started stay tracked in their chat.

mod args;
pub mod builtin;
mod config;
mod host;
mod set;
mod wit;

pub use config::{ToolCode, ToolConfig, ToolSource};
pub use set::{ToolCallError, ToolOutput, ToolSet, ToolSpec};
pub use wit::process::{
    Error as ProcessError, GroupSignal as ProcessSignal, ProcessInfo, ProcessOutput,
    StartRequest as ToolStartRequest, Truncation,
};

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// Who is calling the process interface: the tool (by name) and the chat of the client that
/// invoked it. Everything a tool does with processes is scoped to that chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    pub tool: Arc<str>,
    pub chat: Option<String>,
}

/// The agent's process operations, as tools reach them. Errors carry the texts the HTTP API
/// gives for the same failure. Futures are `'static` so the host runs them as their own
/// tasks, outside the guest's CPU meter.
pub trait ProcessHost: Send + Sync + 'static {
    /// Start through the policy chain (front end `tool:NAME`); returns the process ID.
    fn start(
        &self,
        scope: &CallScope,
        request: procwarden_process::StartRequest,
    ) -> BoxFuture<'static, Result<String, ProcessError>>;
    fn signal(
        &self,
        scope: &CallScope,
        id: &str,
        signal: ProcessSignal,
    ) -> BoxFuture<'static, Result<(), ProcessError>>;
    fn output(
        &self,
        scope: &CallScope,
        id: &str,
    ) -> BoxFuture<'static, Result<ProcessOutput, ProcessError>>;
    /// Output once the shell exits or `limit` passes.
    fn wait(
        &self,
        scope: &CallScope,
        id: &str,
        limit: Duration,
    ) -> BoxFuture<'static, Result<ProcessOutput, ProcessError>>;
    fn list(&self, scope: &CallScope) -> BoxFuture<'static, Vec<ProcessInfo>>;
}

impl From<ToolStartRequest> for procwarden_process::StartRequest {
    fn from(req: ToolStartRequest) -> Self {
        let ToolStartRequest {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        } = req;
        Self {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        }
    }
}

impl From<procwarden_process::OutputSnapshot> for ProcessOutput {
    fn from(s: procwarden_process::OutputSnapshot) -> Self {
        Self {
            output: s.output,
            truncated: s.truncated.map(|t| Truncation {
                original_bytes: t.original_bytes,
                retained_bytes: t.retained_bytes,
                omitted_bytes: t.omitted_bytes,
                strategy: t.strategy.to_owned(),
            }),
            running: s.running,
            group_alive: s.group_alive,
            exit_code: s.exit_code,
            timed_out: s.timed_out,
            command: s.command,
        }
    }
}

impl From<procwarden_process::ProcessInfo> for ProcessInfo {
    fn from(p: procwarden_process::ProcessInfo) -> Self {
        Self {
            id: p.id,
            command: p.command,
            workdir: p.workdir,
            background: p.background,
            running: p.running,
            group_alive: p.group_alive,
            exit_code: p.exit_code,
            timed_out: p.timed_out,
            started_at_unix: p.started_at_unix,
            exited_at_unix: p.exited_at_unix,
        }
    }
}

impl From<ProcessSignal> for procwarden_process::GroupSignal {
    fn from(s: ProcessSignal) -> Self {
        match s {
            ProcessSignal::Terminate => Self::Terminate,
            ProcessSignal::Kill => Self::Kill,
        }
    }
}

/// The sentence a process error carries (the HTTP API's text for the same failure).
pub fn error_text(e: &ProcessError) -> &str {
    match e {
        ProcessError::NotFound(m)
        | ProcessError::NotRunning(m)
        | ProcessError::Invalid(m)
        | ProcessError::Denied(m)
        | ProcessError::Internal(m) => m,
    }
}

#[cfg(test)]
mod tests;
