//! What every long-running command (`serve`, `mcp`) sets up the same way: the agent with its
//! policy chain, and the signals that stop it cleanly.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::agent::Agent;
use crate::config::Config;
use procwarden_extensions::policy::PolicyChain;
use procwarden_extensions::tool::ToolSet;
use procwarden_process::environment::Inheritance;

/// The agent every front end of this process shares: the configured policy chain over a fresh
/// process table. `serve` and `mcp` build it the same way.
pub fn build_agent(config: &Config) -> anyhow::Result<Arc<Agent>> {
    let inheritance = config.env.inheritance();
    if procwarden_process::environment::set_inheritance(inheritance.clone()).is_err() {
        anyhow::bail!("the inherited environment was already fixed differently in this process");
    }
    match &inheritance {
        Inheritance::All => {
            tracing::info!("commands inherit the agent's whole environment ([env] to restrict)")
        }
        Inheritance::Only(names) => {
            tracing::info!(inherit = %names.join(", "), "commands inherit only these variables")
        }
    }
    let tools = ToolSet::load(&config.tool_sources()?, crate::agent::BUILT_IN_TOOLS)?;
    let agent = Agent::try_new(config, load_policy(config)?, tools)?;
    agent.set_filters(crate::agent::load_filters(config)?);
    tracing::info!(
        containment = agent.manager().containment().name(),
        "containment of command descendants"
    );
    Ok(agent)
}

/// Load the configured plugins (or the samples), refusing a chain with a plugin that cannot
/// load (unless its `on_error` is `allow`); logs the chain.
pub fn load_policy(config: &Config) -> anyhow::Result<PolicyChain> {
    crate::agent::load_policy(config)
}

/// What a signal asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSignal {
    /// SIGTERM or SIGINT: stop every process and exit.
    Stop(&'static str),
    /// SIGHUP: re-read the configuration file.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment this is created. Install it before
/// announcing readiness: a signal that arrives earlier would otherwise kill the agent
/// outright, with no chance to stop its process groups. SIGHUP reloads the configuration
/// file, as daemons do (`systemctl reload`); it never stops the agent.
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

    /// Wait for the next one.
    pub async fn next(&mut self) -> AgentSignal {
        tokio::select! {
            _ = self.terminate.recv() => AgentSignal::Stop("SIGTERM"),
            _ = self.interrupt.recv() => AgentSignal::Stop("SIGINT"),
            _ = self.hangup.recv() => AgentSignal::Reload,
        }
    }

    /// Serve signals until one says stop, reloading `agent`'s configuration on each SIGHUP
    /// (a refused file is logged and the running configuration kept); returns the name of
    /// the signal that stopped it.
    pub async fn recv(&mut self, agent: &Agent) -> &'static str {
        loop {
            match self.next().await {
                AgentSignal::Stop(name) => return name,
                AgentSignal::Reload => {
                    tracing::info!(signal = "SIGHUP", "reloading the configuration");
                    // Success and refusal are both logged by the reload itself.
                    let _ = agent.reload().await;
                }
            }
        }
    }
}

/// The policy chain `serve` uses when the config file names no plugins: the sample plugins
/// built into the binary, with their default settings.
pub fn sample_chain() -> anyhow::Result<PolicyChain> {
    load_policy(&Config::default())
}
