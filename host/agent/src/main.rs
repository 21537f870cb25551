//! The `procwarden` command: `serve` runs the agent; the other subcommands talk to one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use serde_json::Value;

use procwarden::client::{Client, DEFAULT_URL, StartRequest};
use procwarden::config::{Config, DEFAULT_LISTEN};

/// Exit code of the CLI itself when it could not do what was asked.
const CLIENT_ERROR_EXIT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "procwarden",
    version,
    about = "Workspace agent that runs shell commands for AI coding agents"
)]
struct Cli {
    /// Agent to talk to (client subcommands).
    #[arg(long, global = true, env = "PROCWARDEN_URL", default_value = DEFAULT_URL)]
    url: String,
    /// Bearer token for the agent (client subcommands).
    #[arg(long, global = true, env = "PROCWARDEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Chat ID to act as: only that chat's processes are visible (client subcommands; for
    /// `mcp`, the chat of every call, else a fresh one per server process).
    /// Commands run by the agent inherit their chat through this variable.
    #[arg(long, global = true, env = "PROCWARDEN_CHAT_ID")]
    chat: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: the HTTP API on --listen.
    Serve {
        /// Address to listen on (overrides the config file's `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve the agent's tools to one MCP client over stdin/stdout, with an agent of its own
    /// (`serve` offers the same tools over HTTP at /mcp). Stops its processes when stdin closes.
    Mcp {
        /// TOML configuration file (policy plugins, buffer sizes, ...).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a command through the agent, print its output and exit with its exit code.
    Run {
        /// Do not wait: print the process ID and return.
        #[arg(long)]
        background: bool,
        /// Working directory of the command.
        #[arg(long)]
        workdir: Option<String>,
        /// Extra environment variable (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Have the agent kill the command after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// The shell command (words are joined with spaces and run with `sh -c`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List processes: running first, then newest first.
    Ps {
        /// Print the agent's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Print a process's output.
    Output {
        id: String,
        /// Block until the process exits.
        #[arg(long)]
        wait: bool,
        /// Print the agent's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Work with policy plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Kill a process's whole group (SIGKILL, or SIGTERM with --terminate).
    Kill {
        id: String,
        #[arg(long)]
        terminate: bool,
    },
}

#[derive(Subcommand)]
enum PluginAction {
    /// Dry-run the policy chain on one request and print each plugin's decision.
    /// Nothing is spawned. Exits 0 when the request would be allowed, 1 when denied.
    Check {
        /// A single component to check (default: the built-in sample chain).
        #[arg(conflicts_with = "config")]
        plugin: Option<PathBuf>,
        /// Check the chain this configuration file describes.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Settings for the single component, as a TOML table, e.g. 'patterns = ["git push"]'.
        #[arg(long, requires = "plugin")]
        settings: Option<String>,
        /// The request's working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// A variable in the request's environment (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// The request asks for a background start.
        #[arg(long)]
        background: bool,
        /// Print the dry run as JSON.
        #[arg(long)]
        json: bool,
        /// The command, after `--`.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(anyhow!(err).context("cannot start the async runtime")),
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Do not wait for blocking threads: tokio's stdin reader (MCP over stdio) may sit in a
    // read(2) that only returns on the next input line, which would hang the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    // One readable line: the whole cause chain, joined.
    eprintln!("procwarden: {err:#}");
    ExitCode::from(CLIENT_ERROR_EXIT)
}

fn init_logging(command: &Command) {
    let default = match command {
        Command::Serve { .. } => "info",
        // An MCP client shows our stderr as the server's log: our own events, not the SDK's.
        Command::Mcp { .. } => "warn,procwarden=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROCWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = || Client::new(&cli.url, cli.token.clone(), cli.chat.clone());
    match cli.command {
        Command::Serve { listen, config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let listen = listen
                .or(config.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
            procwarden::serve::serve(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp { config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            procwarden::mcp::transport::serve_stdio(config, cli.chat.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            background,
            workdir,
            env,
            timeout,
            command,
        } => {
            let run = StartRequest {
                command: command.join(" "),
                workdir,
                env,
                background,
                timeout_seconds: timeout,
            };
            run_command(&client(), &run).await
        }
        Command::Ps { json } => {
            let reply = client().list().await?;
            if json {
                print_json(&reply)?;
            } else {
                print_table(&reply)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Output { id, wait, json } => {
            let client = client();
            let reply = if wait {
                client.wait_for_exit(&id).await?
            } else {
                client.output(&id, false).await?
            };
            if json {
                print_json(&reply)?;
            } else {
                print_output(&reply)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            action:
                PluginAction::Check {
                    plugin,
                    config,
                    settings,
                    workdir,
                    env,
                    background,
                    json,
                    command,
                },
        } => {
            use procwarden::check::{ChainChoice, load_chain, render};
            let choice = match (plugin, config) {
                (Some(path), _) => ChainChoice::Component { path, settings },
                (None, Some(path)) => ChainChoice::ConfigFile(path),
                (None, None) => ChainChoice::Samples,
            };
            let (chain, context) = load_chain(&choice)?;
            let request = procwarden_extensions::policy::StartRequest {
                command: command.join(" "),
                workdir,
                env,
                background,
                timeout_seconds: None,
            };
            let explanation = chain.explain(request.clone(), &context);
            if json {
                let result = match &explanation.result {
                    Ok(request) => serde_json::json!({ "allowed": true, "request": request }),
                    Err(denial) => serde_json::json!({
                        "allowed": false,
                        "plugin": denial.plugin,
                        "reason": denial.reason,
                    }),
                };
                print_json(&serde_json::json!({
                    "steps": explanation.steps,
                    "result": result,
                }))?;
            } else {
                print!("{}", render(&request, &explanation));
            }
            Ok(if explanation.result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Kill { id, terminate } => {
            let signal = if terminate { "terminate" } else { "kill" };
            println!("{}", client().signal(&id, signal).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_command(client: &Client, run: &StartRequest) -> anyhow::Result<ExitCode> {
    let (id, background) = client.start(run).await?;
    if background {
        if !run.background {
            eprintln!("procwarden: the agent's policy started this in the background");
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let reply = tokio::select! {
        reply = client.wait_for_exit(&id) => reply?,
        _ = tokio::signal::ctrl_c() => {
            // The command runs in its own session, so the terminal's Ctrl-C did not reach
            // it: pass it on rather than leave it running unattended.
            let _ = client.signal(&id, "terminate").await;
            return Ok(ExitCode::from(130));
        }
    };
    print_output(&reply)?;
    let code = reply["exit_code"].as_i64().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

fn print_output(reply: &Value) -> anyhow::Result<()> {
    let output = reply["output"].as_str().unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    stdout.flush().context("cannot write to stdout")
}

fn print_table(reply: &Value) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{:<36}  {:<9}  {:>4}  {:>6}  COMMAND",
        "ID", "STATE", "EXIT", "AGE"
    )?;
    for p in reply["processes"].as_array().into_iter().flatten() {
        let state = if p["running"] == Value::Bool(true) {
            "running"
        } else if p["group_alive"] == Value::Bool(true) {
            "lingering"
        } else {
            "exited"
        };
        let exit = p["exit_code"]
            .as_i64()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let age = now - p["started_at_unix"].as_i64().unwrap_or(now);
        let command: String = p["command"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        writeln!(
            stdout,
            "{:<36}  {:<9}  {:>4}  {:>5}s  {}",
            p["id"].as_str().unwrap_or_default(),
            state,
            exit,
            age,
            command.replace('\n', " ")
        )?;
    }
    Ok(())
}
