//! The `procwarden` command: `serve` runs the agent; the other subcommands talk to one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use serde_json::Value;

use procwarden::client::{Client, DEFAULT_URL, RunRequest};
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
    /// Chat ID to act as: only that chat's processes are visible (client subcommands).
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
    /// Kill a process's whole group (SIGKILL, or SIGTERM with --terminate).
    Kill {
        id: String,
        #[arg(long)]
        terminate: bool,
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
    init_logging(matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(anyhow!(err).context("cannot start the async runtime")),
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    // One readable line: the whole cause chain, joined.
    eprintln!("procwarden: {err:#}");
    ExitCode::from(CLIENT_ERROR_EXIT)
}

fn init_logging(serving: bool) {
    let default = if serving { "info" } else { "warn" };
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
            procwarden::server::serve(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            background,
            workdir,
            env,
            timeout,
            command,
        } => {
            let run = RunRequest {
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
        Command::Kill { id, terminate } => {
            let signal = if terminate { "terminate" } else { "kill" };
            println!("{}", client().signal(&id, signal).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_command(client: &Client, run: &RunRequest) -> anyhow::Result<ExitCode> {
    let id = client.start(run).await?;
    if run.background {
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
