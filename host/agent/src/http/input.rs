//! `POST /api/v0/processes/{id}/input`: write to the stdin of a process started with
//! `stdin: "pipe"` or `tty: true`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::ApiState;
use super::error::ApiError;
use super::extract::{Chat, json_body};
use procwarden_process::InputWritten;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody {
    /// Text to write, as is (a newline answers a line prompt; `\u0003` on a terminal is ^C).
    #[serde(default)]
    data: String,
    /// End the input after `data`: a pipe is closed, a terminal gets ^D.
    #[serde(default)]
    eof: bool,
}

/// `{data, eof?}` → `{written, eof}`; 409 for a process without a stdin pipe, after eof, or
/// once it has exited; 404 for an unknown process or another chat's.
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
