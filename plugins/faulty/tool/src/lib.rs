//! **Test fixture, not a sample.** A tool plugin whose tools misbehave on purpose, for the
//! host's containment tests, plus `echo` (starts a command and returns its output through
//! `procwarden:host/process`) and `start_then_trap` (starts a background process, then
//! traps: the process must stay tracked and killable).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use procwarden_tool_sdk::{Context, Guest, ToolError, ToolResult, ToolSpec, error_text, process};

const COMMAND_SCHEMA: &str =
    r#"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#;
const NO_ARGS: &str = r#"{"type":"object","properties":{}}"#;

pub struct Faulty;

fn spec(name: &str, schema: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("test fixture: {name}"),
        input_schema: schema.into(),
    }
}

/// The value of `"command"` in a flat JSON object (enough for a fixture).
fn command_arg(args: &str) -> Option<String> {
    let rest = &args[args.find("\"command\":\"")? + 11..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

fn start(command: String, background: bool) -> Result<String, ToolError> {
    process::start(&process::StartRequest {
        command,
        workdir: None,
        env: Vec::new(),
        background,
        timeout_seconds: None,
    })
    .map_err(|e| ToolError::Failed(error_text(&e)))
}

impl Guest for Faulty {
    fn tools() -> Vec<ToolSpec> {
        vec![
            spec("echo", COMMAND_SCHEMA),
            spec("start_then_trap", COMMAND_SCHEMA),
            spec("trap", NO_ARGS),
            spec("spin", NO_ARGS),
            spec("hog", NO_ARGS),
            spec("wait_long", COMMAND_SCHEMA),
            spec("bad_json", NO_ARGS),
        ]
    }

    fn invoke(name: String, args: String, _ctx: Context) -> Result<ToolResult, ToolError> {
        match name.as_str() {
            "echo" => {
                let command =
                    command_arg(&args).ok_or(ToolError::InvalidArguments("command".into()))?;
                let id = start(command, false)?;
                let out =
                    process::wait(&id, 30_000).map_err(|e| ToolError::Failed(error_text(&e)))?;
                let listed = process::list().iter().any(|p| p.id == id);
                Ok(ToolResult::Json(format!(
                    "{{\"id\":\"{id}\",\"exit_code\":{},\"listed\":{listed},\"output\":{:?}}}",
                    out.exit_code.map_or("null".into(), |c| c.to_string()),
                    out.output
                )))
            }
            "start_then_trap" => {
                let command =
                    command_arg(&args).ok_or(ToolError::InvalidArguments("command".into()))?;
                let id = start(command, true)?;
                panic!("faulty tool: deliberate panic after starting {id}");
            }
            "trap" => panic!("faulty tool: deliberate panic"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut blocks = Vec::new();
                loop {
                    blocks.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&blocks);
                }
            }
            "wait_long" => {
                // Waits (host time, not guest CPU) far longer than the CPU budget.
                let command =
                    command_arg(&args).ok_or(ToolError::InvalidArguments("command".into()))?;
                let id = start(command, false)?;
                let out =
                    process::wait(&id, 60_000).map_err(|e| ToolError::Failed(error_text(&e)))?;
                Ok(ToolResult::Text(out.output))
            }
            "bad_json" => Ok(ToolResult::Json("{not json".into())),
            other => Err(ToolError::InvalidArguments(format!("no tool {other}"))),
        }
    }
}

procwarden_tool_sdk::export!(Faulty);
