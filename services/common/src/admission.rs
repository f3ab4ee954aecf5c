//! Admission control: overload is refused, not absorbed.
//!
//! Every server caps the requests it works on at once and the connections
//! it holds ([`Admission`]). Past a cap the answer comes at once and costs
//! next to nothing: a gRPC request gets UNAVAILABLE with a retry hint
//! ([`RETRY_PUSHBACK`] metadata, see [`is_overloaded`]), the gateway
//! answers 503 with `Retry-After`, and one connection too many is closed
//! as soon as it is accepted. Nothing waits in a queue without bound, so
//! memory stays bounded and the requests admitted keep their latency
//! while the rest are told to come back.
//!
//! - [`Admission`]: the two counters and their caps, shared by a
//!   process's servers; [`Admission::try_request`] and
//!   [`Admission::try_connection`] hand out permits that give their place
//!   back when dropped.
//! - [`Adaptive`]: a request cap that follows the latency of what it
//!   admits (the gateway's): the concurrency the system behind can take
//!   is measured rather than guessed, so a flood is cut to it on any
//!   machine while ordinary bursts keep their room.
//! - [`GrpcLayer`]: the tower layer a tonic server gets through
//!   [`Admission::grpc_server`] (raft streams are never refused: they are
//!   the cluster's own traffic and live as long as the connection).
//! - [`Admission::connections`]: wraps a server's stream of accepted
//!   connections.
//! - [`Args`]: the two flags of the stateless services, with their
//!   defaults.
//!
//! `net::grpc_server`, `net::incoming` and `net::tls_incoming` apply the
//! default caps, so every gRPC server has them; a process with flags for
//! them uses [`Admission::grpc_server`] and the `*_admitted` listeners.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::transport::server::Connected;

/// Requests a users or groups replica works on at once by default: far
/// above what the gateways send it (each gateway caps what it admits
/// itself), so only a flood from elsewhere meets it.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Connections a gRPC server holds at once by default (its callers are
/// the other processes of the deployment, each with a few).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a refused caller is asked to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The gRPC metadata key of the retry hint on a refusal (gRPC's own
/// retry pushback, in milliseconds).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The gRPC paths never refused: raft's stream between agenda-db nodes
/// (refusing it would cost the cluster its leader, and it holds its call
/// open as long as the connection lives).
const EXEMPT_GRPC_PREFIXES: &[&str] = &["/agenda.raft.v1.Raft/"];

/// The caps of one process and what is admitted now. Clones share the
/// counters.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_requests: usize,
    max_connections: usize,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Refusals since the process started (requests, connections).
    refused_requests: AtomicU64,
    refused_connections: AtomicU64,
    /// Refusals not yet logged, and when the last line was written (ms
    /// since `born`): one warning a second at most, however many.
    unlogged: AtomicU64,
    logged_at_ms: AtomicU64,
    born: Instant,
    /// The request cap follows the latency of what is admitted (the
    /// gateway's); `None`: `max_requests` always.
    adaptive: Option<Limiter>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_CONNECTIONS)
    }
}

impl Admission {
    /// At most `max_requests` requests at once and `max_connections`
    /// open connections (each at least 1).
    pub fn new(max_requests: usize, max_connections: usize) -> Self {
        Self::build(max_requests, max_connections, None)
    }

    /// Like [`Admission::new`], but the request cap follows the latency of
    /// what is admitted (see [`Adaptive`]), between `adaptive.min` and
    /// `max_requests`.
    pub fn adaptive(max_requests: usize, max_connections: usize, adaptive: Adaptive) -> Self {
        let max = max_requests.max(1);
        Self::build(max, max_connections, Some(Limiter::new(adaptive, max)))
    }

    fn build(max_requests: usize, max_connections: usize, adaptive: Option<Limiter>) -> Self {
        Admission {
            inner: Arc::new(Inner {
                max_requests: max_requests.max(1),
                max_connections: max_connections.max(1),
                requests: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
                refused_requests: AtomicU64::new(0),
                refused_connections: AtomicU64::new(0),
                unlogged: AtomicU64::new(0),
                logged_at_ms: AtomicU64::new(0),
                born: Instant::now(),
                adaptive,
            }),
        }
    }

    /// The request cap (the ceiling of an adaptive one).
    pub fn max_requests(&self) -> usize {
        self.inner.max_requests
    }

