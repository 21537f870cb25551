//! Store data of one filter instance and the host side of its imports: the filter package's
//! `host` (log, settings) and the WASI interfaces every plugin kind is granted.

use crate::guest_log;
use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::wit::{host, types};
use crate::policy::clock::{CallClock, CallClockView, HasCallClock};
pub(crate) use crate::policy::instance::MemoryLimiter;

/// `log` calls honoured per filter call; later ones are dropped.
const LOG_LINES_PER_CALL: u32 = 16;
/// Longest log message kept, in bytes.
const MAX_LOG_BYTES: usize = 1024;

pub(crate) struct FilterState {
    pub name: Arc<str>,
    pub settings: Arc<BTreeMap<String, String>>,
    pub wasi: WasiCtx,
    pub clock: CallClock,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub logs_left: u32,
}

impl FilterState {
    pub fn new(
        name: Arc<str>,
        settings: Arc<BTreeMap<String, String>>,
        wasi: WasiCtx,
        clock: CallClock,
        max_memory_bytes: u64,
    ) -> Self {
        Self {
            name,
            settings,
            wasi,
            clock,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: usize::try_from(max_memory_bytes).unwrap_or(usize::MAX),
                denied: None,
            },
            logs_left: LOG_LINES_PER_CALL,
        }
    }
}

impl types::Host for FilterState {}

impl host::Host for FilterState {
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
        guest_log::emit(guest_log::Kind::Filter, &self.name, level, &message);
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    async fn config_keys(&mut self) -> Vec<String> {
        self.settings.keys().cloned().collect()
    }
}

impl WasiView for FilterState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HasCallClock for FilterState {
    fn call_clock(&mut self) -> CallClockView<'_> {
        CallClockView {
            clock: &self.clock,
            table: &mut self.table,
        }
    }
}
