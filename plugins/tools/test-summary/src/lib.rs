//! `test_summary`: run a test command and return only what a model needs: the failing
//! tests' own sections and the final summary lines, everything else elided with line
//! counts (see [`summary`]). Handles `cargo test`, `pytest` and `node --test` output.
//!
//! The command runs through `procwarden:host/process` (policy chain, front end
//! `tool:test_summary`, in the caller's chat) in the foreground; waiting for it is the
//! host's `wait`, which costs the tool no CPU.
//!
//! ```toml
//! [[tool]]
//! path = "builtin:test_summary"
//! timeout_seconds = 900
//! ```
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod summary;

use std::time::{Duration, Instant};

use procwarden_tool_sdk::{Context, Guest, ToolError, ToolResult, ToolSpec, error_text, process};
use serde_json::{Map, Value};

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "command": {"type": "string", "description": "The test command, e.g. `cargo test`, `python3 -m pytest`, `node --test`."},
    "workdir": {"type": "string", "description": "Directory to run it in (default: the agent's)."}
  },
  "required": ["command"],
  "additionalProperties": false
}"#;

fn failed(e: process::Error) -> ToolError {
    ToolError::Failed(error_text(&e))
}

pub struct TestSummary;

impl Guest for TestSummary {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "test_summary".into(),
            description:
                "Run a test command (cargo test, pytest, node --test, ...) and return only \
                the failing tests' own output and the final summary lines; everything else is \
                elided with line counts. Use it instead of process_start for test runs whose full \
                output would be long."
                    .into(),
            input_schema: SCHEMA.into(),
        }]
    }

    fn invoke(_name: String, args: String, ctx: Context) -> Result<ToolResult, ToolError> {
        let args: Map<String, Value> = serde_json::from_str(&args).map_err(|e| {
            ToolError::InvalidArguments(format!("arguments are not a JSON object: {e}"))
        })?;
        let string = |key: &str| match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ToolError::InvalidArguments(format!(
                "\"{key}\" must be a string"
            ))),
        };
        let command = string("command")?
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ToolError::InvalidArguments("\"command\" is required".into()))?;
        let workdir = string("workdir")?;
        let budget = Duration::from_millis(ctx.deadline_ms.saturating_sub(1_000).max(1));
        let started = Instant::now();
        let id = process::start(&process::StartRequest {
            command: command.clone(),
            workdir,
            env: Vec::new(),
            background: false,
            timeout_seconds: Some(u32::try_from(budget.as_secs()).unwrap_or(u32::MAX).max(1)),
        })
        .map_err(failed)?;
        let out = loop {
            let left = budget.saturating_sub(started.elapsed());
            let out = process::wait(
                &id,
                u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
            )
            .map_err(failed)?;
            if !out.running || started.elapsed() >= budget {
                break out;
            }
        };
        let status = match (out.running, out.exit_code) {
            (true, _) => format!(
                "still running after {} s (process {id})",
                started.elapsed().as_secs()
            ),
            (false, Some(0)) => "passed (exit code 0)".to_owned(),
            (false, Some(code)) => format!("FAILED (exit code {code})"),
            (false, None) => "ended".to_owned(),
        };
        let mut text = format!(
            "$ {command}\n{status} in {:.1} s\n",
            started.elapsed().as_secs_f64()
        );
        if let Some(t) = &out.truncated {
            text.push_str(&format!(
                "(output was {} bytes; {} bytes in the middle were not kept by the agent)\n",
                t.original_bytes, t.omitted_bytes
            ));
        }
        text.push_str(&summary::summarize(&out.output));
        Ok(ToolResult::Text(text))
    }
}

procwarden_tool_sdk::export!(TestSummary);
