//! The MCP server: five tools over the shared [`Agent`]. One handler value serves one MCP
//! session (stdio: the whole process; HTTP: one `Mcp-Session-Id`), and every call is scoped to
//! that session's chat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool, tool_handler, tool_router};

use super::args::Parameters;
use super::format::{self, InputReport, ListReport, Report, Situation};
use super::tools::{
    DEFAULT_EXECUTE_TIMEOUT, DEFAULT_OUTPUT_WAIT, EXECUTE_DESCRIPTION, ExecuteArgs, OneProcess,
    PROCESS_INPUT_DESCRIPTION, PROCESS_LIST_DESCRIPTION, PROCESS_OUTPUT_DESCRIPTION,
    PROCESS_SIGNAL_DESCRIPTION, ProcessInputArgs, ProcessOutputArgs, ProcessSignalArgs,
    SERVER_INSTRUCTIONS, seconds_arg,
};
use crate::agent::{Agent, AgentError, OutputOptions};
use crate::chat::chat_from_headers;
use procwarden_extensions::policy::FrontEnd;
use procwarden_process::{GroupSignal, InputWritten, OutputSnapshot, StartRequest};

/// How often a long wait tells a client that asked for progress that the call is alive, so
/// clients that time out idle calls keep waiting.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(15);
/// How long `process_signal` waits to report whether the process has exited.
const SIGNAL_SETTLE: Duration = Duration::from_secs(3);
/// How much longer than its kill deadline `execute` waits by default, for the kill (TERM,
/// then KILL after the grace period) to land and the exit to be reported.
const KILL_SETTLE: Duration = Duration::from_secs(10);

/// The refusal of an HTTP request that names neither a chat nor an MCP session.
pub const NO_CHAT: &str = "This request names no chat: send a Procwarden-Chat-Id header \
(any stable name for this conversation, e.g. a UUID) with every MCP request, or use an MCP \
session (Mcp-Session-Id). Without one the agent would act on every chat's processes.";

/// Where a call's chat ID comes from.
#[derive(Debug, Clone)]
pub enum ChatSource {
    /// One chat for every call: stdio, where the server process is the session.
    Fixed(String),
    /// Per HTTP request: the chat header if the client sent one, else the MCP session ID.
    HttpSession,
}

#[derive(Clone)]
pub struct ProcwardenMcp {
    agent: Arc<Agent>,
    chat: ChatSource,
    tool_router: ToolRouter<Self>,
}

impl ProcwardenMcp {
    pub fn new(agent: Arc<Agent>, chat: ChatSource) -> Self {
        let mut tool_router = Self::tool_router();
        super::plugin_tools::add_routes(&mut tool_router, &agent);
        Self {
            agent,
            chat,
            tool_router,
        }
    }

