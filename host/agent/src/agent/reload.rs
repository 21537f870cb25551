//! Reloading the configuration file while processes run (SIGHUP, `POST /api/v0/reload`,
//! `procwarden reload`): the policy chain, the output filters and the per-request settings
//! are replaced whole; processes, their output and their chats are untouched. A file that does
//! not load (bad TOML, a bad value, a plugin or filter that cannot load) is refused and the
//! running configuration kept.

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
    /// The restart-only keys as the agent runs with them (updated by each reload, so a
    /// change is reported once per reload that sees it differ from the start).
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

    /// Keys of `new` that differ from what the agent runs with but only a restart applies.
    fn restart_needed(&self, new: &Config) -> Vec<String> {
        let new = restart_only(new, self.token_overridden);
        self.running
            .iter()
            .zip(&new)
            .filter(|(old, new)| old != new)
            .map(|((name, _), _)| (*name).to_owned())
            .collect()
    }
}

/// The keys a reload cannot apply: the listener, the HTTP and MCP limits, the process
/// table's buffers and retention. Values are compared, never shown (the token is one).
fn restart_only(config: &Config, token_overridden: bool) -> Vec<(&'static str, String)> {
    let c = config;
    let token = if token_overridden {
        String::new()
    } else {
        format!("{:?}", c.token)
    };
    vec![
        ("listen", format!("{:?}", c.listen)),
        ("token", token),
        ("head_bytes", c.head_bytes.to_string()),
        ("tail_bytes", c.tail_bytes.to_string()),
        ("max_line_bytes", c.max_line_bytes.to_string()),
        ("reap_age_seconds", c.reap_age_seconds.to_string()),
        ("reap_interval_seconds", c.reap_interval_seconds.to_string()),
        (
            "request_timeout_seconds",
            c.request_timeout_seconds.to_string(),
        ),
        ("max_body_bytes", c.max_body_bytes.to_string()),
        (
            "header_read_timeout_seconds",
            c.header_read_timeout_seconds.to_string(),
        ),
        (
            "body_read_timeout_seconds",
            c.body_read_timeout_seconds.to_string(),
        ),
        ("max_connections", c.max_connections.to_string()),
        ("mcp_max_sessions", c.mcp_max_sessions.to_string()),
        (
            "mcp_session_idle_seconds",
            c.mcp_session_idle_seconds.to_string(),
        ),
        (
            "shutdown_grace_seconds",
            c.shutdown_grace_seconds.to_string(),
        ),
        ("max_exited_processes", c.max_exited_processes.to_string()),
        ("lenient_start_body", c.lenient_start_body.to_string()),
        ("env", format!("{:?}", c.env)),
    ]
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
        let invalid = |reason: String| ReloadError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        // Compiling plugins takes a while; keep it off the async workers.
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(
                move || -> anyhow::Result<(Config, PolicyChain, FilterChain)> {
                    let mut config = Config::load(&path)?;
                    config.token_overridden = token_overridden;
                    config.workdir_defaults = workdir_defaults;
                    config.apply_workdir_defaults();
                    let policy = load_policy(&config)?;
                    let filters = super::load_filters(&config)?;
                    Ok((config, policy, filters))
                },
            )
            .await
        };
        let (config, policy, filters) = match loaded {
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
        let restart_needed = self.reloader.restart_needed(&config);
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

fn display(path: &Path) -> String {
    path.display().to_string()
}
