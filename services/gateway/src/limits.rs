//! Limits on what one client can make the system do.
//!
//! Failed logins ([`LoginGuard`]): counted per account, per source address
//! and per both, each a leaky bucket. A full bucket answers 429 with
//! `Retry-After` before any password is checked, so guessing costs the
//! guesser time and the system nothing. Only failures fill the buckets:
//! a thousand people behind one office address logging in normally never
//! meet the limit; a thousand failing at once do.
//!
//! Failed and refused logins reach the audit log aggregated per account
//! and source ([`write_failed_logins`]: one entry each per period), so an
//! attack does not become one replicated write per attempt.
//!
//! Every request ([`guard`], one layer in front of every route): a request
//! line over [`MAX_URI_BYTES`] is 414 and headers over
//! [`MAX_HEADER_BYTES`] 431, in the error shape; a signed-in person may
//! send so many requests a second, after a burst (`--person-rate`), and an address
//! that keeps sending invalid tokens is slowed down
//! (`--address-failure-rate`). Both
//! aim at floods: a thousand people behind one address, each at a human
//! pace, never meet them. The token is checked here once and handed to
//! the routes.
//!
//! Overload ([`agenda_common::admission`]): the gateway works on at most
//! so many requests at once and holds at most `--max-connections`
//! connections. The request cap follows the latency of what is admitted
//! (at most `--max-concurrent-requests`; `--latency-tolerance` times the
//! no-load latency at most, see [`agenda_common::admission::Adaptive`]).
//! One request more is answered 503 with `Retry-After` at once, before
//! its token is even checked, so a flood costs little and the requests
//! admitted keep their latency; one connection more is closed at once. Health, readiness and metrics are
//! never refused (an overloaded gateway is alive, and agenda-vip must not
//! move the VIP for it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agenda_calendar::audit::AuditEntry;
use agenda_calendar::ApiError;

/// A leaky bucket: each failure adds one; the level drains at `per_sec`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// The size and drain rate of one kind of bucket.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Failures allowed in a burst.
    pub burst: f64,
    /// Failures forgiven per second after that.
    pub per_sec: f64,
}

/// One client's own allowance (no map: a WebSocket session's messages).
pub struct Allowance {
    bucket: Bucket,
    rate: Rate,
}

impl Allowance {
    pub fn new(rate: Rate) -> Self {
        Allowance {
            bucket: Bucket {
                level: 0.0,
                at: Instant::now(),
            },
            rate,
        }
    }

    /// Takes one; false when the burst is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let level = self.bucket.level(self.rate, now);
        if level + 1.0 > self.rate.burst {
            return false;
        }
        self.bucket = Bucket {
            level: level + 1.0,
            at: now,
        };
        true
    }
}

impl Bucket {
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec;
        (self.level - drained).max(0.0)
    }
}

/// Leaky buckets of one [`Rate`] by key: each [`Buckets::add`] adds one,
/// the level drains with time, and one more fits while the level stays
/// within the burst. At most [`MAX_BUCKETS`] keys are kept (drained ones
/// go first), so a flood of keys cannot grow the memory.
pub struct Buckets<K> {
    rate: Rate,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    pub fn new(rate: Rate) -> Self {
        Buckets {
            rate,
            map: Mutex::default(),
        }
    }

    /// How long until one more fits under `key` (None: it fits now).
    pub fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let over = map.get(key)?.level(self.rate, now) + 1.0 - self.rate.burst;
        (over > 0.0).then(|| Duration::from_secs_f64(over / self.rate.per_sec))
    }

    /// Adds one under `key`.
    pub fn add(&self, key: K, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            let rate = self.rate;
            map.retain(|_, b| b.level(rate, now) > 0.0);
            if map.len() >= MAX_BUCKETS {
                // Still full of live buckets (a flood of keys): the oldest
                // knowledge goes rather than the memory growing.
                map.clear();
            }
        }
        let rate = self.rate;
        let b = map.entry(key).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        b.level = b.level(rate, now) + 1.0;
        b.at = now;
    }

    /// Empties `key`'s bucket.
    pub fn forget(&self, key: &K) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// A 429 for a wait of `wait`, in whole seconds (at least one).
