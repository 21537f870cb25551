//! Operator routes: `POST /api/v0/reload`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::agent::ReloadError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadReply {
    pub message: String,
    /// The policy chain now in force, in order.
    pub plugins: Vec<String>,
    /// Changed keys that only take effect when the agent is restarted.
    pub restart_needed: Vec<String>,
}

/// Re-read the configuration file, as SIGHUP does. Behind the token like every route. A
/// file that does not load answers 422 with the reason; without a file, 409.
#[utoipa::path(
    post,
    path = "/api/v0/reload",
    tag = "meta",
    responses(
        (status = 200, description = "Reloaded", body = ReloadReply),
        (status = 409, description = "The agent was started without a configuration file", body = ErrorBody),
        (status = 422, description = "The file does not load; the configuration in force is kept", body = ErrorBody),
    ),
)]
pub async fn reload(State(state): State<Arc<ApiState>>) -> Result<Json<ReloadReply>, ApiError> {
    match state.agent.reload().await {
        Ok(reloaded) => Ok(Json(ReloadReply {
            message: format!(
                "Reloaded {}; policy chain: {}.",
                reloaded.path,
                if reloaded.plugins.is_empty() {
                    "(none)".to_owned()
                } else {
                    reloaded.plugins.join(", ")
                }
            ),
            plugins: reloaded.plugins,
            restart_needed: reloaded.restart_needed,
        })),
        Err(err @ ReloadError::NoFile) => Err(ApiError::new(StatusCode::CONFLICT, err.to_string())),
        Err(err @ ReloadError::Invalid { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            err.to_string(),
        )),
    }
}
