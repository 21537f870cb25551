//! **Test fixture, not a sample.** A `procwarden:policy@0.2.0` plugin that asks the host
//! what the request's command says and denies with the answer, so the host's tests can see
//! what each 0.2.0 import answers:
//!
//! * `read PATH`: `read N bytes: TEXT` or `read error: ERROR` (`read-file`);
//! * `which NAME`, `exists PATH`, `is-file PATH`: the answer (`which`, `exists`, `is-file`);
//! * `front-end`: the front end in the context (`http`, `mcp`, `cli`, `tool:NAME`, `none`).
//!
//! Any other command is allowed unchanged.

// Natively (the plugins' own tests) the wasm export glue compiles to nothing, so the
// guest type and its helpers look unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use procwarden_plugin_sdk_v0_2::{Context, Decision, FrontEnd, Guest, StartRequest, host};

struct Questions;

impl Guest for Questions {
    fn on_start(req: StartRequest, ctx: Context) -> Decision {
        let (verb, arg) = req.command.split_once(' ').unwrap_or((&req.command, ""));
        let answer = match verb {
            "read" => match host::read_file(arg) {
                Ok(bytes) => format!(
                    "read {} bytes: {}",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
                ),
                Err(e) => format!("read error: {e:?}"),
            },
            "which" => format!("which: {:?}", host::which(arg)),
            "exists" => format!("exists: {}", host::exists(arg)),
            "is-file" => format!("is-file: {}", host::is_file(arg)),
            "front-end" => match ctx.front_end {
                Some(FrontEnd::Http) => "http".to_owned(),
                Some(FrontEnd::Mcp) => "mcp".to_owned(),
                Some(FrontEnd::Cli) => "cli".to_owned(),
                Some(FrontEnd::Tool(name)) => format!("tool:{name}"),
                None => "none".to_owned(),
            },
            _ => return Decision::Allow(req),
        };
        Decision::Deny(answer)
    }
}

procwarden_plugin_sdk_v0_2::export!(Questions);
