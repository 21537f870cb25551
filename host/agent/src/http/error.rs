//! Errors as the API reports them: a status and `{message, detail?}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::agent::AgentError;
use procwarden_process::ProcessError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<String>,
    /// Tell the client not to reuse the connection (e.g. after a body we did not read).
    pub close_connection: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
            close_connection: false,
        }
    }

    /// The connection will not be reused: the rest of the request body was not read, so the
    /// server closes it. Saying so keeps clients from sending the next request into it.
    pub fn closing_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::bad_request("Request body must be valid JSON.").with_detail(detail.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            detail: self.detail.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.close_connection {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<AgentError> for ApiError {
    fn from(err: AgentError) -> Self {
        match err {
            AgentError::Invalid(message) => Self::bad_request(message),
            AgentError::Denied(denial) => Self::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Denied by policy plugin \"{}\": {}",
                    denial.plugin, denial.reason
                ),
            ),
            AgentError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            AgentError::Process(err) => err.into(),
        }
    }
}

impl From<ProcessError> for ApiError {
    fn from(err: ProcessError) -> Self {
        match &err {
            ProcessError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, err.to_string()),
            ProcessError::NotRunning(_) => Self::new(StatusCode::CONFLICT, err.to_string()),
            ProcessError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The agent is shutting down.",
            ),
            ProcessError::Workdir { .. } => Self::new(StatusCode::BAD_REQUEST, err.to_string()),
            ProcessError::TooLong { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
            }
            ProcessError::Spawn(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to start process.",
            )
            .with_detail(err.to_string()),
            ProcessError::Signal(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to signal process.",
            )
            .with_detail(err.to_string()),
        }
    }
}