fn too_many(wait: Duration, what: &str) -> ApiError {
    let secs = wait.as_secs().max(1) + u64::from(wait.subsec_nanos() > 0 && wait.as_secs() > 0);
    ApiError::too_many_requests(format!("{what}; try again in {secs} s"), secs)
}

/// Failed-login limits.
pub struct LoginGuard {
    /// One account from one source: a person mistyping, or one guesser.
    both: Buckets<(String, IpAddr)>,
    /// One account from anywhere: guessing spread over many addresses.
    account: Buckets<String>,
    /// One source for any account: trying many accounts (an office NAT
    /// shares it, hence the size).
    source: Buckets<IpAddr>,
    /// Failures and refusals not yet in the audit log.
    unlogged: Mutex<HashMap<(String, IpAddr), Unlogged>>,
}

/// Failed (401) and refused (429) logins of one account from one source
/// since the last audit entry.
#[derive(Debug, Clone, Copy)]
struct Unlogged {
    failed: u64,
    refused: u64,
    first: chrono::DateTime<chrono::Utc>,
}

/// Accounts and sources with failures waiting for the audit log, at most;
/// beyond that they are counted under one entry for "others".
const MAX_UNLOGGED: usize = 10_000;

/// Buckets kept at most; drained ones are dropped first when full.
const MAX_BUCKETS: usize = 100_000;

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard::new(
            Rate {
                burst: 10.0,
                per_sec: 1.0 / 30.0,
            },
            Rate {
                burst: 50.0,
                per_sec: 1.0 / 10.0,
            },
            Rate {
                burst: 200.0,
                per_sec: 2.0,
            },
        )
    }
}

impl LoginGuard {
    pub fn new(both: Rate, account: Rate, source: Rate) -> Self {
        LoginGuard {
            both: Buckets::new(both),
            account: Buckets::new(account),
            source: Buckets::new(source),
            unlogged: Mutex::default(),
        }
    }

    fn note(&self, account: &str, source: IpAddr, refused: bool) {
        let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (account.trim().to_lowercase(), source);
        if unlogged.len() >= MAX_UNLOGGED && !unlogged.contains_key(&key) {
            key = (
                "(others)".into(),
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            );
        }
        let u = unlogged.entry(key).or_insert(Unlogged {
            failed: 0,
            refused: 0,
            first: chrono::Utc::now(),
        });
        if refused {
            u.refused += 1;
        } else {
            u.failed += 1;
        }
    }

    /// The audit entries of the failures noted since the last call.
    pub fn take_audit_entries(&self) -> Vec<AuditEntry> {
        let drained: Vec<_> = {
            let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
            unlogged.drain().collect()
        };
        drained
            .into_iter()
            .map(|((account, source), u)| {
                let mut e = AuditEntry::new(
                    None,
                    &account,
                    "login_failed",
                    serde_json::json!({"failed": u.failed, "refused": u.refused, "since": u.first}),
                );
                if !source.is_unspecified() {
                    e.source = source.to_string();
                }
                e
            })
            .collect()
    }

    /// Whether a login for `account` from `source` may be tried now; if
    /// not, the 429 says when.
    pub fn check(&self, account: &str, source: IpAddr) -> Result<(), ApiError> {
        let checked = self.check_at(account, source, Instant::now());
        if checked.is_err() {
            self.note(account, source, true);
        }
        checked
    }

    fn check_at(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), ApiError> {
        let account = account.trim().to_lowercase();
        let wait = [
            self.both.wait(&(account.clone(), source), now),
            self.account.wait(&account, now),
            self.source.wait(&source, now),
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            None => Ok(()),
            Some(w) => Err(too_many(w, "too many failed logins")),
        }
    }

    /// Records the outcome of a login that was tried.
    pub fn record(&self, account: &str, source: IpAddr, failed: bool) {
        if failed {
            self.note(account, source, false);
        }
        self.record_at(account, source, failed, Instant::now());
    }

