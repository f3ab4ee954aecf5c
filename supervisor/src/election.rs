//! Leadership among supervisors: the key
//! `/registry/election/redis-supervisor` holds the acting supervisor's id,
//! under its lease ([`agenda_common::election`] does the campaigning and
//! renewing). Registry writes of the leader also compare the key's value
//! ([`guard`]), so a deposed leader can never publish.

use std::time::Duration;

use agenda_common::election;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::db::Compare;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The election key.
pub const KEY: &str = agenda_common::registry::REDIS_SUPERVISOR_ELECTION;

/// A txn compare that holds only while `id` holds the election key.
pub fn guard(id: &str) -> Compare {
    election::guard(KEY, id)
}

/// Campaigns and keeps leadership until `stop`; the receiver says whether
/// this supervisor leads right now. On `stop` a held lease is revoked.
pub fn spawn(
    db: DbClient,
    id: String,
    ttl: Duration,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        while let Some(lead) = election::campaign(&db, KEY, &id, ttl, &stop).await {
            tracing::info!(%id, "decision: leading (acquired the supervisor lease)");
            metrics.leadership_changes.inc();
            metrics.is_leader.set(1);
            tx.send_replace(true);
            lead.lost.cancelled().await;
            tx.send_replace(false);
            metrics.is_leader.set(0);
            metrics.leadership_changes.inc();
            tracing::warn!(%id, shutting_down = stop.is_cancelled(), "decision: stopped leading");
            lead.resign().await;
        }
    });
    (rx, task)
}
