//! The `procwarden` command: `serve` runs the agent; the other subcommands talk to one.

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser};
use serde_json::Value;

use cli::args::{Cli, ClientArgs, Command, ConfigAction, PluginAction, api_signal_name};
use cli::exit;
use procwarden::client::{Client, Refused, StartRequest};
use procwarden::config::Config;

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
    ExitCode::from(exit::for_error(&err))
}

fn init_logging(command: &Command) {
    let default = match command {
        Command::Serve { .. } => "info",
        // An MCP client shows our stderr as the server's log: our own events, not the SDK's.
        Command::Mcp { .. } => "warn,procwarden=info",
        _ => "warn",
    };
    let settings = cli::logging::LogSettings::from_env(default);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(settings.filter)
        .with_writer(std::io::stderr);
    if settings.json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    // A mistake in the variables is said, in the chosen format, not left as silence.
    for problem in settings.problems {
        tracing::error!("{problem}");
    }
}

fn client(args: &ClientArgs) -> Client {
    Client::new(&args.url, args.token.clone(), args.chat.clone())
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            config,
            token,
        } => {
            let mut config = load_config(config.as_deref())?;
            if let Some(token) = token {
                // The same rules as the config file's token: one that can be guessed is none.
                procwarden::config::validate_token(&token)
                    .context("--token (or PROCWARDEN_TOKEN)")?;
                config.token = Some(token);
                config.token_overridden = true;
            }
            let listen = listen.unwrap_or_else(|| config.listen_or_default());
            procwarden::serve::serve(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp {
            config,
            chat,
            workdir,
        } => {
            let mut config = load_config(config.as_deref())?;
            config.workdir_defaults = procwarden::mcp::transport::stdio_workdir(workdir)?;
            config.apply_workdir_defaults();
            procwarden::mcp::transport::serve_stdio(config, chat).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            client: args,
            background,
            workdir,
            env,
            timeout,
            interactive,
            shell,
            argv,
        } => {
            let command = match shell {
                Some(line) => line,
                None => cli::words::shell_line(&argv)?,
            };
            let run = StartRequest {
                command,
                workdir,
                env,
                background,
                timeout_seconds: timeout,
            };
            if interactive {
                return run_interactive(&client(&args), &run).await;
            }
            run_command(&client(&args), &run).await
        }
        Command::Ps {
            client: args,
            quiet,
            running,
            all,
            json,
        } => {
            let reply = client(&args).list().await?;
            if json {
                print_json(&reply)?;
            } else {
                let options = cli::table::TableOptions {
                    running_only: running,
                    all,
                    quiet,
                };
                cli::table::print(&reply, &options, &mut std::io::stdout().lock())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Output {
            client: args,
            id,
            wait,
            json,
        } => {
            let client = client(&args);
            let id = cli::ids::resolve(&client, &id).await?;
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
            // Like `docker wait`: once the process is known to have exited, its code is ours.
            Ok(if wait {
                exit::of_command(reply["exit_code"].as_i64())
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Logs {
            client: args,
            id,
            follow,
            grep,
            context,
            lines,
        } => {
            let client = client(&args);
            let id = cli::ids::resolve(&client, &id).await?;
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(grep) = grep {
                query.push(("grep", grep));
                if let Some(context) = context {
                    query.push(("context", context.to_string()));
                }
            } else if let Some(lines) = lines {
                query.push(("lines", lines));
            }
            if !query.is_empty() {
                print_output(&client.read(&id, &query).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
            logs(&client, &id, follow).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop {
            client: args,
            id,
            grace,
        } => {
            let client = client(&args);
            let id = cli::ids::resolve(&client, &id).await?;
            stop(&client, &id, Duration::from_secs(grace)).await
        }
        Command::Kill {
            client: args,
            id,
            signal,
            terminate,
        } => {
            let client = client(&args);
            let id = cli::ids::resolve(&client, &id).await?;
            let name = if terminate {
                "terminate".to_owned()
            } else {
                api_signal_name(&signal)
            };
            println!("{}", client.signal(&id, &name).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tool {
            client: client_args,
            name,
            json,
        } => {
            let args: Value = match json.as_deref() {
                Some(text) => serde_json::from_str(text).context("--json is not valid JSON")?,
                None => Value::Object(serde_json::Map::new()),
            };
            let reply = client(&client_args).call_tool(&name, &args).await?;
            if let Some(text) = reply["text"].as_str() {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                if !text.ends_with('\n') {
                    writeln!(stdout)?;
                }
            } else {
                print_json(&reply["json"])?;
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
            use procwarden_extensions::policy::StepOutcome;
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
            let broken = explanation
                .steps
                .iter()
                .any(|s| matches!(s.outcome, StepOutcome::Failed { .. }));
            Ok(if broken {
                ExitCode::from(exit::PLUGIN_BROKEN)
            } else if explanation.result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::CHECK_FAILED)
            })
        }
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            // `serve` would take its token from here too.
            let env_token = std::env::var("PROCWARDEN_TOKEN").ok();
            let problems = procwarden::check::config_problems(&file, env_token.as_deref());
            if problems.is_empty() {
                println!("{}: valid", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                println!("{}: {problem}", file.display());
            }
            Ok(ExitCode::from(exit::CHECK_FAILED))
        }
        Command::Reload { client: args } => {
            let reply = client(&args).reload().await?;
            println!("{}", reply["message"].as_str().unwrap_or("reloaded"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "procwarden",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", procwarden::http::openapi::json());
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
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
    };
    print_output(&reply)?;
    Ok(command_exit(&reply, run))
}

/// The CLI's exit code for a finished command: 124 when the agent killed it at its timeout,
/// like `timeout(1)`, else the command's own code.
fn command_exit(reply: &Value, run: &StartRequest) -> ExitCode {
    if reply["timed_out"] == Value::Bool(true) {
        eprintln!(
            "procwarden: the agent killed the command after its {} s timeout",
            run.timeout_seconds.unwrap_or_default()
        );
        return ExitCode::from(exit::TIMED_OUT);
    }
    exit::of_command(reply["exit_code"].as_i64())
}

/// `run -i`: start with a stdin pipe, forward this process's stdin to it (end-of-file
/// included), and show the output as it comes, so prompts are seen before they are answered.
async fn run_interactive(client: &Client, run: &StartRequest) -> anyhow::Result<ExitCode> {
    let (id, background) = client.start_with_stdin(run, true).await?;
    if background {
        eprintln!("procwarden: the agent's policy started this in the background");
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let forward = tokio::spawn(forward_stdin(client.clone(), id.clone()));
    let reply = tokio::select! {
        reply = async {
            logs(client, &id, true).await?;
            client.wait_for_exit(&id).await
        } => reply,
        _ = tokio::signal::ctrl_c() => {
            let _ = client.signal(&id, "terminate").await;
            forward.abort();
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
    };
    forward.abort();
    let reply = reply?;
    Ok(command_exit(&reply, run))
}

/// Copy this process's stdin to the command's, chunk by chunk as it is read, then end it.
/// Stops quietly once the command no longer takes input (it exited or closed it).
async fn forward_stdin(client: Client, id: String) {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    let mut text = cli::utf8::Utf8Chunks::default();
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(n) => n,
            Err(err) => {
                eprintln!("procwarden: reading stdin failed: {err}");
                0
            }
        };
        let eof = n == 0;
        let data = text.push(&buf[..n], eof);
        if client.input(&id, &data, eof).await.is_err() || eof {
            return;
        }
    }
}

/// How often `stop` looks whether the members of an exited shell's group are gone.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// TERM to the whole group; KILL if the shell still runs after `grace`, or if members of its
/// group outlived it (they ignored TERM and would linger unattended).
async fn stop(client: &Client, id: &str, grace: Duration) -> anyhow::Result<ExitCode> {
    match client.signal(id, "terminate").await {
        Ok(_) => {}
        // Nothing of it runs any more (409): stopped already, which is what was asked, as
        // `docker stop` of a stopped container succeeds.
        Err(err) if is_conflict(&err) => {
            println!("Process \"{id}\" had already stopped.");
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) => return Err(err),
    }
    let stopped = async {
        let mut reply = client.wait_for_exit(id).await?;
        // The shell often dies first; the rest of its group, hit by the same TERM, a moment
        // later. Only members still there when the grace period ends are killed.
        while reply["group_alive"] == Value::Bool(true) {
            tokio::time::sleep(GROUP_POLL).await;
            reply = client.output(id, false).await?;
        }
        anyhow::Ok(())
    };
    if let Ok(done) = tokio::time::timeout(grace, stopped).await {
        done?;
        println!("Process \"{id}\" stopped.");
        return Ok(ExitCode::SUCCESS);
    }
    match client.signal(id, "kill").await {
        Ok(_) => {}
        // Gone between the wait and the kill: it stopped after all.
        Err(err) if is_conflict(&err) => {}
        Err(err) => return Err(err),
    }
    client.wait_for_exit(id).await?;
    println!(
        "Process \"{id}\" did not stop within {} s of SIGTERM and was killed.",
        grace.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

/// The agent answered 409: for a signal, no member of the process lives.
fn is_conflict(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Refused>()
        .is_some_and(|r| r.status == 409)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// The whole output held, in cursor steps; with `follow`, then new output as it comes
/// (each wait ends on output past the cursor or on exit) until the process has exited and
/// everything it wrote is printed.
async fn logs(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    let mut cursor = 0u64;
    loop {
        let caught_up = {
            let query = vec![("since", cursor.to_string()), ("limit", "1048576".into())];
            let reply = client.read(id, &query).await?;
            print_output(&reply)?;
            let covers = &reply["covers"];
            cursor = covers["end"].as_u64().unwrap_or(cursor);
            let total = covers["total_bytes"].as_u64().unwrap_or(cursor);
            if cursor < total {
                continue;
            }
            if !follow || reply["running"] == Value::Bool(false) && !has_more(&reply) {
                return Ok(());
            }
            vec![("since", cursor.to_string()), ("wait", "true".into())]
        };
        // Block until output past the cursor, exit, or the wait cap; then read on.
        let reply = client.read(id, &caught_up).await?;
        print_output(&reply)?;
        cursor = reply["covers"]["end"].as_u64().unwrap_or(cursor);
        if reply["running"] == Value::Bool(false)
            && reply["group_alive"] == Value::Bool(false)
            && cursor >= reply["covers"]["total_bytes"].as_u64().unwrap_or(cursor)
        {
            return Ok(());
        }
        if (reply["ended_by"] == "exit" || reply["ended_by"] == "input") && reply["output"] == "" {
            // The shell has exited but a child still holds the pipe, or the command waits for
            // input: such a wait returns at once, so pace the reads instead of spinning.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether output may still come: children of an exited shell can hold the pipe.
fn has_more(reply: &Value) -> bool {
    reply["group_alive"] == Value::Bool(true)
}

fn print_output(reply: &Value) -> anyhow::Result<()> {
    let output = reply["output"].as_str().unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    stdout.flush().context("cannot write to stdout")
}
