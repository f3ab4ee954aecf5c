//! `GET /v1/notifications`, `POST /v1/notifications/{id}/read`,
//! `POST /v1/notifications/read-all`.

use agenda_calendar::api::Op;
use agenda_calendar::model::Notification;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::HttpError;
use crate::extract::{Authed, Path, Query};

/// `?unread=true&limit=50&before=ID`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Only unread notifications.
    pub unread: Option<bool>,
    /// Items per page, 1 to 200 (default 200).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub before: Option<String>,
}

/// Your notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", operation_id = "list_notifications", security(("bearer" = [])),
    params(Filter),
    responses((status = 200, description = "a page of your notifications, newest first; `next` (when there are more) is the `before` of the next page", body = crate::openapi::NotificationList),
              (status = 422, description = "limit not 1 to 200, or before not the next of a page")))]
pub async fn list(Authed(c): Authed, Query(f): Query<Filter>) -> Result<Response, HttpError> {
    c.call(Op::ListNotifications {
        unread: f.unread.unwrap_or(false),
        limit: f.limit,
        before: f.before,
    })
    .await
}

/// Marks every notification of yours read.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "notifications", operation_id = "read_all_notifications", security(("bearer" = [])),
    responses((status = 200, description = "how many were unread: `{\"marked\": N}`", body = crate::openapi::Marked)))]
pub async fn read_all(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call(Op::ReadAllNotifications).await
}

/// Marks a notification read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications", operation_id = "read_notification", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A notification id (anything else is 404)")),
    responses((status = 200, description = "the notification, read", body = Notification),
              (status = 404, description = "no such notification of yours")))]
pub async fn read(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::ReadNotification { id }).await
}
