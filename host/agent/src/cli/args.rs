//! The command line, as clap parses it. Client flags (`--url`, `--token`, `--chat`) belong to
//! the subcommands that talk to a running agent, not to the ones that run one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use procwarden::client::DEFAULT_URL;

#[derive(Parser)]
#[command(
    name = "procwarden",
    version,
    about = "Workspace agent that runs shell commands for AI coding agents",
    after_help = "Exit codes: 0 success; 1 a check found problems (plugin check: denied, config check: invalid); \
2 client error (bad arguments, agent unreachable, request refused); 3 the agent's policy denied the command; \
4 plugin check: a plugin is broken (cannot be loaded, traps, runs out of its budget); \
124 `run --timeout` and the agent killed the command; 130 `run` interrupted with Ctrl-C (the command is terminated); \
otherwise `run` and `output --wait` exit with the command's own code."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a running agent.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// URL of the agent to talk to.
    #[arg(long, env = "PROCWARDEN_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token for the agent (its `token`).
    #[arg(long, env = "PROCWARDEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Chat ID to act as: only that chat's processes are visible. Commands run by the agent
    /// inherit their chat through this variable.
    #[arg(long, env = "PROCWARDEN_CHAT_ID")]
    pub chat: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent: the HTTP API (and MCP at /mcp) on --listen.
    Serve {
        /// Address to listen on (overrides the config file's `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bearer token every request must carry (overrides the config file's `token`).
        #[arg(long, env = "PROCWARDEN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Serve the agent's tools to one MCP client over stdin/stdout, with an agent of its own
    /// (`serve` offers the same tools over HTTP at /mcp). Stops its processes when stdin closes.
    Mcp {
        /// TOML configuration file (policy plugins, buffer sizes, ...).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The chat of every call (default: a fresh one per server process).
        #[arg(long, env = "PROCWARDEN_CHAT_ID")]
        chat: Option<String>,
        /// The default working directory of commands (default: the config file's `workdir`,
        /// else the directory the client started this server in).
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
    },
    /// Run a command through the agent, print its output and exit with its exit code.
    ///
    /// `procwarden run -- ls -la "my dir"` quotes each word for sh, so spaces and quotes
    /// survive; `procwarden run -c 'make && ./test'` passes one raw shell line.
    Run {
        #[command(flatten)]
        client: ClientArgs,
        /// Do not wait: print the process ID and return.
        #[arg(long)]
        background: bool,
        /// Working directory of the command.
        #[arg(long)]
        workdir: Option<String>,
        /// Extra environment variable (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Have the agent kill the command after this many seconds (then exit 124).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// Attach this terminal's stdin: the command reads what is typed (or piped in) here,
        /// and end-of-file here ends its input. Output is shown as it comes.
        #[arg(short = 'i', long, conflicts_with = "background")]
        interactive: bool,
        /// A raw shell line, run with `sh -c` as written.
        #[arg(short = 'c', value_name = "SHELL_LINE", conflicts_with = "argv")]
        shell: Option<String>,
        /// The command and its arguments; each word is quoted for sh.
        #[arg(
            required_unless_present = "shell",
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGV"
        )]
        argv: Vec<String>,
    },
    /// List processes: running first, then newest first.
    Ps {
        #[command(flatten)]
        client: ClientArgs,
        /// Print only full process IDs, one a line.
        #[arg(short, long)]
        quiet: bool,
        /// Only processes whose shell is still running.
        #[arg(long)]
        running: bool,
        /// Every row the agent returns, with whole commands (not cut to fit).
        #[arg(short, long)]
        all: bool,
        /// Print the agent's JSON reply.
        #[arg(long, conflicts_with_all = ["quiet"])]
        json: bool,
    },
    /// Print a process's output.
    Output {
        #[command(flatten)]
        client: ClientArgs,
        /// Process ID, or a unique prefix of one.
        id: String,
        /// Block until the process exits, then exit with its exit code (like `docker wait`).
        #[arg(long)]
        wait: bool,
        /// Print the agent's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Print a process's whole output (not only its kept beginning and end), search it, or
    /// follow it until the process exits (like `docker logs -f`).
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        /// Process ID, or a unique prefix of one.
        id: String,
        /// Keep printing new output until the process exits.
        #[arg(short, long, conflicts_with_all = ["grep", "lines"])]
        follow: bool,
        /// Only lines matching this regular expression, numbered (`N:line`).
        #[arg(long, value_name = "REGEX", conflicts_with = "lines")]
        grep: Option<String>,
        /// With --grep: lines of context around each match.
        #[arg(short = 'C', long, value_name = "N", requires = "grep")]
        context: Option<u32>,
        /// Lines A to B, numbered from 1; negative counts from the end (`-50:`).
        #[arg(long, value_name = "A:B", allow_hyphen_values = true)]
        lines: Option<String>,
    },
    /// Stop a process: SIGTERM to its whole group, then SIGKILL if it is still running after
    /// the grace period.
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        /// Process ID, or a unique prefix of one.
        id: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, short = 't', value_name = "SECONDS", default_value_t = 10)]
        grace: u64,
    },
    /// Send a signal to a process's whole group (default KILL).
    Kill {
        #[command(flatten)]
        client: ClientArgs,
        /// Process ID, or a unique prefix of one.
        id: String,
        /// Signal name: TERM, KILL, INT, HUP, QUIT, USR1, USR2 (with or without SIG, any case).
        #[arg(long, short = 's', value_name = "SIGNAL", default_value = "KILL", value_parser = parse_signal)]
        signal: String,
        /// Same as --signal TERM.
        #[arg(long, conflicts_with = "signal")]
        terminate: bool,
    },
    /// Call a tool plugin (`[[tool]]` in the agent's config) and print its result: text as
    /// it is, JSON pretty-printed. `procwarden tool serve --json '{"command": "npm run dev",
    /// "ready_port": 5173}'`.
    Tool {
        #[command(flatten)]
        client: ClientArgs,
        /// The tool's name (`GET /api/v0/tools` lists them).
        name: String,
        /// The arguments, a JSON object (default `{}`).
        #[arg(long, value_name = "ARGS")]
        json: Option<String>,
    },
    /// Work with policy plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Make a running agent re-read its configuration file (as SIGHUP does): the policy
    /// chain and per-request settings change, running processes stay. A file that does not
    /// load is refused, the agent keeps its configuration, and this exits 2 saying why.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script (e.g. `procwarden completions bash > /etc/bash_completion.d/procwarden`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI 3.1 description of the HTTP API (as served at
    /// `/api/v0/openapi.json`; `procwarden openapi > docs/openapi.json` regenerates the copy).
    Openapi,
}

