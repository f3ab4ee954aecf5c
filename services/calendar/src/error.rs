//! The one error type of the public API: what a person sees.
//!
//! Every failure a caller can cause maps to a 4xx with a message a person
//! understands; agenda-db trouble is 503 (retry later); anything else is a
//! 500 whose cause is logged here and never sent.
//!
//! Code that reacts to an error asks its [`ErrorKind`]; the status number
//! and the message are what the client is sent, nothing to decide on.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What went wrong, which fixes the HTTP status and the `code` sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is malformed (400).
    BadRequest,
    /// No valid credentials (401).
    Unauthenticated,
    /// Visible but not the caller's to change (403).
    Forbidden,
    /// Missing, or not visible to the caller (404).
    NotFound,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// Conflicts with the current state (409).
    Conflict,
    /// A condition the request set (an ETag in `If-Match`) no longer
    /// holds (412).
    PreconditionFailed,
    /// A body over the size limit (413).
    PayloadTooLarge,
    /// A request line too long (414).
    UriTooLong,
    /// A body in a format other than JSON (415).
    UnsupportedMediaType,
    /// A field has an invalid value (422).
    InvalidField,
    /// Too much at once from this caller (429).
    RateLimited,
    /// Request headers too large (431).
    HeadersTooLarge,
    /// Internal failure, cause logged (500).
    Internal,
    /// Try again later: no quorum, no replica (503).
    Unavailable,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UriTooLong,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::InvalidField,
        ErrorKind::RateLimited,
        ErrorKind::HeadersTooLarge,
        ErrorKind::Internal,
        ErrorKind::Unavailable,
    ];

    /// The HTTP status it is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::InvalidField => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The stable machine-readable code sent (see docs/API.md).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::InvalidField => "invalid_field",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// The kind an answer relayed as `status` carries (None for a success
    /// or a status this API does not send): the gateway only sees the
    /// status of what a service answered.
    pub fn from_status(status: u16) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.status() == status)
    }

    /// Whether the request was refused for what it asked or the state it
    /// met (a 4xx), rather than the system failing to answer (a 5xx).
    pub fn is_refusal(self) -> bool {
        !matches!(self, ErrorKind::Internal | ErrorKind::Unavailable)
    }
}

/// An error as sent to the client: `{"error":{code,message,details}}` with
/// `status` as the HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong: what code decides on.
    pub kind: ErrorKind,
    /// HTTP status (the kind's, as sent).
    pub status: u16,
    /// Stable machine-readable code (the kind's, as sent; see docs/API.md).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details (e.g. `field`, `conflicts`).
    pub details: Value,
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            status: kind.status(),
            code: kind.code().into(),
            message: message.into(),
            details: json!({}),
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    /// 401: no valid credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    /// 403: visible but not yours to change.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    /// 404: missing, or not visible to the caller.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }
    /// 405: the route exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrorKind::MethodNotAllowed,
            "this route does not accept that method",
        )
    }
    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// 412: the version the request expected is not the current one.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, message)
    }
    /// 413: body too large.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PayloadTooLarge, message)
    }
    /// 414: a request line too long.
    pub fn uri_too_long(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UriTooLong, message)
    }
    /// 431: request headers too large.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::HeadersTooLarge, message)
    }
    /// 415: a body in a format other than JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedMediaType, message)
    }
    /// 422: a field has an invalid value.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::InvalidField, message);
        e.details = json!({ "field": field });
        e
    }
    /// 429: too much at once from this caller; retry after `secs`
    /// (sent as `Retry-After`, and as `details.retry_after`).
    pub fn too_many_requests(message: impl Into<String>, secs: u64) -> Self {
        let mut e = Self::new(ErrorKind::RateLimited, message);
        e.details = json!({ "retry_after": secs });
        e
    }
    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// 500: logged with its cause; the client only gets a reference.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(%reference, %cause, "internal error");
        Self::new(
            ErrorKind::Internal,
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

/// The message, as a person reads it (for logs; the client gets [`ApiError::body`]).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_status_and_code() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_status(kind.status()), Some(kind));
            let same_code = ErrorKind::ALL.iter().filter(|k| k.code() == kind.code());
            assert_eq!(same_code.count(), 1, "{kind:?}");
            assert_eq!(kind.is_refusal(), kind.status() < 500, "{kind:?}");
        }
        for not_an_error in [200, 201, 204, 302, 418] {
            assert_eq!(ErrorKind::from_status(not_an_error), None);
        }
    }

    /// The wire shape does not depend on the kind being carried along.
    #[test]
    fn errors_are_sent_as_before() {
        let e = ApiError::invalid_field("title", "title is required");
        assert_eq!(
            (e.kind, e.status, e.code.as_str()),
            (ErrorKind::InvalidField, 422, "invalid_field")
        );
        assert_eq!(
            e.body(),
            json!({"error": {"code": "invalid_field", "message": "title is required", "details": {"field": "title"}}})
        );
        let e = ApiError::too_many_requests("slow down", 3);
        assert_eq!((e.status, e.code.as_str()), (429, "rate_limited"));
        assert_eq!(e.details, json!({"retry_after": 3}));
        let e = ApiError::not_found("event");
        assert_eq!(
            (e.kind, e.status, e.message.as_str()),
            (ErrorKind::NotFound, 404, "event not found")
        );
        assert_eq!(ApiError::internal("disk").kind, ErrorKind::Internal);
        assert_eq!(ApiError::method_not_allowed().status, 405);
    }
}
