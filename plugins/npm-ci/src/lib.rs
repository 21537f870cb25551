//! `npm-ci` (policy@0.2.0): rewrites `npm install` to `npm ci` where the working directory
//! has a `package-lock.json` (or `npm-shrinkwrap.json`).
//!
//! `npm ci` installs exactly what the lockfile records and never rewrites it, which is what
//! an agent's command usually means; `npm install` may update the lockfile. Only a bare
//! `npm install` (or `npm i`, `npm install` with extra spaces) is rewritten: with package
//! names it adds dependencies, which `npm ci` cannot do, and other commands pass unchanged.
//!
//! The directory is the request's `workdir`, else the agent's working directory; place the
//! plugin after `workdir`, which resolves relative directories. With neither, or without a
//! lockfile there, the request passes unchanged.
//!
//! Built against `procwarden:policy@0.2.0` for `host::is-file`.
//!
//! ```toml
//! [[plugin]]
//! path = "npm_ci.wasm"
//! ```

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

use procwarden_plugin_sdk_v0_2::{Context, Decision, Guest, LogLevel, StartRequest, host, log};

/// Lockfiles `npm ci` installs from.
const LOCKFILES: &[&str] = &["package-lock.json", "npm-shrinkwrap.json"];

/// The command to run instead of `command` in `dir`, if it should change. `is_file` answers
/// whether a path is a regular file.
pub fn rewrite(command: &str, dir: Option<&str>, is_file: impl Fn(&str) -> bool) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if !matches!(words.as_slice(), ["npm", "install" | "i"]) {
        return None;
    }
    let dir = dir.filter(|d| d.starts_with('/'))?;
    let dir = dir.trim_end_matches('/');
    LOCKFILES
        .iter()
        .any(|lock| is_file(&format!("{dir}/{lock}")))
        .then(|| "npm ci".to_owned())
}

/// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk_v0_2::export!`].
pub struct NpmCi;

impl Guest for NpmCi {
    fn on_start(mut req: StartRequest, ctx: Context) -> Decision {
        let dir = req.workdir.as_deref().or(ctx.agent_workdir.as_deref());
        if let Some(command) = rewrite(&req.command, dir, host::is_file) {
            log(
                LogLevel::Debug,
                &format!("{:?} -> {command:?}: a lockfile exists", req.command),
            );
            req.command = command;
        }
        Decision::Allow(req)
    }
}

procwarden_plugin_sdk_v0_2::export!(NpmCi);

#[cfg(test)]
mod tests {
    use super::*;

    fn files(existing: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |path| existing.contains(&path)
    }

    #[test]
    fn rewrites_only_with_a_lockfile() {
        let with = files(&["/p/package-lock.json"]);
        assert_eq!(
            rewrite("npm install", Some("/p"), &with),
            Some("npm ci".into())
        );
        assert_eq!(
            rewrite("  npm   i ", Some("/p/"), &with),
            Some("npm ci".into())
        );
        assert_eq!(rewrite("npm install", Some("/q"), &with), None);
        let shrinkwrap = files(&["/p/npm-shrinkwrap.json"]);
        assert_eq!(
            rewrite("npm install", Some("/p"), shrinkwrap),
            Some("npm ci".into())
        );
    }

    #[test]
    fn leaves_other_commands_and_unknown_directories_alone() {
        let with = files(&["/p/package-lock.json"]);
        assert_eq!(rewrite("npm install left-pad", Some("/p"), &with), None);
        assert_eq!(rewrite("npm ci", Some("/p"), &with), None);
        assert_eq!(rewrite("npm install && npm test", Some("/p"), &with), None);
        assert_eq!(rewrite("npm install", None, &with), None);
        assert_eq!(rewrite("npm install", Some("p"), &with), None);
    }
}
