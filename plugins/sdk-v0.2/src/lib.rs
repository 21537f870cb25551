//! Bindings and helpers for procwarden policy plugins built against
//! `procwarden:policy@0.2.0` (world `policy-plugin`, see `wit/policy/v0.2.0/policy.wit`).
//!
//! The same as `procwarden-plugin-sdk` (0.1.0), whose documentation shows how to write a
//! plugin, plus what 0.2.0 adds: [`host::is_file`], [`host::exists`], a bounded
//! [`host::read_file`], [`host::which`], and the front end that sent the request
//! ([`Context::front_end`]). Depend on one SDK version per plugin: a component is built
//! against one version of the world.
//!
//! ```rust,ignore
//! use procwarden_plugin_sdk_v0_2::{Context, Decision, Guest, StartRequest, host};
//!
//! pub struct Example;
//!
//! impl Guest for Example {
//!     fn on_start(req: StartRequest, _ctx: Context) -> Decision {
//!         if host::which("podman").is_some() && req.command.starts_with("docker ") {
//!             return Decision::Deny("docker is podman here: run `podman ...`".into());
//!         }
//!         Decision::Allow(req)
//!     }
//! }
//!
//! procwarden_plugin_sdk_v0_2::export!(Example);
//! ```

// `no_std` on wasm32, so a plugin built on this SDK can be a component that imports no WASI
// (see `procwarden-plugin-bare`); plugins that use `std` link it as usual.
#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

wit_bindgen::generate!({
    world: "policy-plugin",
    path: "../../wit/policy/v0.2.0",
    pub_export_macro: true,
    export_macro_name: "wit_export",
    default_bindings_module: "procwarden_plugin_sdk_v0_2",
    additional_derives: [PartialEq, Eq],
});

pub use exports::procwarden::policy::policy::Guest;
pub use procwarden::policy::host;
pub use procwarden::policy::host::{LogLevel, ReadError};
pub use procwarden::policy::types::{Context, Decision, FrontEnd, StartRequest};

/// Export `$ty`, a type implementing [`Guest`], as the component's `policy` interface.
/// Expands to nothing outside `wasm32`, so the crate's unit tests run natively.
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

// The settings helper is the 0.1.0 SDK's, compiled against these bindings.
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
