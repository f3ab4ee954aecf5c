//! Operational routes: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use agenda_calendar::api::Service;
use agenda_calendar::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::HttpError;
use crate::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", operation_id = "healthz",
    responses((status = 200, description = "up", body = crate::openapi::Health)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready to serve: agenda-db answers with a leader, and at least one users
/// and one groups replica are registered.
#[utoipa::path(get, path = "/readyz", tag = "ops", operation_id = "readyz",
    responses((status = 200, description = "ready", body = crate::openapi::Ready),
              (status = 503, description = "not ready (details: the checks)")))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.db.with_timeout(Duration::from_secs(2));
    let db_ok = matches!(db.cluster_status().await, Ok(s) if s.leader_id != 0);
    let users = state.upstream.instances(Service::Users).len();
    let groups = state.upstream.instances(Service::Groups).len();
    let keys = state.keys.borrow().is_some();
    let details = json!({"agenda_db": db_ok, "users_instances": users, "groups_instances": groups, "token_keys": keys});
    if db_ok && users > 0 && groups > 0 && keys {
        Json(json!({"status": "ready", "checks": details})).into_response()
    } else {
        HttpError(ApiError::unavailable("not ready").with_details(details)).into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, agenda_common::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// This API's OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
