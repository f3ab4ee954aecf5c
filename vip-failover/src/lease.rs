//! The VIP lease in agenda-db: `/registry/vip/holder` = the holder's id,
//! attached to a lease. Holding it is what entitles a daemon to the
//! address; the address cannot check a fencing token, so the order of
//! steps and their timing are the fence:
//!
//! - claim: the key is committed first, the address added after;
//! - release: the address is removed first, the lease revoked after;
//! - a holder that cannot renew gives the address up before its lease can
//!   expire on the servers: its deadline runs from the *first send* of the
//!   last keep-alive that succeeded (the servers extended the lease no
//!   earlier than that), minus a margin for removing the address;
//! - a claimant that finds the key gone without a release (the holder's
//!   lease expired) waits a lock-delay first, so a holder that was slow to
//!   notice has surely let go.

use std::time::{Duration, Instant};

use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};

use crate::error::{Error, Result};

/// The key whose value names the machine that may hold the VIP.
pub const KEY: &str = agenda_common::registry::VIP_HOLDER;

/// A held VIP lease. Its `lost` token fires when it could not be renewed
/// in time; the caller must then remove the address at once.
pub struct Held {
    /// The agenda-db lease id.
    pub lease: i64,
    /// Fired when renewal failed for too long.
    pub lost: CancellationToken,
}

/// Timing of the lease.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Lease TTL.
    pub ttl: Duration,
    /// Extra wait before taking a key whose holder's lease expired.
    pub lock_delay: Duration,
}

impl Timing {
    /// Renewal period: four keep-alives per TTL.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// How long before the lease could expire the holder gives up.
    pub fn margin(&self) -> Duration {
        self.ttl / 6
    }
}

/// Who holds the VIP lease now, if anyone.
pub async fn holder(db: &DbClient) -> Result<Option<String>> {
    Ok(db
        .get(KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Takes the VIP lease for `id`, or says who holds it.
pub async fn claim(
    db: &DbClient,
    id: &str,
    t: Timing,
    lock_delay: bool,
    stop: &CancellationToken,
) -> Result<Held> {
    let current = db.get(KEY).await?;
    let (cmp, stale) = match current {
        Some(kv) if kv.value == id.as_bytes() => {
            // Ours from before a restart: take it over in place.
            (
                Compare {
                    key: KEY.into(),
                    target: compare::Target::ModRevision as i32,
                    result: compare::Result::Equal as i32,
                    number: kv.mod_revision,
                    ..Default::default()
                },
                Some(kv.lease),
            )
        }
        Some(kv) => return Err(Error::Held(String::from_utf8_lossy(&kv.value).into_owned())),
        None => {
            if lock_delay {
                tokio::select! {
                    () = stop.cancelled() => return Err(Error::Held("(stopping)".into())),
                    () = tokio::time::sleep(t.lock_delay) => {}
                }
            }
            (
                Compare {
                    key: KEY.into(),
                    target: compare::Target::CreateRevision as i32,
                    result: compare::Result::Equal as i32,
                    number: 0,
                    ..Default::default()
                },
                None,
            )
        }
    };
    // The lease starts on the servers no earlier than this.
    let granted_at = Instant::now();
    let lease = db.lease_grant(t.ttl).await?.id;
    let put = RequestOp {
        request: Some(request_op::Request::Put(PutRequest {
            key: KEY.into(),
            value: id.as_bytes().to_vec(),
            lease,
            ..Default::default()
        })),
    };
    let resp = db
        .txn(TxnRequest {
            compare: vec![cmp],
            success: vec![put],
            ..Default::default()
        })
        .await;
    match resp {
        Ok(r) if r.succeeded => {}
        other => {
            let _ = db.lease_revoke(lease).await;
            other?;
            let now = holder(db).await.ok().flatten().unwrap_or_default();
            return Err(Error::Held(now));
        }
    }
    if let Some(old) = stale.filter(|l| *l != 0) {
        let _ = db.lease_revoke(old).await;
    }
    let lost = stop.child_token();
    tokio::spawn(renew(db.clone(), lease, t, granted_at, lost.clone()));
    Ok(Held { lease, lost })
}

/// Keeps the lease alive; fires `lost` once the deadline (from the first
/// send of the last successful keep-alive) minus the margin has passed.
async fn renew(db: DbClient, lease: i64, t: Timing, granted_at: Instant, lost: CancellationToken) {
    let mut deadline = granted_at + t.ttl - t.margin();
    let mut next = granted_at + t.renew_every();
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        // One call (the client retries it on other nodes with the same
        // request id) that must end before the deadline.
        let call = db.with_timeout(deadline - sent);
        match tokio::time::timeout(deadline - sent, call.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => {
                deadline = sent + t.ttl - t.margin();
                next = sent + t.renew_every();
            }
            Ok(Err(e)) => {
                tracing::warn!(lease, error = %e, "VIP lease keep-alive failed; retrying");
                next = Instant::now() + Duration::from_millis(50);
                if matches!(e, agenda_common::Error::NotFound(_)) {
                    break; // the lease is gone already
                }
            }
            Err(_) => {}
        }
    }
    tracing::warn!(lease, "VIP lease not renewed in time: giving the VIP up");
    lost.cancel();
}

/// Gives the lease up (after the address is gone).
pub async fn release(db: &DbClient, held: Held) {
    held.lost.cancel();
    if let Err(e) = db.lease_revoke(held.lease).await {
        tracing::warn!(lease = held.lease, error = %e, "VIP lease revoke failed; it will expire");
    }
}
