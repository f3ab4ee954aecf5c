//! `GET|PATCH|DELETE /v1/me`, `GET /v1/users?q=`.

use agenda_calendar::api::{Op, UpdateMeRequest};
use agenda_calendar::model::User;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::HttpError;
use crate::extract::{Authed, JsonBody, Query};

/// Your profile.
#[utoipa::path(get, path = "/v1/me", tag = "users", operation_id = "get_me", security(("bearer" = [])),
    responses((status = 200, description = "your profile", body = User)))]
pub async fn get_me(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call(Op::GetMe).await
}

/// Changes your profile (email, password, display name, time zone).
#[utoipa::path(patch, path = "/v1/me", tag = "users", operation_id = "update_me", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses((status = 200, description = "your profile as changed", body = User),
              (status = 403, description = "current_password is wrong"),
              (status = 409, description = "another account has this email")))]
pub async fn update_me(
    Authed(c): Authed,
    JsonBody(body): JsonBody<UpdateMeRequest>,
) -> Result<Response, HttpError> {
    c.call_ending_sessions(Op::UpdateMe(body)).await
}

/// Deletes your account (hand your groups over first).
#[utoipa::path(delete, path = "/v1/me", tag = "users", operation_id = "delete_me", security(("bearer" = [])),
    responses((status = 204, description = "the account is gone"),
              (status = 409, description = "you still own a group: hand it over or delete it first")))]
pub async fn delete_me(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call_ending_sessions(Op::DeleteMe).await
}

/// `?q=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Search {
    /// Words, each the beginning of a word of the person's username or
    /// display name (case-insensitive; `ann sm` finds "Ann Smith").
    pub q: Option<String>,
}

/// Finds people by the beginnings of the words of their username or
/// display name.
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "search_users", security(("bearer" = [])),
    params(Search),
    responses((status = 200, description = "matching people, by username (at most 50)", body = crate::openapi::UserList),
              (status = 422, description = "q is missing or blank")))]
pub async fn search(Authed(c): Authed, Query(s): Query<Search>) -> Result<Response, HttpError> {
    c.call(Op::SearchUsers {
        q: s.q.unwrap_or_default(),
    })
    .await
}
