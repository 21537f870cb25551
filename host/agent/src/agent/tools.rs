//! Tool plugins as the agent serves them: the [`ProcessHost`] a tool's process calls reach
//! (every start through the policy chain with front end `tool:NAME`, in the caller's chat),
//! and the one call every front end makes ([`Agent::call_tool`]).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use procwarden_extensions::policy::FrontEnd;
use procwarden_extensions::tool::{
    CallScope, ProcessError, ProcessHost, ProcessInfo, ProcessOutput, ProcessSignal, ToolCallError,
    ToolOutput, ToolSet, ToolSpec,
};

use super::{Agent, AgentError, ErrorKind};

/// The agent's own MCP tools: tool plugins may not take these names.
pub const BUILT_IN_TOOLS: &[&str] = &[
    "execute",
    "process_output",
    "process_list",
    "process_signal",
];

/// Processes on behalf of tool plugins. Holds the agent weakly: the agent owns the tools.
struct ToolProcesses(std::sync::Weak<Agent>);

impl ToolProcesses {
    fn agent(&self) -> Result<Arc<Agent>, ProcessError> {
        self.0
            .upgrade()
            .ok_or_else(|| ProcessError::Internal("The agent is shutting down.".into()))
    }

    /// The output now, or once the shell exits or `wait` passes.
    fn read(
        &self,
        scope: &CallScope,
        id: &str,
        wait: Option<Duration>,
    ) -> futures::future::BoxFuture<'static, Result<ProcessOutput, ProcessError>> {
        let agent = self.agent();
        let chat = scope.chat.clone();
        let id = id.to_owned();
        async move {
            let agent = agent?;
            let snapshot = match wait {
                None => agent.output(&id, chat.as_deref()).await,
                Some(limit) => agent.wait_output(&id, chat.as_deref(), Some(limit)).await,
            };
            snapshot.map(Into::into).map_err(wit_error)
        }
        .boxed()
    }
}

/// The same texts the HTTP API gives, sorted into the WIT error's cases.
fn wit_error(err: AgentError) -> ProcessError {
    let text = err.to_string();
    match err.kind() {
        ErrorKind::NotFound => ProcessError::NotFound(text),
        ErrorKind::Conflict => ProcessError::NotRunning(text),
        ErrorKind::Invalid | ErrorKind::TooLarge => ProcessError::Invalid(text),
        ErrorKind::Denied => ProcessError::Denied(text),
        ErrorKind::TooMany | ErrorKind::Unavailable | ErrorKind::Internal => {
            ProcessError::Internal(text)
        }
    }
}

impl ProcessHost for ToolProcesses {
    fn start(
        &self,
        scope: &CallScope,
        request: procwarden_process::StartRequest,
    ) -> futures::future::BoxFuture<'static, Result<String, ProcessError>> {
        let agent = self.agent();
        let scope = scope.clone();
        async move {
            let front_end = FrontEnd::Tool(scope.tool.to_string());
            let started = agent?
                .start(scope.chat.as_deref(), front_end, request, None)
                .await
                .map_err(wit_error)?;
            Ok(started.id)
        }
        .boxed()
    }

    fn signal(
        &self,
        scope: &CallScope,
        id: &str,
        signal: ProcessSignal,
    ) -> futures::future::BoxFuture<'static, Result<(), ProcessError>> {
        let agent = self.agent();
        let chat = scope.chat.clone();
        let id = id.to_owned();
        async move {
            agent?
                .signal(&id, chat.as_deref(), signal.into())
                .await
                .map_err(wit_error)
        }
        .boxed()
    }

    fn output(
        &self,
        scope: &CallScope,
        id: &str,
    ) -> futures::future::BoxFuture<'static, Result<ProcessOutput, ProcessError>> {
        self.read(scope, id, None)
    }

    fn wait(
        &self,
        scope: &CallScope,
        id: &str,
        limit: Duration,
    ) -> futures::future::BoxFuture<'static, Result<ProcessOutput, ProcessError>> {
        self.read(scope, id, Some(limit))
    }

    fn list(&self, scope: &CallScope) -> futures::future::BoxFuture<'static, Vec<ProcessInfo>> {
        let agent = self.agent();
        let chat = scope.chat.clone();
        async move {
            match agent {
                Ok(agent) => agent
                    .list(chat.as_deref())
                    .await
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        .boxed()
    }
}

impl Agent {
    /// The tools plugins offer, in load order.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.tools.specs()
    }

    pub fn tools(&self) -> &ToolSet {
        &self.tools
    }

    /// Runs tool plugin `name` for `chat`; its processes belong to that chat. The result
    /// passes through the output filters (front end `tool:NAME`) before any client sees it.
    pub async fn call_tool(
        self: &Arc<Self>,
        name: &str,
        args: serde_json::Value,
        chat: Option<&str>,
    ) -> Result<ToolReply, ToolCallError> {
        let host: Arc<dyn ProcessHost> = Arc::new(ToolProcesses(Arc::downgrade(self)));
        let workdir = self
            .settings()
            .agent_workdir
            .as_deref()
            .map(super::path_string);
        let output = self
            .tools
            .invoke(host, name, args, chat, workdir.as_deref())
            .await?;
        let front_end = format!("tool:{name}");
        let withheld = |err: super::AgentError| ToolCallError::Fault {
            tool: name.to_owned(),
            reason: format!("returned a result that was withheld: {err}"),
        };
        if self.filters().is_empty() {
            return Ok(ToolReply {
                output,
                redactions: None,
            });
        }
        let (output, redactions) = match output {
            ToolOutput::Text(text) => {
                let (text, redactions) = self
                    .filter_text(text, chat, &front_end)
                    .await
                    .map_err(withheld)?;
                (ToolOutput::Text(text), redactions)
            }
            ToolOutput::Json(json) => {
                let (text, redactions) = self
                    .filter_text(json.to_string(), chat, &front_end)
                    .await
                    .map_err(withheld)?;
                if redactions == Some(0) {
                    (ToolOutput::Json(json), redactions)
                } else {
                    // A mask inside a string keeps the JSON valid; one that took an escape
                    // with it does not, and the masked text is then sent as text.
                    let output = serde_json::from_str(&text)
                        .map_or(ToolOutput::Text(text), ToolOutput::Json);
                    (output, redactions)
                }
            }
        };
        Ok(ToolReply { output, redactions })
    }
}

/// A tool's result as a client gets it: after the output filters.
#[derive(Debug)]
pub struct ToolReply {
    pub output: ToolOutput,
    /// How many changes the output filters made to the result (secrets masked); `None` when
    /// no filter runs.
    pub redactions: Option<u32>,
}
