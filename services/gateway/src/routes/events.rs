//! `/v1/events`, `/v1/events/{id}`, RSVP and `/v1/freebusy`.

use agenda_calendar::api::{
    ConflictPolicy, CreateEventRequest, Op, RsvpRequest, UpdateEventRequest, Window,
};
use agenda_calendar::model::{Event, Interval};
use agenda_calendar::validate;
use axum::extract::Path;
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
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(ConflictPolicy), request_body = CreateEventRequest,
    responses((status = 201, body = EventWithConflicts),
              (status = 409, description = "conflicts, with on_conflict=reject (details.conflicts)"),
              (status = 422, description = "invalid field")))]
pub async fn create(
    Authed(c): Authed,
    Query(p): Query<ConflictPolicy>,
    JsonBody(body): JsonBody<CreateEventRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    c.call(if body.group_id.is_some() {
        Op::CreateGroupEvent { body, reject }
    } else {
        Op::CreateEvent { body, reject }
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
