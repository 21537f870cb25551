//! Handlers of `/api/v0/processes/...`: translate HTTP to agent calls and back.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Chat, json_body, wants_wait};
use crate::agent::OutputOptions;
use procwarden_extensions::filter::FilterHealth;
use procwarden_process::{GroupSignal, OutputSnapshot, ProcessInfo, StartRequest};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A command to start. Fields not listed here are refused (400 naming the field) unless the
/// agent's config sets `lenient_start_body = true`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StartBody {
    /// The shell line, run as `sh -c COMMAND` in its own process group.
    #[serde(default)]
    #[schema(example = "cargo test")]
    command: String,
    /// The directory to run in: relative to the agent's workdir; it must exist.
    #[serde(default)]
    workdir: Option<String>,
    /// Variables added to (or replacing) the inherited environment.
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    /// A server or watcher: it is not waited for, and the reply says so.
    #[serde(default)]
    background: bool,
    /// Kill the command's whole tree after this many seconds (fractions are rounded up).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    timeout_seconds: Option<f64>,
    /// A retry with the same key (in the same chat) returns the process the first started;
    /// the `Idempotency-Key` header takes precedence.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// `null` (the default) or `pipe`: written with `POST /{id}/input`.
    #[serde(default)]
    stdin: Option<String>,
    /// Run on a pseudo-terminal (implies a stdin), `rows` × `cols` (default 24 × 80).
    #[serde(default)]
    tty: Option<bool>,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cols: Option<u16>,
    /// Fields this agent does not know: a typo (`backgroud`) must not pass silently.
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

const START_FIELDS: &str =
    "command, workdir, env, background, timeout_seconds, idempotency_key, stdin, tty, rows, cols";

/// With `?wait=true`, the reply also carries the output snapshot's fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StartReply {
    pub id: String,
    pub started: bool,
    /// After policy: a plugin may have moved the command to the background.
    pub background: bool,
    /// Present (true) when an idempotency key named a process already started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub reused: bool,
    /// With `?wait=true`: the output as `GET output?wait=true` would return it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub result: Option<OutputSnapshot>,
}

/// The read and wait parameters of an output request, for the API description (the handlers
/// parse the raw query themselves, to name the parameter at fault).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it only describes the query.
pub struct OutputQuery {
    /// `true` blocks until the process exits (or `until` holds), at most the wait cap.
    wait: Option<bool>,
    /// Read bytes from this offset in the whole output.
    offset: Option<u64>,
    /// Bytes to read (with `offset` or `since`).
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// A cursor (a previous reply's `covers.end`): read what came after it; with `wait`,
    /// wait for new output.
    since: Option<u64>,
    /// Lines to read: `N`, `N:M`, `-N` (the last N).
    lines: Option<String>,
    /// Lines matching this regular expression.
    grep: Option<String>,
    /// Lines of context around each `grep` match.
    context: Option<u32>,
    /// `errors` (error lines first) or `head_tail` (the default).
    view: Option<String>,
    /// With `wait=true`: what ends the wait: `exit`, `regex:PATTERN`, `quiet:SECONDS`, `port:N`.
    until: Option<String>,
}

