//! `GET /v1/notifications`, `POST /v1/notifications/{id}/read`.

use agenda_calendar::api::Op;
use agenda_calendar::model::Notification;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::HttpError;
use crate::extract::{Authed, Path, Query};

/// `?unread=true`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Only unread notifications.
    pub unread: Option<bool>,
}

/// Your notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", operation_id = "list_notifications", security(("bearer" = [])),
    params(Filter),
    responses((status = 200, description = "your notifications, newest first", body = crate::openapi::NotificationList)))]
pub async fn list(Authed(c): Authed, Query(f): Query<Filter>) -> Result<Response, HttpError> {
    c.call(Op::ListNotifications {
        unread: f.unread.unwrap_or(false),
    })
    .await
}

/// Marks a notification read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications", operation_id = "read_notification", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A notification id (anything else is 404)")),
    responses((status = 200, description = "the notification, read", body = Notification),
              (status = 404, description = "no such notification of yours")))]
pub async fn read(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::ReadNotification { id }).await
}
