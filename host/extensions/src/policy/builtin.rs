//! The sample policy plugins, embedded in the binary.
//!
//! `host/extensions/build.rs` builds them from `plugins/` (WebAssembly components for `wasm32-wasip2`)
//! and passes their paths in `PROCWARDEN_PLUGIN_*`. With no configuration file, the agent
//! loads them with their default settings, in the order given here.

/// `(name, component bytes)` of every sample plugin, in the order the default chain runs
/// them: `ampersand` first so later plugins see the final command, `deny` last so it judges
/// what will really run.
pub const SAMPLES: &[(&str, &[u8])] = &[
    (
        "ampersand",
        include_bytes!(env!("PROCWARDEN_PLUGIN_AMPERSAND")),
    ),
    ("env", include_bytes!(env!("PROCWARDEN_PLUGIN_ENV"))),
    ("workdir", include_bytes!(env!("PROCWARDEN_PLUGIN_WORKDIR"))),
    ("deny", include_bytes!(env!("PROCWARDEN_PLUGIN_DENY"))),
];

/// Sample plugins built into the binary but not in the default chain: an operator adds one
/// with `path = "builtin:NAME"`. `npm-ci` is built against `procwarden:policy@0.2.0`.
pub const OPTIONAL: &[(&str, &[u8])] =
    &[("npm-ci", include_bytes!(env!("PROCWARDEN_PLUGIN_NPM_CI")))];

/// Every built-in plugin, default chain first.
pub fn all() -> impl Iterator<Item = &'static (&'static str, &'static [u8])> {
    SAMPLES.iter().chain(OPTIONAL)
}

/// Deliberately faulty components (`plugins/faulty/`), for fault-containment tests only.
#[cfg(test)]
#[allow(dead_code)] // Each test uses the fixtures it needs.
pub(crate) mod fixtures {
    /// `on-start` panics: a trap (`unreachable`).
    pub const TRAP: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_TRAP"));
    /// `on-start` loops forever: only the CPU budget stops it.
    pub const SPIN: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_SPIN"));
    /// `on-start` allocates 16 MiB chunks until allocation fails (then traps).
    pub const HOG: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_HOG"));
    /// A valid component of the wrong world: a `wasi:cli` command without the `policy` export.
    pub const WRONG_WORLD: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_WRONG_WORLD"));
}