    /// The request cap now (below [`Admission::max_requests`] while an
    /// adaptive cap is down).
    pub fn request_cap(&self) -> usize {
        match &self.inner.adaptive {
            Some(l) => l.cap(),
            None => self.inner.max_requests,
        }
    }

    /// The connection cap.
    pub fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// Requests being worked on now.
    pub fn in_flight(&self) -> usize {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Requests and connections refused since the start.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.inner.refused_requests.load(Ordering::Relaxed),
            self.inner.refused_connections.load(Ordering::Relaxed),
        )
    }

    /// A place for one more request, or `None` (refuse it) at the cap.
    pub fn try_request(&self) -> Option<Permit> {
        let i = &self.inner;
        if let Some(n) = take(&i.requests, self.request_cap()) {
            if let Some(l) = &i.adaptive {
                l.admitted(n);
            }
            return Some(Permit {
                inner: self.inner.clone(),
                kind: Kind::Request,
                admitted: Instant::now(),
            });
        }
        if let Some(l) = &i.adaptive {
            l.refused();
        }
        i.refused_requests.fetch_add(1, Ordering::Relaxed);
        self.note_refusal("request");
        None
    }

    /// A place for one more connection, or `None` (close it) at the cap.
    pub fn try_connection(&self) -> Option<Permit> {
        let i = &self.inner;
        if take(&i.connections, i.max_connections).is_some() {
            return Some(Permit {
                inner: self.inner.clone(),
                kind: Kind::Connection,
                admitted: Instant::now(),
            });
        }
        i.refused_connections.fetch_add(1, Ordering::Relaxed);
        self.note_refusal("connection");
        None
    }

    /// Logs refusals, one line a second at most with how many there were.
    fn note_refusal(&self, what: &'static str) {
        crate::metrics::refused(what);
        let i = &self.inner;
        i.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = i.born.elapsed().as_millis() as u64;
        let last = i.logged_at_ms.load(Ordering::Relaxed);
        if (now.saturating_sub(last) >= 1000 || last == 0)
            && i.logged_at_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = i.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused = n,
                latest = what,
                request_cap = self.request_cap(),
                max_connections = i.max_connections,
                "overloaded: refusing what is over the caps (requests answered at once to retry later, connections closed)"
            );
        }
    }

    /// The tower layer that caps a tonic server's requests with this
    /// admission (see [`GrpcLayer`]).
    pub fn layer(&self) -> GrpcLayer {
        GrpcLayer {
            admission: self.clone(),
        }
    }

    /// A gRPC server builder with the shared link settings
    /// ([`crate::net::grpc_server`]) whose requests this admission caps.
    pub fn grpc_server(&self) -> AdmittedServer {
        crate::net::grpc_builder().layer(self.layer())
    }

    /// `incoming` with at most [`Admission::max_connections`] connections
    /// open at once: one more is closed as soon as it is accepted, and
    /// each admitted one gives its place back when it closes.
    pub fn connections<S, IO, E>(&self, incoming: S) -> Connections<S>
    where
        S: Stream<Item = Result<IO, E>>,
    {
        Connections {
            inner: Box::pin(incoming),
            admission: self.clone(),
        }
    }
}

/// Takes one place of `max` on `count`: how many are taken with it, or
/// `None` when none is left.
fn take(count: &AtomicUsize, max: usize) -> Option<usize> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|n| n + 1)
}

/// A tonic server builder whose requests an [`Admission`] caps.
pub type AdmittedServer =
    tonic::transport::Server<tower::layer::util::Stack<GrpcLayer, tower::layer::util::Identity>>;

/// A router of an [`AdmittedServer`].
pub type AdmittedRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<GrpcLayer, tower::layer::util::Identity>,
>;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Request,
    Connection,
}

