//! Helpers of the MCP tests: a real rmcp client against the built binary, over stdio
//! (`procwarden mcp`) or streamable HTTP (`procwarden serve`, endpoint `/mcp`), and `/proc`
//! checks for marker processes.
//!
//! The binary is `$PROCWARDEN_BIN`, else `procwarden` in the target directory of the running
//! test executable (`target/release/procwarden` for `cargo test --release`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::ProcessInfo;

pub use serde_json::json;

pub type Client = RunningService<RoleClient, ()>;

/// Client-side bound on one tool call: a hung server fails the test instead of hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables of the test runner's own environment that would change the binary's behaviour.
const SCRUBBED_ENV: [&str; 5] = [
    "PROCWARDEN_URL",
    "PROCWARDEN_TOKEN",
    "PROCWARDEN_CHAT_ID",
    "CODER_CHAT_ID",
    "PROCWARDEN_LOG",
];

pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROCWARDEN_BIN") {
        return PathBuf::from(path);
    }
    let bin = target_dir().join("procwarden");
    assert!(
        bin.exists(),
        "procwarden binary not found at {}: build it (`cargo build --release -p procwarden`) or set PROCWARDEN_BIN",
        bin.display()
    );
    bin
}

/// `target/<profile>` of the running test executable (which lives in `target/<profile>/deps`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test exe has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Where the child's stderr goes: the test's stderr with `MCP_TEST_LOGS=1`, else nowhere.
fn child_stderr() -> Stdio {
    if std::env::var_os("MCP_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

// ---------------------------------------------------------------------------------------------
// stdio
// ---------------------------------------------------------------------------------------------

/// An MCP client talking to `procwarden mcp ARGS...` over its stdin/stdout.
pub struct StdioSession {
    pub client: Client,
    /// PID of the `procwarden mcp` process.
    pub server_pid: u32,
}

pub async fn stdio_session(args: &[&str]) -> StdioSession {
    stdio_session_env(args, &[]).await
}

pub async fn stdio_session_env(args: &[&str], env: &[(&str, &str)]) -> StdioSession {
    stdio_session_with(None, args, env).await
}

/// `procwarden mcp ARGS...` started in the directory `cwd`, as a client in a project would.
pub async fn stdio_session_in(cwd: &Path, args: &[&str]) -> StdioSession {
    stdio_session_with(Some(cwd), args, &[]).await
}

async fn stdio_session_with(
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> StdioSession {
    let command = tokio::process::Command::new(binary()).configure(|cmd| {
        cmd.arg("mcp").args(args);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
    });
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(child_stderr())
        .spawn()
        .expect("spawn procwarden mcp");
    let server_pid = transport.id().expect("child pid");
    let client = tokio::time::timeout(Duration::from_secs(20), ().serve(transport))
        .await
        .expect("MCP initialize over stdio timed out")
        .expect("MCP initialize over stdio failed");
    StdioSession { client, server_pid }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A `procwarden serve --listen 127.0.0.1:0` process; terminated (SIGTERM) when dropped.
pub struct HttpServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    // Held so the server's later stdout writes (if any) never hit a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    _config_dir: Option<tempfile::TempDir>,
}

impl HttpServer {
    pub fn start() -> Self {
        Self::start_with_config(None)
    }

    /// Start with `toml` as the config file (when given).
    pub fn start_with_config(toml: Option<&str>) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let config_dir = toml.map(|toml| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("procwarden.toml");
            std::fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(&path);
            dir
        });
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(child_stderr())
            .spawn()
            .expect("spawn procwarden serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("procwarden listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_owned();
        Self {
            child,
            base,
            _stdout: stdout,
            _config_dir: config_dir,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new MCP session, with extra HTTP headers on every request.
    pub async fn session(&self, headers: &[(&str, &str)]) -> Client {
        self.try_session(headers, None)
            .await
            .expect("MCP initialize over HTTP failed")
    }

    pub async fn try_session(
        &self,
        headers: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Result<Client, String> {
        let custom_headers: HashMap<_, _> = headers
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.mcp_url())
            .custom_headers(custom_headers);
        if let Some(token) = bearer {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        tokio::time::timeout(Duration::from_secs(20), ().serve(transport))
            .await
            .map_err(|_| "MCP initialize over HTTP timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// A client on the 2026-07-28 protocol revision, which has no sessions: every request
    /// stands alone and carries `headers`.
    pub async fn stateless_client(&self, headers: &[(&str, &str)]) -> Client {
        use rmcp::ClientServiceExt;
        let custom_headers: HashMap<_, _> = headers
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        let config = StreamableHttpClientTransportConfig::with_uri(self.mcp_url())
            .custom_headers(custom_headers);
        let transport = StreamableHttpClientTransport::from_config(config);
        let lifecycle = rmcp::ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        };
        tokio::time::timeout(
            Duration::from_secs(20),
            ().serve_with_lifecycle(transport, lifecycle),
        )
        .await
        .expect("MCP discover over HTTP timed out")
        .expect("MCP discover over HTTP failed")
    }

    /// Send SIGTERM and wait for the exit, up to `limit`. Returns whether it exited in time.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && !self.terminate(Duration::from_secs(15)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// A result of `execute`, `process_output` or `process_signal`, as the README's "What a model
/// gets back" describes it: fields that do not apply are absent. Unknown fields are accepted:
/// the README shows examples, not a closed list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolReport {
    pub success: Option<bool>,
    /// A background start.
    pub started: Option<bool>,
    pub process_id: Option<String>,
    pub command: Option<String>,
    pub running: Option<bool>,
    pub exit_code: Option<i32>,
    pub background: Option<bool>,
    #[serde(default)]
    pub timed_out: bool,
    pub wall_duration_ms: Option<u64>,
    pub truncated: Option<ToolTruncation>,
    pub message: Option<String>,
    pub note: Option<String>,
    pub output: Option<String>,
}

/// The truncation facts of a [`ToolReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolTruncation {
    pub original_bytes: u64,
    pub omitted_bytes: u64,
}

/// The result of `process_list`: the HTTP API's entries, and a `note` when there is something
/// to say about them (none listed, or the list cut at its cap).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolList {
    pub processes: Vec<ProcessInfo>,
    /// Every process of the session, listed or not.
    pub total: usize,
    pub note: Option<String>,
}

impl ToolReport {
    /// `process_id`, which must be present.
    #[track_caller]
    pub fn process_id(&self) -> &str {
        self.process_id
            .as_deref()
            .unwrap_or_else(|| panic!("no process_id in {self}"))
    }

    /// `output`, which must be present.
    #[track_caller]
    pub fn output(&self) -> &str {
        self.output
            .as_deref()
            .unwrap_or_else(|| panic!("no output in {self}"))
    }

    /// `command`, which must be present.
    #[track_caller]
    pub fn command(&self) -> &str {
        self.command
            .as_deref()
            .unwrap_or_else(|| panic!("no command in {self}"))
    }

    /// `note`, which must be present.
    #[track_caller]
    pub fn note(&self) -> &str {
        self.note
            .as_deref()
            .unwrap_or_else(|| panic!("no note in {self}"))
    }
}

/// Renders a result as the JSON the model read, for assertion messages.
impl std::fmt::Display for ToolReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

/// A tool result as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub is_error: bool,
    pub text: String,
    /// The text parsed as JSON (successful results are one JSON object).
    pub json: Value,
    pub elapsed: Duration,
}

impl Reply {
    /// The result of `execute`, `process_output` or `process_signal`, which must be a success.
    /// Fields that do not apply are absent, never `null`, so `None` here means "absent".
    #[track_caller]
    pub fn ok(self) -> ToolReport {
        if let Value::Object(fields) = &self.json {
            let nulls: Vec<&String> = fields
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k)
                .collect();
            assert!(nulls.is_empty(), "null fields {nulls:?} in {}", self.text);
        }
        self.ok_as()
    }

    /// The result of `process_list`, which must be a success.
    #[track_caller]
    pub fn ok_list(self) -> ToolList {
        self.ok_as()
    }

    #[track_caller]
    fn ok_as<T: serde::de::DeserializeOwned>(self) -> T {
        assert!(!self.is_error, "tool error: {}", self.text);
        serde_json::from_value(self.json)
            .unwrap_or_else(|e| panic!("not a {}: {e}: {}", std::any::type_name::<T>(), self.text))
    }

    /// The error text, which must be an error.
    pub fn err(self) -> String {
        assert!(self.is_error, "expected a tool error, got: {}", self.text);
        self.text
    }
}

pub async fn call(client: &Client, tool: &str, args: Value) -> Reply {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let started = Instant::now();
    let result: CallToolResult = tokio::time::timeout(
        CALL_TIMEOUT,
        client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} call timed out"))
    .unwrap_or_else(|e| panic!("{tool} call failed at the protocol level: {e}"));
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        is_error: result.is_error == Some(true),
        text,
        json,
        elapsed: started.elapsed(),
    }
}

/// Start `command` in the background and return its process_id.
pub async fn start_background(client: &Client, command: &str) -> String {
    let reply = call(
        client,
        "execute",
        json!({"command": command, "run_in_background": true}),
    )
    .await
    .ok();
    reply.process_id().to_owned()
}

pub async fn list_ids(client: &Client) -> Vec<String> {
    let reply = call(client, "process_list", json!({})).await.ok_list();
    reply.processes.into_iter().map(|p| p.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Processes seen through /proc
// ---------------------------------------------------------------------------------------------

/// A unique `sleep` argument (`1234.<digits>`), so a test can find exactly its own processes.
pub struct Marker(pub String);

impl Marker {
    pub fn new() -> Self {
        let n = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
        Self(format!("1234.{n:09}"))
    }

    /// `sleep <marker>`: sleeps about 20 minutes, far longer than any test.
    pub fn sleep(&self) -> String {
        format!("sleep {}", self.0)
    }

    /// How many live processes run `sleep <marker>`.
    pub fn count(&self) -> usize {
        let wanted = format!("sleep\0{}\0", self.0);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| is_live(&e.path()))
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| c.ends_with(wanted.as_bytes()) && c.starts_with(b"sleep\0"))
                    .unwrap_or(false)
            })
            .count()
    }

    pub fn alive(&self) -> bool {
        self.count() > 0
    }
}

impl Default for Marker {
    fn default() -> Self {
        Self::new()
    }
}

/// Not a zombie: zombies keep their /proc entry until reaped, but have stopped.
fn is_live(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

pub fn pid_alive(pid: u32) -> bool {
    is_live(&PathBuf::from(format!("/proc/{pid}")))
}

/// Poll `condition` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
