//! `POST /v1/auth/register`, `POST /v1/auth/login`.

use agenda_calendar::api::{LoginReply, LoginRequest, Op, RegisterRequest};
use agenda_calendar::model::User;
use axum::response::Response;

use crate::error::HttpError;
use crate::extract::{JsonBody, Public};

/// Creates an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", operation_id = "register",
    request_body = RegisterRequest,
    responses((status = 201, description = "the account (with its email)", body = User),
              (status = 409, description = "the username or the email is taken (case-insensitively)")))]
pub async fn register(
    Public(c): Public,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::Register(body)).await
}

/// Exchanges a username (or email) and password for an access token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", operation_id = "login",
    request_body = LoginRequest,
    responses((status = 200, description = "an access token", body = LoginReply),
              (status = 401, description = "unknown user or wrong password (the same answer for both)"),
              (status = 429, description = "too many failed logins for this account or from this address; Retry-After says when to try again")))]
pub async fn login(
    Public(c): Public,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Response, HttpError> {
    let account = body
        .username
        .clone()
        .or(body.email.clone())
        .unwrap_or_default();
    let guard = &c.state().logins;
    guard.check(&account, c.source())?;
    let resp = c.call(Op::Login(body)).await?;
    match resp.status().as_u16() {
        401 => guard.record(&account, c.source(), true),
        200 => guard.record(&account, c.source(), false),
        _ => {}
    }
    Ok(resp)
}
