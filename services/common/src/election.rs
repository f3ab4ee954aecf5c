//! Leader election on agenda-db: one holder of a key at a time.
//!
//! A candidate creates the key (value: its id) under its own lease, only
//! if the key is absent, and keeps the lease alive. It leads while the key
//! is its own; when a renewal fails or is late it stops acting at once
//! ([`Leadership::lost`]) — before the lease can expire on the servers, so
//! two holders never act together. Used by the notification relay and the
//! Redis supervisors. Writes a leader makes can also carry
//! [`Leadership::guard`], a compare that fails once someone else holds the
//! key (fencing).

use std::time::Duration;

use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
use tokio_util::sync::CancellationToken;

use crate::db_client::DbClient;
use crate::error::Result;

/// A won election; dropped or resigned, it stops renewing.
pub struct Leadership {
    /// Cancelled when leadership is lost (or resigned): stop acting.
    pub lost: CancellationToken,
    key: String,
    id: String,
    lease: i64,
    db: DbClient,
}

/// A txn compare that holds only while `id` holds the election `key`.
pub fn guard(key: &str, id: &str) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        target: compare::Target::Value as i32,
        result: compare::Result::Equal as i32,
        value: id.as_bytes().to_vec(),
        ..Default::default()
    }
}

impl Leadership {
    /// A txn compare that holds only while this candidate leads.
    pub fn guard(&self) -> Compare {
        guard(&self.key, &self.id)
    }

    /// Gives leadership up now (the key goes with the lease).
    pub async fn resign(self) {
        self.lost.cancel();
        if let Err(e) = self.db.lease_revoke(self.lease).await {
            tracing::warn!(key = %self.key, error = %e, "resign: lease revoke failed; it will expire");
        }
    }
}

/// Campaigns for `key` as `id` until elected (or `stop`: None). `ttl` is
/// the lease (rounded up to whole seconds); renewal runs every ttl/3 and
/// leadership is given up as soon as a renewal fails or is late. A
/// candidate that finds the key still holding its own id (it restarted)
/// takes it back at once instead of waiting for the old lease.
pub async fn campaign(
    db: &DbClient,
    key: &str,
    id: &str,
    ttl: Duration,
    stop: &CancellationToken,
) -> Option<Leadership> {
    let ttl_secs = ttl.as_millis().div_ceil(1000).max(1) as i64;
    let ttl = Duration::from_secs(ttl_secs as u64);
    // Every call must end well inside the TTL to keep the promise above.
    let db = db.with_timeout(ttl / 3);
    let retry = (ttl / 6).max(Duration::from_millis(100));
    loop {
        if stop.is_cancelled() {
            return None;
        }
        match try_acquire(&db, key, id, ttl_secs).await {
            Ok(Some(lease)) => {
                tracing::info!(key, id, lease, ttl_secs, "elected");
                let lost = stop.child_token();
                tokio::spawn(renew(db.clone(), key.to_string(), lease, ttl, lost.clone()));
                return Some(Leadership {
                    lost,
                    key: key.to_string(),
                    id: id.to_string(),
                    lease,
                    db,
                });
            }
            Ok(None) => tracing::debug!(key, id, "someone else leads"),
            Err(e) => tracing::warn!(key, error = %e, "campaign failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// Puts `key` = `id` under a new lease if the key is absent or still ours.
async fn try_acquire(db: &DbClient, key: &str, id: &str, ttl_secs: i64) -> Result<Option<i64>> {
    let compare = match db.get(key).await? {
        None => Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::CreateRevision as i32,
            result: compare::Result::Equal as i32,
            number: 0,
            ..Default::default()
        },
        Some(kv) if kv.value == id.as_bytes() => Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::ModRevision as i32,
            result: compare::Result::Equal as i32,
            number: kv.mod_revision,
            ..Default::default()
        },
        Some(_) => return Ok(None),
    };
    let lease = db
        .lease_grant(Duration::from_secs(ttl_secs as u64))
        .await?
        .id;
    let resp = db
        .txn(TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: key.as_bytes().to_vec(),
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

async fn renew(db: DbClient, key: String, lease: i64, ttl: Duration, lost: CancellationToken) {
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(ttl / 3) => {}
        }
        let why = match tokio::time::timeout(ttl / 3, db.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => format!("renewal failed: {e}"),
            Err(_) => format!("renewal not answered within {:?}", ttl / 3),
        };
        tracing::warn!(%key, lease, %why, "leadership lost");
        lost.cancel();
        // Let the others campaign without waiting for the TTL.
        let _ = db.lease_revoke(lease).await;
        return;
    }
}
