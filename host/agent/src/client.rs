//! The CLI's HTTP client for a running agent.

use anyhow::{Context, anyhow};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

pub use procwarden_process::StartRequest;

pub const DEFAULT_URL: &str = "http://127.0.0.1:7077";

/// The agent answered with an error: its status and the sentence it gave. The CLI maps the
/// status to its exit code (a policy denial, 403, is told apart from other failures).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    chat: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>, chat: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            chat,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}/api/v0/processes{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(chat) = &self.chat {
            req = req.header("Procwarden-Chat-Id", chat);
        }
        // Policy plugins see the CLI's requests as front end `cli`, not `http`.
        req.header(crate::front_end::CLIENT_HEADER, crate::front_end::CLI)
    }

    async fn send(&self, req: RequestBuilder) -> anyhow::Result<Value> {
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the agent at {}", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the agent answered {status} with a body that is not JSON"))?;
        if status == StatusCode::OK {
            return Ok(body);
        }
        let message = body["message"].as_str().unwrap_or("request failed");
        let message = match body["detail"].as_str() {
            Some(detail) => format!("{message} ({detail})"),
            None => message.to_owned(),
        };
        Err(Refused {
            status: status.as_u16(),
            message,
        }
        .into())
    }

    /// Start a process; returns its ID and whether it runs in the background (the agent's
    /// policy may have put it there).
    pub async fn start(&self, run: &StartRequest) -> anyhow::Result<(String, bool)> {
        self.start_with_stdin(run, false).await
    }

    /// [`Self::start`], with a stdin pipe to write to with [`Self::input`] when `stdin_pipe`.
    pub async fn start_with_stdin(
        &self,
        run: &StartRequest,
        stdin_pipe: bool,
    ) -> anyhow::Result<(String, bool)> {
        let env: serde_json::Map<String, Value> = run
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let body = json!({
            "command": run.command,
            "workdir": run.workdir,
            "env": env,
            "background": run.background,
            "timeout_seconds": run.timeout_seconds,
            "stdin": if stdin_pipe { "pipe" } else { "null" },
        });
        let reply = self
            .send(self.request(Method::POST, "/start").json(&body))
            .await?;
        let id = reply["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the agent's start reply has no id"))?;
        Ok((id, reply["background"] == Value::Bool(true)))
    }

    /// Write `data` to the stdin of a process started with a stdin pipe; with `eof`, end it.
    pub async fn input(&self, id: &str, data: &str, eof: bool) -> anyhow::Result<Value> {
        let body = json!({ "data": data, "eof": eof });
        self.send(
            self.request(Method::POST, &format!("/{id}/input"))
                .json(&body),
        )
        .await
    }

    pub async fn output(&self, id: &str, wait: bool) -> anyhow::Result<Value> {
        let query = if wait { "?wait=true" } else { "" };
        self.send(self.request(Method::GET, &format!("/{id}/output{query}")))
            .await
    }

    /// Wait for the shell to exit, waiting again each time the server's cap answers first.
    pub async fn wait_for_exit(&self, id: &str) -> anyhow::Result<Value> {
        loop {
            let reply = self.output(id, true).await?;
            if reply["running"] == Value::Bool(false) {
                return Ok(reply);
            }
        }
    }

    /// `GET output` with read and wait parameters (`since`, `grep`, `lines`, `wait`, ...).
    pub async fn read(&self, id: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let query: Vec<String> = query
            .iter()
            .map(|(name, value)| format!("{name}={}", percent_encode(value)))
            .collect();
        self.send(self.request(Method::GET, &format!("/{id}/output?{}", query.join("&"))))
            .await
    }

    /// `POST /api/v0/reload`: the agent re-reads its configuration file.
    pub async fn reload(&self) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}/api/v0/reload", self.base))
            .json(&json!({}));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        self.send(req).await
    }

    pub async fn list(&self) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, "/list")).await
    }

    /// Call tool plugin `name` with `args`; the reply is `{tool, text}` or `{tool, json}`.
    pub async fn call_tool(&self, name: &str, args: &Value) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}/api/v0/tools/{name}", self.base))
            .json(args);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(chat) = &self.chat {
            req = req.header("Procwarden-Chat-Id", chat);
        }
        self.send(req).await
    }

    pub async fn signal(&self, id: &str, signal: &str) -> anyhow::Result<String> {
        let reply = self
            .send(
                self.request(Method::POST, &format!("/{id}/signal"))
                    .json(&json!({ "signal": signal })),
            )
            .await?;
        Ok(reply["message"].as_str().unwrap_or_default().to_owned())
    }
}

/// `value` for a query string: everything but unreserved characters percent-encoded.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
