//! `workdir`: checks the working directory a request asks for, or chooses one.
//!
//! * **The request names a directory**: it is kept if it is an existing directory, and the
//!   request is refused otherwise, with a reason naming the directory and saying to pass an
//!   existing one or to omit `workdir`. A missing directory is never silently swapped for
//!   another: the command might then run, say, `rm` in the wrong place.
//!   * A relative directory (`src`, `./build`, `..`) is resolved against the directory the
//!     command would run in without one (next point); if there is none, the request is
//!     refused and asked for an absolute path.
//!   * `~` and `~/...` are expanded with the agent's home directory (`sh` would not do it
//!     for a working directory).
//!   * An empty or blank `workdir` counts as not given.
//! * **The request names none**: the agent's configured working directory if it is a
//!   directory, else the agent user's home directory if it is one; else `workdir` stays
//!   unset and the host chooses (its own working directory).
//!
//! Paths are Unix paths: absolute means starting with `/`.
//!
//! # Configuration
//!
//! No settings. Place it after plugins that rewrite `workdir`:
//!
//! ```toml
//! [[plugin]]
//! path = "workdir.wasm"
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

/// The outcome when the request may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The working directory to use; `None` lets the host choose.
    pub workdir: Option<String>,
    /// Things worth a line in the agent's log.
    pub notes: Vec<String>,
}

/// Decide the working directory. `is_dir` answers whether a path is an existing directory.
/// `Err` is the reason to refuse the request with.
pub fn choose(
    requested: Option<&str>,
    agent_workdir: Option<&str>,
    home: Option<&str>,
    is_dir: impl Fn(&str) -> bool,
) -> Result<Choice, String> {
    let mut notes = Vec::new();
    let home_dir = home.filter(|h| !h.is_empty());
    let fallback = match agent_workdir.filter(|d| !d.is_empty()) {
        Some(dir) if is_dir(dir) => Some(dir),
        Some(dir) => {
            notes.push(format!(
                "the agent's working directory {dir:?} is not a directory; falling back to home"
            ));
            home_dir.filter(|h| is_dir(h))
        }
        None => home_dir.filter(|h| is_dir(h)),
    };

    let Some(requested) = requested.filter(|d| !d.trim().is_empty()) else {
        return Ok(Choice {
            workdir: fallback.map(str::to_owned),
            notes,
        });
    };

    let resolved = resolve(requested, fallback, home_dir)?;
    if is_dir(&resolved) {
        return Ok(Choice {
            workdir: Some(resolved),
            notes,
        });
    }
    let shown = if resolved == requested {
        format!("{requested:?}")
    } else {
        format!("{requested:?} (resolved to {resolved:?})")
    };
    let instead = match fallback {
        Some(dir) => format!("or omit workdir to run in {dir:?}"),
        None => "or omit workdir to run in the agent's default directory".to_owned(),
    };
    Err(format!(
        "workdir {shown} does not exist or is not a directory; pass an existing directory as \
         workdir (create it first if needed), {instead}"
    ))
}

/// `requested` as an absolute path: `~` expanded with `home`, a relative path joined to `base`.
fn resolve(requested: &str, base: Option<&str>, home: Option<&str>) -> Result<String, String> {
    if requested == "~" || requested.starts_with("~/") {
        let Some(home) = home else {
            return Err(format!(
                "workdir {requested:?} starts with `~` but the agent's home directory is not \
                 known; pass an absolute path as workdir, or omit it"
            ));
        };
        return Ok(join(home, &requested[1..]));
    }
    if requested.starts_with('/') {
        return Ok(requested.to_owned());
    }
    match base {
        Some(base) => Ok(join(base, requested)),
        None => Err(format!(
            "workdir {requested:?} is relative, but there is no agent working directory or \
             home directory to resolve it against; pass an absolute path as workdir"
        )),
    }
}

/// `base/rel`, without doubled slashes or leading `./` segments.
fn join(base: &str, rel: &str) -> String {
    let mut rel = rel.trim_start_matches('/');
    while let Some(rest) = rel.strip_prefix("./") {
        rel = rest.trim_start_matches('/');
    }
    if rel.is_empty() || rel == "." {
        return base.to_owned();
    }
    format!("{}/{rel}", base.trim_end_matches('/'))
}

/// The component's `on-start`: a thin adapter over [`choose`], asking the host's `is-dir`.
/// The host runs the same logic natively for `builtin:workdir`.
#[cfg(target_arch = "wasm32")]
mod component {
    use procwarden_plugin_sdk::{Context, Decision, Guest, LogLevel, StartRequest, host, log};

    /// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
    pub struct Workdir;

    impl Guest for Workdir {
        fn on_start(mut req: StartRequest, ctx: Context) -> Decision {
            let decided = super::choose(
                req.workdir.as_deref(),
                ctx.agent_workdir.as_deref(),
                ctx.home.as_deref(),
                host::is_dir,
            );
            match decided {
                Ok(choice) => {
                    for note in &choice.notes {
                        log(LogLevel::Warn, note);
                    }
                    req.workdir = choice.workdir;
                    Decision::Allow(req)
                }
                Err(reason) => Decision::Deny(reason),
            }
        }
    }

