//! Reading requests: the chat ID header and lenient JSON bodies.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::chat::chat_from_headers;

/// The caller's chat, if it named one.
pub struct Chat(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Chat {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        chat_from_headers(&parts.headers)
            .map(Chat)
            .map_err(|bad| ApiError::bad_request(bad.to_string()))
    }
}

impl Chat {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Whether an output request asks to block until exit: `wait=true` exactly, as the reference.
pub fn wants_wait(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair == "wait=true"))
}

/// Decode a JSON body whatever its content type (clients of the reference API do not always
/// set one), mapping every failure to a JSON error: 413 for oversized bodies, 400 otherwise.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            "Request body is too large."
        } else {
            "Failed to read the request body."
        };
        ApiError::new(status, message)
            .with_detail(rejection.body_text())
            .closing_connection()
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}
