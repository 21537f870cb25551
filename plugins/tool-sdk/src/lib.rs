//! Bindings and helpers for procwarden tool plugins (world `procwarden:tool/tool-plugin@0.1.0`,
//! `wit/tool/v0.1.0`, importing `procwarden:host/process@0.2.0` from `wit/host/v0.2.0`).
//!
//! A tool plugin is a `cdylib` built for `wasm32-wasip2` that implements [`Guest`]:
//!
//! ```rust,ignore
//! use procwarden_tool_sdk::{Context, Guest, ToolError, ToolResult, ToolSpec, process};
//!
//! pub struct Uptime;
//!
//! impl Guest for Uptime {
//!     fn tools() -> Vec<ToolSpec> {
//!         vec![ToolSpec {
//!             name: "uptime".into(),
//!             description: "How long the machine has been up.".into(),
//!             input_schema: r#"{"type":"object","properties":{}}"#.into(),
//!         }]
//!     }
//!     fn invoke(_name: String, _args: String, _ctx: Context) -> Result<ToolResult, ToolError> {
//!         let id = process::start(&process::StartRequest {
//!             command: "uptime".into(), workdir: None, env: vec![],
//!             background: false, timeout_seconds: Some(10),
//!         }).map_err(|e| ToolError::Failed(format!("{e:?}")))?;
//!         let out = process::wait(&id, 10_000).map_err(|e| ToolError::Failed(format!("{e:?}")))?;
//!         Ok(ToolResult::Text(out.output))
//!     }
//! }
//!
//! procwarden_tool_sdk::export!(Uptime);
//! ```

wit_bindgen::generate!({
    world: "procwarden:tool/tool-plugin@0.1.0",
    path: ["../../wit/host/v0.2.0", "../../wit/tool/v0.1.0"],
    pub_export_macro: true,
    export_macro_name: "wit_export",
    default_bindings_module: "procwarden_tool_sdk",
    generate_all,
});

pub use exports::procwarden::tool::tools::Guest;
pub use procwarden::host::process;
pub use procwarden::tool::host;
pub use procwarden::tool::types::{Context, LogLevel, ToolError, ToolResult, ToolSpec};

/// Export `$ty`, a type implementing [`Guest`], as the component's `tools` interface.
/// Expands to nothing outside `wasm32`, so the crate's unit tests run natively.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::wit_export!($ty with_types_in $crate);
    };
}

/// The text of a process error (the same text the HTTP API gives).
pub fn error_text(e: &process::Error) -> String {
    match e {
        process::Error::NotFound(m)
        | process::Error::NotRunning(m)
        | process::Error::Invalid(m)
        | process::Error::Denied(m)
        | process::Error::Internal(m) => m.clone(),
    }
}
