//! Metrics and the small HTTP server: `/metrics`, `/healthz`, and
//! `/status` (what `agendactl status` shows).

use std::sync::{Arc, Mutex};

use agenda_common::shutdown::CancellationToken;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::vrrp::State;

/// What `/status` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `--id`.
    pub id: String,
    /// The VIP with its prefix.
    pub vip: String,
    /// backup, claiming, master or fault.
    pub state: &'static str,
    /// `--priority`.
    pub priority: u8,
    /// The VIP lease held, if any.
    pub lease: Option<i64>,
    /// The last transition's reason.
    pub reason: String,
    /// Unix time of the last transition, ms.
    pub since_ms: u64,
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    /// 1 for the current state.
    pub state: IntGaugeVec,
    /// State changes, by new state.
    pub transitions: IntCounterVec,
    /// Adverts sent (per peer and advert).
    pub adverts_sent: IntCounter,
    /// Adverts accepted.
    pub adverts_received: IntCounter,
    /// Adverts dropped, by reason (auth, replay, malformed).
    pub adverts_rejected: IntCounterVec,
    /// Claims, by result (ok, held, error).
    pub claims: IntCounterVec,
    /// 1 while the VIP is on this machine's interface by our doing.
    pub holds_vip: IntGauge,
    /// The status document.
    pub status: Mutex<Status>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(status: Status) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let state = IntGaugeVec::new(
            Opts::new("agenda_vip_state", "1 for the daemon's current state."),
            &["state"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "agenda_vip_transitions_total",
                "State changes, by the state entered.",
            ),
            &["to"],
        )?;
        let adverts_sent = IntCounter::new(
            "agenda_vip_adverts_sent_total",
            "Adverts sent (one per peer).",
        )?;
        let adverts_received = IntCounter::new(
            "agenda_vip_adverts_received_total",
            "Authenticated adverts accepted.",
        )?;
        let adverts_rejected = IntCounterVec::new(
            Opts::new(
                "agenda_vip_adverts_rejected_total",
                "Adverts dropped: auth (bad HMAC: forged or wrong key), replay (old counter), malformed.",
            ),
            &["reason"],
        )?;
        let claims = IntCounterVec::new(
            Opts::new(
                "agenda_vip_claims_total",
                "VIP claims, by result (ok, held, error).",
            ),
            &["result"],
        )?;
        let holds_vip = IntGauge::new(
            "agenda_vip_holds_vip",
            "1 while this daemon holds the VIP lease and has the address up.",
        )?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(adverts_sent.clone()))?;
        registry.register(Box::new(adverts_received.clone()))?;
        registry.register(Box::new(adverts_rejected.clone()))?;
        registry.register(Box::new(claims.clone()))?;
        registry.register(Box::new(holds_vip.clone()))?;
        for s in State::ALL {
            state.with_label_values(&[s.name()]).set(0);
        }
        Ok(Metrics {
            registry,
            state,
            transitions,
            adverts_sent,
            adverts_received,
            adverts_rejected,
            claims,
            holds_vip,
            status: Mutex::new(status),
        })
    }

    /// Records a state change.
    pub fn entered(&self, s: State, reason: &str) {
        for other in State::ALL {
            self.state
                .with_label_values(&[other.name()])
                .set(i64::from(other == s));
        }
        self.transitions.with_label_values(&[s.name()]).inc();
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.state = s.name();
        st.reason = reason.to_string();
        st.since_ms = now_ms();
    }

    /// Records whether the lease (and so the address) is held.
    pub fn set_lease(&self, lease: Option<i64>) {
        self.holds_vip.set(i64::from(lease.is_some()));
        self.status.lock().unwrap_or_else(|p| p.into_inner()).lease = lease;
    }

    fn render(&self) -> String {
        agenda_common::metrics::render(Some(&self.registry))
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves `/metrics`, `/healthz` and `/status` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let m = metrics.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        )
        .route(
            "/status",
            get(move || {
                let m = metrics.clone();
                async move { Json(m.status.lock().unwrap_or_else(|p| p.into_inner()).clone()) }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
