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

/// The settings each built-in plugin reads (top-level keys of its `settings` table). A key
/// outside these is a mistake the plugin would only warn about in its log at every call, so
/// the configuration refuses it ([`check_settings`]).
pub const SETTINGS: &[(&str, &[&str])] = &[
    ("ampersand", &[]),
    ("env", &["vars", "override", "defaults"]),
    ("workdir", &[]),
    ("deny", &["patterns", "reasons", "reason", "defaults"]),
    ("npm-ci", &[]),
];

/// Refuse settings the built-in plugin `name` does not read.
pub fn check_settings(name: &str, settings: &toml::Table) -> anyhow::Result<()> {
    let Some((_, known)) = SETTINGS.iter().find(|(n, _)| *n == name) else {
        return Ok(());
    };
    let unknown: Vec<&str> = settings
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let reads = if known.is_empty() {
        "it has no settings".to_owned()
    } else {
        format!("it reads {}", known.join(", "))
    };
    anyhow::bail!(
        "built-in plugin \"{name}\" does not read the setting{} {}: {reads}",
        if unknown.len() == 1 { "" } else { "s" },
        unknown
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Every built-in plugin, default chain first.
pub fn all() -> impl Iterator<Item = &'static (&'static str, &'static [u8])> {
    SAMPLES.iter().chain(OPTIONAL)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_built_in_has_its_settings_listed_and_unknown_ones_are_refused() {
        for (name, _) in super::all() {
            assert!(super::SETTINGS.iter().any(|(n, _)| n == name), "{name}");
        }
        let table = |text: &str| -> toml::Table { toml::from_str(text).unwrap() };
        assert!(
            super::check_settings("deny", &table("patterns = [\"x\"]\ndefaults = false")).is_ok()
        );
        let err = super::check_settings("deny", &table("pattern = [\"x\"]")).unwrap_err();
        assert!(err.to_string().contains("`pattern`"), "{err}");
        assert!(err.to_string().contains("patterns"), "{err}");
        let err = super::check_settings("ampersand", &table("x = 1")).unwrap_err();
        assert!(err.to_string().contains("no settings"), "{err}");
    }
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
