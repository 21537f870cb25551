//! `env`: adds environment variables to every command.
//!
//! Commands started for an agent have no terminal and nobody to answer prompts, so by
//! default this plugin adds variables that keep common tools from paging, prompting,
//! opening editors or printing colour codes:
//!
//! | variable              | value  | why |
//! |-----------------------|--------|-----|
//! | `PAGER`               | `cat`  | `man`, `systemctl`, ... print instead of paging |
//! | `GIT_PAGER`           | `cat`  | `git log`, `git diff` print instead of paging |
//! | `GIT_TERMINAL_PROMPT` | `0`    | git fails instead of asking for credentials |
//! | `NO_COLOR`            | `1`    | no ANSI colour codes in the output |
//! | `TERM`                | `dumb` | no cursor movement or other terminal control |
//! | `GIT_EDITOR`          | `true` | `git commit`, `git merge` accept the message as is |
//! | `EDITOR`              | `true` | anything that opens an editor gets one that exits at once |
//! | `VISUAL`              | `true` | same, for tools that prefer `VISUAL` |
//! | `GIT_SEQUENCE_EDITOR` | `true` | `git rebase -i` runs the todo list unchanged |
//!
//! A variable the request already sets is not changed (the client asked for it), unless
//! `override = true`. The variables come on top of the agent's own environment.
//!
//! # Configuration
//!
//! ```toml
//! [[plugin]]
//! path = "env.wasm"
//! [plugin.settings]
//! # Optional. Whether the table above is added too (default true). With false, only
//! # the variables below are added.
//! defaults = true
//! # Optional. Whether these variables replace ones the request sets itself (default false).
//! override = false
//! # Variables to add; a name from the table above replaces its default value.
//! [plugin.settings.vars]
//! CI = "true"
//! PAGER = "less -FRX"
//! ```
//!
//! Numbers and booleans are fine as values (`GIT_TERMINAL_PROMPT = 0` gives `"0"`). Names
//! that are empty or contain `=` or a NUL byte, values with a NUL byte, and unknown settings
//! are skipped with a warning in the agent's log.

#![cfg_attr(target_arch = "wasm32", no_std)]
// On wasm32 the component is `no_std`: it imports no WASI, so the host creates one core
// instance per call instead of eighteen. Native builds (the unit tests) keep `std`.
extern crate alloc;
#[cfg(target_arch = "wasm32")]
use procwarden_plugin_bare as _;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use procwarden_plugin_settings::Settings;

/// The variables added when `defaults` is not `false`.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("PAGER", "cat"),
    ("GIT_PAGER", "cat"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("NO_COLOR", "1"),
    ("TERM", "dumb"),
    ("GIT_EDITOR", "true"),
    ("EDITOR", "true"),
    ("VISUAL", "true"),
    ("GIT_SEQUENCE_EDITOR", "true"),
];

/// What the plugin adds, read from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Variables to add, in order, each name once.
    pub vars: Vec<(String, String)>,
    /// Whether `vars` replace variables the request already sets.
    pub override_request: bool,
}

impl Config {
    /// The configuration from `settings`, and warnings about settings that were skipped.
    pub fn from_settings(settings: &Settings) -> (Config, Vec<String>) {
        let mut warnings = Vec::new();
        let mut flag = |key: &str, default: bool| match settings.bool(key) {
            Ok(value) => value.unwrap_or(default),
            Err(err) => {
                warnings.push(format!("{err}; using {default}"));
                default
            }
        };
        let defaults = flag("defaults", true);
        let override_request = flag("override", false);

        let mut vars: Vec<(String, String)> = if defaults {
            DEFAULTS
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        for (name, value) in settings.table("vars") {
            if name.is_empty() || name.contains(['=', '\0']) {
                warnings.push(format!(
                    "skipping variable {name:?}: a name must be non-empty without `=` or NUL"
                ));
                continue;
            }
            if value.contains('\0') {
                warnings.push(format!("skipping variable {name}: its value contains NUL"));
                continue;
            }
            match vars.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = value.to_owned(),
                None => vars.push((name.to_owned(), value.to_owned())),
            }
        }

        for key in settings.keys() {
            let known = matches!(key, "defaults" | "override") || key.starts_with("vars.");
            if !known {
                warnings.push(format!(
                    "ignoring unknown setting `{key}` (known: defaults, override, vars.NAME)"
                ));
            }
        }
        (
            Config {
                vars,
                override_request,
            },
            warnings,
        )
    }
}

/// The request's environment with `config`'s variables added: appended after the request's
/// own entries, skipping names the request sets unless `override_request` (then the
/// request's entries of that name are removed and the configured value appended).
pub fn apply(mut env: Vec<(String, String)>, config: &Config) -> Vec<(String, String)> {
    for (name, value) in &config.vars {
        let requested = env.iter().any(|(n, _)| n == name);
        if requested {
            if !config.override_request {
                continue;
            }
            env.retain(|(n, _)| n != name);
        }
        env.push((name.clone(), value.clone()));
    }
    env
}

