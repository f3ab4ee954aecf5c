//! Request ids and per-route metrics: a latency histogram and status
//! counts, labelled by the route template (not the raw path, so ids do
//! not explode the label space).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The request id of the current request (from `x-request-id` or new).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The gateway's metrics.
pub struct Metrics {
    pub registry: Registry,
    latency: HistogramVec,
    responses: IntCounterVec,
    /// Open WebSocket sessions.
    pub ws_open: IntGauge,
    /// Sessions cut because the client did not read in time.
    pub ws_slow: IntCounter,
    /// Notifications written to WebSockets.
    pub ws_pushed: IntCounter,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "agenda_gateway_request_duration_seconds",
                "Time to answer an API request, by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "agenda_gateway_responses_total",
                "API responses, by route and status.",
            ),
            &["method", "route", "status"],
        )?;
        let ws_open = IntGauge::new("agenda_gateway_ws_open", "Open WebSocket sessions.")?;
        let ws_slow = IntCounter::new(
            "agenda_gateway_ws_slow_disconnects_total",
            "WebSocket sessions cut because the client did not read in time.",
        )?;
        let ws_pushed = IntCounter::new(
            "agenda_gateway_ws_notifications_total",
            "Notifications written to WebSockets.",
        )?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(ws_open.clone()))?;
        registry.register(Box::new(ws_slow.clone()))?;
        registry.register(Box::new(ws_pushed.clone()))?;
        Ok(Metrics {
            registry,
            latency,
            responses,
            ws_open,
            ws_slow,
            ws_pushed,
        })
    }

    /// Text exposition, the process-wide metrics included.
    pub fn render(&self) -> String {
        agenda_common::metrics::render(Some(&self.registry))
    }
}

const REQUEST_ID: &str = "x-request-id";

/// Middleware (outermost): takes the caller's `x-request-id` or makes
/// one, and echoes it on the response. Every line logged while the
/// request is served names it (a span), and the calls it makes carry it
/// on to the services and agenda-db.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = tracing::Instrument::instrument(
        agenda_common::telemetry::with_request_id(id.clone(), next.run(req)),
        span,
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Route middleware (after routing, so the route template is known):
/// times the request, counts the status, logs failures.
pub async fn track(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics
        .latency
        .with_label_values(&[&method, &route])
        .observe(elapsed.as_secs_f64());
    metrics
        .responses
        .with_label_values(&[&method, &route, &status.to_string()])
        .inc();
    if resp.status().is_server_error() {
        tracing::warn!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    }
    resp
}
