//! The supervisor's metrics and its tiny HTTP server (`/metrics`,
//! `/healthz`). Every decision is counted here with its kind.

use std::sync::Arc;

use agenda_common::shutdown::CancellationToken;
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::net::TcpListener;

/// Every metric of the supervisor.
pub struct Metrics {
    registry: Registry,
    /// Promotions (`REPLICAOF NO ONE` + publication) done as leader.
    pub promotions: IntCounter,
    /// Fencing commands (`REPLICAOF <primary>`) sent as leader.
    pub fencings: IntCounter,
    /// Failed health checks, by node.
    pub check_failures: IntCounterVec,
    /// Decisions, by kind (bootstrap, promote, fence, hold, restart-local,
    /// and their failures).
    pub decisions: IntCounterVec,
    /// Times this supervisor started or stopped leading.
    pub leadership_changes: IntCounter,
    /// 1 while this supervisor holds the lease.
    pub is_leader: IntGauge,
    /// Epoch of the published primary as last read (0: none).
    pub epoch: IntGauge,
    /// Restarts of the local redis-server after it died.
    pub local_restarts: IntCounter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let promotions = IntCounter::new(
            "agenda_supervisor_promotions_total",
            "Replicas promoted to primary by this supervisor.",
        )?;
        let fencings = IntCounter::new(
            "agenda_supervisor_fencings_total",
            "REPLICAOF commands sent to a node that was a master or replicated the wrong primary.",
        )?;
        let check_failures = IntCounterVec::new(
            Opts::new(
                "agenda_supervisor_check_failures_total",
                "Failed health checks (PING / INFO replication), by node.",
            ),
            &["node"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "agenda_supervisor_decisions_total",
                "Decisions taken, by kind.",
            ),
            &["kind"],
        )?;
        let leadership_changes = IntCounter::new(
            "agenda_supervisor_leadership_changes_total",
            "Times this supervisor started or stopped leading.",
        )?;
        let is_leader = IntGauge::new(
            "agenda_supervisor_is_leader",
            "1 while this supervisor holds the supervisor lease.",
        )?;
        let epoch = IntGauge::new(
            "agenda_supervisor_epoch",
            "Epoch of the published Redis primary (0: none published).",
        )?;
        let local_restarts = IntCounter::new(
            "agenda_supervisor_local_restarts_total",
            "Restarts of the local redis-server after it died.",
        )?;
        registry.register(Box::new(promotions.clone()))?;
        registry.register(Box::new(fencings.clone()))?;
        registry.register(Box::new(check_failures.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(leadership_changes.clone()))?;
        registry.register(Box::new(is_leader.clone()))?;
        registry.register(Box::new(epoch.clone()))?;
        registry.register(Box::new(local_restarts.clone()))?;
        Ok(Metrics {
            registry,
            promotions,
            fencings,
            check_failures,
            decisions,
            leadership_changes,
            is_leader,
            epoch,
            local_restarts,
        })
    }

    /// Counts one decision of `kind`.
    pub fn decision(&self, kind: &str) {
        self.decisions.with_label_values(&[kind]).inc();
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        agenda_common::metrics::render(Some(&self.registry))
    }
}

/// The HTTP routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
}

/// Serves `/metrics` and `/healthz` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
