//! `procwarden plugin check`: a dry run of the policy chain on one request, printing what each
//! plugin decided. Nothing is spawned. This is how operators test their plugins.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::{Config, check_exposure, validate_token};
use procwarden_extensions::policy::{
    Explanation, PluginSource, PolicyChain, PolicyConfig, PolicyContext, StartRequest, StepOutcome,
};
use procwarden_extensions::tool::ToolSet;

/// Which chain to check.
pub enum ChainChoice {
    /// One component file, with optional settings (a TOML table).
    Component {
        path: PathBuf,
        settings: Option<String>,
    },
    /// The chain a configuration file describes.
    ConfigFile(PathBuf),
    /// The built-in samples, as `serve` loads them with no configuration.
    Samples,
}

pub fn load_chain(choice: &ChainChoice) -> anyhow::Result<(PolicyChain, PolicyContext)> {
    let (config, sources) = match choice {
        ChainChoice::Component { path, settings } => {
            let table: toml::Table = match settings {
                Some(text) => toml::from_str(text).context("--settings is not a TOML table")?,
                None => toml::Table::new(),
            };
            let config = Config::default();
            let sources = vec![PluginSource::file(path).with_settings(table)];
            (config, sources)
        }
        ChainChoice::ConfigFile(path) => {
            let config = Config::load(path)?;
            let sources = config.plugin_sources()?;
            (config, sources)
        }
        ChainChoice::Samples => {
            let config = Config::default();
            let sources = config.plugin_sources()?;
            (config, sources)
        }
    };
    // A dry run must not write the operator's audit trail.
    let policy = PolicyConfig {
        audit_file: None,
        ..config.policy.clone()
    };
    let chain = PolicyChain::load(&policy, &sources)?;
    let context = PolicyContext {
        chat_id: None,
        agent_workdir: config
            .workdir
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned()),
        home: std::env::var("HOME").ok(),
        front_end: None,
    };
    Ok((chain, context))
}

/// `procwarden config check`: every problem of a configuration file, one readable line each
/// (empty when it is valid). Reads the file, validates its keys and values, applies `serve`'s
/// rule that a listener beyond loopback needs a token (from the file or `env_token`, the
/// PROCWARDEN_TOKEN `serve` would read), and loads every plugin it names as `serve` would, so
/// a plugin that cannot load is reported here rather than at the first start request.
pub fn config_problems(path: &std::path::Path, env_token: Option<&str>) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => return vec![format!("cannot read the file: {err}")],
    };
    let mut config = match Config::parse(&text) {
        Ok(config) => config,
        Err(err) => return vec![one_line(&err, &text)],
    };
    config.base_dir = path.parent().map(std::path::Path::to_path_buf);
    let mut problems = exposure_problems(&config, env_token);
    problems.extend(policy_problems(&config));
    problems.extend(tool_problems(&config));
    problems.extend(filter_problems(&config));
    problems
}

/// What `serve --config FILE` would refuse before binding: a token from the environment that
/// is not one, or a listener beyond loopback that no token protects.
fn exposure_problems(config: &Config, env_token: Option<&str>) -> Vec<String> {
    if let Some(Err(err)) = env_token.map(validate_token) {
        return vec![format!("PROCWARDEN_TOKEN: {err:#}")];
    }
    let token = env_token.or(config.token.as_deref());
    match check_exposure(config.listen_or_default(), token) {
        Ok(()) => Vec::new(),
        Err(err) => vec![format!("{err:#}")],
    }
}

/// The policy plugins' problems: the chain is loaded as `serve` would, without its audit file.
fn policy_problems(config: &Config) -> Vec<String> {
    let sources = match config.plugin_sources() {
        Ok(sources) => sources,
        Err(err) => return vec![format!("{err:#}")],
    };
    let policy = PolicyConfig {
        audit_file: None,
        ..config.policy.clone()
    };
    match PolicyChain::load(&policy, &sources) {
        Ok(chain) => chain
            .plugins()
            .into_iter()
            .filter_map(|p| {
                p.load_error
                    .map(|e| format!("plugin {} ({}) cannot be loaded: {e}", p.name, p.origin))
            })
            .collect(),
        Err(err) => vec![format!("{err:#}")],
    }
}