/// The component's `on-start`: a thin adapter over [`Config::from_settings`] and [`apply`].
/// The host runs the same logic natively for `builtin:env`.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::{Config, Settings, apply};
    use procwarden_plugin_sdk::{Context, Decision, Guest, LogLevel, StartRequest, host, log};

    /// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
    pub struct Env;

    impl Guest for Env {
        fn on_start(mut req: StartRequest, _ctx: Context) -> Decision {
            let settings = Settings::from_pairs(
                host::config_keys()
                    .into_iter()
                    .filter_map(|key| host::config(&key).map(|value| (key, value))),
            );
            let (config, warnings) = Config::from_settings(&settings);
            for warning in warnings {
                log(LogLevel::Warn, &warning);
            }
            req.env = apply(core::mem::take(&mut req.env), &config);
            Decision::Allow(req)
        }
    }

    procwarden_plugin_sdk::export!(Env);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn config(settings: &[(&str, &str)]) -> Config {
        let (config, warnings) = Config::from_settings(&Settings::from_pairs(settings.to_vec()));
        assert!(warnings.is_empty(), "{warnings:?}");
        config
    }

    #[test]
    fn no_settings_adds_the_defaults() {
        let config = config(&[]);
        assert!(!config.override_request);
        assert_eq!(apply(Vec::new(), &config), pairs(DEFAULTS));
    }

    #[test]
    fn defaults_do_not_override_the_request() {
        let env = pairs(&[("PAGER", "less"), ("FOO", "bar")]);
        let out = apply(env, &config(&[]));
        assert_eq!(&out[..2], &pairs(&[("PAGER", "less"), ("FOO", "bar")])[..]);
        assert_eq!(out.iter().filter(|(n, _)| n == "PAGER").count(), 1);
        assert!(out.contains(&("GIT_PAGER".to_owned(), "cat".to_owned())));
        assert_eq!(out.len(), 2 + DEFAULTS.len() - 1);
    }

    #[test]
    fn configured_vars_add_to_and_replace_defaults() {
        let config = config(&[("vars.CI", "true"), ("vars.PAGER", "less -FRX")]);
        let out = apply(Vec::new(), &config);
        assert_eq!(out[0], ("PAGER".to_owned(), "less -FRX".to_owned()));
        assert_eq!(out.last(), Some(&("CI".to_owned(), "true".to_owned())));
        assert_eq!(out.len(), DEFAULTS.len() + 1);
    }

    #[test]
    fn defaults_false_adds_only_configured_vars() {
        let config = config(&[("defaults", "false"), ("vars.CI", "1")]);
        assert_eq!(apply(Vec::new(), &config), pairs(&[("CI", "1")]));
        let nothing = self::config(&[("defaults", "false")]);
        let env = pairs(&[("A", "b")]);
        assert_eq!(apply(env.clone(), &nothing), env);
    }

    #[test]
    fn request_wins_without_override() {
        let config = config(&[("defaults", "false"), ("vars.CI", "1")]);
        let env = pairs(&[("CI", "0")]);
        assert_eq!(apply(env.clone(), &config), env);
    }

    #[test]
    fn override_replaces_every_request_entry_of_that_name() {
        let config = config(&[
            ("defaults", "false"),
            ("override", "true"),
            ("vars.CI", "1"),
        ]);
        let env = pairs(&[("CI", "0"), ("A", "b"), ("CI", "2")]);
        assert_eq!(apply(env, &config), pairs(&[("A", "b"), ("CI", "1")]));
    }

    #[test]
    fn override_applies_to_defaults_too() {
        let config = config(&[("override", "true")]);
        let out = apply(pairs(&[("TERM", "xterm")]), &config);
        assert!(out.contains(&("TERM".to_owned(), "dumb".to_owned())));
        assert!(!out.contains(&("TERM".to_owned(), "xterm".to_owned())));
    }

    #[test]
    fn dotted_names_and_empty_values_are_kept() {
        let config = config(&[("defaults", "false"), ("vars.a.b", ""), ("vars.N", "0")]);
        assert_eq!(
            apply(Vec::new(), &config),
            pairs(&[("N", "0"), ("a.b", "")])
        );
    }

    #[test]
    fn bad_settings_are_skipped_with_warnings() {
        let settings = Settings::from_pairs([
            ("defaults", "no"),
            ("override", "yes"),
            ("vars.A=B", "x"),
            ("vars.", "x"),
            ("vars.NUL", "a\0b"),
            ("vars.OK", "1"),
            ("colour", "none"),
        ]);
        let (config, warnings) = Config::from_settings(&settings);
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("`colour`")));
        assert!(warnings.iter().any(|w| w.contains("`defaults`")));
        // Bad flags fall back to their defaults.
        assert!(!config.override_request);
        assert_eq!(config.vars.len(), DEFAULTS.len() + 1);
        assert_eq!(config.vars.last(), Some(&("OK".to_owned(), "1".to_owned())));
    }
}
