//! `/v1/events`, `/v1/events/{id}`, RSVP and `/v1/freebusy`.

use agenda_calendar::api::{
    ConflictPolicy, CreateEventRequest, OccurrenceScope, Op, RemindersRequest, RsvpRequest,
    UpdateEventRequest, Window,
};
use agenda_calendar::model::Event;
use agenda_calendar::validate;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::HttpError;
use crate::extract::{idempotency_key, Authed, JsonBody, Path, Query};

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
#[utoipa::path(post, path = "/v1/events", tag = "events", operation_id = "create_event", security(("bearer" = [])),
    params(ConflictPolicy,
        ("Idempotency-Key" = Option<String>, Header,
         description = "1-255 visible ASCII characters; repeats of a request with it create the event once")),
    request_body = CreateEventRequest,
    responses((status = 201, description = "the event and the conflicts it makes", body = EventWithConflicts),
              (status = 400, description = "malformed Idempotency-Key, or a malformed body or query string"),
              (status = 404, description = "group event: no such group among yours"),
              (status = 409, description = "conflicts, with on_conflict=reject (details.conflicts); or the Idempotency-Key was used for a different request"),
              (status = 422, description = "a field is invalid (details.field names it): also an unknown attendee, an rrule refused, end not after start or more than 31 days later")))]
pub async fn create(
    Authed(c): Authed,
    Query(p): Query<ConflictPolicy>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateEventRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    let idempotency_key = Some(idempotency_key(&headers)?);
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
#[utoipa::path(get, path = "/v1/events", tag = "events", operation_id = "list_events", security(("bearer" = [])),
    params(Window),
    responses((status = 200, description = "your agenda in the window, occurrences expanded", body = crate::openapi::EventList),
              (status = 422, description = "from or to missing or not RFC 3339, to not after from, or more than 366 days apart")))]
pub async fn list(Authed(c): Authed, Query(window): Query<Window>) -> Result<Response, HttpError> {
    c.call(Op::ListEvents { window }).await
}

/// `?q=&from=&to=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventSearch {
    /// Text to find.
    pub q: Option<String>,
    /// Window start (RFC 3339).
    pub from: Option<String>,
    /// Window end, exclusive (RFC 3339).
    pub to: Option<String>,
}

/// Finds text in your agenda: the occurrences in a window whose title,
/// location or description (as you may see them) hold it, any case.
#[utoipa::path(get, path = "/v1/events/search", tag = "events", operation_id = "search_events", security(("bearer" = [])),
    params(EventSearch),
    responses((status = 200, description = "matching occurrences in the window, by start", body = crate::openapi::EventList),
              (status = 422, description = "q blank or over 200 characters; from or to missing or not RFC 3339, to not after from, or more than 366 days apart")))]
pub async fn search(
    Authed(c): Authed,
    Query(s): Query<EventSearch>,
) -> Result<Response, HttpError> {
    c.call(Op::SearchEvents {
        q: s.q.unwrap_or_default(),
        window: Window {
            from: s.from,
            to: s.to,
        },
    })
    .await
}

/// One event you take part in (or see in a group agenda), or one
/// occurrence of a series by its occurrence id.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", operation_id = "get_event", security(("bearer" = [])),
    params(("id" = String, Path, description = "An event id, or an occurrence id (`{id}_{YYYYMMDDTHHMMSSZ}`); anything else is 404")),
    responses((status = 200, description = "the event", body = Event),
              (status = 404, description = "no such event of yours")))]
pub async fn get(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::GetEvent { id }).await
}

/// Changes an event you organize; moving it reports conflicts. With an
/// occurrence id, that occurrence alone (only its title, start, end,
/// location and description), or with `scope=following` it and every one
/// after it (the series splits: the answer is the new series).
#[utoipa::path(patch, path = "/v1/events/{id}", tag = "events", operation_id = "update_event", security(("bearer" = [])),
    params(("id" = String, Path, description = "An event id, or an occurrence id (`{id}_{YYYYMMDDTHHMMSSZ}`, an occurrence's `occurrence_id`); anything else is 404"), ConflictPolicy, OccurrenceScope),
    request_body = UpdateEventRequest,
    responses((status = 200, description = "the event as changed and the conflicts it makes", body = EventWithConflicts),
              (status = 403, description = "only the organizer may change the event"),
              (status = 404, description = "no such event of yours"),
              (status = 409, description = "conflicts, with on_conflict=reject (details.conflicts)"),
              (status = 422, description = "a field is invalid (details.field names it): also an rrule refused, end not after start or more than 31 days later")))]
pub async fn update(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(p): Query<ConflictPolicy>,
    Query(scope): Query<OccurrenceScope>,
    JsonBody(body): JsonBody<UpdateEventRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    c.call(Op::UpdateEvent {
        id,
        body,
        reject,
        scope: scope.scope,
    })
    .await
}

/// Deletes an event you organize, from every attendee's agenda. With an
/// occurrence id, that occurrence alone, or with `scope=following` it and
/// every one after it.
#[utoipa::path(delete, path = "/v1/events/{id}", tag = "events", operation_id = "delete_event", security(("bearer" = [])),
    params(("id" = String, Path, description = "An event id, or an occurrence id (`{id}_{YYYYMMDDTHHMMSSZ}`); anything else is 404"), OccurrenceScope),
    responses((status = 204, description = "cancelled for everyone"),
              (status = 403, description = "only the organizer may delete the event (decline it instead)"),
              (status = 404, description = "no such event of yours"),
              (status = 422, description = "scope is neither this nor following (details.field = scope)")))]
pub async fn delete(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(scope): Query<OccurrenceScope>,
) -> Result<Response, HttpError> {
    c.call(Op::DeleteEvent {
        id,
        scope: scope.scope,
    })
    .await
}

/// Answers an invitation to an event; accepting reports conflicts.
#[utoipa::path(post, path = "/v1/events/{id}/rsvp", tag = "events", operation_id = "rsvp", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "An event id (anything else is 404)"), ConflictPolicy),
    request_body = RsvpRequest,
    responses((status = 200, description = "the event with your answer and your conflicts", body = EventWithConflicts),
              (status = 404, description = "no such event of yours"),
              (status = 409, description = "conflicts, with on_conflict=reject (details.conflicts)")))]
pub async fn rsvp(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(p): Query<ConflictPolicy>,
    JsonBody(body): JsonBody<RsvpRequest>,
) -> Result<Response, HttpError> {
    let reject = reject(&p)?;
    c.call(Op::Rsvp { id, body, reject }).await
}

/// Sets your own reminders on an event you take part in: a `reminder`
/// notification that many minutes before each occurrence, once each.
#[utoipa::path(put, path = "/v1/events/{id}/reminders", tag = "events", operation_id = "set_reminders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "An event id (anything else is 404)")),
    request_body = RemindersRequest,
    responses((status = 200, description = "the event, `reminders` your own", body = Event),
              (status = 404, description = "no such event of yours"),
              (status = 422, description = "more than 5 reminders, or one more than 40320 minutes before (details.field = reminders)")))]
pub async fn set_reminders(
    Authed(c): Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RemindersRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::SetReminders { id, body }).await
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
#[utoipa::path(get, path = "/v1/freebusy", tag = "events", operation_id = "free_busy", security(("bearer" = [])),
    params(FreeBusyQuery),
    responses((status = 200, description = "busy intervals by username", body = crate::openapi::FreeBusy),
              (status = 404, description = "no user by one of these names"),
              (status = 422, description = "users empty or more than 50; from or to missing or not RFC 3339, to not after from, or more than 366 days apart")))]
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
