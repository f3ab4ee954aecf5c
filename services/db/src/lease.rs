//! The lease expiry clock.
//!
//! Lease records (id, TTL) are replicated; their deadlines are not. Every
//! node keeps deadlines in memory from what it applies (grant and
//! keep-alive set `now + ttl`). Only the leader acts on them: it proposes a
//! revoke for each expired lease. Like etcd, a node that becomes leader
//! first extends every lease to a full TTL from now, because it cannot know
//! how long ago the last keep-alive reached the old leader.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the leader waits before proposing the same revoke again
/// (the first one may have been lost in a leader change).
const REVOKE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Timer {
    ttl: Duration,
    deadline: Instant,
    revoke_sent: Option<Instant>,
}

/// In-memory deadlines of every live lease.
#[derive(Debug, Default)]
pub struct LeaseClock {
    timers: HashMap<i64, Timer>,
}

impl LeaseClock {
    /// Starts over from the replicated lease list (start-up, snapshot).
    pub fn reset(&mut self, leases: impl IntoIterator<Item = (i64, i64)>, now: Instant) {
        self.timers.clear();
        for (id, ttl) in leases {
            self.granted(id, ttl, now);
        }
    }

    /// A lease was granted (or restored), with its TTL in milliseconds.
    pub fn granted(&mut self, id: i64, ttl_ms: i64, now: Instant) {
        let ttl = Duration::from_millis(ttl_ms.max(1) as u64);
        self.timers.insert(
            id,
            Timer {
                ttl,
                deadline: now + ttl,
                revoke_sent: None,
            },
        );
    }

    /// A keep-alive was applied.
    pub fn renewed(&mut self, id: i64, now: Instant) {
        if let Some(t) = self.timers.get_mut(&id) {
            t.deadline = now + t.ttl;
            t.revoke_sent = None;
        }
    }

    /// The lease is gone.
    pub fn revoked(&mut self, id: i64) {
        self.timers.remove(&id);
    }

    /// This node just became leader: give every lease a full TTL.
    pub fn promote(&mut self, now: Instant) {
        for t in self.timers.values_mut() {
            t.deadline = t.deadline.max(now + t.ttl);
            t.revoke_sent = None;
        }
    }

    /// Expired leases that need a revoke proposal now; marks them as sent.
    pub fn take_expired(&mut self, now: Instant) -> Vec<i64> {
        let mut out = Vec::new();
        for (id, t) in &mut self.timers {
            let due =
                t.deadline <= now && t.revoke_sent.is_none_or(|sent| now >= sent + REVOKE_RETRY);
            if due {
                t.revoke_sent = Some(now);
                out.push(*id);
            }
        }
        out.sort_unstable();
        out
    }

    /// Time left before expiry, as this node sees it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        self.timers
            .get(&id)
            .map(|t| t.deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_ttl_and_retries_revoke() {
        let t0 = Instant::now();
        let mut c = LeaseClock::default();
        c.granted(7, 2000, t0);
        assert!(c.take_expired(t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(c.take_expired(t0 + Duration::from_secs(2)), vec![7]);
        // Not proposed twice in a row...
        assert!(c.take_expired(t0 + Duration::from_millis(2500)).is_empty());
        // ...but again once the first proposal may have been lost.
        assert_eq!(c.take_expired(t0 + Duration::from_secs(3)), vec![7]);
        c.revoked(7);
        assert!(c.take_expired(t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn keepalive_pushes_the_deadline() {
        let t0 = Instant::now();
        let mut c = LeaseClock::default();
        c.granted(1, 3000, t0);
        c.renewed(1, t0 + Duration::from_secs(2));
        assert!(c.take_expired(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(c.take_expired(t0 + Duration::from_secs(5)), vec![1]);
    }

    #[test]
    fn a_new_leader_extends_every_lease() {
        let t0 = Instant::now();
        let mut c = LeaseClock::default();
        c.reset([(1, 1000), (2, 10_000)], t0);
        let later = t0 + Duration::from_secs(5);
        c.promote(later);
        assert!(c
            .take_expired(later + Duration::from_millis(900))
            .is_empty());
        assert_eq!(c.take_expired(later + Duration::from_secs(1)), vec![1]);
        assert_eq!(c.remaining(2, later), Some(Duration::from_secs(10)));
    }
}
