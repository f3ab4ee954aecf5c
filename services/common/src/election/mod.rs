//! Leader election on agenda-db: one holder of a key at a time.
//!
//! A candidate creates the key (value: its id) under its own lease, only
//! if the key is absent, and keeps the lease alive. It leads until the
//! lease could expire on the servers, measured from the first send of the
//! last grant or keep-alive that succeeded, minus a margin
//! ([`Leadership::lost`] fires then, or when the lease is found gone):
//! two holders never act together. Used by the notification relay, the
//! Redis supervisors and (through [`Candidate`]) agenda-vip. Writes a
//! leader makes can also carry [`Leadership::guard`], a compare that fails
//! once someone else holds the key (fencing).
//!
//! Layout: [`candidate`] holds the rules, without I/O (the simulator runs
//! the same ones); this file drives them over a [`DbClient`].

pub mod candidate;

use std::time::Duration;

use agenda_proto::db::{compare, Compare};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use candidate::{Answer, Call, Candidate, Next, Timing};

use crate::db_client::DbClient;
use crate::error::Error;

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
/// the lease (rounded up to whole seconds); see [`Timing`] for when it is
/// renewed and when leadership is given up. A candidate that finds the
/// key still holding its own id (it restarted) takes it back at once
/// instead of waiting for the old lease.
pub async fn campaign(
    db: &DbClient,
    key: &str,
    id: &str,
    ttl: Duration,
    stop: &CancellationToken,
) -> Option<Leadership> {
    let ttl = Duration::from_secs(ttl.as_millis().div_ceil(1000).max(1) as u64);
    let mut c = Candidate::new(key, id, Timing::new(ttl), now());
    loop {
        match step(db, key, &mut c, stop).await? {
            Next::Elected { lease } => {
                tracing::info!(key, id, lease, ttl_secs = ttl.as_secs(), "elected");
                let lost = stop.child_token();
                tokio::spawn(hold(db.clone(), key.to_string(), c, lost.clone()));
                return Some(Leadership {
                    lost,
                    key: key.to_string(),
                    id: id.to_string(),
                    lease,
                    db: db.clone(),
                });
            }
            Next::Other(holder) => tracing::debug!(key, id, %holder, "someone else leads"),
            Next::Failed(why) => tracing::warn!(key, %why, "campaign failed; retrying"),
            Next::Lost(_) | Next::Call { .. } | Next::Wait(_) => {}
        }
    }
}

/// Drives a candidate one step: makes its call or waits its wait (None
/// once `stop` fires); answers anything else.
pub async fn step(
    db: &DbClient,
    key: &str,
    c: &mut Candidate,
    stop: &CancellationToken,
) -> Option<Next> {
    if stop.is_cancelled() {
        return None;
    }
    match c.next(now()) {
        Next::Call { call, deadline } => {
            let answer = tokio::select! {
                () = stop.cancelled() => return None,
                a = perform(db, key, call, deadline) => a,
            };
            c.answer(now(), answer);
            Some(Next::Wait(deadline))
        }
        Next::Wait(until) => {
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep_until(Instant::from_std(until)) => {}
            }
            Some(Next::Wait(until))
        }
        other => Some(other),
    }
}

/// Keeps leading until the candidate says it lost (then revokes, so the
/// others need not wait out the TTL) or `lost` is cancelled (resigned).
async fn hold(db: DbClient, key: String, mut c: Candidate, lost: CancellationToken) {
    loop {
        match step(&db, &key, &mut c, &lost).await {
            None => return,
            Some(Next::Lost(why)) => {
                tracing::warn!(%key, %why, "leadership lost");
                lost.cancel();
                if let Next::Call { call, deadline } = c.next(now()) {
                    perform(&db, &key, call, deadline).await;
                }
                return;
            }
            Some(_) => {}
        }
    }
}

/// Makes one call for a candidate, ending by `deadline`.
pub async fn perform(db: &DbClient, key: &str, call: Call, deadline: std::time::Instant) -> Answer {
    let left = deadline.saturating_duration_since(now());
    // The client retries on other nodes with the same request id, all
    // within the deadline.
    let db = db.with_timeout(left.max(Duration::from_millis(1)));
    let done = async {
        match call {
            Call::Read => db.get(key).await.map(Answer::Read),
            Call::Grant(ttl) => db.lease_grant(ttl).await.map(|r| Answer::Granted(r.id)),
            Call::Acquire(txn) => db.txn(txn).await.map(|r| Answer::Acquired(r.succeeded)),
            Call::KeepAlive(lease) => db.lease_keep_alive(lease).await.map(|_| Answer::KeptAlive),
            Call::Revoke(lease) => db.lease_revoke(lease).await.map(|_| Answer::Revoked),
        }
    };
    match tokio::time::timeout(left, done).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(Error::NotFound(_))) => Answer::Gone,
        Ok(Err(e)) => Answer::Failed(e.to_string()),
        Err(_) => Answer::Failed(format!("not answered within {left:?}")),
    }
}

/// Now, on the clock tokio's timers use.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}
