//! `procwarden:policy@0.2.0` (`wit/policy/v0.2.0`), the newest version: adds `is-file`,
//! `exists`, a bounded `read-file`, `which` and the front end in `context`. The host's
//! implementation of every policy import is here; older versions forward to it.
//!
//! Its generated types are the chain's own: [`StartRequest`] and [`Context`] (re-exported
//! as `PolicyContext`) cross into the plugin without being copied.

use std::sync::Arc;

use crate::policy::instance::{HostState, LogLine, MAX_TEXT_BYTES};
use crate::policy::plugin::truncate;
use crate::policy::probe::{self, Answer, Question, ReadScope, digest};

/// The version of the package these bindings are generated from.
pub(crate) const VERSION: &str = "0.2.0";

wasmtime::component::bindgen!({
    world: "policy-plugin",
    path: "../../wit/policy/v0.2.0",
    // Calls run on a fiber, so a plugin that waits (WASI `poll`) does not block a thread;
    // the host functions stay synchronous.
    exports: { default: async },
    // The chain keys remembered answers by request and context, and reports requests.
    additional_derives: [PartialEq, Eq, Hash, serde::Serialize],
});

pub use procwarden::policy::host::{self, LogLevel, ReadError};
pub use procwarden::policy::types::{self, Context, Decision, FrontEnd, StartRequest};

// By hand: `bindgen!` generates the struct, and `additional_derives` would ask for `Default`
// on the WIT enums and variants too, where it cannot be derived.
#[allow(clippy::derivable_impls)]
impl Default for StartRequest {
    fn default() -> Self {
        Self {
            command: String::new(),
            workdir: None,
            env: Vec::new(),
            background: false,
            timeout_seconds: None,
        }
    }
}

/// No chat, no directories, front end not known.
#[allow(clippy::derivable_impls)]
impl Default for Context {
    fn default() -> Self {
        Self {
            chat_id: None,
            agent_workdir: None,
            home: None,
            front_end: None,
        }
    }
}

impl types::Host for HostState {}

impl HostState {
    fn record(&mut self, question: Question, answer: Answer) {
        self.observed.probes.push((question, answer));
    }

    /// Where this call's `read-file` may read, worked out at its first use.
    fn read_scope(&mut self) -> Arc<ReadScope> {
        let call = &self.call;
        self.read_scope
            .get_or_insert_with(|| {
                Arc::new(ReadScope::new(
                    call.workdir.as_deref(),
                    call.agent_workdir.as_deref(),
                    &self.read_paths,
                ))
            })
            .clone()
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.logs_left == 0 {
            self.observed.logs_dropped += 1;
            return;
        }
        self.logs_left -= 1;
        let line = LogLine {
            level,
            message: truncate(message, MAX_TEXT_BYTES),
        };
        line.emit(&self.plugin);
        self.observed.logs.push(line);
    }

    fn is_dir(&mut self, path: String) -> bool {
        let answer = probe::is_dir(&path);
        self.record(Question::IsDir(path), Answer::Bool(answer));
        answer
    }

    fn is_file(&mut self, path: String) -> bool {
        let answer = probe::is_file(&path);
        self.record(Question::IsFile(path), Answer::Bool(answer));
        answer
    }

    fn exists(&mut self, path: String) -> bool {
        let answer = probe::exists(&path);
        self.record(Question::Exists(path), Answer::Bool(answer));
        answer
    }

    fn read_file(&mut self, path: String) -> Result<Vec<u8>, ReadError> {
        let scope = self.read_scope();
        let read = scope.read(&path);
        self.record(
            Question::ReadFile { path, scope },
            Answer::File(digest(&read)),
        );
        read
    }

    fn which(&mut self, name: String) -> Option<String> {
        let found = probe::which(&name);
        self.record(Question::Which(name), Answer::Path(found.clone()));
        found
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.settings.keys().cloned().collect()
    }
}