/// The output filters' problems: the `[[filter]]` components (and the built-in `redact`) are
/// loaded and instantiated as `serve` would, so a missing file or a component of the wrong
/// world is reported here.
fn filter_problems(config: &Config) -> Vec<String> {
    match crate::agent::load_filters(config) {
        Ok(_) => Vec::new(),
        Err(err) => vec![format!("{err:#}")],
    }
}

/// The `[[tool]]` entries' problems: each tool component is loaded (and asked for its tools)
/// as `serve` would, so a missing file, a component of the wrong world or a tool name that
/// clashes with a built-in tool is reported here. A reload refuses a file with any.
pub(crate) fn tool_problems(config: &Config) -> Vec<String> {
    let sources = match config.tool_sources() {
        Ok(sources) => sources,
        Err(err) => return vec![format!("{err:#}")],
    };
    match ToolSet::load(&sources, crate::agent::BUILT_IN_TOOLS) {
        Ok(tools) => tools
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "tool plugin {} ({}) cannot be loaded: {}",
                    f.component, f.origin, f.error
                )
            })
            .collect(),
        Err(err) => vec![format!("{err:#}")],
    }
}

/// A configuration error on one line: TOML errors as `line L, column C: message` instead of
/// their multi-line excerpt.
fn one_line(err: &anyhow::Error, text: &str) -> String {
    let Some(toml) = err.downcast_ref::<toml::de::Error>() else {
        return format!("{err:#}");
    };
    let message = toml.message().trim().replace('\n', " ");
    match toml.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The dry run as text: one line per plugin, then the result.
pub fn render(request: &StartRequest, explanation: &Explanation) -> String {
    let mut out = String::new();
    let width = explanation
        .steps
        .iter()
        .map(|s| s.plugin.len())
        .max()
        .unwrap_or(0);
    let mut current = request.clone();
    for step in &explanation.steps {
        let (decision, detail) = match &step.outcome {
            StepOutcome::Allowed { request: next } => {
                let changes = describe_changes(&current, next);
                current = next.clone();
                ("allow", changes)
            }
            StepOutcome::Denied { reason } => ("DENY", reason.clone()),
            StepOutcome::Failed { error, on_error } => {
                ("FAILED", format!("{error} (on_error = {on_error})"))
            }
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {:>6} µs  {}",
            step.plugin,
            decision,
            step.micros,
            detail.trim_end()
        );
    }
    match &explanation.result {
        Ok(final_request) => {
            let _ = writeln!(out, "result: allowed: {}", summarize(final_request));
        }
        Err(denial) => {
            let _ = writeln!(out, "result: {denial}");
        }
    }
    out
}

fn describe_changes(before: &StartRequest, after: &StartRequest) -> String {
    let mut changes = Vec::new();
    if before.command != after.command {
        changes.push(format!(
            "command {:?} -> {:?}",
            before.command, after.command
        ));
    }
    if before.background != after.background {
        changes.push(format!(
            "background {} -> {}",
            before.background, after.background
        ));
    }
    if before.workdir != after.workdir {
        changes.push(format!(
            "workdir {} -> {}",
            before.workdir.as_deref().unwrap_or("(default)"),
            after.workdir.as_deref().unwrap_or("(default)")
        ));
    }
    if before.env != after.env {
        let added: Vec<String> = after
            .env
            .iter()
            .filter(|pair| !before.env.contains(pair))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        changes.push(format!("env +[{}]", added.join(", ")));
    }
    if before.timeout_seconds != after.timeout_seconds {
        changes.push(format!(
            "timeout {:?} -> {:?} s",
            before.timeout_seconds, after.timeout_seconds
        ));
    }
    if changes.is_empty() {
        "unchanged".into()
    } else {
        changes.join("; ")
    }
}

fn summarize(request: &StartRequest) -> String {
    format!(
        "sh -c {:?} in {}{}",
        request.command,
        request
            .workdir
            .as_deref()
            .unwrap_or("(the agent's default directory)"),
        if request.background {
            ", in the background"
        } else {
            ""
        }
    )
}
