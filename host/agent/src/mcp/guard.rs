//! In front of the MCP endpoint: the session cap, and JSON-RPC errors for bodies that are not
//! JSON-RPC (rmcp answers those `415 Unsupported Media Type` in plain text).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::sessions::BoundedSessions;
use super::transport::McpHttpService;
use crate::http::error::ApiError;

/// JSON-RPC 2.0: the body is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: the body is JSON but not a valid request.
const INVALID_REQUEST: i64 = -32600;

#[derive(Clone)]
struct Guard {
    sessions: Arc<BoundedSessions>,
    max_body_bytes: usize,
}

/// The `/mcp` route behind its guard.
pub fn route(mcp: McpHttpService, max_body_bytes: usize) -> Router {
    let guard = Guard {
        sessions: mcp.sessions,
        max_body_bytes,
    };
    Router::new()
        .route_service("/mcp", mcp.service)
        .layer(axum::middleware::from_fn_with_state(guard, guard_mcp))
}

async fn guard_mcp(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    // A POST without a session may open one (an `initialize`): refuse it at the cap.
    if !req.headers().contains_key("mcp-session-id") && guard.sessions.is_full() {
        let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many MCP sessions.")
            .with_detail(
                "close unused sessions (HTTP DELETE) or wait for idle ones to expire".to_owned(),
            )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        // rmcp answers 415, made JSON by the outer error layer.
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, guard.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(err) => {
            // A body that timed out is answered 408 by the listener whatever we say here.
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
                .with_detail(err.to_string())
                .closing_connection()
                .into_response();
        }
    };
    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return jsonrpc_error(PARSE_ERROR, "Parse error", &err.to_string());
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The body is JSON (checked above) with a JSON content type, so rmcp's 415 means the
    // JSON is not a JSON-RPC message.
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return jsonrpc_error(
            INVALID_REQUEST,
            "Invalid Request",
            "the body is not a JSON-RPC 2.0 message",
        );
    }
    response
}

fn jsonrpc_error(code: i64, message: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message, "data": detail},
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}