    fn record_at(&self, account: &str, source: IpAddr, failed: bool, now: Instant) {
        let account = account.trim().to_lowercase();
        if !failed {
            // The person got it right: their own mistypes are forgiven
            // (not the account's or the source's, which others share).
            self.both.forget(&(account, source));
            return;
        }
        self.both.add((account.clone(), source), now);
        self.account.add(account, now);
        self.source.add(source, now);
    }
}

/// Longest request line (path and query) served.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Most bytes of request headers served (names and values).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest WebSocket message (and frame) a client may send.
pub const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Messages a client may send on a stream (it only ever needs to send a
/// fresh token now and then).
pub const WS_MESSAGES: Rate = Rate {
    burst: 20.0,
    per_sec: 2.0,
};

/// Most requests the gateway works on at once by default
/// (`--max-concurrent-requests`); the cap under it follows the latency
/// of what is admitted (`--latency-tolerance`).
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

/// The fewest requests at once an adaptive cap comes down to.
pub const MIN_CONCURRENT_REQUESTS: usize = 4;

/// Connections the gateway holds open at once by default
/// (`--max-connections`).
pub const MAX_CONNECTIONS: usize = 10_000;

/// The request limits' state.
pub struct RequestLimits {
    per_person: Buckets<uuid::Uuid>,
    bad_tokens: Buckets<IpAddr>,
    /// Requests worked on at once (connections are counted by
    /// [`PerSource`] with the same admission).
    admission: agenda_common::admission::Admission,
}

impl RequestLimits {
    /// Limits with `per_person` for each signed-in person
    /// (`--person-rate`, `--person-burst`) and `per_address` for the
    /// answers 401 (and 409 for a taken name or email) one address causes
    /// (`--address-failure-rate`, `--address-failure-burst`).
    pub fn new(per_person: Rate, per_address: Rate) -> Self {
        RequestLimits {
            per_person: Buckets::new(per_person),
            bad_tokens: Buckets::new(per_address),
            admission: agenda_common::admission::Admission::new(
                MAX_CONCURRENT_REQUESTS,
                MAX_CONNECTIONS,
            ),
        }
    }

    /// The same limits with `admission`'s caps on requests at once.
    pub fn with_admission(self, admission: agenda_common::admission::Admission) -> Self {
        RequestLimits { admission, ..self }
    }
}

/// Paths never refused for overload: cheap, and what health checks,
/// readiness probes and scrapers need most when the gateway is busy.
fn never_refused(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Largest iCalendar file `POST /v1/events/import` takes (another app's
/// export of years of events).
pub const IMPORT_BODY_BYTES: usize = 4 << 20;

/// The largest body a route takes: `--max-body-bytes`, more for imports.
pub fn body_limit(path: &str, max_body_bytes: usize) -> usize {
    if path == "/v1/events/import" {
        max_body_bytes.max(IMPORT_BODY_BYTES)
    } else {
        max_body_bytes
    }
}

/// The 503 of a request over `--max-concurrent-requests`.
fn overloaded() -> ApiError {
    let secs = agenda_common::admission::RETRY_AFTER.as_secs().max(1);
    ApiError::unavailable(format!("the service is at capacity; retry in {secs} s"))
        .with_details(serde_json::json!({ "reason": "overloaded", "retry_after": secs }))
}

/// The layer: sizes, then the address's invalid tokens, then the
/// gateway's capacity (503 over it), then the person's rate (the token is
/// verified here and handed on in the request's extensions); 401s are
/// counted against the address afterwards.
pub async fn guard(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let refuse = |e: ApiError| crate::error::HttpError(e).into_response();
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return refuse(ApiError::uri_too_long(format!(
            "the request line is {uri} bytes; at most {MAX_URI_BYTES}"
        )));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return refuse(ApiError::headers_too_large(format!(
            "the request headers are {headers} bytes; at most {MAX_HEADER_BYTES}"
        )));
    }
    // The body is read whole before anything answers: a refusal sent
    // while the client is still sending makes the connection close with
    // unread bytes, and the client then gets a reset, not the answer.
    let (parts, body) = req.into_parts();
    let max = body_limit(parts.uri.path(), state.max_body_bytes);
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(ApiError::payload_too_large(format!(
                "the body is over {max} bytes"
            )))
        }
    };
    let mut req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::listener::Addrs>>()
        .map(|c| c.0.peer.ip());
    let now = Instant::now();
    let limits = &state.requests;
    if let Some(wait) = source.and_then(|s| limits.bad_tokens.wait(&s, now)) {
        return refuse(too_many(
            wait,
            "too many requests with invalid credentials from this address",
        ));
    }
    // Admitted requests hold their place until answered; past the cap
    // the answer is immediate (and cheap: no token checked).
    let _place = if never_refused(req.uri().path()) {
        None
    } else {
        match limits.admission.try_request() {
            Some(permit) => Some(permit),
            None => return refuse(overloaded()),
        }
    };
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(crate::extract::strip_bearer);
    if let Some(Ok(session)) = token.map(|t| crate::extract::verify(&state, t)) {
        if let Some(wait) = limits.per_person.wait(&session.user, now) {
            return refuse(too_many(wait, "too many requests"));
        }
        limits.per_person.add(session.user, now);
        req.extensions_mut().insert(session);
    }
    // Probing which names and emails are taken (409 at registration or
    // an email change) counts like invalid credentials.
    let probing = matches!(
        (req.method().as_str(), req.uri().path()),
        ("POST", "/v1/auth/register") | ("PATCH", "/v1/me")
    );
    // A CalDAV client's first request carries no credentials and is
    // answered 401 with the scheme to use: only wrong ones count.
    let bare_dav = req.uri().path().starts_with("/dav")
        && !req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION);
    let resp = next.run(req).await;
    let kind = agenda_calendar::ErrorKind::from_status(resp.status().as_u16());
    let failed = (kind == Some(agenda_calendar::ErrorKind::Unauthenticated) && !bare_dav)
        || (probing && kind == Some(agenda_calendar::ErrorKind::Conflict));
    if let (Some(s), true) = (source, failed) {
        limits.bad_tokens.add(s, Instant::now());
    }
    resp
}

