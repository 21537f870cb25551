//! `POST /api/v0/processes/{id}/input`: write to the stdin of a process started with
//! `stdin: "pipe"` or `tty: true`; `POST /api/v0/processes/{id}/resize`: change the size of
//! its terminal.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Chat, json_body};
use procwarden_process::InputWritten;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// Text to write, as is (a newline answers a line prompt; `\u0003` on a terminal is ^C).
    #[serde(default)]
    data: Option<String>,
    /// Bytes to write, base64-encoded (standard alphabet, padded): for input that is not
    /// UTF-8 text or holds NUL bytes. At most one of `data` and `data_base64`.
    #[serde(default)]
    data_base64: Option<String>,
    /// End the input after `data`: a pipe is closed, a terminal gets ^D.
    #[serde(default)]
    eof: bool,
}

/// `{data | data_base64, eof?}` → `{written, eof}`; 409 for a process without a stdin pipe,
/// after eof, once it has exited, or while another write to its input is in progress; 404
/// for an unknown process or another chat's.
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
        (status = 400, description = "A malformed body, both data and data_base64, or invalid base64", body = ErrorBody),
        (status = 404, description = "No such process (in this chat)", body = ErrorBody),
        (status = 409, description = "No stdin pipe, input after eof, the process has exited, or another write to its input is in progress", body = ErrorBody),
    ),
)]
pub async fn write(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InputWritten>, ApiError> {
    let body: InputBody = json_body(body)?;
    let data =
        crate::agent::input_bytes(body.data, body.data_base64).map_err(ApiError::bad_request)?;
    let written = state
        .agent
        .input(&id, chat.as_deref(), &data, body.eof)
        .await?;
    Ok(Json(written))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    /// Rows of the terminal (1 to 1000).
    rows: u16,
    /// Columns of the terminal (1 to 1000).
    cols: u16,
}

/// The terminal's size now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resized {
    rows: u16,
    cols: u16,
}

/// `{rows, cols}` → `{rows, cols}`: the terminal of a process started with `tty: true` takes
/// the new size, and its foreground process group gets SIGWINCH. 409 for a process without a
/// terminal or once it has exited; 400 for a size out of range.
#[utoipa::path(
    post,
    path = "/api/v0/processes/{id}/resize",
    tag = "processes",
    request_body = ResizeBody,
    params(
        ("id" = String, Path, description = "The process ID"),
        ("procwarden-chat-id" = Option<String>, Header, description = "The caller's chat (also `coder-chat-id`)"),
    ),
    responses(
        (status = 200, description = "Resized", body = Resized),
        (status = 400, description = "A malformed body or a size out of range", body = ErrorBody),
        (status = 404, description = "No such process (in this chat)", body = ErrorBody),
        (status = 409, description = "No terminal, or the process has exited", body = ErrorBody),
    ),
)]
pub async fn resize(
    State(state): State<Arc<ApiState>>,
    chat: Chat,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Resized>, ApiError> {
    let body: ResizeBody = json_body(body)?;
    let size = crate::agent::terminal_size(body.rows, body.cols).map_err(ApiError::bad_request)?;
    state.agent.resize(&id, chat.as_deref(), size)?;
    Ok(Json(Resized {
        rows: size.rows,
        cols: size.cols,
    }))
}
