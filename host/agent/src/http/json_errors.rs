//! Every error answer is JSON `{message, detail?}`: errors produced outside our handlers
//! (axum's extractor rejections, rmcp's plain-text answers) are rewrapped here, their text
//! kept as the detail.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longest plain-text error body kept as the detail; such bodies are one line.
const MAX_DETAIL_BYTES: usize = 4096;

/// `response` as it is if it succeeded or is JSON already; else the same error as JSON.
pub async fn as_json(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = status.canonical_reason().unwrap_or("Request failed.");
    let mut error = ApiError::new(status, format!("{message}."));
    if !detail.is_empty() {
        error = error.with_detail(detail);
    }
    let mut rewrapped = error.into_response();
    // Keep what the original said beyond its body (Allow, Retry-After, Connection, ...).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewrapped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewrapped
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")
        })
}