/// Connections one address may hold open at once (`--max-connections-per-source`).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 4096;

/// A listener that holds at most `max` open connections per client
/// address and at most its admission's `--max-connections` in all: one
/// more is closed at once (a flood of idle connections from one place, or
/// from everywhere, would otherwise hold every file descriptor).
pub struct PerSource<L> {
    inner: L,
    max: usize,
    open: std::sync::Arc<Mutex<HashMap<IpAddr, usize>>>,
    total: agenda_common::admission::Admission,
}

impl<L> PerSource<L> {
    pub fn new(inner: L, max: usize) -> Self {
        PerSource {
            inner,
            max,
            open: std::sync::Arc::default(),
            total: agenda_common::admission::Admission::new(
                MAX_CONCURRENT_REQUESTS,
                MAX_CONNECTIONS,
            ),
        }
    }

    /// The same listener with `admission`'s cap on connections in all.
    pub fn with_admission(self, total: agenda_common::admission::Admission) -> Self {
        PerSource { total, ..self }
    }
}

/// A connection counted against its address (and the total) until
/// dropped.
pub struct Counted<IO> {
    io: IO,
    _place: Place,
    _total: agenda_common::admission::Permit,
}

struct Place {
    ip: IpAddr,
    open: std::sync::Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl<IO> Counted<IO> {
    /// The connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<L> axum::serve::Listener for PerSource<L>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    type Io = Counted<L::Io>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            let ip = addr.ip();
            let Some(total) = self.total.try_connection() else {
                drop(io);
                continue;
            };
            let admitted = {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let n = open.entry(ip).or_insert(0);
                (*n < self.max).then(|| *n += 1).is_some()
            };
            if admitted {
                let place = Place {
                    ip,
                    open: self.open.clone(),
                };
                return (
                    Counted {
                        io,
                        _place: place,
                        _total: total,
                    },
                    addr,
                );
            }
            tracing::debug!(%ip, max = self.max, "connection refused: too many open from this address");
            drop(io);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How often failed logins are written to the audit log.
pub const AUDIT_EVERY: Duration = Duration::from_secs(10);

/// Writes the failed logins `guard` noted to the audit log every
/// [`AUDIT_EVERY`] (and once more at shutdown), one entry per account and
/// source, all in one transaction.
pub async fn write_failed_logins(
    guard: std::sync::Arc<crate::AppState>,
    store: agenda_calendar::store::Store,
    stop: agenda_common::shutdown::CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(AUDIT_EVERY) => false,
        };
        let entries = guard.logins.take_audit_entries();
        if !entries.is_empty() {
            let mut batch = agenda_calendar::store::Batch::default();
            let written = entries
                .iter()
                .try_for_each(|e| agenda_calendar::audit::record(&mut batch, e));
            let committed = match written {
                Ok(()) => store.commit(batch).await.map_err(|e| e.message),
                Err(e) => Err(e.message),
            };
            if let Err(e) = committed {
                tracing::warn!(error = %e, entries = entries.len(), "failed logins not written to the audit log");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        let r = |burst, per_sec| Rate { burst, per_sec };
        LoginGuard::new(r(3.0, 1.0), r(5.0, 1.0), r(8.0, 1.0))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn failures_fill_each_bucket_and_drain_with_time() {
        let g = guard();
        let t = Instant::now();
        for _ in 0..3 {
            g.check_at("Alice", A, t).unwrap();
            g.record_at("alice", A, true, t);
        }
        let e = g.check_at("ALICE", A, t).unwrap_err();
        assert_eq!(
            (e.status, e.details["retry_after"].as_u64()),
            (429, Some(1))
        );
        // Another account from the same source, and the same account from
        // elsewhere, still may try.
        g.check_at("bob", A, t).unwrap();
        g.check_at("alice", B, t).unwrap();
        // A second later one failure has drained.
        g.check_at("alice", A, t + Duration::from_secs(1)).unwrap();
        // The account's own bucket: guesses from many sources.
        g.record_at("alice", B, true, t);
        g.record_at("alice", B, true, t);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(g.check_at("alice", other, t).unwrap_err().status, 429);
    }

    #[test]
    fn a_source_trying_many_accounts_is_stopped_and_success_forgives_the_person() {
        let g = guard();
        let t = Instant::now();
        for i in 0..8 {
            g.record_at(&format!("user{i}"), A, true, t);
        }
        assert_eq!(g.check_at("someone", A, t).unwrap_err().status, 429);
        g.check_at("someone", B, t).unwrap();

        let g = guard();
        for _ in 0..3 {
            g.record_at("carol", B, true, t);
        }
        g.record_at("carol", B, false, t);
        g.check_at("carol", B, t).unwrap();
    }

    #[test]
    fn failures_are_aggregated_for_the_audit_log() {
        let g = guard();
        for _ in 0..5 {
            if g.check("Alice", A).is_ok() {
                g.record("alice", A, true);
            }
        }
        g.record("bob", B, true);
        g.record("carol", B, false);
        let mut entries = g.take_audit_entries();
        entries.sort_by(|a, b| a.actor.cmp(&b.actor));
        let counts: Vec<(String, String, u64, u64)> = entries
            .iter()
            .map(|e| {
                let n = |k: &str| e.details[k].as_u64().unwrap();
                (e.actor.clone(), e.source.clone(), n("failed"), n("refused"))
            })
            .collect();
        assert_eq!(
            counts,
            vec![
                ("alice".into(), "10.0.0.1".into(), 3, 2),
                ("bob".into(), "10.0.0.2".into(), 1, 0),
            ]
        );
        assert!(entries.iter().all(|e| e.action == "login_failed"));
        assert!(g.take_audit_entries().is_empty(), "drained");
    }

    #[test]
    fn an_allowance_refills_with_time() {
        let mut a = Allowance::new(Rate {
            burst: 2.0,
            per_sec: 1.0,
        });
        let t = Instant::now();
        assert!(a.take(t) && a.take(t));
        assert!(!a.take(t));
        assert!(a.take(t + Duration::from_secs(1)));
        assert!(!a.take(t + Duration::from_secs(1)));
    }

    #[test]
    fn request_buckets_hold_a_burst_then_a_rate() {
        let b: Buckets<u32> = Buckets::new(Rate {
            burst: 3.0,
            per_sec: 10.0,
        });
        let t = Instant::now();
        for _ in 0..3 {
            assert!(b.wait(&7, t).is_none());
            b.add(7, t);
        }
        let w = b.wait(&7, t).expect("full");
        assert!(w <= Duration::from_millis(100), "{w:?}");
        assert!(b.wait(&8, t).is_none(), "another key");
        assert!(b.wait(&7, t + Duration::from_millis(100)).is_none());
        let e = too_many(w, "slow down");
        assert_eq!(
            (e.status, e.details["retry_after"].as_u64()),
            (429, Some(1))
        );
    }

    /// Past `max` open connections from one address the next is closed at
    /// once; closing one makes room again.
    #[tokio::test]
    async fn connections_are_capped_per_address() {
        use axum::serve::Listener;
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = PerSource::new(tcp, 2);
        let (room, made) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let first = listener.accept().await.0;
            let _second = listener.accept().await.0;
            // Accepting on: the third is refused in there; then the server
            // lets one go and the next is admitted.
            let next = listener.accept();
            tokio::pin!(next);
            tokio::select! {
                _ = &mut next => panic!("admitted past the cap"),
                _ = made => {}
            }
            drop(first);
            next.await.1
        });
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), clients[2].read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the third connection was closed");
        room.send(()).unwrap();
        let fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
        let admitted = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("admitted once there is room")
            .unwrap();
        assert_eq!(admitted, fourth.local_addr().unwrap());
    }