    pub(super) fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The chat this call acts for. Over HTTP: an explicit chat header wins, so a client can
    /// share one chat across sessions; else the session's own ID isolates the session. A
    /// stateless request (protocol versions without sessions) that names no chat is refused:
    /// it would otherwise see every process on the agent, and a chat made up for the one
    /// request would lose the process it started by the next call.
    pub(super) fn chat_of(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Option<String>, String> {
        match &self.chat {
            ChatSource::Fixed(chat) => Ok(Some(chat.clone())),
            ChatSource::HttpSession => {
                let Some(parts) = ctx.extensions.get::<Parts>() else {
                    return Err(NO_CHAT.to_owned());
                };
                if let Some(chat) = chat_from_headers(&parts.headers).map_err(|e| e.0)? {
                    return Ok(Some(chat));
                }
                parts
                    .headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(|session| Some(session.to_owned()))
                    .ok_or_else(|| NO_CHAT.to_owned())
            }
        }
    }

    /// The arguments of a tool that acts on one process, the caller's chat and the trimmed
    /// process ID, or the tool error to return.
    fn process_call<A: OneProcess>(
        &self,
        ctx: &RequestContext<RoleServer>,
        args: Result<A, String>,
    ) -> Result<(A, Option<String>, String), CallToolResult> {
        let args = args.map_err(format::tool_error)?;
        let chat = self.chat_of(ctx).map_err(format::tool_error)?;
        let id = args.process_id().trim().to_owned();
        if id.is_empty() {
            return Err(format::tool_error(
                "id is required: pass the process_id from execute or process_list.",
            ));
        }
        Ok((args, chat, id))
    }

    /// Wait for the process to exit, up to `limit`, across as many agent wait caps as that
    /// takes. Returns the last snapshot, or `None` if the client cancelled the call (the
    /// process keeps running either way).
    async fn wait_until_exit(
        &self,
        id: &str,
        chat: Option<&str>,
        limit: Duration,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Option<OutputSnapshot>, AgentError> {
        self.wait_with(id, chat, limit, &OutputOptions::default(), ctx)
            .await
    }

    /// As [`Self::wait_until_exit`], ending also on the condition of `options` and reading
    /// the output as `options` asks.
    async fn wait_with(
        &self,
        id: &str,
        chat: Option<&str>,
        limit: Duration,
        options: &OutputOptions,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Option<OutputSnapshot>, AgentError> {
        // A quiet spell or a cursor must be waited for in one go: slicing would restart it.
        let one_go = options.until.is_some() || options.since.is_some();
        let started = Instant::now();
        let deadline = started + limit;
        let progress = ctx.meta.get_progress_token();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // With a progress token, wake up now and then to report; the agent caps each wait
            // at its own wait cap anyway, and we simply wait again.
            let slice = if progress.is_some() && !one_go {
                remaining.min(PROGRESS_INTERVAL)
            } else {
                remaining
            };
            let snapshot = tokio::select! {
                snapshot = self.agent.read_output(id, chat, options, Some(slice)) => snapshot?,
                () = ctx.ct.cancelled() => return Ok(None),
            };
            let condition_met = !matches!(snapshot.ended_by, None | Some("timeout" | "exit"));
            if !snapshot.running || condition_met || Instant::now() >= deadline {
                return Ok(Some(snapshot));
            }
            if let Some(token) = &progress {
                let waited = started.elapsed();
                let param = ProgressNotificationParam::new(token.clone(), waited.as_secs_f64())
                    .with_total(limit.as_secs_f64())
                    .with_message(format!(
                        "still running after {}",
                        format::seconds(Duration::from_secs(waited.as_secs()))
                    ));
                // Progress is a courtesy: a client that stopped listening is not an error.
                let _ = ctx.peer.notify_progress(param).await;
            }
        }
    }
}

#[tool_router]
impl ProcwardenMcp {
    #[tool(
        description = EXECUTE_DESCRIPTION,
        annotations(title = "Run a shell command", read_only_hint = false, destructive_hint = true, open_world_hint = true)
    )]
    async fn execute(
        &self,
        Parameters(args): Parameters<ExecuteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let args = match args {
            Ok(args) => args,
            Err(message) => return format::tool_error(message),
        };
        let chat = match self.chat_of(&ctx) {
            Ok(chat) => chat,
            Err(message) => return format::tool_error(message),
        };
        if args.command.trim().is_empty() {
            return format::tool_error(
                "command is required: pass the shell command to run, e.g. \"ls -la\".",
            );
        }
        let background = args.run_in_background.unwrap_or(false);
        // timeout_seconds kills, as in the HTTP API and the CLI; wait_seconds only waits.
        let kill_after = match args
            .timeout_seconds
            .map(|t| seconds_arg("timeout_seconds", Some(t), Duration::ZERO, false))
            .transpose()
        {
            Ok(kill_after) => kill_after,
            Err(message) => return format::tool_error(message),
        };
        // Without wait_seconds, a deadline is waited out: the model learns how it ended.
        let default_wait = kill_after.map_or(DEFAULT_EXECUTE_TIMEOUT, |k| k + KILL_SETTLE);
        let timeout = match seconds_arg("wait_seconds", args.wait_seconds, default_wait, false) {
            Ok(timeout) => timeout,
            Err(message) => return format::tool_error(message),
        };
        let options = match OutputOptions::parse(args.until.as_deref().map(|u| ("until", u))) {
            Ok(options) => options,
            Err(bad) => return format::tool_error(bad.to_string()),
        };
        let input =
            match crate::agent::input_mode(args.stdin.as_deref(), args.tty, args.rows, args.cols) {
                Ok(input) => input,
                Err(message) => return format::tool_error(message),
            };
        let requested_command = args.command.clone();
        let started_at = Instant::now();
        let request = StartRequest {
            command: args.command,
            workdir: args.workdir.filter(|w| !w.is_empty()),
            env: args.env.unwrap_or_default().into_iter().collect(),
            background,
            timeout_seconds: kill_after.map(|k| k.as_secs_f64().ceil() as u32),
        };
        // The policy chain may have rewritten the request (e.g. a trailing `&` becomes a
        // background start): answer for what actually runs, and say so.
        let (id, ran) = match self
            .agent
            .start_with_input(chat.as_deref(), FrontEnd::Mcp, request, None, input)
            .await
        {
            Ok(started) => (started.id, started.request),
            Err(err) => return format::agent_error(&err),
        };
        let promoted = ran.background && !background;
        let rewritten = ran.command != requested_command;

        if ran.background {
            let running = match self.agent.output(&id, chat.as_deref()).await {
                Ok(snapshot) => snapshot.running,
                Err(err) => return format::agent_error(&err),
            };
            let mut report = Report {
                started: Some(true),
                process_id: Some(id),
                running: Some(running),
                background: Some(true),
                note: Some(
                    "Started in the background; it keeps running. Use process_output with this \
                     process_id to read its output or wait for it, and process_signal to stop it."
                        .to_owned(),
                ),
                ..Report::default()
            };
            if rewritten {
                report.command = Some(ran.command);
            }
            if promoted {
                report.prepend_note(
                    "The agent's policy moved this command to the background (do not use shell \
                     `&`; set run_in_background instead)."
                        .to_owned(),
                );
            }
            return report.into_result();
        }

        let snapshot = match self
            .wait_with(&id, chat.as_deref(), timeout, &options, &ctx)
            .await
        {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                return format::tool_error("The call was cancelled; the command keeps running.");
            }
            Err(err) => return format::agent_error(&err),
        };
        let snapshot = match self
            .agent
            .filter_snapshot(snapshot, chat.as_deref(), "mcp")
            .await
        {
            Ok(snapshot) => snapshot,
            Err(err) => return format::agent_error(&err),
        };
        let mut report =
            Report::from_snapshot(&id, snapshot, Situation::Execute { waited: timeout });
        report.wall_duration_ms = Some(started_at.elapsed().as_millis() as u64);
        if !rewritten {
            // The model just sent it; echoing it back only costs tokens.
            report.command = None;
        } else {
            report.prepend_note(
                "The agent's policy rewrote the command; `command` shows what ran.".to_owned(),
            );
        }
        report.into_result()
    }

    #[tool(
        description = PROCESS_OUTPUT_DESCRIPTION,
        annotations(title = "Read a process's output", read_only_hint = true, open_world_hint = false)
    )]
    async fn process_output(
        &self,
        Parameters(args): Parameters<ProcessOutputArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let (args, chat, id) = match self.process_call(&ctx, args) {
            Ok(call) => call,
            Err(error) => return error,
        };
        let id = id.as_str();
        let wait = match (args.wait, args.wait_timeout_seconds) {
            (Some(false), Some(seconds)) if seconds != 0.0 => {
                return format::tool_error(
                    "wait=false reads at once, so wait_timeout_seconds does not apply: pass one \
                     or the other.",
                );
            }
            (Some(false), _) => Ok(Duration::ZERO),
            (_, seconds) => seconds_arg("wait_timeout_seconds", seconds, DEFAULT_OUTPUT_WAIT, true),
        };
        let wait = match wait {
            Ok(wait) => wait,
            Err(message) => return format::tool_error(message),
        };
        let pairs = args.option_pairs();
        let options =
            match OutputOptions::parse(pairs.iter().map(|(name, value)| (*name, value.as_str()))) {
                Ok(options) => options,
                Err(bad) => return format::tool_error(bad.to_string()),
            };
        let snapshot = if wait.is_zero() {
            self.agent
                .read_output(id, chat.as_deref(), &options, None)
                .await
                .map(Some)
        } else {
            self.wait_with(id, chat.as_deref(), wait, &options, &ctx)
                .await
        };
        // Cancelled by the client: nobody reads this, but answer with what there is.
        let snapshot = match snapshot {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => self.agent.output(id, chat.as_deref()).await,
            Err(err) => Err(err),
        };
        let snapshot = match snapshot {
            Ok(snapshot) => {
                self.agent
                    .filter_snapshot(snapshot, chat.as_deref(), "mcp")
                    .await
            }
            Err(err) => Err(err),
        };
        match snapshot {
            Ok(snapshot) => Report::from_snapshot(id, snapshot, Situation::Output { waited: wait })
                .into_result(),
            Err(err) => format::agent_error(&err),
        }
    }

    #[tool(
        description = PROCESS_INPUT_DESCRIPTION,
        annotations(title = "Write to a process's input", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn process_input(
        &self,
        Parameters(args): Parameters<ProcessInputArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let (args, chat, id) = match self.process_call(&ctx, args) {
            Ok(call) => call,
            Err(error) => return error,
        };
        let id = id.as_str();
        let data = match crate::agent::input_bytes(args.data, args.data_base64) {
            Ok(data) => data,
            Err(message) => return format::tool_error(message),
        };
        let eof = args.eof.unwrap_or(false);
        let resize = match (args.rows, args.cols) {
            (None, None) => None,
            (Some(rows), Some(cols)) => match crate::agent::terminal_size(rows, cols) {
                Ok(size) => Some(size),
                Err(message) => return format::tool_error(message),
            },
            _ => {
                return format::tool_error(
                    "rows and cols resize the terminal together: pass both.",
                );
            }
        };
        if data.is_empty() && !eof && resize.is_none() {
            return format::tool_error(
                "Nothing to write: pass data (e.g. \"yes\\n\"), eof=true, or both.",
            );
        }
        if let Some(size) = resize {
            // First, so what data makes the program draw fits the new size.
            if let Err(err) = self.agent.resize(id, chat.as_deref(), size) {
                return format::agent_error(&err);
            }
        }
        // Where the reply to this input starts: what the process writes from here on.
        let cursor = match self.agent.output(id, chat.as_deref()).await {
            Ok(snapshot) => snapshot.covers.total_bytes,
            Err(err) => return format::agent_error(&err),
        };
        let written = if data.is_empty() && !eof {
            // A resize alone writes nothing.
            Ok(InputWritten {
                written: 0,
                eof: false,
            })
        } else {
            self.agent.input(id, chat.as_deref(), &data, eof).await
        };
        match written {
            Ok(written) => InputReport::new(id, written, data.len(), cursor)
                .resized(resize)
                .into_result(),
            Err(err) => format::agent_error(&err),
        }
    }

    #[tool(
        description = PROCESS_LIST_DESCRIPTION,
        annotations(title = "List processes", read_only_hint = true, open_world_hint = false)
    )]
    async fn process_list(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        let chat = match self.chat_of(&ctx) {
            Ok(chat) => chat,
            Err(message) => return format::tool_error(message),
        };
        let processes = self.agent.list(chat.as_deref()).await;
        // Counted after listing (listing reaps); never fewer than listed.
        let total = self.agent.count(chat.as_deref()).max(processes.len());
        ListReport::new(processes, total).into_result()
    }

    #[tool(
        description = PROCESS_SIGNAL_DESCRIPTION,
        annotations(title = "Signal a process", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn process_signal(
        &self,
        Parameters(args): Parameters<ProcessSignalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let (args, chat, id) = match self.process_call(&ctx, args) {
            Ok(call) => call,
            Err(error) => return error,
        };
        let id = id.as_str();
        let signal = args.signal.into();
        if let Err(err) = self.agent.signal(id, chat.as_deref(), signal).await {
            return format::agent_error(&err);
        }
        let signal: GroupSignal = signal;
        let message = format!(
            "Sent {} (SIG{}) to the process group of {id}.",
            signal.name(),
            signal.short_name()
        );
        // Say whether it worked: a model that is told "sent" keeps guessing otherwise.
        let snapshot = match self
            .wait_until_exit(id, chat.as_deref(), SIGNAL_SETTLE, &ctx)
            .await
        {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) | Err(_) => {
                return Report {
                    process_id: Some(id.to_owned()),
                    message: Some(message),
                    ..Report::default()
                }
                .into_result();
            }
        };
        let mut report = Report::from_snapshot(
            id,
            snapshot,
            Situation::Signal {
                waited: SIGNAL_SETTLE,
            },
        );
        // `success` keeps its one meaning: exited with code 0 (a stopped process rarely has).
        report.message = Some(message);
        // The final output is one process_output away; a stop request need not repeat it.
        report.output = None;
        report.truncated = None;
        report.command = None;
        report.into_result()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ProcwardenMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("procwarden", env!("CARGO_PKG_VERSION")))
            .with_instructions(SERVER_INSTRUCTIONS)
    }
}
