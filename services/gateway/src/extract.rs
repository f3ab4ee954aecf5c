//! Extractors shared by every route: the caller (token checked), JSON
//! bodies and query strings whose rejections use the API's error shape.

use std::sync::Arc;

use agenda_calendar::api::Op;
use agenda_calendar::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{json_response, HttpError};
use crate::metrics::RequestId;
use crate::AppState;

/// A call context: the state, the request id and, when authenticated, the
/// caller. Its [`Caller::call`] relays an operation to the right service.
pub struct Caller {
    state: Arc<AppState>,
    request_id: String,
    user: Option<Uuid>,
}

/// A route that needs a valid bearer token.
pub struct Authed(pub Caller);

/// A route open to anyone (register, login).
pub struct Public(pub Caller);

impl Caller {
    /// Sends `op` to its service and relays the answer.
    pub async fn call(&self, op: Op) -> Result<Response, HttpError> {
        let relayed = self.relay(&op).await?;
        Ok(json_response(relayed.status, relayed.body))
    }

    /// Like [`Caller::call`], returning the relayed status and JSON.
    pub async fn call_json(&self, op: Op) -> Result<(u16, serde_json::Value), ApiError> {
        let relayed = self.relay(&op).await?;
        let body = serde_json::from_slice(&relayed.body).unwrap_or(serde_json::Value::Null);
        Ok((relayed.status, body))
    }

    async fn relay(&self, op: &Op) -> Result<crate::upstream::Relayed, ApiError> {
        self.state
            .upstream
            .call(self.user, &self.request_id, op)
            .await
    }
}

fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

impl<S> FromRequestParts<S> for Public
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Public(Caller {
            state: Arc::<AppState>::from_ref(state),
            request_id: request_id(parts),
            user: None,
        }))
    }
}

impl<S> FromRequestParts<S> for Authed
where
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = Arc::<AppState>::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthenticated("missing Authorization: Bearer <token> header")
            })?;
        let token = strip_bearer(header).ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be \"Bearer <token>\"")
        })?;
        let user = verify(&state, token)?;
        Ok(Authed(Caller {
            state,
            request_id: request_id(parts),
            user: Some(user),
        }))
    }
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn strip_bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The user a token was issued to, if the token is valid now.
pub fn verify(state: &AppState, token: &str) -> Result<Uuid, ApiError> {
    // Checked under the borrow: no copy of the key set per request.
    let claims = match state.keys.borrow().as_ref() {
        Some(keys) => keys.verify(token),
        None => {
            return Err(ApiError::unavailable(
                "token keys not loaded yet; retry shortly",
            ))
        }
    }
    .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
    Uuid::parse_str(&claims.sub)
        .map_err(|_| ApiError::unauthenticated("the access token is not valid"))
}

/// The caller of a WebSocket session, once its token is checked.
pub fn caller_for(state: Arc<AppState>, request_id: String, user: Uuid) -> Caller {
    Caller {
        state,
        request_id,
        user: Some(user),
    }
}

/// A JSON body: malformed JSON or unknown fields are 400, too large 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large("the request body is too large")
            } else {
                ApiError::bad_request(format!("cannot read the request body: {r}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required").into());
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")).into())
    }
}

/// A query string; unknown parameters are ignored, malformed ones are 400.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")).into())
    }
}
