//! Helpers shared by the integration tests.
//!
//! Every test starts its own `procwarden serve --listen 127.0.0.1:0` ([`Server`]), talks to it over
//! HTTP ([`Api`]) or through the CLI ([`cli`]), and observes real processes through `/proc`
//! ([`Marker`], [`live_processes_with`]). The replies are typed ([`api`]); the MCP suites have
//! their own client helpers ([`mcp`]).

// Unwrapping is how a test helper says "this cannot fail here"; the workspace denies it in
// product code.
#![allow(clippy::unwrap_used)]

pub mod api;
pub mod mcp;
mod skip;

pub use api::*;
pub use skip::skip;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use serde_json::json;

/// Default per-request client timeout: a safety net so a broken server fails a test instead of
/// hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a log line written by the server may take to reach the test through its pipe.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the `procwarden` binary: `$PROCWARDEN_BIN`, else `target/<profile>/procwarden` next to
/// the `deps/` directory holding the running test executable.
pub fn binary_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PROCWARDEN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test exe has a parent dir")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("procwarden");
    assert!(
        bin.exists(),
        "procwarden binary not found at {}: build it first (`cargo build --release -p procwarden`) or set PROCWARDEN_BIN",
        bin.display()
    );
    bin
}

/// A `Command` for the binary with the client/chat environment variables of the test runner removed,
/// so that tests are deterministic.
pub fn procwarden_command() -> Command {
    let mut cmd = Command::new(binary_path());
    for var in [
        "PROCWARDEN_URL",
        "PROCWARDEN_TOKEN",
        "PROCWARDEN_CHAT_ID",
        "CODER_CHAT_ID",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Writes `toml` as `procwarden.toml` into `dir` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("procwarden.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Builder for [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: String,
    envs: Vec<(String, String)>,
    listen: Option<String>,
    inherited_fd: Option<i32>,
}

impl ServerBuilder {
    /// TOML configuration written to a temp file and passed with `--config`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// Extra environment variable for the server (and therefore its children).
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.envs.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Start the server with `fd` (0 to 9: `sh` opens it) open on /dev/null without
    /// close-on-exec, as a launcher that leaks a pipe would leave it.
    pub fn inherit_fd(mut self, fd: i32) -> Self {
        self.inherited_fd = Some(fd);
        self
    }

    /// `--listen` address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    /// Starts the server and waits for its listening line. Panics (with the server's stderr) on
    /// failure.
    pub fn spawn(self) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = write_config(dir.path(), &self.config);
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:0".to_string());
        let mut cmd = match self.inherited_fd {
            None => procwarden_command(),
            Some(fd) => {
                // The shell opens the fd and then becomes the server (same PID).
                let mut cmd = procwarden_command();
                let mut via_sh = Command::new("sh");
                via_sh
                    .arg("-c")
                    .arg(format!("exec {fd}</dev/null; exec \"$0\" \"$@\""))
                    .arg(cmd.get_program());
                for (key, value) in cmd.get_envs() {
                    match value {
                        Some(value) => via_sh.env(key, value),
                        None => via_sh.env_remove(key),
                    };
                }
                cmd = via_sh;
                cmd
            }
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--config")
            .arg(&config_path)
            // A pipe that never delivers EOF: a child that wrongly inherits the server's stdin
            // would block on it instead of reading /dev/null.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn procwarden serve");
        let pid = child.id() as i32;
        let stdin = child.stdin.take();

        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        {
            let mut stderr = child.stderr.take().expect("stderr piped");
            let buf = Arc::clone(&stderr_buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match stderr.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }

        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let stdout = child.stdout.take().expect("stdout piped");
            let rest = Arc::clone(&stdout_rest);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut first = String::new();
                match reader.read_line(&mut first) {
                    Ok(n) if n > 0 => {
                        let _ = tx.send(first);
                    }
                    _ => return,
                }
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }

        let mut server = Server {
            config_path: config_path.clone(),
            child: Mutex::new(Some(child)),
            pid,
            url: String::new(),
            port: 0,
            first_line: String::new(),
            stderr: stderr_buf,
            stdout_rest,
            _stdin: stdin,
            _dir: dir,
        };

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let status = server.try_wait();
                panic!(
                    "procwarden serve did not print its listening line ({e:?}); exit status: {status:?}; stderr:\n{}",
                    server.stderr_text()
                );
            }
        };
        let trimmed = line.trim_end_matches(['\n', '\r']).to_string();
        let url = trimmed
            .strip_prefix("procwarden listening on ")
            .unwrap_or_else(|| {
                panic!("unexpected first stdout line {trimmed:?} (expected `procwarden listening on http://HOST:PORT`)")
            })
            .to_string();
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in listening line {trimmed:?}"));
        assert!(port != 0, "server reported port 0: {trimmed:?}");
        server.url = url;
        server.port = port;
        server.first_line = trimmed;
        server
    }
}

