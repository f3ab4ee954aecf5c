//! `POST /v1/auth/register`, `login`, `refresh` and `logout`.

use agenda_calendar::api::{
    LoginReply, LoginRequest, LogoutRequest, Op, RefreshRequest, RegisterRequest,
};
use agenda_calendar::model::User;
use agenda_calendar::ErrorKind;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::HttpError;
use crate::extract::{idempotency_key, Authed, JsonBody, Public};

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
    match ErrorKind::from_status(resp.status().as_u16()) {
        Some(ErrorKind::Unauthenticated) => guard.record(&account, c.source(), true),
        None if resp.status().is_success() => guard.record(&account, c.source(), false),
        _ => {}
    }
    Ok(resp)
}

/// Exchanges a refresh token for a new access token and a new refresh
/// token (the one presented is spent: presenting it again ends the
/// session).
///
/// Safe to repeat with an `Idempotency-Key` header: a repeat of a use
/// (same token, same key, within five minutes and before the next token
/// is used) is answered with the same next refresh token instead of
/// ending the session, so a client whose answer was lost may send it
/// again. Without one the gateway still makes its own retries safe with a
/// key of its own.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", operation_id = "refresh",
    params(("Idempotency-Key" = Option<String>, Header,
            description = "1-255 visible ASCII characters; a repeat with it is answered again")),
    request_body = RefreshRequest,
    responses((status = 200, description = "a new access token and the next refresh token", body = LoginReply),
              (status = 400, description = "malformed Idempotency-Key, or a malformed body"),
              (status = 401, description = "not a valid refresh token: unknown, expired, spent (which ends its session), or its session ended")))]
pub async fn refresh(
    Public(c): Public,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::Refresh {
        refresh_token: body.refresh_token,
        idempotency_key: Some(idempotency_key(&headers)?),
    })
    .await
}

/// Ends a session (its refresh token), or with `everywhere` every session
/// of yours: every access token is refused at once and open streams close.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", operation_id = "logout", security(("bearer" = [])),
    request_body = LogoutRequest,
    responses((status = 204, description = "ended"),
              (status = 422, description = "neither a refresh_token of yours nor everywhere: true")))]
pub async fn logout(
    Authed(c): Authed,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> Result<Response, HttpError> {
    c.call_ending_sessions(Op::Logout(body)).await
}
