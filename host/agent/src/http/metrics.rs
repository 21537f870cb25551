//! `GET /metrics` and the count of HTTP requests by route template and status.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
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

/// Counts each request under the route it matched (`/api/v0/processes/{id}/output`, not
/// the ID), with the status it was finally answered with.
pub async fn count_requests(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(req).await;
    state
        .agent
        .metrics()
        .http_request(method.as_str(), &route, response.status().as_u16());
    response
}
