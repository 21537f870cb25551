//! Cross-cutting request handling: bearer auth, per-request deadlines, access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;

/// Headroom past the wait cap, so a blocked request always gets to write its answer.
pub const WAIT_DEADLINE_HEADROOM: Duration = Duration::from_secs(30);

pub async fn require_token(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "A valid bearer token is required.",
        )
        .into_response(),
    }
}

/// Every request gets the server's deadline, except blocking output reads, whose deadline is
/// extended past the wait cap: a long wait must never be cut by the server's own timeout.
pub async fn deadline(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let limit = if is_blocking_wait(&req) {
        state.agent.wait_cap() + WAIT_DEADLINE_HEADROOM
    } else {
        state.request_timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The request took too long.",
        )
        .with_detail(format!("deadline of {} s exceeded", limit.as_secs_f64()))
        .into_response(),
    }
}

fn is_blocking_wait(req: &Request) -> bool {
    req.uri().path().ends_with("/output")
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "wait=true"))
}

pub async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let chat_id = super::extract::chat_header(req.headers()).unwrap_or_default();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        chat_id = chat_id.unwrap_or_default(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
