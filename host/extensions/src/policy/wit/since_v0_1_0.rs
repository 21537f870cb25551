//! `procwarden:policy@0.1.0` (`wit/policy/v0.1.0`): `log`, `is-dir` and `config`; the
//! context has no front end. Every import forwards to the newest version's implementation,
//! and the types are converted at the call.

use wasmtime::Store;

use super::latest;
use crate::policy::instance::HostState;

/// The version of the package these bindings are generated from.
pub(crate) const VERSION: &str = "0.1.0";

wasmtime::component::bindgen!({
    world: "policy-plugin",
    path: "../../wit/policy/v0.1.0",
    // Calls run on a fiber, so a plugin that waits (WASI `poll`) does not block a thread;
    // the host functions stay synchronous.
    exports: { default: async },
});

use procwarden::policy::{host, types};

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        latest::host::Host::log(self, level.into(), message);
    }

    fn is_dir(&mut self, path: String) -> bool {
        latest::host::Host::is_dir(self, path)
    }

    fn config(&mut self, key: String) -> Option<String> {
        latest::host::Host::config(self, key)
    }

    fn config_keys(&mut self) -> Vec<String> {
        latest::host::Host::config_keys(self)
    }
}

impl From<host::LogLevel> for latest::LogLevel {
    fn from(level: host::LogLevel) -> Self {
        match level {
            host::LogLevel::Trace => Self::Trace,
            host::LogLevel::Debug => Self::Debug,
            host::LogLevel::Info => Self::Info,
            host::LogLevel::Warn => Self::Warn,
            host::LogLevel::Error => Self::Error,
        }
    }
}

/// Calls `on-start` of a 0.1.0 instance with the request and context in 0.1.0's types.
pub(crate) async fn on_start(
    bindings: &PolicyPlugin,
    store: &mut Store<HostState>,
    req: &latest::StartRequest,
    ctx: &latest::Context,
) -> wasmtime::Result<latest::Decision> {
    let req = types::StartRequest {
        command: req.command.clone(),
        workdir: req.workdir.clone(),
        env: req.env.clone(),
        background: req.background,
        timeout_seconds: req.timeout_seconds,
    };
    let ctx = types::Context {
        chat_id: ctx.chat_id.clone(),
        agent_workdir: ctx.agent_workdir.clone(),
        home: ctx.home.clone(),
    };
    let decision = bindings
        .procwarden_policy_policy()
        .call_on_start(store, &req, &ctx)
        .await?;
    Ok(match decision {
        types::Decision::Allow(r) => latest::Decision::Allow(latest::StartRequest {
            command: r.command,
            workdir: r.workdir,
            env: r.env,
            background: r.background,
            timeout_seconds: r.timeout_seconds,
        }),
        types::Decision::Deny(reason) => latest::Decision::Deny(reason),
    })
}
