//! Serving the tools: over stdio for one client that spawned us (`procwarden mcp`), and over
//! streamable HTTP at `/mcp` beside the HTTP API (`procwarden serve`).

use std::sync::Arc;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::handler::{ChatSource, ProcwardenMcp};
use super::sessions::BoundedSessions;
use crate::agent::Agent;
use crate::config::{Config, WorkdirDefaults};
use crate::runtime::{ShutdownSignals, build_agent};

/// The `/mcp` endpoint's service, and its sessions (for the HTTP layer's session cap check).
pub struct McpHttpService {
    pub service: StreamableHttpService<ProcwardenMcp, BoundedSessions>,
    pub sessions: Arc<BoundedSessions>,
}

/// The streamable HTTP MCP service over `agent`. Each session gets its own handler; calls are
/// scoped to the session's chat. Cancelling `shutdown` closes every session and open stream,
/// so the HTTP server can drain.
pub fn http_service(
    agent: Arc<Agent>,
    config: &Config,
    shutdown: CancellationToken,
) -> McpHttpService {
    let sessions = Arc::new(BoundedSessions::new(
        config.mcp_max_sessions,
        config.mcp_session_idle(),
    ));
    sessions.spawn_sweeper(shutdown.clone());
    let mut server_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(config.max_body_bytes);
    if config.token.is_some() {
        // The Host and Origin checks below guard an unauthenticated loopback server against
        // web pages (DNS rebinding, cross-site requests). With a bearer token, which a page
        // cannot attach, every request is authenticated anyway, and the agent may be reached
        // under any name its deployment gives it.
        server_config = server_config.disable_allowed_hosts();
    } else {
        // The default Host allow-list is loopback only. Origins: non-browser clients send
        // none; browser-based clients on this machine are allowed; any other web page is not.
        server_config = server_config.with_allowed_origins([
            "http://localhost:*",
            "http://127.0.0.1:*",
            "http://[::1]:*",
        ]);
    }
    let service = StreamableHttpService::new(
        move || Ok(ProcwardenMcp::new(agent.clone(), ChatSource::HttpSession)),
        sessions.clone(),
        server_config,
    );
    McpHttpService { service, sessions }
}

/// `procwarden mcp`: serve one MCP client over stdin/stdout with an agent of our own, until
/// the client closes stdin or we are told to stop; then stop every process we started.
pub async fn serve_stdio(config: Config, chat: Option<String>) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let agent = build_agent(&config)?;
    let reaper = agent.spawn_reaper(config.reap_interval());
    let chat = chat
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    tracing::info!(chat_id = %chat, "serving MCP over stdio");
    let handler = ProcwardenMcp::new(agent.clone(), ChatSource::Fixed(chat));

    let outcome = tokio::select! {
        outcome = run_stdio(handler) => outcome,
        signal = signals.recv(&agent) => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
    };
    // Whatever ended the session, the processes it started must not outlive it.
    agent.shutdown().await;
    reaper.abort();
    tracing::info!("stopped");
    outcome
}

async fn run_stdio(handler: ProcwardenMcp) -> anyhow::Result<()> {
    let service = handler
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP session over stdio did not start")?;
    let reason = service.waiting().await.context("MCP session failed")?;
    tracing::info!(?reason, "MCP client disconnected");
    Ok(())
}

/// `procwarden mcp`'s working directories: `--workdir` (made absolute) over the config file's
/// `workdir`, and the directory the client started us in when neither names one. A client
/// starts its stdio server in the project it works on, so that is where commands belong;
/// `$HOME` (the agent's own default) would surprise it.
pub fn stdio_workdir(flag: Option<std::path::PathBuf>) -> anyhow::Result<WorkdirDefaults> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let flag = flag.map(|dir| cwd.join(dir));
    if let Some(dir) = &flag
        && !dir.is_dir()
    {
        anyhow::bail!("--workdir {} is not a directory", dir.display());
    }
    Ok(WorkdirDefaults {
        flag,
        fallback: Some(cwd),
    })
}