/// One admitted request or connection; its place is given back on drop.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    kind: Kind,
    admitted: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let count = match self.kind {
            Kind::Request => {
                if let Some(l) = &self.inner.adaptive {
                    l.done(self.admitted.elapsed());
                }
                &self.inner.requests
            }
            Kind::Connection => &self.inner.connections,
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How an adaptive request cap ([`Admission::adaptive`]) moves.
///
/// Requests admitted are timed from admission to answer, in windows of
/// about 100 ms. The usual latency is a slow average of the windows in
/// which the cap had room to spare (nothing refused, at most half of it
/// used), so neither a flood nor clients resending as soon as answered
/// (both fill the cap) teach it that slow is normal.
///
/// A window in which the cap held back a load well over what it served
/// (over the last few windows, as many refused as answered at least: a
/// load of twice what is served) and whose answers took over
/// `tolerance` times the usual brings
/// the cap down in proportion (by a fifth at least, half at most; never
/// under `min`). Any other window in which the cap held something back
/// (a refusal, or the cap reached) lets it grow by its square root: a
/// burst of ordinary traffic, or the end of a flood. Out of such windows
/// it stays within twice the most requests seen at once lately (and at
/// least [`IDLE_CAP`]), so a flood that starts meets a cap near what the
/// load needed, not the ceiling.
///
/// Under a flood the cap settles where the admitted requests take about
/// `tolerance` times their usual time: the concurrency the system behind
/// can take, found by measuring it, however fast its machines are.
#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    /// The fewest requests at once the cap goes down to.
    pub min: usize,
    /// How many times the usual latency the admitted requests' mean
    /// latency may reach under a flood before the cap comes down.
    pub tolerance: f64,
}

/// The least an adaptive cap keeps while the load is light (bursts of
/// ordinary traffic fit in it).
pub const IDLE_CAP: usize = 32;

/// Shortest window of latency samples.
const WINDOW: Duration = Duration::from_millis(100);
/// Samples a window needs (it waits up to [`MAX_WINDOW`] for them).
const WINDOW_SAMPLES: u32 = 6;
const MAX_WINDOW: Duration = Duration::from_secs(1);
/// Weight of one window in the usual latency (some five seconds of
/// windows make it).
const USUAL_WEIGHT: f64 = 0.02;
/// Weight of one window in the refusals per answer (a few windows make
/// it: a burst passes, a flood stays).
const REFUSING_WEIGHT: f64 = 0.3;
/// What a slow window leaves of the cap, at most.
const DECREASE: f64 = 0.8;
/// How fast the memory of the most requests at once fades per window
/// (by half in about seven seconds).
const PEAK_DECAY: f64 = 0.99;

/// The state of an adaptive cap.
#[derive(Debug)]
struct Limiter {
    how: Adaptive,
    max: f64,
    /// The cap now, read by every admission.
    cap: AtomicUsize,
    control: std::sync::Mutex<Control>,
}

#[derive(Debug)]
struct Control {
    /// The cap, unrounded.
    limit: f64,
    /// The usual latency (seconds): a slow average of the windows in
    /// which the cap had room to spare.
    usual: Option<f64>,
    /// The most requests at once lately (decaying).
    peak: f64,
    /// Refusals per answer over the last few windows.
    refusing: f64,
    window: Window,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    samples: u32,
    total: Duration,
    refused: u32,
    peak: usize,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            opened: now,
            samples: 0,
            total: Duration::ZERO,
            refused: 0,
            peak: 0,
        }
    }
}

impl Limiter {
    fn new(how: Adaptive, max: usize) -> Self {
        let min = how.min.clamp(1, max);
        let start = IDLE_CAP.clamp(min, max);
        Limiter {
            how: Adaptive { min, ..how },
            max: max as f64,
            cap: AtomicUsize::new(start),
            control: std::sync::Mutex::new(Control {
                limit: start as f64,
                usual: None,
                peak: 0.0,
                refusing: 0.0,
                window: Window::new(Instant::now()),
            }),
        }
    }

    fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admitted(&self, in_flight: usize) {
        let mut c = self.control();
        c.window.peak = c.window.peak.max(in_flight);
    }

    fn refused(&self) {
        self.refused_at(Instant::now());
    }

    fn refused_at(&self, now: Instant) {
        let mut c = self.control();
        c.window.refused += 1;
        self.maybe_close(&mut c, now);
    }

    fn done(&self, latency: Duration) {
        self.done_at(latency, Instant::now());
    }

    fn done_at(&self, latency: Duration, now: Instant) {
        let mut c = self.control();
        c.window.samples += 1;
        c.window.total += latency;
        self.maybe_close(&mut c, now);
    }

