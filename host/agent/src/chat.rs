//! The caller's chat, named by a request header. Shared by the HTTP API and MCP over HTTP.

use axum::http::HeaderMap;

/// Headers that name the caller's chat, ours first.
pub const CHAT_HEADERS: [&str; 2] = ["procwarden-chat-id", "coder-chat-id"];
const MAX_CHAT_ID_BYTES: usize = 256;

/// A chat header that cannot be used; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadChatHeader(pub String);

/// The chat the headers name, if any (blank values count as none).
pub fn chat_from_headers(headers: &HeaderMap) -> Result<Option<String>, BadChatHeader> {
    for name in CHAT_HEADERS {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| BadChatHeader(format!("Header {name} must be printable ASCII.")))?
            .trim();
        if value.is_empty() {
            continue;
        }
        if value.len() > MAX_CHAT_ID_BYTES {
            return Err(BadChatHeader(format!(
                "Header {name} is longer than {MAX_CHAT_ID_BYTES} bytes."
            )));
        }
        return Ok(Some(value.to_owned()));
    }
    Ok(None)
}
