//! Errors as the API reports them: a status and `{message, detail?}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::agent::{AgentError, ErrorKind};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<String>,
    /// Tell the client not to reuse the connection (e.g. after a body we did not read).
    pub close_connection: bool,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a sentence.
    pub message: String,
    /// More about it: the field or parameter at fault, the underlying error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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

    /// A body serde could not read: not JSON at all, or JSON whose values do not fit (a
    /// string where a number goes, `613.0` for a whole number). The two read differently.
    pub fn invalid_json(err: serde_json::Error) -> Self {
        let message = if err.is_data() {
            "Request body is JSON, but does not match the expected fields or types: see detail."
        } else {
            "Request body must be valid JSON."
        };
        Self::bad_request(message).with_detail(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.message,
            detail: self.detail,
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
        let status = match err.kind() {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Denied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, err.to_string())
    }
}
