//! The leader's read lease: linearizable reads answered by the leader
//! without a heartbeat round while no other leader can exist.
//!
//! Why it holds. A ReadIndex round confirmed by a quorum means each of
//! those voters processed the round's heartbeat after the round started,
//! and raft-rs (with `check_quorum`) has a voter that heard from its leader
//! ignore every vote request for the next `election_ticks` of its ticks;
//! a voter campaigns itself only after as many. A node ticks at most once
//! per tick length, and its first tick after hearing from the leader may
//! come at once, so that window lasts at least `(election_ticks - 1)`
//! tick lengths. No other leader can be elected before then, and none can
//! commit anything. The lease lasts [`LEASE_SHARE`] of that, counted from
//! the round's *start*, on the monotonic clock: a leader paused (SIGSTOP,
//! a VM stopped) finds it expired when it runs again, because the clock
//! went on while it slept. (raft-rs's own `LeaseBased` option counts the
//! leader's ticks instead, and a paused leader ticks nothing: exactly the
//! stale read this guards against.)
//!
//! What would break that, and how each is kept out:
//! - A voter that restarts forgets it heard from the leader. A node
//!   therefore ignores vote requests for its first `election_ticks` ticks
//!   ([`VoteGuard`]).
//! - A leadership transfer makes its target campaign with a vote nobody
//!   may refuse. The lease ends when a transfer begins, and rounds started
//!   before or during one never give a new lease ([`ReadLease::revoke`]).
//! - A new leadership or a membership change: the lease ends with it.
//!
//! Every node must run with the same tick length and election ticks;
//! [`LEASE_SHARE`] leaves room for their clocks to run at different rates
//! (the simulator draws ±10% per node).

use std::time::{Duration, Instant};

/// The share of the no-election window a lease lasts.
const LEASE_SHARE: (u32, u32) = (3, 4);

/// How long a lease lasts for this tick length and election timeout.
pub fn lease_length(tick: Duration, election_ticks: usize) -> Duration {
    let window = tick * (election_ticks.saturating_sub(1) as u32);
    window * LEASE_SHARE.0 / LEASE_SHARE.1
}

/// The lease of one node (only ever held while it leads).
#[derive(Debug)]
pub struct ReadLease {
    length: Duration,
    until: Option<Instant>,
    /// Rounds started before this give no lease (see [`ReadLease::revoke`]).
    floor: Instant,
    /// When the last round meant to renew the lease started.
    renewal_started: Option<Instant>,
}

impl ReadLease {
    /// No lease yet; `length` from [`lease_length`].
    pub fn new(length: Duration, now: Instant) -> Self {
        ReadLease {
            length,
            until: None,
            floor: now,
            renewal_started: None,
        }
    }

    /// Whether a read at `now` may be answered from this node's commit
    /// index alone. The caller also checks that it still leads and that no
    /// transfer is under way.
    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// A ReadIndex round of this leader that started at `started` was
    /// confirmed by a quorum.
    pub fn confirmed(&mut self, started: Instant) {
        if started < self.floor {
            return;
        }
        let until = started + self.length;
        if self.until.is_none_or(|u| u < until) {
            self.until = Some(until);
        }
    }

    /// Ends the lease: a new leadership, a transfer, a membership change.
    /// Rounds already in flight started before `now`, so their
    /// confirmations give nothing.
    pub fn revoke(&mut self, now: Instant) {
        self.until = None;
        self.floor = now;
        self.renewal_started = None;
    }

    /// Whether to start a round for no reader but the lease: it holds,
    /// less than half of it is left, and no renewal started in the last
    /// quarter of a lease (one may have been lost).
    pub fn wants_renewal(&self, now: Instant) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        now < until
            && until.duration_since(now) < self.length / 2
            && self
                .renewal_started
                .is_none_or(|at| now.duration_since(at) >= self.length / 4)
    }

    /// A round meant to renew the lease started.
    pub fn renewal_started(&mut self, now: Instant) {
        self.renewal_started = Some(now);
    }
}

/// Keeps a node that just started from voting: it cannot know whether it
/// promised a leader, before it stopped, not to vote for a while.
#[derive(Debug)]
pub struct VoteGuard {
    ticks_left: usize,
}

impl VoteGuard {
    /// For a node that starts now.
    pub fn new(election_ticks: usize) -> Self {
        VoteGuard {
            ticks_left: election_ticks,
        }
    }

    /// The node ticked.
    pub fn tick(&mut self) {
        self.ticks_left = self.ticks_left.saturating_sub(1);
    }

    /// Whether to ignore a (pre-)vote request. A transfer's campaign
    /// (`forced`) is let through: the leader that asked for it gave up its
    /// lease first.
    pub fn ignores_vote(&self, forced: bool) -> bool {
        self.ticks_left > 0 && !forced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lease_is_three_quarters_of_the_shortest_no_election_window() {
        assert_eq!(
            lease_length(50 * MS, 10),
            337_500 * Duration::from_micros(1)
        );
        assert_eq!(lease_length(50 * MS, 1), Duration::ZERO);
        // With the simulator's ±10% tick drift, the lease of the fastest
        // leader clock still ends before the slowest voter may vote.
        let (fast, slow) = (55 * MS, 45 * MS);
        assert!(lease_length(fast, 10) < slow * 9);
    }

    #[test]
    fn a_lease_counts_from_the_rounds_start_and_ends_on_revoke() {
        let t0 = Instant::now();
        let len = 300 * MS;
        let mut l = ReadLease::new(len, t0);
        assert!(!l.holds(t0), "no lease before a round");
        l.confirmed(t0 + 10 * MS);
        assert!(l.holds(t0 + 309 * MS));
        assert!(
            !l.holds(t0 + 310 * MS),
            "counted from the start, not the answer"
        );
        // An older round confirmed late never shortens it.
        l.confirmed(t0 + 5 * MS);
        assert!(l.holds(t0 + 309 * MS));
        l.revoke(t0 + 20 * MS);
        assert!(!l.holds(t0 + 21 * MS));
        // A round started before the revoke (during a transfer) gives nothing.
        l.confirmed(t0 + 19 * MS);
        assert!(!l.holds(t0 + 21 * MS));
        l.confirmed(t0 + 20 * MS);
        assert!(l.holds(t0 + 21 * MS));
    }

    #[test]
    fn renewal_is_asked_in_the_second_half_and_not_again_at_once() {
        let t0 = Instant::now();
        let mut l = ReadLease::new(400 * MS, t0);
        assert!(!l.wants_renewal(t0), "nothing to renew");
        l.confirmed(t0);
        assert!(!l.wants_renewal(t0 + 100 * MS));
        assert!(l.wants_renewal(t0 + 201 * MS));
        l.renewal_started(t0 + 201 * MS);
        assert!(!l.wants_renewal(t0 + 250 * MS), "one in flight");
        assert!(l.wants_renewal(t0 + 301 * MS), "that one may be lost");
        assert!(
            !l.wants_renewal(t0 + 400 * MS),
            "expired: reads start rounds"
        );
    }

    #[test]
    fn a_started_node_ignores_votes_for_an_election_timeout_but_not_transfers() {
        let mut g = VoteGuard::new(3);
        assert!(g.ignores_vote(false));
        assert!(!g.ignores_vote(true));
        g.tick();
        g.tick();
        assert!(g.ignores_vote(false));
        g.tick();
        assert!(!g.ignores_vote(false));
    }
}
