//! `POST /api/v0/processes/{id}/input`: write to the stdin of a process started with
//! `stdin: "pipe"` or `tty: true`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Chat, json_body};
use procwarden_process::InputWritten;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// Text to write, as is (a newline answers a line prompt; `\u0003` on a terminal is ^C).
    #[serde(default)]
    data: String,
    /// End the input after `data`: a pipe is closed, a terminal gets ^D.
    #[serde(default)]
    eof: bool,
}

/// `{data, eof?}` → `{written, eof}`; 409 for a process without a stdin pipe, after eof, or
/// once it has exited; 404 for an unknown process or another chat's.
#[utoipa::path(
    post,
    path = "/api/v0/processes/{id}/input",
    tag = "processes",
    request_body = InputBody,
    params(
        ("id" = String, Path, description = "The process ID"),
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "Written", body = InputWritten),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 404, description = "No such process (in this chat)", body = ErrorBody),
        (status = 409, description = "No stdin pipe, input after eof, or the process has exited", body = ErrorBody),
    ),
)]
pub async fn write(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InputWritten>, ApiError> {
    let body: InputBody = json_body(body)?;
    let written = state
        .agent
        .input(&id, chat.as_deref(), body.data.as_bytes(), body.eof)
        .await?;
    Ok(Json(written))
}