    /// Over the total cap a connection is closed at once, whatever its
    /// address.
    #[tokio::test]
    async fn connections_are_capped_in_all() {
        use axum::serve::Listener;
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let admission = agenda_common::admission::Admission::new(10, 1);
        let mut listener = PerSource::new(tcp, 100).with_admission(admission.clone());
        let (seen, closed) = tokio::sync::oneshot::channel::<()>();
        let (room, made) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let first = listener.accept().await.0;
            // The second is closed in here while the first is open.
            let next = listener.accept();
            tokio::pin!(next);
            tokio::select! {
                _ = &mut next => panic!("admitted past the cap"),
                _ = closed => {}
            }
            drop(first);
            let _ = room.send(());
            next.await.1
        });
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the second connection was closed");
        seen.send(()).unwrap();
        made.await.unwrap();
        let third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let admitted = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("admitted once there is room")
            .unwrap();
        assert_eq!(admitted, third.local_addr().unwrap());
        assert_eq!(admission.refused().1, 1);
    }

    /// A request over the cap gets 503 in the error shape, saying why and
    /// when to come back (as `Retry-After` too); health, readiness and
    /// metrics are never refused.
    #[test]
    fn an_overload_refusal_says_when_to_come_back() {
        let e = overloaded();
        assert_eq!((e.status, e.code.as_str()), (503, "unavailable"));
        assert_eq!(e.details["reason"], "overloaded");
        assert_eq!(e.details["retry_after"], 1);
        let resp = axum::response::IntoResponse::into_response(crate::error::HttpError(e));
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert!(never_refused(path), "{path}");
        }
        for path in ["/v1/events", "/v1/stream", "/openapi.json", "/healthz/x"] {
            assert!(!never_refused(path), "{path}");
        }
    }

    #[test]
    fn successes_never_fill_a_bucket() {
        let g = guard();
        let t = Instant::now();
        for _ in 0..1000 {
            g.record_at("dave", A, false, t);
        }
        g.check_at("dave", A, t).unwrap();
        g.check_at("erin", A, t).unwrap();
    }
}
