//! `GET /metrics`. Requests are counted by [`super::middleware::observe`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiState;

/// Every metric in the Prometheus text format. Behind the token like every route.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text format 0.0.4; every metric is named `procwarden_*`", content_type = "text/plain", body = String)),
)]
pub async fn scrape(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.agent.render_metrics(),
    )
        .into_response()
}
