//! The HTTP API (axum): routes compatible with the reference agent's `/api/v0/processes`.

pub mod admin;
pub mod body_timeout;
pub mod connections;
pub mod error;
pub mod extract;
pub mod input;
pub mod json_errors;
pub mod listener;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod raw_errors;
pub mod routes;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::agent::Agent;
use crate::config::Config;

/// What every handler can reach.
pub struct ApiState {
    pub agent: Arc<Agent>,
    pub token: Option<String>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Unknown fields in a start body are ignored rather than refused (`lenient_start_body`).
    pub lenient_start_body: bool,
}

/// The API's routes, plus `extra` routes that other front ends serve on the same listener
/// (`serve` adds MCP at `/mcp`; this module does not know MCP). The extra routes sit outside
/// the API's deadline and body limit (an MCP call blocks as long as the model asked and its
/// SSE streams stay open; it enforces its own body limit), and inside the token check, the
/// browser guard and the access log, like the API.
pub fn router(agent: Arc<Agent>, config: &Config, extra: Router) -> Router {
    let state = Arc::new(ApiState {
        agent,
        token: config.token.clone(),
        request_timeout: config.request_timeout(),
        max_body_bytes: config.max_body_bytes,
        lenient_start_body: config.lenient_start_body,
    });
    let processes = Router::new()
        .route("/start", post(routes::start))
        .route("/list", get(routes::list))
        .route("/{id}/output", get(routes::output))
        .route("/{id}/signal", post(routes::signal))
        .route("/{id}/input", post(input::write))
        .route("/{id}/resize", post(input::resize));
    Router::new()
        .nest("/api/v0/processes", processes)
        .route("/api/v0/health", get(routes::health))
        .route("/api/v0/reload", post(admin::reload))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v0/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::deadline,
        ))
        .with_state(state.clone())
        // Outside the request deadline: a tool call lasts as long as its own limit allows.
        .merge(
            Router::new()
                .route("/api/v0/tools", get(tools::list))
                .route("/api/v0/tools/{name}", post(tools::call))
                .layer(DefaultBodyLimit::max(config.max_body_bytes))
                .with_state(state.clone()),
        )
        .merge(extra)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::admit,
        ))
        // Outermost: rewraps errors as JSON, then counts and logs the status the client got.
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::observe,
        ))
}
