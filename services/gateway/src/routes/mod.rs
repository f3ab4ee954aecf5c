//! The public routes (DESIGN.md "Public HTTP API"), one module per
//! resource (`stream` is the WebSocket). Each handler turns the request into an [`Op`] and relays it;
//! the rules live in the services.
//!
//! [`Op`]: agenda_calendar::api::Op

pub mod admin;
pub mod auth;
pub mod calendar_apps;
pub mod events;
pub mod groups;
pub mod notifications;
pub mod ops;
pub mod stream;
pub mod users;

use std::sync::Arc;

use axum::routing::{get, patch, post, put};
use axum::Router;

use crate::AppState;

/// Every `/v1` route.
pub fn api() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route(
            "/v1/me",
            get(users::get_me)
                .patch(users::update_me)
                .delete(users::delete_me),
        )
        .route("/v1/users", get(users::search))
        .route("/v1/groups", post(groups::create).get(groups::list))
        .route(
            "/v1/groups/{id}",
            get(groups::get)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route("/v1/groups/{id}/members", get(groups::members))
        .route(
            "/v1/groups/{id}/members/{user_id}",
            patch(groups::update_member).delete(groups::remove_member),
        )
        .route(
            "/v1/groups/{id}/invitations",
            post(groups::invite).get(groups::group_invitations),
        )
        .route(
            "/v1/groups/{id}/invitations/{invitation_id}",
            axum::routing::delete(groups::revoke_invitation),
        )
        .route("/v1/groups/{id}/agenda", get(groups::agenda))
        .route("/v1/invitations", get(groups::invitations))
        .route("/v1/invitations/{id}/accept", post(groups::accept))
        .route("/v1/invitations/{id}/decline", post(groups::decline))
        .route("/v1/events", post(events::create).get(events::list))
        .route("/v1/events/search", get(events::search))
        .route(
            "/v1/events/{id}",
            get(events::get)
                .patch(events::update)
                .delete(events::delete),
        )
        .route("/v1/events/{id}/rsvp", post(events::rsvp))
        .route("/v1/events/{id}/reminders", put(events::set_reminders))
        .route("/v1/freebusy", get(events::free_busy))
        .route("/v1/calendar.ics", get(calendar_apps::feed))
        .route("/v1/me/calendar-feed", post(calendar_apps::my_feed))
        .route(
            "/v1/groups/{id}/calendar-feed",
            post(calendar_apps::group_feed),
        )
        .route(
            "/v1/events/import",
            post(calendar_apps::import).layer(axum::extract::DefaultBodyLimit::max(
                crate::limits::IMPORT_BODY_BYTES,
            )),
        )
        .route(
            "/v1/me/app-passwords",
            post(calendar_apps::create_app_password).get(calendar_apps::list_app_passwords),
        )
        .route(
            "/v1/me/app-passwords/{id}",
            axum::routing::delete(calendar_apps::delete_app_password),
        )
        .route("/v1/admin/audit", get(admin::audit))
        .route("/v1/notifications", get(notifications::list))
        .route("/v1/notifications/{id}/read", post(notifications::read))
        .route("/v1/notifications/read-all", post(notifications::read_all))
        .route("/v1/stream", get(stream::stream))
}