/// A running `procwarden serve` child. Dropping it sends SIGTERM and waits (SIGKILL fallback).
pub struct Server {
    config_path: PathBuf,
    child: Mutex<Option<Child>>,
    pid: i32,
    url: String,
    port: u16,
    first_line: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_rest: Arc<Mutex<Vec<u8>>>,
    _stdin: Option<std::process::ChildStdin>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Server with an empty config.
    pub fn start() -> Server {
        Self::builder().spawn()
    }

    /// Server with the given TOML config.
    pub fn with_config(toml: &str) -> Server {
        Self::builder().config(toml).spawn()
    }

    /// The configuration file the server was started with (rewrite it to test reloads).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The first stdout line, without its newline.
    pub fn first_line(&self) -> &str {
        &self.first_line
    }

    /// HTTP client without chat header or token.
    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Whether the server logs `text` within a few seconds. Its stderr is read by a thread of
    /// its own, so a line written before an answer may reach [`Self::stderr_text`] after it.
    pub async fn logged(&self, text: &str) -> bool {
        eventually_sync(LOG_TIMEOUT, || self.stderr_text().contains(text)).await
    }

    /// Everything the server wrote to stdout after its first line.
    pub fn stdout_rest(&self) -> String {
        String::from_utf8_lossy(&self.stdout_rest.lock().unwrap()).into_owned()
    }

    /// `Some(status)` once the server has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panics if the server process has exited.
    pub fn assert_alive(&self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "procwarden server died: {status:?}; stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// Sends `sig` to the server process itself.
    pub fn send_signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid), sig);
    }

    /// Waits (polling) for the server to exit; `None` on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut guard = match self.child.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(child) = guard.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if std::thread::panicking() {
            let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
            let tail: String = if stderr.len() > 8000 {
                let mut start = stderr.len() - 8000;
                while !stderr.is_char_boundary(start) {
                    start += 1;
                }
                stderr[start..].to_string()
            } else {
                stderr
            };
            eprintln!(
                "---- procwarden server stderr (last 8000 bytes) ----\n{tail}\n---- end ----"
            );
        }
    }
}

/// `VmRSS` of `pid` in KiB (0 if unreadable).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// Chat header names accepted by the server.
pub const CODER_CHAT: &str = "Coder-Chat-Id";
pub const PROCWARDEN_CHAT: &str = "Procwarden-Chat-Id";

/// A response: status, parsed JSON body (`Value::Null` when not JSON) and raw text. A test
/// reads a typed reply with [`Resp::json`]; `body` is for the tests of the raw JSON shape.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Panics unless the status is `code`.
    #[track_caller]
    pub fn expect_status(&self, code: u16) -> &Self {
        assert_eq!(
            self.status, code,
            "expected HTTP {code}, got {} with body {:?}",
            self.status, self.text
        );
        self
    }

    /// The body as the reply type `T`; panics (with the body) unless it is exactly that.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not a {}: {e}: {:?}",
                self.status,
                std::any::type_name::<T>(),
                self.text
            )
        })
    }

    /// Asserts status `code` and an error body `{message, detail?}`; returns it.
    #[track_caller]
    pub fn error_body(&self, code: u16) -> ErrorBody {
        self.expect_status(code);
        self.error_reply()
    }

    /// Asserts status `code` and an error body `{message, detail?}`; returns the message.
    #[track_caller]
    pub fn error(&self, code: u16) -> String {
        self.error_body(code).message
    }

    /// The message of an error body of any status; panics unless the body is `{message, detail?}`.
    #[track_caller]
    pub fn message(&self) -> String {
        self.error_reply().message
    }

    #[track_caller]
    fn error_reply(&self) -> ErrorBody {
        let body: ErrorBody = self.json();
        assert!(
            !body.message.is_empty(),
            "empty message in error body {:?}",
            self.text
        );
        body
    }
}

