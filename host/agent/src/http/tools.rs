//! `GET /api/v0/tools` and `POST /api/v0/tools/{name}`: the tool plugins over HTTP.
//!
//! A call's body is the tool's arguments, a JSON object (an empty body means `{}`). The reply
//! is `{tool, text}` or `{tool, json}`, with `redactions` (how many secrets the output filters
//! masked in the result) when filters run; errors are `{message}` with 404 (unknown tool), 400
//! (arguments refused), 422 (the tool ran and failed) or 503 (the tool's component failed:
//! trap, time or memory limit, not loaded; or an output filter failed and withheld the result).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Chat, json_body};
use procwarden_extensions::tool::{ToolCallError, ToolOutput, ToolSpec};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolsReply {
    pub tools: Vec<ToolSpec>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallReply {
    pub tool: String,
    /// A tool that answers text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A tool that answers JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// How many changes the output filters made to the result (secrets masked); absent when
    /// no filter runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redactions: Option<u32>,
}

/// The tools the tool plugins offer.
#[utoipa::path(
    get,
    path = "/api/v0/tools",
    tag = "tools",
    responses((status = 200, description = "The tools", body = ToolsReply)),
)]
pub async fn list(State(state): State<Arc<ApiState>>) -> Json<ToolsReply> {
    Json(ToolsReply {
        tools: state.agent.tool_specs(),
    })
}

/// Call a tool; the body is its arguments, a JSON object (an empty body means `{}`).
#[utoipa::path(
    post,
    path = "/api/v0/tools/{name}",
    tag = "tools",
    request_body(content = Object, description = "The tool's arguments, as its `input_schema` describes"),
    params(
        ("name" = String, Path, description = "The tool's name"),
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "The tool's result", body = ToolCallReply),
        (status = 400, description = "Arguments refused", body = ErrorBody),
        (status = 404, description = "No such tool", body = ErrorBody),
        (status = 422, description = "The tool ran and failed", body = ErrorBody),
        (status = 503, description = "The tool's component failed (trap, time or memory limit, not loaded), or an output filter failed and withheld its result", body = ErrorBody),
    ),
)]
pub async fn call(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ToolCallReply>, ApiError> {
    let args = match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::Value::Null,
        _ => json_body(body)?,
    };
    let reply = state
        .agent
        .call_tool(&name, args, chat.0.as_deref())
        .await
        .map_err(tool_error)?;
    let (text, json) = match reply.output {
        ToolOutput::Text(t) => (Some(t), None),
        ToolOutput::Json(j) => (None, Some(j)),
    };
    Ok(Json(ToolCallReply {
        tool: name,
        text,
        json,
        redactions: reply.redactions,
    }))
}

pub fn tool_error(err: ToolCallError) -> ApiError {
    let status = match &err {
        ToolCallError::UnknownTool { .. } => StatusCode::NOT_FOUND,
        ToolCallError::InvalidArguments { .. } => StatusCode::BAD_REQUEST,
        ToolCallError::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ToolCallError::Fault { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, err.to_string())
}
