//! `/v1/events`, `/v1/events/{id}`, RSVP and `/v1/freebusy`.

use agenda_calendar::api::{
    ConflictPolicy, CreateEventRequest, Op, RsvpRequest, UpdateEventRequest, Window,
};
use agenda_calendar::model::{Event, Interval};
use agenda_calendar::validate;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::HttpError;
use crate::extract::{Authed, JsonBody, Query};

/// Reply of create, update and RSVP: the event and the overlapping
/// occurrences of each affected person.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventWithConflicts {
    event: Event,
    conflicts: Vec<agenda_calendar::model::Conflict>,
}

fn reject(p: &ConflictPolicy) -> Result<bool, HttpError> {
    Ok(validate::on_conflict(p.on_conflict.as_deref())?)
}

/// Creates a personal event, or a group event with `group_id`.
///
/// Safe to repeat with an `Idempotency-Key` header: every request with the
/// same key creates the event once and answers with it (409 if the key was
/// used for a different request). Without one the gateway still makes its
/// own retries safe with a key of its own.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(ConflictPolicy,
        ("Idempotency-Key" = Option<String>, Header,
         description = "1-255 visible ASCII characters; repeats of a request with it create the event once")),
    request_body = CreateEventRequest,
    responses((status = 201, body = EventWithConflicts),
              (status = 400, description = "malformed Idempotency-Key"),
              (status = 409, description = "conflicts, with on_conflict=reject (details.conflicts); or the Idempotency-Key was used for a different request"),
              (status = 422, description = "invalid field")))]
pub async fn create(
    Authed(c): Authed,
    Query(p): Query<ConflictPolicy>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateEventRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    // A fresh key per request when the client gives none: the gateway may
    // then retry the call on another replica after any failure.
    let idempotency_key = Some(match headers.get("idempotency-key") {
        Some(v) => validate::idempotency_key(v.as_bytes())?,
        None => uuid::Uuid::new_v4().to_string(),
    });
    c.call(if body.group_id.is_some() {
        Op::CreateGroupEvent {
            body,
            reject,
            idempotency_key,
        }
    } else {
        Op::CreateEvent {
            body,
            reject,
            idempotency_key,
        }
    })
    .await
}

/// Your agenda in a window: own events, events you attend, group events;
/// recurring ones expanded.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(Window), responses((status = 200, description = "{items: [event]}")))]
pub async fn list(Authed(c): Authed, Query(window): Query<Window>) -> Result<Response, HttpError> {
    c.call(Op::ListEvents { window }).await
}

/// One event you take part in.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Event), (status = 404)))]
pub async fn get(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::GetEvent { id }).await
}

/// Changes an event you organize; moving it reports conflicts.
#[utoipa::path(patch, path = "/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), ConflictPolicy), request_body = UpdateEventRequest,
    responses((status = 200, body = EventWithConflicts), (status = 403), (status = 404), (status = 409)))]
pub async fn update(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(p): Query<ConflictPolicy>,
    JsonBody(body): JsonBody<UpdateEventRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    c.call(Op::UpdateEvent { id, body, reject }).await
}

/// Deletes an event you organize, from every attendee's agenda.
#[utoipa::path(delete, path = "/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 403), (status = 404)))]
pub async fn delete(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::DeleteEvent { id }).await
}

/// Answers an invitation to an event; accepting reports conflicts.
#[utoipa::path(post, path = "/v1/events/{id}/rsvp", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), ConflictPolicy), request_body = RsvpRequest,
    responses((status = 200, body = EventWithConflicts), (status = 404), (status = 409)))]
pub async fn rsvp(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(p): Query<ConflictPolicy>,
    JsonBody(body): JsonBody<RsvpRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    c.call(Op::Rsvp { id, body, reject }).await
}

/// `?users=a,b&from=&to=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FreeBusyQuery {
    /// Usernames, comma-separated.
    pub users: Option<String>,
    /// RFC 3339.
    pub from: Option<String>,
    /// RFC 3339.
    pub to: Option<String>,
}

/// Busy intervals of people, without any detail.
#[utoipa::path(get, path = "/v1/freebusy", tag = "events", security(("bearer" = [])),
    params(FreeBusyQuery), responses((status = 200, description = "{users: {username: [interval]}}", body = Interval)))]
pub async fn free_busy(
    Authed(c): Authed,
    Query(q): Query<FreeBusyQuery>,
) -> Result<Response, HttpError> {
    c.call(Op::FreeBusy {
        users: q.users.unwrap_or_default(),
        window: Window {
            from: q.from,
            to: q.to,
        },
    })
    .await
}
