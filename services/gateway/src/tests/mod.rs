//! In-process tests of the gateway: the router of [`crate::app`] driven
//! with `tower::ServiceExt::oneshot` (no socket, no other process) over a
//! fake upstream ([`fake::Fake`], a [`crate::upstream::Replicas`] that
//! answers, refuses, breaks or hangs as a test scripts it).
//!
//! - [`errors`]: the error shape on the wire (status, `{"error": ...}`,
//!   `x-request-id`, `Retry-After`), and what is never sent.
//! - [`extractors`]: bad bodies, content types, credentials, query
//!   strings and headers, each refused before any service is called.
//! - [`retries`]: which upstream failures are tried again on another
//!   replica and which are not (retry-safe calls against the others).
//! - [`shutdown`]: the drain deadline, over a real socket.
//!
//! Time is paused wherever the upstream's deadlines matter, so a hanging
//! replica costs nothing real.

mod errors;
mod extractors;
mod fake;
mod retries;
mod shutdown;
mod web;

use std::sync::Arc;
use std::time::Duration;

use agenda_common::auth::{SigningKeys, VerifyingKeys};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

use crate::extract::Session;
use crate::upstream::Upstream;
use crate::{limits, live, metrics, sessions, AppState};

use fake::Fake;

/// The deadline of one request in these tests (retries included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A gateway over a fake upstream.
struct Gateway {
    router: Router,
    fake: Arc<Fake>,
    /// Signs tokens the gateway accepts.
    signing: SigningKeys,
}

impl Gateway {
    /// A gateway whose upstream is `fake`, with its token keys loaded.
    fn new(fake: Fake) -> Gateway {
        Self::with_timeout(fake, REQUEST_TIMEOUT)
    }

    /// [`Gateway::new`] with another request deadline.
    fn with_timeout(fake: Fake, timeout: Duration) -> Gateway {
        Self::build(fake, timeout, None)
    }

    /// [`Gateway::new`] serving the web app's files from `dir`.
    fn with_web_dir(fake: Fake, dir: &std::path::Path) -> Gateway {
        Self::build(fake, REQUEST_TIMEOUT, Some(dir.to_path_buf()))
    }

    fn build(fake: Fake, timeout: Duration, web_dir: Option<std::path::PathBuf>) -> Gateway {
        let fake = Arc::new(fake);
        let signing = SigningKeys::generate().expect("token keys");
        let verifying: VerifyingKeys = signing.public().expect("public keys");
        let state = Arc::new(AppState {
            // Never reached: no route these tests call reads agenda-db
            // (readyz and the session-ending calls are left to the system
            // tests).
            db: DbClient::new(&["127.0.0.1:1"]).expect("db client"),
            upstream: Upstream::with_replicas(fake.clone(), timeout),
            keys: watch::channel(Some(verifying)).1,
            metrics: Arc::new(metrics::Metrics::new().expect("metrics")),
            hub: live::Hub::new(16),
            ws_heartbeat: Duration::from_secs(15),
            shutdown: CancellationToken::new(),
            logins: limits::LoginGuard::default(),
            https: false,
            requests: limits::RequestLimits::new(
                limits::Rate {
                    burst: 1000.0,
                    per_sec: 1000.0,
                },
                limits::Rate {
                    burst: 1000.0,
                    per_sec: 1000.0,
                },
            ),
            max_body_bytes: MAX_BODY,
            // Never loaded (no agenda-db): a token is checked up to its
            // session generation, which answers 503. Signed-in requests
            // carry the session the limits layer would have verified.
            sessions: Arc::new(sessions::Sessions::default()),
            verified: crate::verified::VerifiedTokens::default(),
            web_dir,
        });
        Gateway {
            router: crate::app(state, MAX_BODY),
            fake,
            signing,
        }
    }

    /// Sends `req` through the whole router; the answer's body as bytes.
    async fn send_raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }

    /// Sends `req` through the whole router.
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A valid access token of `user`.
    fn token(&self, user: Uuid) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        self.signing
            .issue(&user.to_string(), "alice", now, 600)
            .expect("token")
    }
}

/// `--max-body-bytes` of these tests.
const MAX_BODY: usize = 4096;

/// An answer, its body parsed.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts the DESIGN.md error shape with `status` and `code`, and
    /// returns the message.
    fn error(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{self:?}"
        );
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{:?}", self.body);
        assert!(error["details"].is_object(), "{:?}", self.body);
        let keys: Vec<&String> = self.body.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["error"], "nothing beside the error: {:?}", self.body);
        error["message"].as_str().expect("a message")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request with a JSON body.
fn json(method: Method, path: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// A request without a body.
fn bare(method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

/// `req` as `user` signed in: the session the limits layer hands on once
/// it has verified a token (see `extract::Authed`).
fn signed_in(mut req: Request<Body>, user: Uuid) -> Request<Body> {
    req.extensions_mut().insert(Session {
        user,
        generation: 0,
        expires_at: u64::MAX,
    });
    req
}
