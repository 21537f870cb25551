//! The one request to start a command, as every layer sees it: the front ends build it, the
//! policy chain rewrites it, the agent resolves its directory, and the manager runs it.

use serde::{Deserialize, Serialize};

/// A request to run `sh -c command`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StartRequest {
    pub command: String,
    /// Where to run it. Front ends pass what the client asked for (relative or absent); by
    /// the time the manager sees it, the agent has resolved it to an existing directory.
    pub workdir: Option<String>,
    /// Added on top of the agent's environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Return at once and keep it running, rather than being waited for.
    pub background: bool,
    /// Terminate the whole group after this many seconds.
    pub timeout_seconds: Option<u32>,
}
