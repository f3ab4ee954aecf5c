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

use agenda_common::election::{self, Candidate, Next};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;

use crate::error::{Error, Result};

/// The key whose value names the machine that may hold the VIP.
pub const KEY: &str = agenda_common::registry::VIP_HOLDER;

/// Timing of the lease: renewals, the margin and the lock delay are the
/// shared election rules ([`election::Timing`]).
pub type Timing = election::Timing;

/// A held VIP lease. Its `lost` token fires when it could not be renewed
/// in time; the caller must then remove the address at once.
pub struct Held {
    /// The agenda-db lease id.
    pub lease: i64,
    /// Fired when renewal failed for too long.
    pub lost: CancellationToken,
}

/// Who holds the VIP lease now, if anyone.
pub async fn holder(db: &DbClient) -> Result<Option<String>> {
    Ok(db
        .get(KEY)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Takes the VIP lease for `id` (one attempt), or says who holds it.
pub async fn claim(
    db: &DbClient,
    id: &str,
    t: Timing,
    lock_delay: bool,
    stop: &CancellationToken,
) -> Result<Held> {
    let now = tokio::time::Instant::now().into_std();
    let mut c = Candidate::new(KEY, id, t, now).with_lock_delay(lock_delay);
    loop {
        match election::step(db, KEY, &mut c, stop).await {
            None => return Err(Error::Held("(stopping)".into())),
            Some(Next::Elected { lease }) => {
                let lost = stop.child_token();
                tokio::spawn(renew(db.clone(), c, lease, lost.clone()));
                return Ok(Held { lease, lost });
            }
            Some(Next::Other(by)) => return Err(Error::Held(by)),
            Some(Next::Failed(why)) => {
                // The candidate revokes the lease it may have been granted.
                if let Next::Call { call, deadline } =
                    c.next(tokio::time::Instant::now().into_std())
                {
                    election::perform(db, KEY, call, deadline).await;
                }
                return Err(Error::Db(agenda_common::Error::Unavailable(why)));
            }
            Some(_) => {}
        }
    }
}

/// Keeps the lease alive; fires `lost` once the candidate says the lease
/// could expire on the servers (or is gone).
async fn renew(db: DbClient, mut c: Candidate, lease: i64, lost: CancellationToken) {
    loop {
        match election::step(&db, KEY, &mut c, &lost).await {
            None => return,
            Some(Next::Lost(why)) => {
                tracing::warn!(lease, %why, "VIP lease not renewed in time: giving the VIP up");
                lost.cancel();
                return;
            }
            Some(_) => {}
        }
    }
}

/// Gives the lease up (after the address is gone).
pub async fn release(db: &DbClient, held: Held) {
    held.lost.cancel();
    if let Err(e) = db.lease_revoke(held.lease).await {
        tracing::warn!(lease = held.lease, error = %e, "VIP lease revoke failed; it will expire");
    }
}
