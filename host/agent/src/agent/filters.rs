//! Output filters on the agent's side: loading the configured chain, and passing every text a
//! client is about to get through it. Byte counts, `covers` and truncation stay about the
//! process's real output; the number of changes is reported beside them (`redactions`).

use procwarden_extensions::filter::{FilterChain, FilterContext, FilterSource};
use procwarden_process::OutputSnapshot;

use super::{Agent, AgentError};
use crate::config::Config;

/// Load the output filters `config` describes (the configured ones, then the built-in
/// `redact` unless `[filters] builtins = false`), refusing a filter that cannot load unless
/// its `on_error` is `allow`. Logs the chain in force.
pub fn load_filters(config: &Config) -> anyhow::Result<FilterChain> {
    let sources = FilterSource::chain(&config.filter, &config.filters, config.base_dir.as_deref())?;
    let chain = FilterChain::load(
        &sources,
        config.policy.effective_cache_dir(),
        config.policy.cache_max_bytes,
    )?;
    let names = chain.names();
    if names.is_empty() {
        tracing::info!("output filters: none (output reaches clients as the process wrote it)");
    } else {
        tracing::info!(filters = %names.join(", "), "output filters");
    }
    Ok(chain)
}

impl Agent {
    /// The output filters in force now (a reload may replace them).
    pub fn filters(&self) -> FilterChain {
        self.settings().filters.clone()
    }

    /// Put `filters` in force (at start-up; a reload loads its own).
    pub fn set_filters(&self, filters: FilterChain) {
        let mut settings = (*self.settings()).clone();
        settings.filters = filters;
        match self.settings.write() {
            Ok(mut current) => *current = std::sync::Arc::new(settings),
            Err(poisoned) => *poisoned.into_inner() = std::sync::Arc::new(settings),
        }
    }

    /// `snapshot` with its output passed through the filters, for a client of `front_end`
    /// (`http`, `mcp`). With no filters it is returned as it is, without `redactions`.
    pub async fn filter_snapshot(
        &self,
        mut snapshot: OutputSnapshot,
        chat: Option<&str>,
        front_end: &str,
    ) -> Result<OutputSnapshot, AgentError> {
        let filters = self.filters();
        if filters.is_empty() {
            return Ok(snapshot);
        }
        if snapshot.output.is_empty() {
            snapshot.redactions = Some(0);
            return Ok(snapshot);
        }
        let ctx = FilterContext {
            chat_id: chat.map(str::to_owned),
            command: Some(snapshot.command.clone()),
            front_end: front_end.to_owned(),
        };
        let text = std::mem::take(&mut snapshot.output);
        let filtered = filters
            .apply(text, &ctx)
            .await
            .map_err(AgentError::OutputWithheld)?;
        snapshot.output = filtered.text;
        snapshot.redactions = Some(filtered.redactions);
        Ok(snapshot)
    }

    /// `text` passed through the filters for a client of `front_end` (a tool's result:
    /// `tool:NAME`), with the number of changes (`None` when no filter ran).
    pub async fn filter_text(
        &self,
        text: String,
        chat: Option<&str>,
        front_end: &str,
    ) -> Result<(String, Option<u32>), AgentError> {
        let filters = self.filters();
        if filters.is_empty() {
            return Ok((text, None));
        }
        let ctx = FilterContext {
            chat_id: chat.map(str::to_owned),
            command: None,
            front_end: front_end.to_owned(),
        };
        let filtered = filters
            .apply(text, &ctx)
            .await
            .map_err(AgentError::OutputWithheld)?;
        Ok((filtered.text, Some(filtered.redactions)))
    }
}
