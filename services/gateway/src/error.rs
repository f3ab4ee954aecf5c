//! HTTP rendering of [`ApiError`]: the DESIGN.md error shape, and
//! `Retry-After` on every 503 and 429.

use agenda_calendar::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "1";

/// An [`ApiError`] as an axum response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        json_response(
            self.0.status,
            serde_json::to_vec(&self.0.body()).unwrap_or_default(),
        )
    }
}

/// A JSON response with `status`; 204 and empty bodies carry no content.
/// [`json_response`] of a parsed JSON value (a service's answer, relayed).
pub fn value_response(status: u16, body: &serde_json::Value) -> Response {
    json_response(status, serde_json::to_vec(body).unwrap_or_default())
}

pub fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A 429 says how long to wait in `details.retry_after` (seconds).
    let wait = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| b["error"]["details"]["retry_after"].as_u64())
            .unwrap_or(1)
    });
    let mut resp = if body.is_empty() || status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    } else if let Some(secs) = wait {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
