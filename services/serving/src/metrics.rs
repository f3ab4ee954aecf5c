//! Calls served, by operation: `agenda_service_call_duration_seconds` and
//! `agenda_service_calls_total{service,op,status}`, in the process-wide
//! registry (one service per process), rendered with the shared metrics
//! by [`agenda_common::metrics`] on `--http`'s `/metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use agenda_common::metrics::LATENCY_BUCKETS;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

struct Calls {
    duration: HistogramVec,
    total: IntCounterVec,
}

static CALLS: LazyLock<Calls> = LazyLock::new(|| {
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "agenda_service_call_duration_seconds",
            "Time to answer a gateway call, by operation.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["service", "op"],
    )
    .expect("static metric options are valid");
    let total = IntCounterVec::new(
        Opts::new(
            "agenda_service_calls_total",
            "Gateway calls answered, by operation and HTTP status.",
        ),
        &["service", "op", "status"],
    )
    .expect("static metric options are valid");
    let r = prometheus::default_registry();
    let _ = r.register(Box::new(duration.clone()));
    let _ = r.register(Box::new(total.clone()));
    Calls { duration, total }
});

/// One call answered. `op` is the operation's tag (a closed set, so
/// the label's values are bounded); an undecodable call counts as "".
pub fn call(service: &str, op: &str, status: u16, took: Duration) {
    let c = &*CALLS;
    c.duration
        .with_label_values(&[service, op])
        .observe(took.as_secs_f64());
    c.total
        .with_label_values(&[service, op, &status.to_string()])
        .inc();
}