/// Start a command. `?wait=true` runs a foreground command to completion in this one request (up to the wait
/// cap), saving the client a second round trip. A background command, asked for or moved
/// there by a plugin, is not waited for: its reply carries a snapshot with `running: true`.
#[utoipa::path(
    post,
    path = "/api/v0/processes/start",
    tag = "processes",
    request_body = StartBody,
    params(
        OutputQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the process the first request started"),
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat: it sees only its own processes (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "Started (or reused, with an idempotency key)", body = StartReply),
        (status = 400, description = "Invalid request: unknown field, empty command, bad parameter", body = ErrorBody),
        (status = 403, description = "A policy plugin denied the command", body = ErrorBody),
        (status = 409, description = "The idempotency key was used for a different request", body = ErrorBody),
        (status = 429, description = "Too many live processes (agent or chat)", body = ErrorBody),
        (status = 503, description = "The agent is shutting down or the request took too long; a policy plugin failed; or, with `wait=true`, an output filter failed and the output is withheld (the filter is named in `message`)", body = ErrorBody),
    ),
)]
pub async fn start(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StartReply>, ApiError> {
    let body: StartBody = json_body(body)?;
    // Checked before anything starts: a typo in a wait must not leave a process behind.
    let options = output_options(query.as_deref())?;
    if let Some(field) = body.unknown.keys().next()
        && !state.lenient_start_body
    {
        return Err(ApiError::bad_request(format!(
            "Unknown field \"{field}\" in the start request; known fields: {START_FIELDS}."
        ))
        .with_detail(
            "set lenient_start_body = true in the agent's config to ignore unknown fields",
        ));
    }
    let header_key = headers
        .get(IDEMPOTENCY_HEADER)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("Header Idempotency-Key must be printable ASCII.")
            })
        })
        .transpose()?;
    let idempotency_key = header_key
        .or(body.idempotency_key)
        .filter(|k| !k.is_empty());
    let input = crate::agent::input_mode(body.stdin.as_deref(), body.tty, body.rows, body.cols)
        .map_err(ApiError::bad_request)?;
    let request = StartRequest {
        command: body.command,
        workdir: body.workdir.filter(|w| !w.is_empty()),
        env: body.env.unwrap_or_default().into_iter().collect(),
        background: body.background,
        timeout_seconds: body.timeout_seconds.map(whole_seconds).transpose()?,
    };
    let started = state
        .agent
        .start_with_input(
            chat.as_deref(),
            crate::front_end::from_headers(&headers),
            request,
            idempotency_key.as_deref(),
            input,
        )
        .await?;
    let background = started.request.background;
    let result = match (wants_wait(query.as_deref()), background) {
        (false, _) => None,
        (true, true) => Some(state.agent.output(&started.id, chat.as_deref()).await?),
        (true, false) => Some(
            state
                .agent
                .read_output(
                    &started.id,
                    chat.as_deref(),
                    &options,
                    Some(state.agent.wait_cap()),
                )
                .await?,
        ),
    };
    let result = match result {
        Some(snapshot) => Some(
            state
                .agent
                .filter_snapshot(snapshot, chat.as_deref(), crate::front_end::name(&headers))
                .await?,
        ),
        None => None,
    };
    Ok(Json(StartReply {
        id: started.id,
        started: true,
        background,
        reused: started.reused,
        result,
    }))
}

/// A positive number of seconds, rounded up: a limit is never shorter than asked.
fn whole_seconds(seconds: f64) -> Result<u32, ApiError> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= f64::from(u32::MAX) {
        Ok(seconds.ceil() as u32)
    } else {
        Err(ApiError::bad_request(
            "timeout_seconds must be a positive number of seconds.",
        ))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListReply {
    pub processes: Vec<ProcessInfo>,
    /// Processes the caller may see; more than listed when the list cap (`list_cap`) cut it.
    pub total: usize,
}

/// The caller's processes, running first, then newest first, up to the list cap.
#[utoipa::path(
    get,
    path = "/api/v0/processes/list",
    tag = "processes",
    params(("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)")),
    responses((status = 200, description = "The processes the caller may see", body = ListReply)),
)]
pub async fn list(State(state): State<Arc<ApiState>>, chat: Chat) -> Json<ListReply> {
    let processes = state.agent.list(chat.as_deref()).await;
    // Counted after listing: listing reaps, and a process started in between only makes the
    // total larger, never smaller than what is listed.
    let total = state.agent.count(chat.as_deref()).max(processes.len());
    Json(ListReply { processes, total })
}

