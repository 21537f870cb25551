//! Store data of one tool call and the host side of its imports: `procwarden:host/process`
//! (forwarded to the agent's [`ProcessHost`]) and the tool package's `host` (log, settings).

use crate::guest_log;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use crate::policy::instance::MemoryLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::wit::{host, process, types};
use super::{CallScope, ProcessHost};
use crate::policy::clock::{CallClock, CallClockView, HasCallClock};

/// `log` calls honoured per tool call; later ones are dropped.
pub(crate) const LOG_LINES_PER_CALL: u32 = 256;
/// Longest log message kept, in bytes.
const MAX_LOG_BYTES: usize = 4096;

pub(crate) struct ToolState {
    pub scope: CallScope,
    pub host: Option<Arc<dyn ProcessHost>>,
    pub settings: Arc<BTreeMap<String, String>>,
    /// When the call's real-time limit runs out; `wait` never blocks past it.
    pub deadline: Instant,
    pub wasi: WasiCtx,
    pub clock: CallClock,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub logs_left: u32,
}

impl ToolState {
    fn host(&self) -> Result<Arc<dyn ProcessHost>, process::Error> {
        self.host.clone().ok_or_else(|| {
            process::Error::Internal("Processes cannot be started while tools are loading.".into())
        })
    }

    fn audit(&self, op: &'static str, id: Option<&str>, outcome: &Result<(), String>) {
        let tool = &*self.scope.tool;
        let chat_id = self.scope.chat.as_deref();
        match outcome {
            Ok(()) => {
                tracing::info!(target: "procwarden::audit", tool, chat_id, op, id, "tool process call")
            }
            Err(e) => {
                tracing::info!(target: "procwarden::audit", tool, chat_id, op, id, error = %e, "tool process call failed")
            }
        }
    }
}

/// Runs a host operation as its own task, so neither the time it blocks nor the CPU it uses
/// counts against the guest's budget (the guest's meter only sees polls of the join handle).
async fn off_guest<T: Send + 'static>(
    fut: futures::future::BoxFuture<'static, T>,
) -> Result<T, process::Error> {
    tokio::spawn(fut)
        .await
        .map_err(|e| process::Error::Internal(format!("The agent failed to answer: {e}")))
}

impl process::Host for ToolState {
    async fn start(&mut self, req: process::StartRequest) -> Result<String, process::Error> {
        let host = self.host()?;
        let started = off_guest(host.start(&self.scope, req.into())).await;
        let started = started.and_then(|r| r);
        self.audit(
            "start",
            started.as_deref().ok(),
            &started
                .as_ref()
                .map(|_| ())
                .map_err(|e| super::error_text(e).to_owned()),
        );
        started
    }

    async fn signal(
        &mut self,
        id: String,
        sig: process::GroupSignal,
    ) -> Result<(), process::Error> {
        let result = off_guest(self.host()?.signal(&self.scope, &id, sig))
            .await
            .and_then(|r| r);
        let op = match sig {
            process::GroupSignal::Terminate => "terminate",
            process::GroupSignal::Kill => "kill",
        };
        self.audit(
            op,
            Some(&id),
            &result
                .as_ref()
                .map(|_| ())
                .map_err(|e| super::error_text(e).to_owned()),
        );
        result
    }

    async fn output(&mut self, id: String) -> Result<process::ProcessOutput, process::Error> {
        off_guest(self.host()?.output(&self.scope, &id))
            .await
            .and_then(|r| r)
    }

    async fn wait(
        &mut self,
        id: String,
        timeout_ms: u32,
    ) -> Result<process::ProcessOutput, process::Error> {
        let host = self.host()?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let limit = Duration::from_millis(timeout_ms.into()).min(left);
        off_guest(host.wait(&self.scope, &id, limit)).await?
    }

    async fn list(&mut self) -> Vec<process::ProcessInfo> {
        match self.host() {
            Ok(host) => off_guest(host.list(&self.scope)).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

impl types::Host for ToolState {}

impl host::Host for ToolState {
    async fn log(&mut self, level: types::LogLevel, mut message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        guest_log::cut(&mut message, MAX_LOG_BYTES);
        let level = match level {
            types::LogLevel::Trace => guest_log::Level::Trace,
            types::LogLevel::Debug => guest_log::Level::Debug,
            types::LogLevel::Info => guest_log::Level::Info,
            types::LogLevel::Warn => guest_log::Level::Warn,
            types::LogLevel::Error => guest_log::Level::Error,
        };
        guest_log::emit(guest_log::Kind::Tool, &self.scope.tool, level, &message);
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    async fn config_keys(&mut self) -> Vec<String> {
        self.settings.keys().cloned().collect()
    }
}

impl WasiView for ToolState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HasCallClock for ToolState {
    fn call_clock(&mut self) -> CallClockView<'_> {
        CallClockView {
            clock: &self.clock,
            table: &mut self.table,
        }
    }
}
