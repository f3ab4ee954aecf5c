//! Leader election on agenda-db: one holder of a key at a time.
//!
//! A candidate creates the key (value: its id) under its own lease, only
//! if the key is absent, and keeps the lease alive. It leads while the key
//! is its own; when it cannot renew in time it stops acting at once
//! ([`Leadership::lost`]) — before the lease can expire on the servers, so
//! two holders never act together. Writes a leader makes can also carry
//! [`Leadership::guard`], a compare that fails once someone else holds the
//! key (fencing).

use std::time::{Duration, Instant};

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

impl Leadership {
    /// A txn compare that holds only while this candidate leads.
    pub fn guard(&self) -> Compare {
        Compare {
            key: self.key.as_bytes().to_vec(),
            target: compare::Target::Value as i32,
            result: compare::Result::Equal as i32,
            value: self.id.as_bytes().to_vec(),
            ..Default::default()
        }
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
/// the lease; renewal runs every ttl/3 and leadership is given up when a
/// renewal has not succeeded for 2/3 of the ttl.
pub async fn campaign(
    db: &DbClient,
    key: &str,
    id: &str,
    ttl: Duration,
    stop: &CancellationToken,
) -> Option<Leadership> {
    let ttl_secs = ttl.as_secs().max(1) as i64;
    loop {
        match try_acquire(db, key, id, ttl_secs).await {
            Ok(Some(lease)) => {
                tracing::info!(key, id, "elected");
                let lost = stop.child_token();
                tokio::spawn(renew(db.clone(), key.to_string(), lease, ttl, lost.clone()));
                return Some(Leadership {
                    lost,
                    key: key.to_string(),
                    id: id.to_string(),
                    lease,
                    db: db.clone(),
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(key, error = %e, "campaign failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(ttl / 6) => {}
        }
    }
}

async fn try_acquire(db: &DbClient, key: &str, id: &str, ttl_secs: i64) -> Result<Option<i64>> {
    let lease = db.lease_grant(ttl_secs).await?.id;
    let resp = db
        .txn(TxnRequest {
            compare: vec![Compare {
                key: key.as_bytes().to_vec(),
                target: compare::Target::CreateRevision as i32,
                result: compare::Result::Equal as i32,
                number: 0,
                ..Default::default()
            }],
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
        .await?;
    if resp.succeeded {
        Ok(Some(lease))
    } else {
        let _ = db.lease_revoke(lease).await;
        Ok(None)
    }
}

async fn renew(db: DbClient, key: String, lease: i64, ttl: Duration, lost: CancellationToken) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(ttl / 3) => {}
        }
        let budget = (ttl * 2 / 3).saturating_sub(last_ok.elapsed());
        match tokio::time::timeout(budget, db.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => last_ok = Instant::now(),
            Ok(Err(crate::Error::NotFound(_))) => {
                tracing::warn!(%key, "leadership lost: the lease expired");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(%key, error = %e, "leadership renewal failed"),
            Err(_) => tracing::warn!(%key, "leadership renewal timed out"),
        }
        if last_ok.elapsed() >= ttl * 2 / 3 {
            tracing::warn!(%key, "leadership lost: could not renew in time");
            lost.cancel();
            return;
        }
    }
}
