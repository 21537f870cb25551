//! Bindings and helpers for procwarden policy plugins.
//!
//! A policy plugin is a WebAssembly component for `wasm32-wasip2` that exports
//! `procwarden:policy/policy@0.1.0` (world `policy-plugin`, see `wit/policy/v0.1.0/policy.wit`).
//! For `procwarden:policy@0.2.0` (file questions, `which`, the front end) use
//! `procwarden-plugin-sdk-v0-2` (`plugins/sdk-v0.2`), which has the same helpers.
//! This crate runs `wit_bindgen::generate!` once against that WIT and re-exports what a
//! plugin needs, so a plugin crate only depends on this crate.
//!
//! # Writing a plugin
//!
//! `Cargo.toml` (a member of the `plugins/` workspace):
//!
//! ```toml
//! [package]
//! name = "procwarden-plugin-example"
//! edition = "2024"
//!
//! [lib]
//! name = "example"                  # the component is target/.../release/example.wasm
//! crate-type = ["cdylib", "rlib"]   # cdylib: the component; rlib: native unit tests
//!
//! [dependencies]
//! procwarden-plugin-sdk = { path = "../sdk" }
//! ```
//!
//! `src/lib.rs`: keep the decision in a plain function that takes plain Rust values, so
//! `cargo test` can check it natively, and keep the `Guest` implementation a thin adapter:
//!
//! ```rust,ignore
//! use procwarden_plugin_sdk::{Context, Decision, Guest, Settings, StartRequest};
//!
//! /// The whole policy, testable without WebAssembly.
//! pub fn check(command: &str, banned: &str) -> Result<(), String> {
//!     if command.contains(banned) {
//!         Err(format!("`{banned}` is not allowed here; use ... instead"))
//!     } else {
//!         Ok(())
//!     }
//! }
//!
//! /// Public, so a native build does not warn that it is never constructed.
//! pub struct Example;
//!
//! impl Guest for Example {
//!     fn on_start(req: StartRequest, _ctx: Context) -> Decision {
//!         let settings = Settings::load();
//!         let banned = settings.get("banned").unwrap_or("sudo");
//!         match check(&req.command, banned) {
//!             Ok(()) => Decision::Allow(req),
//!             Err(reason) => Decision::Deny(reason),
//!         }
//!     }
//! }
//!
//! procwarden_plugin_sdk::export!(Example);
//! ```
//!
//! Build it with `scripts/build-plugins.sh` (which runs `cargo build --release --target
//! wasm32-wasip2`), then point a `[[plugin]]` entry of the agent's configuration at the
//! `.wasm` file:
//!
//! ```toml
//! [[plugin]]
//! path = "/path/to/example.wasm"
//! on_error = "deny"          # what to do if the plugin traps or runs out of time
//! [plugin.settings]
//! banned = "sudo"
//! ```
//!
//! # Rules of the sandbox
//!
//! * Every call gets a fresh instance with a small CPU and memory budget: no state survives
//!   between calls, and `on_start` should be a quick, pure function of its inputs.
//! * WASI is there but grants nothing: no files, no environment variables, no sockets. What a
//!   plugin may know comes through [`Context`], [`Settings`] and the [`host`] imports
//!   ([`host::is_dir`], [`host::log`]).
//! * A panic traps the instance. The host treats a trap as an error of the plugin (by default
//!   the request is denied), so return [`Decision::Deny`] with a useful reason instead.
//! * Deny reasons reach the client, often a language model: say why, and what to do instead.
//!
//! The host's imports exist only inside a component. Calling them from a native test
//! panics; that is why the decision logic should take plain values.

// `no_std` on wasm32, so a plugin built on this SDK can be a component that imports no WASI
// (see `procwarden-plugin-bare`); plugins that use `std` link it as usual.
#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

wit_bindgen::generate!({
    world: "policy-plugin",
    path: "../../wit/policy/v0.1.0",
    // Plugin crates call `procwarden_plugin_sdk::export!(MyPlugin)`, which wraps this one.
    pub_export_macro: true,
    export_macro_name: "wit_export",
    default_bindings_module: "procwarden_plugin_sdk",
    additional_derives: [PartialEq, Eq],
});

pub use exports::procwarden::policy::policy::Guest;
pub use procwarden::policy::host;
pub use procwarden::policy::host::LogLevel;
pub use procwarden::policy::types::{Context, Decision, StartRequest};

/// Export `$ty`, a type implementing [`Guest`], as the component's `policy` interface.
///
/// Use it once per plugin crate, at the top level: `procwarden_plugin_sdk::export!(MyPlugin);`.
/// It expands to nothing outside `wasm32`, so the same crate also builds, links and runs its
/// unit tests natively (a native `cdylib` could not carry the component's export names).
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::wit_export!($ty with_types_in $crate);
    };
}

/// Write a line to the agent's log, tagged with the plugin's name. Only works inside a
/// component (it calls the host).
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

// The plain type, compiled from the same source as `procwarden-plugin-settings`.
#[path = "../../settings/src/settings.rs"]
mod settings;
pub use settings::Settings;

/// Reading the settings from the host (the type itself is plain: `procwarden-plugin-settings`).
impl Settings {
    /// Read every setting of this plugin from the host. Only works inside a component.
    pub fn load() -> Self {
        Self::from_pairs(
            host::config_keys()
                .into_iter()
                .filter_map(|key| host::config(&key).map(|value| (key, value))),
        )
    }
}
