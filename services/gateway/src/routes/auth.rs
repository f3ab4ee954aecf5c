//! `POST /v1/auth/register`, `POST /v1/auth/login`.

use agenda_calendar::api::{LoginReply, LoginRequest, Op, RegisterRequest};
use agenda_calendar::model::User;
use axum::response::Response;

use crate::error::HttpError;
use crate::extract::{JsonBody, Public};

/// Creates an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 409, description = "username or email taken"),
              (status = 422, description = "invalid field")))]
pub async fn register(
    Public(c): Public,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::Register(body)).await
}

/// Exchanges a username (or email) and password for an access token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginReply), (status = 401, description = "unknown user or wrong password")))]
pub async fn login(
    Public(c): Public,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::Login(body)).await
}
