//! Bindings and helpers for procwarden policy plugins.
//!
//! A policy plugin is a WebAssembly component for `wasm32-wasip2` that exports
//! `procwarden:policy/policy@0.1.0` (world `policy-plugin`, see `wit/policy/policy.wit`).
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

use std::collections::BTreeMap;

wit_bindgen::generate!({
    world: "policy-plugin",
    path: "../../wit/policy",
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

/// A plugin's settings: the `[plugin.settings]` table of its `[[plugin]]` entry, flattened
/// by the host into string keys and values.
///
/// Nested tables become dotted keys (`vars.PAGER`), array items get their index
/// (`patterns.0`, `patterns.1`), and numbers and booleans arrive in their TOML form
/// (`"0"`, `"true"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Read every setting of this plugin from the host. Only works inside a component.
    pub fn load() -> Self {
        let values = host::config_keys()
            .into_iter()
            .filter_map(|key| host::config(&key).map(|value| (key, value)))
            .collect();
        Self { values }
    }

    /// Settings from plain pairs, for tests and for code that already has them.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Whether the plugin has no settings at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every key, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `key` as a boolean: `Ok(None)` if unset, an error text naming the key and the value
    /// if it is neither `true` nor `false`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(format!(
                "setting `{key}` must be true or false, not {other:?}"
            )),
        }
    }

    /// The items of the array `prefix` (keys `prefix.0`, `prefix.1`, ...) with their index,
    /// ordered by index (numerically: `prefix.10` comes after `prefix.9`). Keys below an item
    /// (`prefix.0.name`, from an array of tables) are not items and are skipped.
    pub fn list(&self, prefix: &str) -> Vec<(usize, &str)> {
        let mut items: Vec<(usize, &str)> = self
            .below(prefix)
            .into_iter()
            .filter_map(|(rest, value)| {
                let all_digits = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
                all_digits
                    .then(|| rest.parse().ok())
                    .flatten()
                    .map(|index| (index, value))
            })
            .collect();
        items.sort_by_key(|&(index, _)| index);
        items
    }

    /// The entries of the table `prefix` (keys `prefix.NAME`) as `(NAME, value)`, sorted by
    /// name. `NAME` is everything after `prefix.`, dots included.
    pub fn table(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.below(prefix)
    }

    /// `(rest, value)` for every key `prefix.rest`, sorted by key.
    fn below(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.values
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(|rest| (rest, value.as_str()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_orders_items_numerically_and_skips_nested_keys() {
        let s = Settings::from_pairs([
            ("patterns.10", "ten"),
            ("patterns.2", "two"),
            ("patterns.0", "zero"),
            ("patterns.1.name", "nested"),
            ("patternsx.3", "other"),
            ("patterns", "bare"),
            ("patterns.", "empty"),
        ]);
        assert_eq!(
            s.list("patterns"),
            vec![(0, "zero"), (2, "two"), (10, "ten")]
        );
        assert!(s.list("missing").is_empty());
    }

    #[test]
    fn table_keeps_dots_in_names() {
        let s = Settings::from_pairs([
            ("vars.PAGER", "cat"),
            ("vars.a.b", "x"),
            ("override", "true"),
        ]);
        assert_eq!(s.table("vars"), vec![("PAGER", "cat"), ("a.b", "x")]);
    }

    #[test]
    fn bool_accepts_only_toml_booleans() {
        let s = Settings::from_pairs([("a", "true"), ("b", "false"), ("c", "yes")]);
        assert_eq!(s.bool("a"), Ok(Some(true)));
        assert_eq!(s.bool("b"), Ok(Some(false)));
        assert_eq!(s.bool("none"), Ok(None));
        let err = s.bool("c").unwrap_err();
        assert!(err.contains("`c`") && err.contains("\"yes\""), "{err}");
    }

    #[test]
    fn empty_and_get() {
        assert!(Settings::default().is_empty());
        let s = Settings::from_pairs([("k", "v")]);
        assert!(!s.is_empty());
        assert_eq!(s.get("k"), Some("v"));
        assert_eq!(s.get("x"), None);
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["k"]);
    }
}