/// A small JSON client for one server, with optional chat header and bearer token.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    headers: Vec<(String, String)>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            client: new_client(),
            base: base.trim_end_matches('/').to_string(),
            headers: Vec::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Same server, with a fresh connection pool (e.g. to abort one connection).
    pub fn fresh(&self) -> Api {
        Api {
            client: new_client(),
            ..self.clone()
        }
    }

    /// Adds a header to every request.
    pub fn with_header(&self, name: &str, value: &str) -> Api {
        let mut api = self.clone();
        api.headers.push((name.to_string(), value.to_string()));
        api
    }

    /// `Coder-Chat-Id: chat`.
    pub fn chat(&self, chat: &str) -> Api {
        self.with_header(CODER_CHAT, chat)
    }

    /// `Procwarden-Chat-Id: chat`.
    pub fn pw_chat(&self, chat: &str) -> Api {
        self.with_header(PROCWARDEN_CHAT, chat)
    }

    /// `Authorization: Bearer token`.
    pub fn token(&self, token: &str) -> Api {
        self.with_header("Authorization", &format!("Bearer {token}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `body` is sent raw with `Content-Type: application/json` when present.
    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        self.try_send(method, path, body, CLIENT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e:#}"))
    }

    /// Like [`Api::send`] but returns transport errors and takes a client timeout.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Resp, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path)).timeout(timeout);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp { status, body, text })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, Some(serde_json::to_vec(body).unwrap()))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.send("POST", path, Some(body.into())).await
    }

    /// `POST /start` with an arbitrary body.
    pub async fn start_req(&self, body: &Value) -> Resp {
        self.post("/api/v0/processes/start", body).await
    }

    /// `POST /start?wait=true` (start and wait in one request) with an arbitrary body.
    pub async fn start_wait_req(&self, body: &Value) -> Resp {
        self.post("/api/v0/processes/start?wait=true", body).await
    }

    /// `POST /start?wait=true` of a command that ends up in the background: asserts the
    /// reply comes within 5 s, with `background` and `running` true, then kills the process
    /// and waits for it to exit.
    #[track_caller]
    pub fn start_wait_expecting_background<'a>(
        &'a self,
        body: Value,
    ) -> impl Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let t0 = Instant::now();
            let r = self.start_wait_req(&body).await;
            r.expect_status(200);
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{caller}: waited for a background process"
            );
            let reply: StartWaitReply = r.json();
            assert!(reply.start.background, "{caller}: {reply}");
            assert!(reply.output.running, "{caller}: {reply}");
            let id = reply.start.id;
            self.signal(&id, "kill").await.expect_status(200);
            self.wait_exit(&id).await;
        }
    }

    /// Starts `body` and returns the reply (asserts 200, `started: true`, non-empty id).
    #[track_caller]
    pub fn start_reply<'a>(&'a self, body: Value) -> impl Future<Output = StartReply> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let resp = self.start_req(&body).await;
            assert_eq!(
                resp.status, 200,
                "start {body} failed at {caller}: HTTP {} {:?}",
                resp.status, resp.text
            );
            let reply: StartReply = resp.json();
            assert!(reply.started, "start response {reply}");
            assert!(!reply.id.is_empty(), "start response without id: {reply}");
            reply
        }
    }

    /// Starts `body` and returns the id (asserts 200, `started: true`, non-empty id).
    #[track_caller]
    pub fn start_with<'a>(&'a self, body: Value) -> impl Future<Output = String> + 'a {
        let reply = self.start_reply(body);
        async move { reply.await.id }
    }

    /// Starts `sh -c cmd` and returns its id.
    #[track_caller]
    pub fn start<'a>(&'a self, cmd: &str) -> impl Future<Output = String> + 'a {
        self.start_with(json!({ "command": cmd }))
    }

    /// `GET /output` (optionally `?wait=true`).
    pub async fn output(&self, id: &str, wait: bool) -> Resp {
        let q = if wait { "?wait=true" } else { "" };
        self.get(&format!("/api/v0/processes/{id}/output{q}")).await
    }

    /// `GET /output`, asserting 200; returns the snapshot.
    pub async fn output_ok(&self, id: &str, wait: bool) -> OutputSnapshot {
        let resp = self.output(id, wait).await;
        resp.expect_status(200);
        resp.json()
    }

    /// `GET /output?wait=true` until the shell has exited (re-waiting if the server cap is hit),
    /// asserting 200; returns the final body.
    pub async fn wait_exit(&self, id: &str) -> OutputSnapshot {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let body = self.output_ok(id, true).await;
            if !body.running {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "process {id} still running after {CLIENT_TIMEOUT:?}: {body}"
            );
        }
    }

    /// `GET /list`, asserting 200; returns the entries.
    pub async fn list(&self) -> Vec<ProcessInfo> {
        let resp = self.get("/api/v0/processes/list").await;
        resp.expect_status(200);
        resp.json::<ListReply>().processes
    }

    /// Ids from `GET /list`, in order.
    pub async fn list_ids(&self) -> Vec<String> {
        self.list().await.into_iter().map(|p| p.id).collect()
    }

    /// `POST /signal {"signal": sig}`.
    pub async fn signal(&self, id: &str, sig: &str) -> Resp {
        self.post(
            &format!("/api/v0/processes/{id}/signal"),
            &json!({ "signal": sig }),
        )
        .await
    }

    /// `GET /health`, asserting 200.
    pub async fn health(&self) -> Health {
        let resp = self.get("/api/v0/health").await;
        resp.expect_status(200);
        resp.json()
    }

    /// Current `waiters` count from `/health`.
    pub async fn waiters(&self) -> u64 {
        self.health().await.waiters
    }
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Polls the async condition every 25 ms until it is true or `timeout` passes; returns whether it
/// became true. For conditions that have no event to wait on (e.g. `/proc` disappearance).
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Synchronous-condition variant of [`eventually`].
pub async fn eventually_sync(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    eventually(timeout, || std::future::ready(cond())).await
}

