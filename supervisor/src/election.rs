//! Leadership among supervisors: the key
//! `/registry/election/redis-supervisor` holds the acting supervisor's id,
//! attached to its lease in agenda-db.
//!
//! A candidate creates the key only if it is absent (or still holds its
//! own id from an earlier lease of the same supervisor, e.g. after a
//! restart), then renews the lease every ttl/3. Any failed or late renewal
//! ends the leadership at once (the lease is revoked on a best-effort
//! basis so another supervisor need not wait for the TTL) and the
//! candidate campaigns again. Registry writes of the leader also compare
//! the key's value ([`guard`]), so a deposed leader can never publish.

use std::time::Duration;

use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The election key.
pub const KEY: &str = "/registry/election/redis-supervisor";

/// A txn compare that holds only while `id` holds the election key.
pub fn guard(id: &str) -> Compare {
    Compare {
        key: KEY.as_bytes().to_vec(),
        target: compare::Target::Value as i32,
        result: compare::Result::Equal as i32,
        value: id.as_bytes().to_vec(),
        ..Default::default()
    }
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
        // Lease TTLs are whole seconds.
        let ttl_secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
        let ttl = Duration::from_secs(ttl_secs as u64);
        // Calls must finish well inside the TTL to keep the promise.
        let db = db.with_timeout(ttl / 3);
        let retry = (ttl / 6).max(Duration::from_millis(100));
        while !stop.is_cancelled() {
            let lease = match try_acquire(&db, &id, ttl_secs).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tracing::debug!(%id, "another supervisor leads");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "campaign for the supervisor lease failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
            };
            tracing::info!(%id, lease, ttl_secs, "decision: leading (acquired the supervisor lease)");
            metrics.leadership_changes.inc();
            metrics.is_leader.set(1);
            tx.send_replace(true);
            let reason = keep(&db, lease, ttl, &stop).await;
            tx.send_replace(false);
            metrics.is_leader.set(0);
            metrics.leadership_changes.inc();
            tracing::warn!(%id, lease, %reason, "decision: stopped leading");
            // Let the others (or ourselves) campaign without waiting for
            // the TTL; the key goes with the lease.
            let _ = db.lease_revoke(lease).await;
        }
    });
    (rx, task)
}

/// Renews `lease` until a renewal fails or `stop`; returns why it ended.
async fn keep(db: &DbClient, lease: i64, ttl: Duration, stop: &CancellationToken) -> String {
    loop {
        tokio::select! {
            () = stop.cancelled() => return "shutting down".into(),
            () = tokio::time::sleep(ttl / 3) => {}
        }
        match tokio::time::timeout(ttl / 3, db.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("lease keep-alive failed: {e}"),
            Err(_) => return format!("lease keep-alive not answered within {:?}", ttl / 3),
        }
    }
}

/// Creates the key under a new lease if it is absent or still ours.
async fn try_acquire(db: &DbClient, id: &str, ttl_secs: i64) -> agenda_common::Result<Option<i64>> {
    let current = db.get(KEY).await?;
    let compare = match &current {
        None => Compare {
            key: KEY.as_bytes().to_vec(),
            target: compare::Target::CreateRevision as i32,
            result: compare::Result::Equal as i32,
            number: 0,
            ..Default::default()
        },
        // Ours from an earlier lease (we restarted): take it over.
        Some(kv) if kv.value == id.as_bytes() => Compare {
            key: KEY.as_bytes().to_vec(),
            target: compare::Target::ModRevision as i32,
            result: compare::Result::Equal as i32,
            number: kv.mod_revision,
            ..Default::default()
        },
        Some(_) => return Ok(None),
    };
    let lease = db.lease_grant(ttl_secs).await?.id;
    let resp = db
        .txn(TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: KEY.as_bytes().to_vec(),
                    value: id.as_bytes().to_vec(),
                    lease,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await;
    match resp {
        Ok(r) if r.succeeded => Ok(Some(lease)),
        other => {
            let _ = db.lease_revoke(lease).await;
            other.map(|_| None)
        }
    }
}
