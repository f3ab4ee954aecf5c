//! Extractors shared by every route: the caller (token checked), JSON
//! bodies, query strings and path parameters whose rejections use the
//! API's error shape.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use agenda_calendar::api::Op;
use agenda_calendar::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{json_response, HttpError};
use crate::listener::Addrs;
use crate::metrics::RequestId;
use crate::AppState;

/// A call context: the state, the request id and, when authenticated, the
/// caller. Its [`Caller::call`] relays an operation to the right service.
pub struct Caller {
    state: Arc<AppState>,
    request_id: String,
    user: Option<Uuid>,
    /// The client's address (unspecified when the connection info is
    /// missing, as in tests that call the router directly).
    source: IpAddr,
}

/// A route that needs a valid bearer token.
pub struct Authed(pub Caller);

/// A route open to anyone (register, login).
pub struct Public(pub Caller);

impl Caller {
    /// The gateway's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The client's address.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// An unauthenticated caller for the request of `parts`.
    pub fn public(state: Arc<AppState>, parts: &Parts) -> Caller {
        Caller {
            state,
            request_id: request_id(parts),
            user: None,
            source: source(parts),
        }
    }

    /// The same call context acting for `user` (once credentials other
    /// than a token, such as an app password, were checked).
    pub fn as_user(self, user: Uuid) -> Caller {
        Caller {
            user: Some(user),
            ..self
        }
    }

    /// The client's address as the audit log shows it ("" when unknown).
    fn source_text(&self) -> String {
        if self.source.is_unspecified() {
            String::new()
        } else {
            self.source.to_string()
        }
    }

    /// Sends `op` to its service and relays the answer.
    pub async fn call(&self, op: Op) -> Result<Response, HttpError> {
        let relayed = self.relay(&op).await?;
        Ok(json_response(relayed.status, relayed.body))
    }

    /// [`Caller::call`] for an operation that may end the caller's
    /// sessions (a password change, logging out everywhere, deleting the
    /// account): a success waits until this gateway knows, so the very
    /// next request with an old token is refused.
    pub async fn call_ending_sessions(&self, op: Op) -> Result<Response, HttpError> {
        let resp = self.call(op).await?;
        if let (true, Some(user)) = (resp.status().is_success(), self.user) {
            self.state.sessions.reload(&self.state.db, user).await?;
        }
        Ok(resp)
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
            .call(self.user, &self.source_text(), &self.request_id, op)
            .await
    }
}

fn source(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<Addrs>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.peer.ip())
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
        Ok(Public(Caller::public(
            Arc::<AppState>::from_ref(state),
            parts,
        )))
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
        // Verified already by the limits layer (which keys its rate on it).
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(Authed(Caller {
                user: Some(session.user),
                source: source(parts),
                request_id: request_id(parts),
                state,
            }));
        }
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
        let user = verify(&state, token)?.user;
        Ok(Authed(Caller {
            state,
            source: source(parts),
            request_id: request_id(parts),
            user: Some(user),
        }))
    }
}

/// The request's `Idempotency-Key`, or a fresh one when the client gave
/// none: with a key the services treat the call as safe to repeat, so the
/// gateway may retry it on another replica after any failure.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        Some(v) => agenda_calendar::validate::idempotency_key(v.as_bytes()),
        None => Ok(Uuid::new_v4().to_string()),
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

/// What a token says, if it is valid now (signature, expiry, and not
/// ended since it was issued: [`crate::sessions`]).
pub fn verify(state: &AppState, token: &str) -> Result<Session, ApiError> {
    // Checked under the borrow: no copy of the key set per request.
    let claims = {
        let keys = state.keys.borrow();
        let Some(keys) = keys.as_ref() else {
            return Err(ApiError::unavailable(
                "token keys not loaded yet; retry shortly",
            ));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match state
            .verified
            .get(token, now, |kid| keys.keys.contains_key(kid))
        {
            Some(claims) => claims,
            None => {
                let (kid, claims) = keys
                    .verify_with_kid(token)
                    .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
                state.verified.insert(token, &kid, &claims, now);
                claims
            }
        }
    };
    let user = Uuid::parse_str(&claims.sub)
        .map_err(|_| ApiError::unauthenticated("the access token is not valid"))?;
    state.sessions.check(user, claims.gen)?;
    Ok(Session {
        user,
        generation: claims.gen,
        expires_at: claims.exp,
    })
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user: Uuid,
    /// The session generation it was issued at.
    pub generation: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// The caller of a WebSocket session, once its token is checked.
pub fn caller_for(state: Arc<AppState>, request_id: String, user: Uuid) -> Caller {
    Caller {
        state,
        request_id,
        user: Some(user),
        // Calls of a session are never rate limited by address.
        source: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// A JSON body: another declared content type is 415; malformed JSON or
/// unknown fields are 400; a field of the wrong type or missing is 422
/// naming it; too large 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // No content type is taken as JSON (curl -d sends a form type,
        // which is refused: the README's examples say application/json).
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            if !is_json(ct.to_str().unwrap_or_default()) {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body must be JSON (content-type: application/json), not {:?}",
                    ct.to_str().unwrap_or("?")
                ))
                .into());
            }
        }
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
        // Every body of the API is an object (serde would also read a
        // struct from an array, and blame its first element).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the body must be a JSON object").into());
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de)
            .map(JsonBody)
            .map_err(|e| body_error(&e).into())
    }
}

/// `application/json`, or any `…/…+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

/// What a body that does not deserialize is: a field of the wrong type or
/// missing names the field (422); broken JSON and unknown fields are 400.
fn body_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    let message = inner.to_string();
    if inner.classify() != serde_json::error::Category::Data || message.starts_with("unknown field")
    {
        return ApiError::bad_request(format!("invalid JSON body: {message}"));
    }
    // A missing field is reported at its parent; its name is in the text.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let path = e.path().to_string();
    let field = match (missing, path.as_str()) {
        (Some(name), "." | "") => name.to_string(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, path) => path.to_string(),
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    ApiError::invalid_field(&field, format!("{field}: {message}"))
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

/// Path parameters, like axum's `Path`, but refused in the API's error
/// shape: a parameter that is not even UTF-8 names nothing (404, as any
/// id that names nothing does); anything else is a 400.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Err(ApiError::not_found("resource").into())
            }
            Err(e) => Err(ApiError::bad_request(e.body_text()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(ct), "{ct}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn error(json: &str) -> ApiError {
        let mut de = serde_json::Deserializer::from_str(json);
        body_error(&serde_path_to_error::deserialize::<_, Body>(&mut de).unwrap_err())
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        let e = error(r#"{"title": 5}"#);
        assert_eq!(
            (e.status, e.details["field"].as_str()),
            (422, Some("title"))
        );
        let e = error(r#"{}"#);
        assert_eq!(
            (e.status, e.details["field"].as_str()),
            (422, Some("title"))
        );
        let e = error(r#"{"title": "x", "inner": {"n": "many"}}"#);
        assert_eq!(
            (e.status, e.details["field"].as_str()),
            (422, Some("inner.n"))
        );
        let e = error(r#"{"title": "x", "inner": {}}"#);
        assert_eq!(
            (e.status, e.details["field"].as_str()),
            (422, Some("inner.n"))
        );
        assert_eq!(error(r#"{"title": "x", "extra": 1}"#).status, 400);
        assert_eq!(error(r#"{"title": "#).status, 400);
    }
}
