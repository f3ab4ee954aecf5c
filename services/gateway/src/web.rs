//! The web app (`web/`, built to `web/dist`), served at `/` from
//! `--web-dir` on the same origin as the API: through the VIP and over
//! TLS like everything else, and with no cross-origin rules to keep.
//!
//! Only GET and HEAD outside `/v1/` reach the files; an unknown API route
//! keeps its JSON 404. Answers are compressed when the browser accepts
//! gzip, revalidated on every load (the bundle's names carry no hash, so
//! a cached copy could outlive a deploy), and locked down by a content
//! security policy that allows only this origin (and its WebSocket).

use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::HttpError;
use agenda_calendar::ApiError;

/// What the app may load and talk to: this origin only.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// Whether `req` is for the web app's files rather than the API.
fn is_app_request(req: &Request) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD) && !req.uri().path().starts_with("/v1/")
}

/// Answers a request no route took: a file of `dir` (when set and the
/// request is for the app), otherwise the API's JSON 404.
pub async fn fallback(dir: Option<&Path>, req: Request) -> Response {
    let Some(dir) = dir.filter(|_| is_app_request(&req)) else {
        return HttpError(ApiError::not_found("route")).into_response();
    };
    let files = ServeDir::new(dir).append_index_html_on_directories(true);
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mut resp = match files.precompressed_gzip().oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => match e {},
    };
    if resp.status() == axum::http::StatusCode::NOT_FOUND {
        return HttpError(ApiError::not_found("page")).into_response();
    }
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if gzip {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    resp
}
