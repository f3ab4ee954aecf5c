//! Calendar apps: private iCalendar feeds, `.ics` imports and the app
//! passwords CalDAV clients log in with (the CalDAV tree is `crate::dav`).

use agenda_calendar::api::{AppPasswordRequest, Op};
use agenda_calendar::store::app_passwords::AppPassword;
use agenda_calendar::store::imports::ImportReport;
use agenda_calendar::ApiError;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::error::{value_response, HttpError};
use crate::extract::{Authed, Caller, JsonBody, Path, Public, Query};

/// A feed's URL.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FeedUrl {
    /// Subscribe to it in a calendar app; anyone who has it sees the
    /// feed, so it is rotated by asking for a new one.
    url: String,
}

/// The absolute URL of `path` on the host the request came to.
fn absolute(c: &Caller, headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if c.state().https { "https" } else { "http" };
    format!("{scheme}://{host}{path}")
}

async fn feed_url(
    c: Caller,
    headers: HeaderMap,
    group_id: Option<String>,
) -> Result<Response, HttpError> {
    let (status, body) = c.call_json(Op::CreateFeed { group_id }).await?;
    if status != 201 {
        return Ok(value_response(status, &body));
    }
    let path = body["path"].as_str().unwrap_or_default();
    let url = absolute(&c, &headers, path);
    Ok((StatusCode::CREATED, axum::Json(json!({ "url": url }))).into_response())
}

/// A new private iCalendar feed URL of your agenda, a year back to two
/// years ahead (the old one stops working).
#[utoipa::path(post, path = "/v1/me/calendar-feed", tag = "calendar apps", operation_id = "create_my_feed", security(("bearer" = [])),
    responses((status = 201, description = "the feed's URL (private events show as busy)", body = FeedUrl)))]
pub async fn my_feed(Authed(c): Authed, headers: HeaderMap) -> Result<Response, HttpError> {
    feed_url(c, headers, None).await
}

/// A new private iCalendar feed URL of a group's agenda as you see it
/// (the old one stops working).
#[utoipa::path(post, path = "/v1/groups/{id}/calendar-feed", tag = "calendar apps", operation_id = "create_group_feed", security(("bearer" = [])),
    params(("id" = String, Path, description = "group id")),
    responses((status = 201, description = "the feed's URL", body = FeedUrl),
              (status = 404, description = "no such group among yours")))]
pub async fn group_feed(
    Authed(c): Authed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    feed_url(c, headers, Some(id)).await
}

/// `?key=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedKey {
    /// The secret key of the feed's URL.
    pub key: Option<String>,
}

/// A private feed (iCalendar), for calendar apps: no bearer token, the
/// key in the URL is the credential.
#[utoipa::path(get, path = "/v1/calendar.ics", tag = "calendar apps", operation_id = "calendar_feed",
    params(FeedKey),
    responses((status = 200, description = "the calendar", body = String, content_type = "text/calendar"),
              (status = 404, description = "no feed has this key (never made, or rotated since)")))]
pub async fn feed(Public(c): Public, Query(q): Query<FeedKey>) -> Result<Response, HttpError> {
    let Some(key) = q.key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::not_found("calendar feed").into());
    };
    let (status, body) = c.call_json(Op::Feed { key }).await?;
    if status != 200 {
        return Ok(value_response(status, &body));
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body["ics"].as_str().unwrap_or_default().to_string(),
    )
        .into_response())
}

/// Imports an iCalendar file (another app's export) into your agenda.
/// Each event is created as `POST /v1/events` would (attendees with an
/// account here by email are asked; the rest are kept as external
/// attendees); an event already imported (by UID) is skipped, so the
/// same file twice changes nothing.
#[utoipa::path(post, path = "/v1/events/import", tag = "calendar apps", operation_id = "import_events", security(("bearer" = [])),
    request_body(content = String, content_type = "text/calendar", description = "an iCalendar file, at most 4 MiB"),
    responses((status = 200, description = "what was imported and what was skipped, with why", body = ImportReport),
              (status = 400, description = "not an iCalendar file, or no VEVENT in it"),
              (status = 415, description = "a body that is not text/calendar")))]
pub async fn import(
    Authed(c): Authed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let essence = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        essence.as_str(),
        "text/calendar" | "application/ics" | "text/plain"
    ) {
        return Err(ApiError::unsupported_media_type(
            "send the file as Content-Type: text/calendar",
        )
        .into());
    }
    let ics = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the file is not UTF-8 text"))?;
    c.call(Op::ImportEvents { ics }).await
}

/// A new app password for a CalDAV client (shown once).
#[utoipa::path(post, path = "/v1/me/app-passwords", tag = "calendar apps", operation_id = "create_app_password", security(("bearer" = [])),
    request_body = AppPasswordRequest,
    responses((status = 201, description = "the app password; `password` is shown only now", body = AppPassword),
              (status = 409, description = "you have 20 already"),
              (status = 422, description = "name is empty or longer than 100 characters")))]
pub async fn create_app_password(
    Authed(c): Authed,
    JsonBody(body): JsonBody<AppPasswordRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::CreateAppPassword(body)).await
}

/// Your app passwords (names and dates; never the passwords).
#[utoipa::path(get, path = "/v1/me/app-passwords", tag = "calendar apps", operation_id = "list_app_passwords", security(("bearer" = [])),
    responses((status = 200, description = "your app passwords", body = crate::openapi::AppPasswordList)))]
pub async fn list_app_passwords(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call(Op::ListAppPasswords).await
}

/// Revokes an app password: clients using it are refused at once.
#[utoipa::path(delete, path = "/v1/me/app-passwords/{id}", tag = "calendar apps", operation_id = "delete_app_password", security(("bearer" = [])),
    params(("id" = String, Path, description = "app password id")),
    responses((status = 204, description = "revoked"),
              (status = 404, description = "no such app password of yours")))]
pub async fn delete_app_password(
    Authed(c): Authed,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    c.call(Op::DeleteAppPassword { id }).await
}
