//! Reloading the configuration file while processes run (SIGHUP, `POST /api/v0/reload`,
//! `procwarden reload`): the policy chain, the output filters and the per-request settings
//! are replaced whole; processes, their output and their chats are untouched. Every other key
//! only a restart applies, and a reload that sees one changed names it in `restart_needed`.
//! A file that does not load (bad TOML, a bad value, a plugin, filter or changed `[[tool]]`
//! that cannot load) is refused and the running configuration kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use procwarden_extensions::filter::FilterChain;
use procwarden_extensions::policy::{OnError, PolicyChain};

use super::{Agent, Settings};
use crate::config::Config;

/// Why a reload did not happen. The running configuration is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "The agent was started without a configuration file (--config), so there is nothing to reload."
    )]
    NoFile,
    #[error(
        "The configuration file {path} was refused and the running configuration kept: {reason}"
    )]
    Invalid { path: String, reason: String },
}

/// What a successful reload put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The file that was read.
    pub path: String,
    /// The policy chain now in force, in order.
    pub plugins: Vec<String>,
    /// Keys whose new value only takes effect when the agent is restarted.
    pub restart_needed: Vec<String>,
}

/// Where the configuration came from, and what of it only a restart can change.
pub(super) struct Reloader {
    path: Option<PathBuf>,
    /// `token` came from `--token` / `PROCWARDEN_TOKEN`, not from the file.
    token_overridden: bool,
    /// Working directories from the command line, put over each reloaded file.
    workdir_defaults: crate::config::WorkdirDefaults,
    /// The restart-only keys as the agent was started with them: they stay in force until
    /// a restart, so every reload compares the file against these.
    running: Vec<(&'static str, String)>,
    /// One reload at a time: two overlapping ones could otherwise install the older file last.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            path: config.source.clone(),
            token_overridden: config.token_overridden,
            workdir_defaults: config.workdir_defaults.clone(),
            running: restart_only(config, config.token_overridden),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// Keys of `new` that differ from `running` (what the agent was started with) but only a
/// restart applies.
fn restart_needed(
    running: &[(&'static str, String)],
    new: &Config,
    token_overridden: bool,
) -> Vec<String> {
    let new = restart_only(new, token_overridden);
    running
        .iter()
        .zip(&new)
        .filter(|(old, new)| old != new)
        .map(|((name, _), _)| (*name).to_owned())
        .collect()
}

/// A changed `[[tool]]` list takes effect only at the next start, which would merely log a
/// tool that cannot load; refuse the file now so the operator hears of it before then. The
/// check is `config check`'s: each component is loaded and asked for its tools. An unchanged
/// list is not loaded again: the agent already runs with it.
fn check_tools(config: &Config, restart_needed: &[String]) -> anyhow::Result<()> {
    if !restart_needed.iter().any(|key| key == "tool") {
        return Ok(());
    }
    let problems = crate::check::tool_problems(config);
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// The keys a reload cannot apply, each with its value (compared, never shown: the token is
/// one). Every field of [`Config`] is named here, so a new key does not compile until it is
/// sorted into "applied by a reload" or "listed in `restart_needed`".
fn restart_only(config: &Config, token_overridden: bool) -> Vec<(&'static str, String)> {
    let Config {
        // Applied: `Settings::new`, `load_policy` and `load_filters` read them again.
        workdir: _,
        list_cap: _,
        wait_cap_seconds: _,
        max_processes: _,
        max_processes_per_chat: _,
        policy: _,
        plugins: _,
        filters: _,
        filter: _,
        // Not read from the file, or kept by the reload itself.
        instance: _,
        base_dir: _,
        source: _,
        token_overridden: _,
        workdir_defaults: _,
        // Fixed at start: the listener, the HTTP and MCP limits, the process table with its
        // buffers, retention, containment and spool, the inherited environment, the tools.
        listen,
        token,
        head_bytes,
        tail_bytes,
        max_line_bytes,
        reap_age_seconds,
        reap_interval_seconds,
        request_timeout_seconds,
        max_body_bytes,
        header_read_timeout_seconds,
        body_read_timeout_seconds,
        max_connections,
        mcp_max_sessions,
        mcp_session_idle_seconds,
        shutdown_grace_seconds,
        max_exited_processes,
        lenient_start_body,
        containment,
        state_dir,
        spool_dir,
        spool_max_bytes,
        spool_total_bytes,
        env,
        tools,
    } = config;
    // A token from `--token` / PROCWARDEN_TOKEN overrides the file's, whatever it says.
    let token = if token_overridden {
        String::new()
    } else {
        value(token)
    };
    vec![
        ("listen", value(listen)),
        ("token", token),
        ("head_bytes", value(head_bytes)),
        ("tail_bytes", value(tail_bytes)),
        ("max_line_bytes", value(max_line_bytes)),
        ("reap_age_seconds", value(reap_age_seconds)),
        ("reap_interval_seconds", value(reap_interval_seconds)),
        ("request_timeout_seconds", value(request_timeout_seconds)),
        ("max_body_bytes", value(max_body_bytes)),
        (
            "header_read_timeout_seconds",
            value(header_read_timeout_seconds),
        ),
        (
            "body_read_timeout_seconds",
            value(body_read_timeout_seconds),
        ),
        ("max_connections", value(max_connections)),
        ("mcp_max_sessions", value(mcp_max_sessions)),
        ("mcp_session_idle_seconds", value(mcp_session_idle_seconds)),
        ("shutdown_grace_seconds", value(shutdown_grace_seconds)),
        ("max_exited_processes", value(max_exited_processes)),
        ("lenient_start_body", value(lenient_start_body)),
        ("containment", value(containment)),
        ("state_dir", value(state_dir)),
        ("spool_dir", value(spool_dir)),
        ("spool_max_bytes", value(spool_max_bytes)),
        ("spool_total_bytes", value(spool_total_bytes)),
        ("env", value(env)),
        ("tool", value(tools)),
    ]
}

/// A value in a form two configurations' values can be compared in.
fn value(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// Load the policy chain `config` describes, refusing one with a plugin that cannot load
/// unless that plugin's `on_error` is `allow` (it then passes every request unchanged, with
/// an error in the log and in health). Logs the chain in force.
pub fn load_policy(config: &Config) -> anyhow::Result<PolicyChain> {
    let chain = PolicyChain::load(&config.policy, &config.plugin_sources()?)?;
    let broken: Vec<String> = chain
        .plugins()
        .into_iter()
        .filter(|p| p.on_error == OnError::Deny)
        .filter_map(|p| {
            p.load_error.map(|e| {
                format!(
                    "policy plugin \"{}\" ({}) cannot be loaded: {e}",
                    p.name, p.origin
                )
            })
        })
        .collect();
    if !broken.is_empty() {
        anyhow::bail!(
            "{}; fix it, remove it, or give it on_error = \"allow\" to run without it",
            broken.join("; ")
        );
    }
    let names = chain_names(&chain);
    tracing::info!(chain = %names.join(", "), "policy chain");
    Ok(chain)
}

fn chain_names(chain: &PolicyChain) -> Vec<String> {
    chain
        .plugins()
        .into_iter()
        .map(|p| match p.load_error {
            Some(_) => format!("{} (not loaded, on_error = allow)", p.name),
            None => p.name,
        })
        .collect()
}

impl Agent {
    /// Re-read the configuration file the agent was started with and put its policy chain
    /// and per-request settings in force. Running processes are untouched; a start already
    /// in its policy chain finishes with the chain it began with.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloader.lock.lock().await;
        let path = self.reloader.path.clone().ok_or(ReloadError::NoFile)?;
        let token_overridden = self.reloader.token_overridden;
        let workdir_defaults = self.reloader.workdir_defaults.clone();
        let running = self.reloader.running.clone();
        let invalid = |reason: String| ReloadError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        // Compiling plugins takes a while; keep it off the async workers.
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<Loaded> {
                let mut config = Config::load(&path)?;
                config.token_overridden = token_overridden;
                config.workdir_defaults = workdir_defaults;
                config.apply_workdir_defaults();
                let restart_needed = restart_needed(&running, &config, token_overridden);
                check_tools(&config, &restart_needed)?;
                let policy = load_policy(&config)?;
                let filters = super::load_filters(&config)?;
                Ok(Loaded {
                    config,
                    policy,
                    filters,
                    restart_needed,
                })
            })
            .await
        };
        let Loaded {
            config,
            policy,
            filters,
            restart_needed,
        } = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(err)) => {
                let err = invalid(format!("{err:#}"));
                tracing::error!("reload refused: {err}");
                return Err(err);
            }
            Err(join) => {
                let err = invalid(format!("loading it failed: {join}"));
                tracing::error!("reload refused: {err}");
                return Err(err);
            }
        };
        let plugins = chain_names(&policy);
        let filter_names = filters.names();
        policy.observe(self.metrics.plugin_observer());
        let settings = Arc::new(Settings::new(&config, policy, filters));
        match self.settings.write() {
            Ok(mut current) => *current = settings,
            Err(poisoned) => *poisoned.into_inner() = settings,
        }
        self.reloads.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            path = %path.display(),
            chain = %plugins.join(", "),
            filters = %filter_names.join(", "),
            "configuration reloaded"
        );
        if !restart_needed.is_empty() {
            tracing::warn!(
                keys = %restart_needed.join(", "),
                "changed keys take effect only when the agent is restarted"
            );
        }
        Ok(Reloaded {
            path: display(&path),
            plugins,
            restart_needed,
        })
    }
}

/// A file that loaded, with everything a reload puts in force or reports.
struct Loaded {
    config: Config,
    policy: PolicyChain,
    filters: FilterChain,
    restart_needed: Vec<String>,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
