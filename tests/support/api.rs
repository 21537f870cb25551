//! The HTTP API's replies as types, mirroring the README's "HTTP API" section.
//!
//! Replies the README specifies field by field deny unknown fields, so a field the README does
//! not document fails the tests instead of slipping through. `Display` renders a reply as the
//! JSON it came from, for assertion messages.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /api/v0/processes/start`: `{id, started, background, reused?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartReply {
    pub id: String,
    pub started: bool,
    /// The flag after policy: a plugin may have moved the command to the background.
    pub background: bool,
    /// Present (and true) only when an idempotency key returned an existing process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<bool>,
}

/// `POST /api/v0/processes/start?wait=true`: the start reply plus the output fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct StartWaitReply {
    #[serde(flatten)]
    pub start: StartReply,
    #[serde(flatten)]
    pub output: OutputSnapshot,
}

impl TryFrom<Map<String, Value>> for StartWaitReply {
    type Error = serde_json::Error;

    /// Splits the one object into its two documented halves, each of which denies unknown
    /// fields (serde's `flatten` cannot be combined with `deny_unknown_fields`).
    fn try_from(mut fields: Map<String, Value>) -> Result<Self, Self::Error> {
        let start: Map<String, Value> = ["id", "started", "background", "reused"]
            .into_iter()
            .filter_map(|key| fields.remove_entry(key))
            .collect();
        Ok(Self {
            start: serde_json::from_value(Value::Object(start))?,
            output: serde_json::from_value(Value::Object(fields))?,
        })
    }
}

/// `GET /api/v0/processes/{id}/output`:
/// `{output, truncated?, running, group_alive, members_alive, exit_code?, timed_out, command}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSnapshot {
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    pub running: bool,
    pub group_alive: bool,
    /// Processes of the command still running, escaped ones included.
    pub members_alive: u64,
    /// Absent while the shell runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub command: String,
    /// Which bytes of the whole output `output` is drawn from.
    pub covers: Covers,
    /// The on-disk copy of the whole output; absent when the spool is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolInfo>,
    /// A `lines=A:B` read: the lines returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<LineSpan>,
    /// A `grep=` read: matching lines counted, shown and left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grep: Option<GrepCount>,
    /// A wait: `exit`, `regex`, `quiet`, `port`, `output`, `input` or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// Changes the output filters made to `output`; absent when no filter runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redactions: Option<u32>,
    /// A member is blocked reading the stdin pipe or terminal.
    pub waiting_for_input: bool,
}

/// `POST /api/v0/processes/{id}/input`: `{written, eof}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputReply {
    pub written: u64,
    pub eof: bool,
}

/// `POST /api/v0/processes/{id}/resize`: `{rows, cols}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeReply {
    pub rows: u16,
    pub cols: u16,
}

/// `{start, end, total_bytes, missing_bytes}`: offsets in the whole output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covers {
    pub start: u64,
    pub end: u64,
    pub total_bytes: u64,
    pub missing_bytes: u64,
}

/// `{complete, spooled_bytes, cut_bytes, reason?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolInfo {
    pub complete: bool,
    pub spooled_bytes: u64,
    pub cut_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{first, last, total}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpan {
    pub first: u64,
    pub last: u64,
    pub total: u64,
}

/// `{matches, shown, omitted}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepCount {
    pub matches: u64,
    pub shown: u64,
    pub omitted: u64,
}

/// `{original_bytes, retained_bytes, omitted_bytes, strategy: "head_tail"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truncation {
    pub original_bytes: u64,
    pub retained_bytes: u64,
    pub omitted_bytes: u64,
    pub strategy: String,
}

/// `GET /api/v0/processes/list`: `{processes: [ProcessInfo]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListReply {
    pub processes: Vec<ProcessInfo>,
    /// Processes the caller may see, before the agent's list cap.
    pub total: u64,
}

/// `{id, command, workdir, background, running, group_alive, members_alive, exit_code?,
/// timed_out, started_at_unix, exited_at_unix?, stdin, waiting_for_input}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessInfo {
    pub id: String,
    pub command: String,
    pub workdir: String,
    pub background: bool,
    pub running: bool,
    pub group_alive: bool,
    /// Processes of the command still running, escaped ones included.
    pub members_alive: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub started_at_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at_unix: Option<i64>,
    /// `null`, `pipe` or `tty`.
    pub stdin: String,
    /// A member is blocked reading the stdin pipe or terminal.
    pub waiting_for_input: bool,
}

