//! The one error type of the public API: what a person sees.
//!
//! Every failure a caller can cause maps to a 4xx with a message a person
//! understands; agenda-db trouble is 503 (retry later); anything else is a
//! 500 whose cause is logged here and never sent.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An error as sent to the client: `{"error":{code,message,details}}` with
/// `status` as the HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (see docs/API.md).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details (e.g. `field`, `conflicts`).
    pub details: Value,
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: json!({}),
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }
    /// 401: no valid credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, "unauthenticated", message)
    }
    /// 403: visible but not yours to change.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    /// 404: missing, or not visible to the caller.
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("{what} not found"))
    }
    /// 405: the route exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }
    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }
    /// 413: body too large.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "payload_too_large", message)
    }
    /// 414: a request line too long.
    pub fn uri_too_long(message: impl Into<String>) -> Self {
        Self::new(414, "uri_too_long", message)
    }
    /// 431: request headers too large.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(431, "headers_too_large", message)
    }
    /// 415: a body in a format other than JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "unsupported_media_type", message)
    }
    /// 422: a field has an invalid value.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(422, "invalid_field", message);
        e.details = json!({ "field": field });
        e
    }
    /// 429: too much at once from this caller; retry after `secs`
    /// (sent as `Retry-After`, and as `details.retry_after`).
    pub fn too_many_requests(message: impl Into<String>, secs: u64) -> Self {
        let mut e = Self::new(429, "rate_limited", message);
        e.details = json!({ "retry_after": secs });
        e
    }
    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }
    /// 500: logged with its cause; the client only gets a reference.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(%reference, %cause, "internal error");
        Self::new(
            500,
            "internal",
            format!("internal error (reference {reference})"),
        )
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

impl From<agenda_common::Error> for ApiError {
    fn from(e: agenda_common::Error) -> Self {
        match e {
            agenda_common::Error::Unavailable(m) => {
                tracing::warn!(error = %m, "agenda-db unavailable");
                ApiError::unavailable("the data store is temporarily unavailable; retry shortly")
            }
            other => ApiError::internal(other),
        }
    }
}
