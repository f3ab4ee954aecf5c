//! Metrics every process shares, in the process-wide default registry:
//! its build, its calls to agenda-db, its admission refusals. A process's
//! own metrics live in its own registry; `/metrics` renders both
//! ([`render`]).
//!
//! Names (the dashboard in `deploy/grafana/` and the rules in
//! `deploy/prometheus/` rely on them; `tests/tests/observability.rs`
//! checks every name they use is exported):
//! - `agenda_build_info{process,version}`: 1.
//! - `agenda_db_client_call_duration_seconds{kind}`,
//!   `agenda_db_client_errors_total{kind}`: calls to agenda-db by kind
//!   (read, write, lease, watch, other), retries and failover included.
//! - `agenda_admission_refused_total{what}`: requests and connections
//!   refused over the caps (what: request, connection).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

/// Latency buckets of every request-like histogram (seconds): fine
/// around the 50 ms target, coarse up to the 10 s deadlines.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What kind of agenda-db call a duration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCall {
    /// A range or a read-only transaction.
    Read,
    /// A put, delete or writing transaction (one raft entry).
    Write,
    /// Lease grant, renewal or revocation.
    Lease,
    /// Opening a watch.
    Watch,
    /// Cluster status, membership, snapshots, compaction.
    Other,
}

impl DbCall {
    fn label(self) -> &'static str {
        match self {
            DbCall::Read => "read",
            DbCall::Write => "write",
            DbCall::Lease => "lease",
            DbCall::Watch => "watch",
            DbCall::Other => "other",
        }
    }
}

struct Shared {
    build: IntGaugeVec,
    db_calls: HistogramVec,
    db_errors: IntCounterVec,
    refused: IntCounterVec,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    let build = IntGaugeVec::new(
        Opts::new(
            "agenda_build_info",
            "1, labelled with the process and its version.",
        ),
        &["process", "version"],
    )
    .expect("static metric options are valid");
    let db_calls = HistogramVec::new(
        HistogramOpts::new(
            "agenda_db_client_call_duration_seconds",
            "Calls to agenda-db by kind, retries and failover included.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["kind"],
    )
    .expect("static metric options are valid");
    let db_errors = IntCounterVec::new(
        Opts::new(
            "agenda_db_client_errors_total",
            "Calls to agenda-db that failed after their retries, by kind.",
        ),
        &["kind"],
    )
    .expect("static metric options are valid");
    let refused = IntCounterVec::new(
        Opts::new(
            "agenda_admission_refused_total",
            "Requests and connections refused over the admission caps (overload).",
        ),
        &["what"],
    )
    .expect("static metric options are valid");
    // Every series exists from the start (at 0), so a rate over the
    // window and an alert on it see a change from nothing.
    for kind in ["read", "write", "lease", "watch", "other"] {
        db_errors.with_label_values(&[kind]);
    }
    for what in ["request", "connection"] {
        refused.with_label_values(&[what]);
    }
    let r = prometheus::default_registry();
    for c in [
        Box::new(build.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(db_calls.clone()),
        Box::new(db_errors.clone()),
        Box::new(refused.clone()),
    ] {
        // Registered once, by this initializer only.
        let _ = r.register(c);
    }
    Shared {
        build,
        db_calls,
        db_errors,
        refused,
    }
});

/// Records which process this is (`agenda_build_info`); called once at
/// start by the shared `main`.
pub fn set_process(process: &str) {
    SHARED
        .build
        .with_label_values(&[process, env!("CARGO_PKG_VERSION")])
        .set(1);
}

/// One agenda-db call done.
pub fn db_call(kind: DbCall, took: Duration, ok: bool) {
    let s = &*SHARED;
    s.db_calls
        .with_label_values(&[kind.label()])
        .observe(took.as_secs_f64());
    if !ok {
        s.db_errors.with_label_values(&[kind.label()]).inc();
    }
}

/// One request or connection refused by admission control.
pub fn refused(what: &'static str) {
    SHARED.refused.with_label_values(&[what]).inc();
}

/// The text exposition of `own` (a process's registry) followed by the
/// shared metrics.
pub fn render(own: Option<&prometheus::Registry>) -> String {
    LazyLock::force(&SHARED);
    let mut families = own.map(|r| r.gather()).unwrap_or_default();
    families.extend(prometheus::gather());
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %e, "could not render metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` (the shared registry, where processes without a
/// registry of their own put theirs) and `/healthz` on `listener` until
/// `shutdown`: the operators' port of agenda-users and agenda-groups
/// (`--http`). Plaintext, like the supervisor's and agenda-vip's: it
/// carries counts, never data or credentials.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(None),
                )
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_metrics_render_with_a_process_registry() {
        set_process("agenda-test");
        db_call(DbCall::Write, Duration::from_millis(3), false);
        refused("request");
        let own = prometheus::Registry::new();
        let g = prometheus::IntGauge::new("agenda_test_own", "own").unwrap();
        own.register(Box::new(g)).unwrap();
        let text = render(Some(&own));
        for name in [
            "agenda_test_own",
            "agenda_build_info{process=\"agenda-test\"",
            "agenda_db_client_call_duration_seconds_bucket{kind=\"write\"",
            // Other tests of this process count too: names, not values.
            "agenda_db_client_errors_total{kind=\"write\"} ",
            "agenda_admission_refused_total{what=\"request\"} ",
            "agenda_admission_refused_total{what=\"connection\"} ",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}