/// `GET /api/v0/health`: `{status, processes, waiters, containment, reloads, plugins, filters}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`; `degraded` when a policy plugin is not loaded or its last call failed;
    /// `shutting_down` once the agent stops accepting work.
    pub status: String,
    pub processes: u64,
    pub waiters: u64,
    /// `cgroup` or `subreaper`.
    pub containment: String,
    /// Successful configuration reloads since the agent started.
    pub reloads: u64,
    /// The policy chain in force, in order.
    pub plugins: Vec<PluginState>,
    /// The output filters in force, in order.
    pub filters: Vec<FilterState>,
}

/// One output filter in `Health::filters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterState {
    pub name: String,
    /// Where its code comes from (`<built-in filter redact>`, `<built-in filter redact.wasm>`
    /// or a path).
    pub origin: String,
    /// `native` (a built-in running as host code) or `component`.
    pub runs: String,
    /// `deny` or `allow`.
    pub on_error: String,
    pub calls: u64,
    pub redactions: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// One policy plugin in `Health::plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginState {
    pub name: String,
    /// `native` (a built-in run as the host's own code) or `component`.
    pub runs: String,
    pub loaded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub calls: u64,
    pub denied: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
}

/// `POST /api/v0/reload`: `{message, plugins, restart_needed}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadReply {
    pub message: String,
    pub plugins: Vec<String>,
    pub restart_needed: Vec<String>,
}

/// `POST /api/v0/processes/{id}/signal`: `{message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageReply {
    pub message: String,
}

/// Every 4xx/5xx reply: `{message, detail?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Renders each reply as JSON, so `"{reply}"` in an assertion message shows the wire form.
macro_rules! display_as_json {
    ($($reply:ty),*) => {$(
        impl fmt::Display for $reply {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
                f.write_str(&json)
            }
        }
    )*};
}

display_as_json!(
    StartReply,
    StartWaitReply,
    OutputSnapshot,
    Truncation,
    ListReply,
    ProcessInfo,
    Health,
    MessageReply,
    InputReply,
    ErrorBody
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot_fields() -> Value {
        json!({"output": "hi\n", "running": false, "group_alive": false, "members_alive": 0,
               "exit_code": 0, "timed_out": false, "command": "echo hi",
               "covers": {"start": 0, "end": 3, "total_bytes": 3, "missing_bytes": 0},
               "waiting_for_input": false})
    }

    #[test]
    fn a_field_the_readme_does_not_document_is_refused() {
        let mut fields = snapshot_fields();
        serde_json::from_value::<OutputSnapshot>(fields.clone()).unwrap();
        fields["pid"] = json!(42);
        let err = serde_json::from_value::<OutputSnapshot>(fields).unwrap_err();
        assert!(err.to_string().contains("unknown field `pid`"), "{err}");
    }

    #[test]
    fn start_wait_reply_splits_into_its_two_documented_halves() {
        let mut fields = snapshot_fields();
        fields["id"] = json!("a");
        fields["started"] = json!(true);
        fields["background"] = json!(false);
        let reply: StartWaitReply = serde_json::from_value(fields.clone()).unwrap();
        assert_eq!(reply.start.id, "a");
        assert_eq!(reply.start.reused, None);
        assert_eq!(reply.output.exit_code, Some(0));
        // Both halves still refuse what neither documents.
        fields["extra"] = json!(1);
        assert!(serde_json::from_value::<StartWaitReply>(fields).is_err());
    }

    #[test]
    fn display_is_the_wire_json() {
        let error = ErrorBody {
            message: "m".into(),
            detail: None,
        };
        assert_eq!(error.to_string(), r#"{"message":"m"}"#);
    }
}

/// One tool plugin in `GET /api/v0/tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    /// The `[[tool]]` component that offers it.
    pub component: String,
}

/// `GET /api/v0/tools`: `{tools}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsReply {
    pub tools: Vec<ToolSpec>,
}

/// `POST /api/v0/tools/{name}`: `{tool, text}` or `{tool, json}`, with `redactions?`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallReply {
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// Changes the output filters made to the result; absent when no filter runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redactions: Option<u32>,
}