// ---------------------------------------------------------------------------------------------
// /proc inspection
// ---------------------------------------------------------------------------------------------

/// A live (non-zombie) process.
#[derive(Debug, Clone)]
pub struct ProcEntry {
    pub pid: i32,
    /// cmdline with NULs replaced by spaces, trimmed.
    pub cmdline: String,
}

/// Live (non-zombie) processes whose cmdline contains `marker`.
pub fn live_processes_with(marker: &str) -> Vec<ProcEntry> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id() as i32;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let cmdline = cmdline.trim().to_string();
        if !cmdline.contains(marker) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("");
        if state == "Z" || state == "X" || state == "x" {
            continue;
        }
        found.push(ProcEntry { pid, cmdline });
    }
    found
}

/// Live `sleep` processes (not the shells) whose arguments contain `marker`.
pub fn live_sleeps_with(marker: &str) -> Vec<ProcEntry> {
    live_processes_with(marker)
        .into_iter()
        .filter(|p| p.cmdline.starts_with("sleep ") || p.cmdline.contains("/sleep "))
        .collect()
}

/// SIGKILLs every live process whose cmdline contains `marker`.
pub fn kill_marked(marker: &str) {
    for p in live_processes_with(marker) {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
}

static MARKER_SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique sleep duration (e.g. `3417.052931`) used as a marker in `/proc` cmdlines, so tests
/// running in parallel never see each other's processes. Dropping it SIGKILLs every process still
/// carrying the marker (cleanup even when a test fails).
pub struct Marker(String);

impl Marker {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Marker {
        let r = uuid::Uuid::new_v4().as_u128();
        let seq = MARKER_SEQ.fetch_add(1, Ordering::Relaxed) as u128;
        let whole = 3000 + (r % 997) as u64;
        let frac = ((r >> 20) + seq * 7919) % 1_000_000;
        Marker(format!("{whole}.{frac:06}"))
    }

    /// The marker text (a number of seconds).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sleep <marker>`.
    pub fn sleep(&self) -> String {
        format!("sleep {}", self.0)
    }

    /// Live processes carrying the marker (shells included).
    pub fn live(&self) -> Vec<ProcEntry> {
        live_processes_with(&self.0)
    }

    /// Live `sleep <marker>` processes.
    pub fn live_sleeps(&self) -> Vec<ProcEntry> {
        live_sleeps_with(&self.0)
    }

    /// Waits until at least `n` `sleep <marker>` processes are live.
    pub async fn wait_sleeps(&self, n: usize, timeout: Duration) -> bool {
        eventually_sync(timeout, || self.live_sleeps().len() >= n).await
    }

    /// Waits until no process carrying the marker is live.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        eventually_sync(timeout, || self.live().is_empty()).await
    }

    /// Panics (listing survivors) unless every process with the marker is gone within `timeout`.
    pub async fn assert_gone(&self, timeout: Duration, what: &str) {
        if !self.wait_gone(timeout).await {
            panic!(
                "{what}: processes carrying marker {} survive after {timeout:?}: {:?}",
                self.0,
                self.live()
            );
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        kill_marked(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

/// Result of a CLI invocation.
#[derive(Debug)]
pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `procwarden ARGS...` with extra env, stdin null, a 30 s timeout; captures everything.
pub async fn cli(args: &[&str], envs: &[(&str, &str)]) -> CliOut {
    let mut cmd = tokio::process::Command::from(procwarden_command());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn procwarden CLI");
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("procwarden {args:?} did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("wait for procwarden CLI");
    CliOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the CLI error convention: exit 2 and exactly one stderr line starting `procwarden:`.
#[track_caller]
pub fn assert_cli_error(out: &CliOut) {
    assert_eq!(out.code, Some(2), "expected exit code 2: {out:?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {out:?}");
    assert!(
        lines[0].starts_with("procwarden:"),
        "stderr line must start with `procwarden:`: {out:?}"
    );
}

/// A `127.0.0.1` URL on which nothing listens (a port bound then released).
pub fn unreachable_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Elapsed seconds since `t` as f64.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// A reply rendered as JSON and cut to at most 600 characters (for assertion messages).
pub fn short(v: &impl Serialize) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.len() <= 600 {
        return s;
    }
    let mut end = 600;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}
