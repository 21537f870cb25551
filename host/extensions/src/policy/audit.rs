//! The audit file: one JSON line per plugin decision, appended.
//!
//! A record names the plugin, the decision (`allow`, `deny` or `error`), the reason, how long
//! the call took, the command before and after, and which request fields the plugin changed.
//! Environment values are never written (plugins may add secrets); only changed field names.
//! Every record of one start request, the `started` record that ends an allowed one included,
//! carries the same `request_id`: concurrent requests' lines interleave, and that is what
//! joins them.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;

use super::WitRequest;

pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// Joins the audit records of one start request ([`RequestId::new`] for each).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh ID: 16 random hex digits. Random rather than counted, so IDs do not repeat
    /// across reloads and restarts that append to the same audit file.
    // No `Default`: every ID is a fresh one, not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of the audit file.
#[derive(Debug, Serialize)]
pub(crate) struct AuditRecord<'a> {
    /// Unix time in seconds, with millisecond precision.
    pub time_unix: f64,
    /// The start request this decision was part of.
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<&'a str>,
    pub plugin: &'a str,
    /// Where the request came from: `http`, `mcp`, `cli` or `tool:NAME` (a tool plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_end: Option<String>,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// The denial reason or the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// For `error`: what the failure did to the request (`deny` or `allow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<&'static str>,
    pub micros: u64,
    /// The plugin was not run: its answer to the same request was remembered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remembered: bool,
    pub command_before: &'a str,
    /// The command the plugin passed on (absent when the request was denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_after: Option<&'a str>,
    /// Request fields the plugin changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<&'static str>,
}

impl AuditLog {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the policy audit file {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, rec: &impl Serialize) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!("cannot encode a policy audit record: {e}");
                return;
            }
        };
        line.push(b'\n');
        // One write per record: with O_APPEND, lines from several processes do not interleave.
        let result = match self.file.lock() {
            Ok(mut f) => f.write_all(&line),
            Err(_) => return,
        };
        if let Err(e) = result {
            tracing::warn!(file = %self.path.display(), "cannot write the policy audit file: {e}");
        }
    }
}

/// The line that ends a request's records when it was allowed: the process it started.
#[derive(Debug, Serialize)]
pub(crate) struct StartedRecord<'a> {
    pub time_unix: f64,
    /// The request's ID, as on each of its plugins' records.
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<&'a str>,
    /// Always `started`.
    pub decision: &'static str,
    pub process_id: &'a str,
    /// The command as it runs, after every plugin.
    pub command: &'a str,
}

pub(crate) fn now_unix() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Names of the request fields that differ between `a` and `b`.
pub(crate) fn changed_fields(a: &WitRequest, b: &WitRequest) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.command != b.command {
        out.push("command");
    }
    if a.workdir != b.workdir {
        out.push("workdir");
    }
    if a.env != b.env {
        out.push("env");
    }
    if a.background != b.background {
        out.push("background");
    }
    if a.timeout_seconds != b.timeout_seconds {
        out.push("timeout_seconds");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let before = WitRequest {
            command: "sleep 1 &".into(),
            ..Default::default()
        };
        let after = WitRequest {
            command: "sleep 1".into(),
            background: true,
            ..Default::default()
        };
        for (decision, remembered) in [("allow", false), ("deny", true)] {
            log.record(&AuditRecord {
                time_unix: now_unix(),
                request_id: "r1",
                chat_id: Some("c1"),
                plugin: "ampersand",
                front_end: None,
                decision,
                reason: None,
                on_error: None,
                micros: 12,
                remembered,
                command_before: &before.command,
                command_after: Some(&after.command),
                changed: changed_fields(&before, &after),
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["plugin"], "ampersand");
        assert_eq!(lines[0]["chat_id"], "c1");
        assert_eq!(lines[1]["request_id"], "r1");
        assert_eq!(lines[1]["decision"], "deny");
        // Only a remembered answer says so.
        assert_eq!(lines[0].get("remembered"), None);
        assert_eq!(lines[1]["remembered"], true);
        assert_eq!(
            lines[0]["changed"],
            serde_json::json!(["command", "background"])
        );
        assert!(lines[0].get("reason").is_none());
    }
}
