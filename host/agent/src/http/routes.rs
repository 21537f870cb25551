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
use super::error::ApiError;
use super::extract::{Chat, json_body, wants_wait};
use crate::agent::OutputOptions;
use procwarden_extensions::filter::FilterHealth;
use procwarden_extensions::policy::FrontEnd;
use procwarden_process::{GroupSignal, OutputSnapshot, ProcessInfo, StartRequest};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

#[derive(Debug, Deserialize)]
struct StartBody {
    #[serde(default)]
    command: String,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    background: bool,
    /// Seconds; fractions are rounded up to whole seconds.
    #[serde(default)]
    timeout_seconds: Option<f64>,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Fields this agent does not know: a typo (`backgroud`) must not pass silently.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

const START_FIELDS: &str = "command, workdir, env, background, timeout_seconds, idempotency_key";

#[derive(Debug, Serialize)]
pub struct StartReply {
    pub id: String,
    pub started: bool,
    /// After policy: a plugin may have moved the command to the background.
    pub background: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// With `?wait=true`: the output as `GET output?wait=true` would return it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub result: Option<OutputSnapshot>,
}

/// `?wait=true` runs a foreground command to completion in this one request (up to the wait
/// cap), saving the client a second round trip. A background command, asked for or moved
/// there by a plugin, is not waited for: its reply carries a snapshot with `running: true`.
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
    let request = StartRequest {
        command: body.command,
        workdir: body.workdir.filter(|w| !w.is_empty()),
        env: body.env.unwrap_or_default().into_iter().collect(),
        background: body.background,
        timeout_seconds: body.timeout_seconds.map(whole_seconds).transpose()?,
    };
    let started = state
        .agent
        .start(
            chat.as_deref(),
            FrontEnd::Http,
            request,
            idempotency_key.as_deref(),
        )
        .await?;
    let background = started.request.background;
    let result = match (wants_wait(query.as_deref()), background) {
        (false, _) => None,
        (true, true) => Some(state.agent.output(&started.id, chat.as_deref())?),
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
                .filter_snapshot(snapshot, chat.as_deref(), "http")
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

#[derive(Debug, Serialize)]
pub struct ListReply {
    pub processes: Vec<ProcessInfo>,
    /// Processes the caller may see; more than listed when the list cap (`list_cap`) cut it.
    pub total: usize,
}

pub async fn list(State(state): State<Arc<ApiState>>, chat: Chat) -> Json<ListReply> {
    let processes = state.agent.list(chat.as_deref()).await;
    // Counted after listing: listing reaps, and a process started in between only makes the
    // total larger, never smaller than what is listed.
    let total = state.agent.count(chat.as_deref()).max(processes.len());
    Json(ListReply { processes, total })
}

pub async fn output(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
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
        .filter_snapshot(snapshot, chat.as_deref(), "http")
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

#[derive(Debug, Deserialize)]
struct SignalBody {
    #[serde(default)]
    signal: String,
}

#[derive(Debug, Serialize)]
pub struct MessageReply {
    pub message: String,
}

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
    state.agent.signal(&id, chat.as_deref(), signal)?;
    Ok(Json(MessageReply {
        message: format!("Signal \"{}\" sent to process \"{id}\".", signal.name()),
    }))
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct PluginState {
    pub name: String,
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