    /// Closes the window when it has run long enough: moves the cap.
    fn maybe_close(&self, c: &mut Control, now: Instant) {
        let open = now.saturating_duration_since(c.window.opened);
        if open < WINDOW || (c.window.samples < WINDOW_SAMPLES && open < MAX_WINDOW) {
            return;
        }
        let w = std::mem::replace(&mut c.window, Window::new(now));
        let pressed = w.refused > 0 || w.peak >= self.cap();
        if w.samples > 0 {
            let mean = w.total.as_secs_f64() / f64::from(w.samples);
            // Only a cap that holds the load back moves (lowering one that
            // is not reached would make nothing faster), and it comes down
            // only for a load well over what is served (as many refused as
            // answered, at least, over the last few windows): a burst of
            // ordinary traffic that meets the cap and slows answers is not
            // a flood, and the cap makes room for it. It
            // comes down in proportion to how slow the answers are (by a
            // fifth at least, half at most), so a flood that starts meets
            // a cap near the right one within a few windows.
            let ratio = (f64::from(w.refused) / f64::from(w.samples)).min(4.0);
            c.refusing += REFUSING_WEIGHT * (ratio - c.refusing);
            let flooded = c.refusing >= 1.0;
            let target = c.usual.map(|u| self.how.tolerance * u);
            match target {
                Some(t) if pressed && flooded && mean > t => {
                    c.limit *= (t / mean).clamp(0.5, DECREASE);
                }
                _ if pressed => c.limit += c.limit.sqrt(),
                _ => {}
            }
            // The usual latency is learnt only while the cap had room to
            // spare: a load that fills it (a flood, or clients that send
            // again as soon as answered) cannot teach it that slow is
            // normal.
            if !pressed && w.peak * 2 <= self.cap() {
                c.usual = Some(match c.usual {
                    None => mean,
                    Some(u) => u + USUAL_WEIGHT * (mean - u),
                });
            }
        }
        c.peak = (w.peak as f64).max(c.peak * PEAK_DECAY);
        let headroom = (2.0 * c.peak).max(IDLE_CAP as f64);
        c.limit = c.limit.min(headroom).clamp(self.how.min as f64, self.max);
        self.cap.store(c.limit.round() as usize, Ordering::Relaxed);
    }
}

/// The status of a gRPC request refused over the cap: UNAVAILABLE, with
/// [`RETRY_PUSHBACK`] saying when to try again.
pub fn overloaded_status() -> tonic::Status {
    overloaded_because("overloaded: too many requests at once; retry after the pushback")
}

/// [`overloaded_status`] with its own message (what was full).
pub fn overloaded_because(message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    if let Ok(v) = RETRY_AFTER.as_millis().to_string().parse() {
        status.metadata_mut().insert(RETRY_PUSHBACK, v);
    }
    status
}

/// Whether `status` is a refusal over a server's cap (a caller should wait
/// [`RETRY_AFTER`] rather than try another replica at once: they are all
/// as busy, and retrying multiplies the load).
pub fn is_overloaded(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.metadata().contains_key(RETRY_PUSHBACK)
}

/// The tower layer of [`Admission::grpc_server`]: a request over the cap
/// is answered UNAVAILABLE at once (see [`overloaded_status`]); an
/// admitted one holds its place until its response is ready (for a
/// streaming response, until the stream starts).
#[derive(Clone, Debug)]
pub struct GrpcLayer {
    admission: Admission,
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcAdmit<S>;