    procwarden_plugin_sdk::export!(Workdir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake file system where exactly these paths are directories.
    fn dirs(existing: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |path| existing.contains(&path)
    }

    const AGENT: Option<&str> = Some("/srv/project");
    const HOME: Option<&str> = Some("/home/agent");

    fn workdir(result: Result<Choice, String>) -> Option<String> {
        result.expect("allowed").workdir
    }

    #[test]
    fn explicit_existing_directory_is_kept() {
        let fs = dirs(&["/tmp/x", "/srv/project", "/home/agent"]);
        assert_eq!(
            workdir(choose(Some("/tmp/x"), AGENT, HOME, &fs)),
            Some("/tmp/x".into())
        );
    }

    #[test]
    fn explicit_missing_directory_is_refused_not_swapped() {
        let fs = dirs(&["/srv/project", "/home/agent"]);
        let reason = choose(Some("/tmp/nope"), AGENT, HOME, &fs).unwrap_err();
        assert!(reason.contains("\"/tmp/nope\""), "{reason}");
        assert!(reason.contains("pass an existing directory"), "{reason}");
        assert!(reason.contains("omit workdir"), "{reason}");
        assert!(reason.contains("\"/srv/project\""), "{reason}");
    }

    #[test]
    fn relative_directory_is_resolved_against_the_default() {
        let fs = dirs(&[
            "/srv/project",
            "/srv/project/src",
            "/home/agent",
            "/home/agent/src",
        ]);
        assert_eq!(
            workdir(choose(Some("src"), AGENT, HOME, &fs)),
            Some("/srv/project/src".into())
        );
        assert_eq!(
            workdir(choose(Some("./src"), AGENT, HOME, &fs)),
            Some("/srv/project/src".into())
        );
        assert_eq!(
            workdir(choose(Some("."), AGENT, HOME, &fs)),
            Some("/srv/project".into())
        );
        // No agent directory: against home.
        assert_eq!(
            workdir(choose(Some("src"), None, HOME, &fs)),
            Some("/home/agent/src".into())
        );
    }

    #[test]
    fn relative_missing_directory_names_both_forms() {
        let fs = dirs(&["/srv/project"]);
        let reason = choose(Some("build"), AGENT, HOME, &fs).unwrap_err();
        assert!(
            reason.contains("\"build\" (resolved to \"/srv/project/build\")"),
            "{reason}"
        );
    }

    #[test]
    fn relative_directory_without_any_base_is_refused() {
        let reason = choose(Some("src"), None, None, dirs(&[])).unwrap_err();
        assert!(reason.contains("absolute path"), "{reason}");
    }

    #[test]
    fn tilde_is_expanded_with_home() {
        let fs = dirs(&["/home/agent", "/home/agent/code"]);
        assert_eq!(
            workdir(choose(Some("~/code"), None, HOME, &fs)),
            Some("/home/agent/code".into())
        );
        assert_eq!(
            workdir(choose(Some("~"), None, HOME, &fs)),
            Some("/home/agent".into())
        );
        let reason = choose(Some("~/code"), AGENT, None, dirs(&["/srv/project"])).unwrap_err();
        assert!(reason.contains("home directory is not known"), "{reason}");
        // `~user` is not expanded: it is a relative name like any other.
        let reason = choose(Some("~bob"), AGENT, HOME, dirs(&["/srv/project"])).unwrap_err();
        assert!(reason.contains("/srv/project/~bob"), "{reason}");
    }

    #[test]
    fn no_request_uses_agent_workdir_then_home_then_none() {
        let both = dirs(&["/srv/project", "/home/agent"]);
        assert_eq!(
            workdir(choose(None, AGENT, HOME, &both)),
            Some("/srv/project".into())
        );
        let home_only = dirs(&["/home/agent"]);
        let choice = choose(None, AGENT, HOME, &home_only).unwrap();
        assert_eq!(choice.workdir, Some("/home/agent".into()));
        assert_eq!(choice.notes.len(), 1, "{:?}", choice.notes);
        assert_eq!(
            workdir(choose(None, None, HOME, &home_only)),
            Some("/home/agent".into())
        );
        assert_eq!(workdir(choose(None, AGENT, HOME, dirs(&[]))), None);
        assert_eq!(workdir(choose(None, None, None, dirs(&[]))), None);
    }

    #[test]
    fn empty_request_counts_as_none() {
        let fs = dirs(&["/srv/project"]);
        assert_eq!(
            workdir(choose(Some(""), AGENT, HOME, &fs)),
            Some("/srv/project".into())
        );
        assert_eq!(
            workdir(choose(Some("  "), AGENT, HOME, &fs)),
            Some("/srv/project".into())
        );
    }

    #[test]
    fn missing_directory_without_default_still_says_what_to_do() {
        let reason = choose(Some("/nope"), None, None, dirs(&[])).unwrap_err();
        assert!(reason.contains("\"/nope\""), "{reason}");
        assert!(reason.contains("omit workdir"), "{reason}");
    }

    #[test]
    fn join_is_tidy() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a/", "./b"), "/a/b");
        assert_eq!(join("/a", "././/b/"), "/a/b/");
        assert_eq!(join("/a", "../b"), "/a/../b");
        assert_eq!(join("/a", "/"), "/a");
    }
}
