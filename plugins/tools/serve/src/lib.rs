//! `serve`: start a long-running command (a dev server, a watcher) in the background and
//! return once it is ready: its output matches `ready_regex`, or something listens on
//! `ready_port`. Returns the process ID, the matching line and the time it took; if the
//! process exits or the time runs out first, says so with the output's tail. The process
//! keeps running (stop it with `process_signal`).
//!
//! Everything goes through `procwarden:host/process`: the start passes the policy chain
//! (front end `tool:serve`), and waiting between checks is the host's `wait`, which costs
//! the tool no CPU. A port is checked by reading `/proc/net/tcp{,6}` with a short command
//! (tools have no sockets of their own).
//!
//! ```toml
//! [[tool]]
//! path = "builtin:serve"
//! ```
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::time::{Duration, Instant};

use procwarden_tool_sdk::{Context, Guest, ToolError, ToolResult, ToolSpec, error_text, process};
use serde_json::{Map, Value, json};

/// Seconds to wait for readiness when the call does not say.
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// How often output is checked (the host's `wait` returns at once if the process exits).
const POLL: Duration = Duration::from_millis(200);
/// Lines of output returned with an exit or a timeout.
const TAIL_LINES: usize = 20;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "command": {"type": "string", "description": "Shell command that starts the server or watcher."},
    "workdir": {"type": "string", "description": "Directory to run it in (default: the agent's)."},
    "ready_regex": {"type": "string", "description": "Ready when a line of output matches this regular expression."},
    "ready_port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Ready when a TCP port on this machine is listening."},
    "timeout_seconds": {"type": "integer", "minimum": 1, "description": "Give up waiting after this long (default 30); the process keeps running."}
  },
  "required": ["command"],
  "additionalProperties": false
}"#;

/// What readiness means for one call.
pub struct Ready {
    pub regex: Option<regex_lite::Regex>,
    pub port: Option<u16>,
}

impl Ready {
    /// The first line of `output` that matches the regex.
    pub fn matching_line<'a>(&self, output: &'a str) -> Option<&'a str> {
        let re = self.regex.as_ref()?;
        output.lines().find(|l| re.is_match(l))
    }
}

/// A shell command that succeeds when TCP `port` is in LISTEN state (state 0A) in
/// `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn port_probe(port: u16) -> String {
    format!(
        "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qE '^ *[0-9]+: [0-9A-F]+:{port:04X} [0-9A-F]+:[0-9A-F]+ 0A'"
    )
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn string_arg(args: &Map<String, Value>, key: &str) -> Result<Option<String>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ToolError::InvalidArguments(format!(
            "\"{key}\" must be a string"
        ))),
    }
}

fn int_arg(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ToolError::InvalidArguments(format!("\"{key}\" must be a positive integer"))
        }),
    }
}

fn failed(e: process::Error) -> ToolError {
    ToolError::Failed(error_text(&e))
}

pub struct Serve;

impl Guest for Serve {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "serve".into(),
            description:
                "Start a long-running command (dev server, watcher) in the background and \
                return once it is ready: when a line of its output matches ready_regex, or when \
                ready_port is listening. Returns the process ID, the matching line and how long it \
                took; if the process exits or timeout_seconds passes first, returns that with the \
                output's last lines. The process keeps running: stop it with process_signal."
                    .into(),
            input_schema: SCHEMA.into(),
        }]
    }

    fn invoke(_name: String, args: String, ctx: Context) -> Result<ToolResult, ToolError> {
        let args: Map<String, Value> = serde_json::from_str(&args).map_err(|e| {
            ToolError::InvalidArguments(format!("arguments are not a JSON object: {e}"))
        })?;
        let command = string_arg(&args, "command")?
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ToolError::InvalidArguments("\"command\" is required".into()))?;
        let workdir = string_arg(&args, "workdir")?;
        let regex = string_arg(&args, "ready_regex")?
            .map(|r| regex_lite::Regex::new(&r))
            .transpose()
            .map_err(|e| {
                ToolError::InvalidArguments(format!(
                    "\"ready_regex\" is not a valid regular expression: {e}"
                ))
            })?;
        let port = int_arg(&args, "ready_port")?
            .map(|p| u16::try_from(p).ok().filter(|p| *p > 0))
            .map(|p| {
                p.ok_or_else(|| {
                    ToolError::InvalidArguments("\"ready_port\" must be 1-65535".into())
                })
            })
            .transpose()?;
        if regex.is_none() && port.is_none() {
            return Err(ToolError::InvalidArguments(
                "pass ready_regex or ready_port (or both) to say when the command is ready".into(),
            ));
        }
        // Stay inside the call's own real-time limit, with a second to report.
        let budget = Duration::from_millis(ctx.deadline_ms.saturating_sub(1_000).max(1));
        let timeout = Duration::from_secs(
            int_arg(&args, "timeout_seconds")?.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        )
        .min(budget);
        let ready = Ready { regex, port };

        let started = Instant::now();
        let id = process::start(&process::StartRequest {
            command,
            workdir,
            env: Vec::new(),
            background: true,
            timeout_seconds: None,
        })
        .map_err(failed)?;
        let elapsed_ms = |t: Instant| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let wait_ms = u32::try_from(POLL.min(left).as_millis())
                .unwrap_or(0)
                .max(1);
            let out = process::wait(&id, wait_ms).map_err(failed)?;
            if let Some(line) = ready.matching_line(&out.output) {
                return Ok(ToolResult::Json(
                    json!({"status": "ready", "id": id, "matched_line": line, "elapsed_ms": elapsed_ms(started)})
                        .to_string(),
                ));
            }
            if let Some(port) = ready.port
                && port_listening(port)?
            {
                return Ok(ToolResult::Json(
                    json!({"status": "ready", "id": id, "port": port, "elapsed_ms": elapsed_ms(started)})
                        .to_string(),
                ));
            }
            if !out.running {
                return Ok(ToolResult::Json(
                    json!({
                        "status": "exited", "id": id, "exit_code": out.exit_code,
                        "elapsed_ms": elapsed_ms(started), "output_tail": tail(&out.output, TAIL_LINES),
                    })
                    .to_string(),
                ));
            }
            if started.elapsed() >= timeout {
                return Ok(ToolResult::Json(
                    json!({
                        "status": "timeout", "id": id, "running": true,
                        "elapsed_ms": elapsed_ms(started), "output_tail": tail(&out.output, TAIL_LINES),
                    })
                    .to_string(),
                ));
            }
        }
    }
}

fn port_listening(port: u16) -> Result<bool, ToolError> {
    let id = process::start(&process::StartRequest {
        command: port_probe(port),
        workdir: None,
        env: Vec::new(),
        background: false,
        timeout_seconds: Some(5),
    })
    .map_err(failed)?;
    let out = process::wait(&id, 5_000).map_err(failed)?;
    Ok(out.exit_code == Some(0))
}

procwarden_tool_sdk::export!(Serve);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_matching_line() {
        let ready = Ready {
            regex: Some(regex_lite::Regex::new("listening on (\\d+)").unwrap()),
            port: None,
        };
        assert_eq!(
            ready.matching_line("boot\nlistening on 8080\nlistening on 9"),
            Some("listening on 8080")
        );
        assert_eq!(ready.matching_line("boot"), None);
    }

    #[test]
    fn port_probe_uses_hex_ports() {
        assert!(port_probe(8080).contains(":1F90 "));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
