//! A hook that sees every plugin call of a chain (not dry runs), so the agent can keep
//! metrics without this crate knowing any metrics library.

use std::sync::Arc;
use std::time::Duration;

/// How one plugin call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Allowed,
    Denied,
    /// Trap, CPU budget, memory, not loaded: its `on_error` decided what followed.
    Failed,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// One plugin call, as the observer sees it.
#[derive(Debug, Clone, Copy)]
pub struct PluginCall<'a> {
    pub plugin: &'a str,
    pub outcome: CallOutcome,
    /// Time of the call, including creating the instance.
    pub duration: Duration,
}

/// Called once per plugin call, on the calling thread: keep it cheap.
pub type CallObserver = Arc<dyn Fn(&PluginCall<'_>) + Send + Sync>;
