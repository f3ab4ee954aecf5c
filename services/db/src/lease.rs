//! The lease expiry clock.
//!
//! Lease records (id, TTL) are replicated; their deadlines are not. Every
//! node keeps deadlines in memory from what it applies (grant and
//! keep-alive set `now + ttl`). Only the leader acts on them: it proposes a
//! revoke for each expired lease.
//!
//! Unlike etcd's, keep-alives here are log entries, so every replica sees
//! each one and applies it no earlier than its holder sent it: a deadline
//! kept anywhere is never earlier than the one the holder counts with
//! (first send + TTL). A new leader therefore needs no full-TTL extension
//! of every lease (etcd's, which made every leader change add a TTL to the
//! failover of whatever a lease guards, the VIP first). It only waits until
//! it has applied the first entry of its own term before expiring
//! anything: that entry commits everything earlier in its log, including
//! any keep-alive acknowledged by the old leader that it had received but
//! not yet seen committed (see `Node::lease_gate`).

use std::collections::BTreeMap;
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
    /// Ordered, so a leader proposes the revokes of one tick in the same
    /// order every run (the simulator replays a run from its seed).
    timers: BTreeMap<i64, Timer>,
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

    /// This node just became leader: revokes it proposed as a leader
    /// before were lost with that leadership (the deadlines stand).
    pub fn promote(&mut self) {
        for t in self.timers.values_mut() {
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
    fn a_new_leader_keeps_the_deadlines_it_applied() {
        let t0 = Instant::now();
        let mut c = LeaseClock::default();
        c.granted(1, 1000, t0);
        // As an old leader it proposed a revoke that was lost with its
        // leadership; as the new one it proposes it again at once.
        assert_eq!(c.take_expired(t0 + Duration::from_secs(1)), vec![1]);
        c.promote();
        assert_eq!(c.take_expired(t0 + Duration::from_millis(1010)), vec![1]);
        c.revoked(1);
        // No extension: a lease renewed (applied) at t0 + 2 s lasts its
        // TTL from then, whoever leads.
        c.granted(2, 1000, t0);
        c.renewed(2, t0 + Duration::from_secs(2));
        c.promote();
        assert!(c.take_expired(t0 + Duration::from_millis(2999)).is_empty());
        assert_eq!(c.take_expired(t0 + Duration::from_secs(3)), vec![2]);
    }
}
