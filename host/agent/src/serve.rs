//! `procwarden serve`: bind, serve the API (and MCP at `/mcp`), and shut down without leaving a
//! process behind.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http;
use crate::mcp;
use crate::runtime::{ShutdownSignals, build_agent};

/// How long in-flight requests get to finish once every process has been stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(mut config: Config, listen: SocketAddr) -> anyhow::Result<()> {
    crate::config::check_exposure(listen, config.token.as_deref()).context("refusing to start")?;
    let mut signals = ShutdownSignals::install()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // The address asked for, not the one bound: with port 0 the kernel picks a port that no
    // later agent asks for again, so such an agent keeps the name made from its PID.
    if listen.port() != 0 {
        // Only one agent listens here at a time: its cgroups can be named after the address,
        // and the next agent here finds what a crashed one left.
        let name: String = local
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        config.instance = Some(format!("listen-{name}"));
    }
    let agent = build_agent(&config)?;
    let reaper = agent.spawn_reaper(config.reap_interval());
    // MCP over streamable HTTP shares the listener, the token and the agent with the API.
    let mcp_shutdown = CancellationToken::new();
    let mcp = mcp::transport::http_service(agent.clone(), &config, mcp_shutdown.clone());
    let sessions = mcp.sessions.clone();
    agent.metrics().count_mcp_sessions(move || sessions.len());
    let app = http::router(
        agent.clone(),
        &config,
        mcp::guard::route(mcp, config.max_body_bytes),
    );

    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::listener::serve(
        listener,
        app,
        http::listener::ListenerLimits::from_config(&config),
        async {
            let _ = serving_stopped.await;
        },
    ));
    // Tests and scripts read this line to learn the port when listening on port 0.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "procwarden listening on http://{local}")?;
    stdout.flush()?;
    tracing::info!(%local, "serving");

    let signal_name = signals.recv(&agent).await;
    tracing::info!(signal = signal_name, "shutting down");
    // Stop processes first: blocked waiters are answered as their processes exit, and the
    // HTTP drain below then has nothing long-running left to wait for.
    agent.shutdown().await;
    // MCP sessions hold SSE streams open indefinitely; close them or the drain waits in vain.
    mcp_shutdown.cancel();
    let _ = stop_serving.send(());
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(())) => {}
        Ok(Err(join)) => bail!("HTTP server task failed: {join}"),
        Err(_) => tracing::warn!("in-flight requests did not finish; closing them"),
    }
    reaper.abort();
    tracing::info!("stopped");
    Ok(())
}