#[derive(Subcommand)]
pub enum ConfigAction {
    /// Validate a configuration file without starting the agent: keys, values and every
    /// plugin it names (loaded and instantiated). Exits 0 when valid, 1 with one line per
    /// problem otherwise.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum PluginAction {
    /// Dry-run the policy chain on one request and print each plugin's decision.
    /// Nothing is spawned. Exits 0 when the request would be allowed, 1 when a plugin denies
    /// it, 4 when a plugin is broken (cannot be loaded, traps, runs out of its budget).
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
        /// The command, after `--` (words joined with spaces, as a shell line).
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

/// Signal names the CLI accepts, in their canonical spelling.
pub const SIGNALS: [&str; 7] = ["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2"];

/// `term`, `SIGTERM`, `TERM` -> `TERM`.
fn parse_signal(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|s| **s == name)
        .map(|s| (*s).to_owned())
        .ok_or_else(|| format!("unknown signal {text:?}; use one of {}", SIGNALS.join(", ")))
}

/// The name the agent's API takes for a CLI signal name: `terminate` and `kill` for TERM and
/// KILL; the other names are sent as they are.
pub fn api_signal_name(name: &str) -> String {
    match name {
        "TERM" => "terminate".to_owned(),
        "KILL" => "kill".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help text");
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no about",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        Cli::command().debug_assert();
        walk(&Cli::command(), "procwarden");
    }

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("sigint").unwrap(), "INT");
        assert_eq!(parse_signal("TERM").unwrap(), "TERM");
        assert!(parse_signal("WINCH").is_err());
        assert_eq!(api_signal_name("TERM"), "terminate");
        assert_eq!(api_signal_name("HUP"), "HUP");
    }
}