    fn layer(&self, inner: S) -> GrpcAdmit<S> {
        GrpcAdmit {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// The service of [`GrpcLayer`].
#[derive(Clone, Debug)]
pub struct GrpcAdmit<S> {
    inner: S,
    admission: Admission,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<tonic::codegen::http::Request<B>> for GrpcAdmit<S>
where
    S: tower::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<R>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = tonic::codegen::http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<tonic::codegen::http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if never_refused(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        match self.admission.try_request() {
            Some(permit) => {
                let fut = inner.call(req);
                Box::pin(async move {
                    let resp = fut.await;
                    drop(permit);
                    resp
                })
            }
            None => Box::pin(std::future::ready(Ok(overloaded_status().into_http()))),
        }
    }
}

/// Whether a gRPC path is exempt from the cap.
fn never_refused(path: &str) -> bool {
    EXEMPT_GRPC_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The accepted connections of [`Admission::connections`].
#[derive(Debug)]
pub struct Connections<S> {
    inner: Pin<Box<S>>,
    admission: Admission,
}

impl<S, IO, E> Stream for Connections<S>
where
    S: Stream<Item = Result<IO, E>>,
{
    type Item = Result<Admitted<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // A burst of connections over the cap is closed a batch at a
        // time, so the task gives others a turn.
        for _ in 0..64 {
            let io = match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(io))) => io,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match self.admission.try_connection() {
                Some(permit) => {
                    return Poll::Ready(Some(Ok(Admitted {
                        io,
                        _permit: permit,
                    })))
                }
                // Closed at once: a connection nobody will serve must not
                // hold a file descriptor.
                None => drop(io),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// An admitted connection: the wrapped one, counted until dropped.
#[derive(Debug)]
pub struct Admitted<IO> {
    io: IO,
    _permit: Permit,
}

impl<IO> Admitted<IO> {
    /// The connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The caps of a stateless service (agenda-users, agenda-groups), to
/// flatten into its flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Requests served at once; one more is answered UNAVAILABLE at once
    /// with a retry hint (`grpc-retry-pushback-ms`) instead of waiting.
    #[arg(long, env = "AGENDA_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,
    /// Connections held open at once; one more is closed as soon as it is
    /// accepted. Keep it under the process's file descriptor limit.
    #[arg(long, env = "AGENDA_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
}

impl Args {
    /// The admission these flags describe.
    pub fn admission(&self) -> Admission {
        Admission::new(
            usize::try_from(self.max_concurrent_requests).unwrap_or(usize::MAX),
            usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    #[test]
    fn permits_count_and_give_their_place_back() {
        let a = Admission::new(2, 1);
        let (p1, p2) = (a.try_request().unwrap(), a.try_request().unwrap());
        assert!(a.try_request().is_none(), "over the cap");
        assert_eq!((a.in_flight(), a.refused()), (2, (1, 0)));
        drop(p1);
        let _p3 = a.try_request().expect("room again");
        let c = a.try_connection().unwrap();
        assert!(a.try_connection().is_none());
        drop((c, p2));
        assert_eq!((a.in_flight(), a.open_connections()), (1, 0));
        assert_eq!(a.refused(), (1, 1));
    }

    #[test]
    fn raft_is_never_refused_and_refusals_say_so() {
        assert!(never_refused("/agenda.raft.v1.Raft/Send"));
        assert!(!never_refused("/agenda.db.v1.Db/Range"));
        assert!(!never_refused("/agenda.calendar.v1.Users/Call"));
        let s = overloaded_status();
        assert!(is_overloaded(&s));
        assert_eq!(s.metadata().get(RETRY_PUSHBACK).unwrap(), "1000");
        assert!(!is_overloaded(&tonic::Status::unavailable("no leader")));
    }

    /// A Users service whose calls wait until told to finish.
    struct Held(Arc<tokio::sync::Semaphore>);

    #[tonic::async_trait]
    impl agenda_proto::calendar::users_server::Users for Held {
        async fn call(
            &self,
            _: tonic::Request<agenda_proto::calendar::CallRequest>,
        ) -> Result<tonic::Response<agenda_proto::calendar::CallReply>, tonic::Status> {
            let _ = self
                .0
                .acquire()
                .await
                .map_err(|_| tonic::Status::aborted("closed"))?;
            Ok(tonic::Response::new(agenda_proto::calendar::CallReply {
                status: 200,
                body: Vec::new(),
            }))
        }
    }

    /// Over the cap a call is answered UNAVAILABLE with the pushback at
    /// once, while the admitted ones wait for their handler; once they
    /// finish there is room again.
    #[tokio::test]
    async fn a_grpc_server_refuses_over_its_cap_at_once() {
        use agenda_proto::calendar::users_client::UsersClient;
        use agenda_proto::calendar::users_server::UsersServer;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let admission = Admission::new(2, 100);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            admission
                .grpc_server()
                .add_service(UsersServer::new(Held(gate.clone())))
                .serve_with_incoming(crate::net::incoming_admitted(listener, &admission)),
        );
        let client = UsersClient::new(crate::net::endpoint(&addr).unwrap().connect_lazy());
        let call = |mut c: UsersClient<tonic::transport::Channel>| async move {
            c.call(agenda_proto::calendar::CallRequest::default()).await
        };
        let held: Vec<_> = (0..2).map(|_| tokio::spawn(call(client.clone()))).collect();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while admission.in_flight() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "two calls admitted");
        let started = Instant::now();
        let refused = call(client.clone()).await.unwrap_err();
        assert!(is_overloaded(&refused), "{refused:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered at once"
        );
        gate.add_permits(2);
        for h in held {
            assert_eq!(h.await.unwrap().unwrap().into_inner().status, 200);
        }
        gate.add_permits(1);
        assert_eq!(call(client).await.unwrap().into_inner().status, 200);
        assert_eq!(admission.refused().0, 1);
    }

    /// Feeds `limiter` one window starting at `t`: `in_flight` at most,
    /// `answered` answers taking `latency`, `refused` refusals; the time
    /// after it.
    fn window(
        limiter: &Limiter,
        t: Instant,
        in_flight: usize,
        answered: u32,
        latency: Duration,
        refused: u32,
    ) -> Instant {
        limiter.admitted(in_flight);
        for _ in 0..refused {
            limiter.refused_at(t);
        }
        for _ in 0..answered.saturating_sub(1) {
            limiter.done_at(latency, t);
        }
        let end = t + WINDOW;
        limiter.done_at(latency, end);
        end
    }

    /// The adaptive cap: room for ordinary bursts, down to what keeps the
    /// answers near their usual time under a flood (and no lower than the
    /// floor), back up once the flood is over; a burst that meets the cap
    /// without a flood behind it makes room instead.
    #[test]
    fn an_adaptive_cap_follows_the_latency_of_what_it_admits() {
        let limiter = Limiter::new(
            Adaptive {
                min: 4,
                tolerance: 2.0,
            },
            256,
        );
        let ms = Duration::from_millis;
        let mut t = Instant::now();
        assert_eq!(limiter.cap(), IDLE_CAP);
        // Ordinary load: 20 ms answers, a few at once; the cap keeps its
        // room for bursts.
        for _ in 0..50 {
            t = window(&limiter, t, 5, 10, ms(20), 0);
        }
        assert_eq!(limiter.cap(), IDLE_CAP);
        // A flood: the cap full, ten times as much refused, answers at
        // 200 ms: the cap comes down, to the floor at most.
        for _ in 0..5 {
            let cap = limiter.cap();
            t = window(&limiter, t, cap, 10, ms(200), 100);
            assert!(
                limiter.cap() < cap || cap == 4,
                "{} after {cap}",
                limiter.cap()
            );
        }
        for _ in 0..30 {
            let cap = limiter.cap();
            t = window(&limiter, t, cap, 10, ms(200), 100);
        }
        assert_eq!(limiter.cap(), 4, "down to the floor");
        // Answers back to their usual time, the flood still there: the
        // cap grows until they are slow again.
        let cap = limiter.cap();
        t = window(&limiter, t, cap, 10, ms(25), 100);
        assert!(limiter.cap() > cap, "grows while answers are fast");
        // The flood over: bursts meet the cap with a few refusals and
        // slower answers; that is no flood, the cap makes room (within a
        // few seconds).
        for _ in 0..25 {
            let cap = limiter.cap();
            t = window(&limiter, t, cap, 20, ms(60), 1);
        }
        assert!(limiter.cap() >= IDLE_CAP, "{}", limiter.cap());
        // Clients that send again as soon as answered (the cap full, slow
        // answers, nothing refused) do not teach it that slow is usual:
        // the next flood is cut as the first was.
        for _ in 0..50 {
            let cap = limiter.cap();
            t = window(&limiter, t, cap, 10, ms(300), 0);
        }
        let before = limiter.cap();
        for _ in 0..10 {
            let cap = limiter.cap();
            t = window(&limiter, t, cap, 10, ms(300), 100);
        }
        assert!(
            limiter.cap() < before / 2,
            "{} after {before}",
            limiter.cap()
        );
    }

    /// One connection over the cap is closed as soon as it is accepted;
    /// closing an admitted one makes room.
    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let admission = Admission::new(10, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = crate::net::incoming_admitted(listener, &admission);
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let first_in = accepted.next().await.unwrap().unwrap();
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(300), accepted.next()).await;
        assert!(next.is_err(), "the second is not handed to the server");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the second connection was closed");
        assert_eq!(admission.refused().1, 1);
        drop(first_in);
        let _third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let third_in = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .expect("room again");
        assert!(third_in.is_some());
        assert_eq!(admission.open_connections(), 1);
    }
}