/// A process's output and state; with `wait=true`, after waiting for its exit (or `until`).
#[utoipa::path(
    get,
    path = "/api/v0/processes/{id}/output",
    tag = "processes",
    params(
        ("id" = String, Path, description = "The process ID"),
        OutputQuery,
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "The output and state", body = OutputSnapshot),
        (status = 400, description = "A bad read or wait parameter (named in `detail`)", body = ErrorBody),
        (status = 404, description = "No such process (in this chat)", body = ErrorBody),
        (status = 503, description = "The agent is shutting down or the request took too long, or an output filter failed and the output is withheld (the filter is named in `message`)", body = ErrorBody),
    ),
)]
pub async fn output(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<OutputSnapshot>, ApiError> {
    let options = output_options(query.as_deref())?;
    let wait = wants_wait(query.as_deref()).then(|| state.agent.wait_cap());
    let snapshot = state
        .agent
        .read_output(&id, chat.as_deref(), &options, wait)
        .await?;
    let snapshot = state
        .agent
        .filter_snapshot(snapshot, chat.as_deref(), crate::front_end::name(&headers))
        .await?;
    Ok(Json(snapshot))
}

/// The read and wait parameters of an output request (`offset`, `limit`, `since`, `lines`,
/// `grep`, `context`, `view`, `until`); a bad one is a 400 naming it.
fn output_options(query: Option<&str>) -> Result<OutputOptions, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(OutputOptions::default());
    };
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| ApiError::bad_request("The query string is not valid."))?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).map_err(|e| {
            ApiError::bad_request("The query string is not valid.").with_detail(e.body_text())
        })?;
    let options = OutputOptions::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|bad| {
            ApiError::bad_request(bad.to_string()).with_detail(format!("parameter: {}", bad.name))
        })?;
    if options.until.is_some() && !wants_wait(Some(query)) {
        return Err(ApiError::bad_request(
            "Invalid parameter \"until\": it only applies with wait=true.",
        )
        .with_detail("parameter: until"));
    }
    Ok(options)
}
/// The signal names the API takes, as a sentence for errors.
const SIGNAL_CHOICES: &str = "Use \"terminate\" (TERM), \"kill\" (KILL), \"INT\", \"HUP\", \"QUIT\", \"USR1\" or \"USR2\" (any case, SIG prefix optional).";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignalBody {
    /// `terminate` (TERM), `kill` (KILL), `INT`, `HUP`, `QUIT`, `USR1` or `USR2` (any case,
    /// `SIG` prefix optional).
    #[serde(default)]
    #[schema(example = "terminate")]
    signal: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageReply {
    pub message: String,
}

/// Send a signal to the process's whole tree.
#[utoipa::path(
    post,
    path = "/api/v0/processes/{id}/signal",
    tag = "processes",
    request_body = SignalBody,
    params(
        ("id" = String, Path, description = "The process ID"),
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "Sent", body = MessageReply),
        (status = 400, description = "Missing or unknown signal", body = ErrorBody),
        (status = 404, description = "No such process (in this chat)", body = ErrorBody),
        (status = 409, description = "The process is no longer running", body = ErrorBody),
    ),
)]
pub async fn signal(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageReply>, ApiError> {
    let body: SignalBody = json_body(body)?;
    if body.signal.is_empty() {
        return Err(ApiError::bad_request("Signal is required."));
    }
    let Some(signal) = GroupSignal::parse(&body.signal) else {
        return Err(ApiError::bad_request(format!(
            "Unsupported signal \"{}\". {SIGNAL_CHOICES}",
            body.signal
        )));
    };
    state.agent.signal(&id, chat.as_deref(), signal).await?;
    Ok(Json(MessageReply {
        message: format!("Signal \"{}\" sent to process \"{id}\".", signal.name()),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReply {
    /// `ok`; `degraded` when a policy plugin could not be loaded (its `on_error = "allow"`
    /// let the agent start without it) or its last call failed, or an output filter's last
    /// call failed; `shutting_down`.
    pub status: &'static str,
    pub processes: usize,
    pub waiters: usize,
    pub containment: &'static str,
    /// Successful configuration reloads since the agent started.
    pub reloads: u64,
    /// The policy chain in force, in order, with each plugin's state.
    pub plugins: Vec<PluginState>,
    /// The output filters in force, in order, with their counters.
    pub filters: Vec<FilterHealth>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginState {
    pub name: String,
    /// `native` (a built-in run as the host's own code) or `component` (WebAssembly).
    pub runs: String,
    /// Whether its component loaded. One that did not passes every request unchanged.
    pub loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub calls: u64,
    pub denied: u64,
    pub failures: u64,
    /// Failures since its last successful call.
    pub consecutive_failures: u64,
}

/// The agent's state and its policy chain's health.
#[utoipa::path(
    get,
    path = "/api/v0/health",
    tag = "meta",
    responses((status = 200, description = "The agent's state", body = HealthReply)),
)]
pub async fn health(State(state): State<Arc<ApiState>>) -> Json<HealthReply> {
    let health = state.agent.health();
    let policy = state.agent.policy();
    let counters = policy.health();
    let plugins: Vec<PluginState> = policy
        .plugins()
        .into_iter()
        .map(|p| {
            let c = counters.iter().find(|c| c.name == p.name);
            PluginState {
                runs: p.runs.to_owned(),
                loaded: p.load_error.is_none(),
                error: p.load_error,
                calls: c.map_or(0, |c| c.calls),
                denied: c.map_or(0, |c| c.denied),
                failures: c.map_or(0, |c| c.failures),
                consecutive_failures: c.map_or(0, |c| c.consecutive_failures),
                name: p.name,
            }
        })
        .collect();
    let filters = state.agent.filters().health();
    let degraded = plugins
        .iter()
        .any(|p| !p.loaded || p.consecutive_failures > 0)
        || filters.iter().any(|f| f.consecutive_failures > 0);
    Json(HealthReply {
        status: if health.shutting_down {
            "shutting_down"
        } else if degraded {
            "degraded"
        } else {
            "ok"
        },
        processes: health.processes,
        waiters: health.waiters,
        containment: health.containment,
        reloads: health.reloads,
        plugins,
        filters,
    })
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "No such route.")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this route.",
    )
}
