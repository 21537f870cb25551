//! What every long-running command (`serve`, `mcp`) sets up the same way: the agent with its
//! policy chain, and the signals that stop it cleanly.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::agent::Agent;
use crate::config::Config;
use procwarden_extensions::policy::PolicyChain;
use procwarden_extensions::tool::ToolSet;

/// The agent every front end of this process shares: the configured policy chain over a fresh
/// process table. `serve` and `mcp` build it the same way.
pub fn build_agent(config: &Config) -> anyhow::Result<Arc<Agent>> {
    let tools = ToolSet::load(&config.tool_sources()?, crate::agent::BUILT_IN_TOOLS)?;
    let agent = Agent::try_new(config, load_policy(config)?, tools)?;
    tracing::info!(
        containment = agent.manager().containment().name(),
        "containment of command descendants"
    );
    Ok(agent)
}

/// Load the configured plugins (or the samples); loading logs how each was loaded.
pub fn load_policy(config: &Config) -> anyhow::Result<PolicyChain> {
    PolicyChain::load(&config.policy, &config.plugin_sources()?)
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment this is created. Install it before
/// announcing readiness: a signal that arrives earlier would otherwise kill the agent
/// outright, with no chance to stop its process groups. SIGHUP (the terminal that started
/// the agent went away) stops it the same clean way instead of killing it where it stands.
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Wait for the next one; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// The policy chain `serve` uses when the config file names no plugins: the sample plugins
/// built into the binary, with their default settings.
pub fn sample_chain() -> anyhow::Result<PolicyChain> {
    load_policy(&Config::default())
}
