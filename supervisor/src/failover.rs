//! The decisions, without I/O: given the health observations of every
//! node over time, whether this supervisor leads, and the published
//! primary, what must be done now.
//!
//! Rules (docs/MESSAGING.md, issue 4):
//! - Only the leader decides anything.
//! - Nothing published yet (bootstrap): once every node has been checked
//!   at least once, pick a reachable master (highest offset), else the
//!   first reachable node in the configured order.
//! - The published primary is *down* when it has answered no check as a
//!   master for `down_after` (since its last good check, or since the
//!   first failed one if it never passed) and at least two checks in a row
//!   failed. Then the reachable replica with the highest replication
//!   offset is promoted (ties: configured order). When no other node is
//!   reachable but the published primary answers as a replica (it was
//!   restarted as one), it is promoted again, so the deployment cannot
//!   stay without a master.
//! - While the primary is healthy, every other reachable node that is a
//!   master, or replicates another address, is fenced (`REPLICAOF
//!   <primary>`). A replica that stops answering never triggers anything
//!   but a local restart (in `local`).

use std::time::{Duration, Instant};

use agenda_common::registry::RedisPrimary;

use crate::error::Error;
use crate::redis_node::{Observation, Role};

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No primary is published: make `addr` a master (if it is not) and
    /// publish it with epoch 1.
    Bootstrap {
        /// The chosen node.
        addr: String,
        /// Why this one.
        reason: String,
    },
    /// The primary is down: `REPLICAOF NO ONE` on `addr`, then publish it
    /// with `epoch`.
    Promote {
        /// The replica to promote.
        addr: String,
        /// The epoch to publish (old + 1).
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// `addr` must replicate `primary`.
    Fence {
        /// The node to turn into a replica.
        addr: String,
        /// The published primary.
        primary: String,
        /// Why.
        reason: String,
    },
    /// The primary is down and nothing can be promoted yet.
    Hold {
        /// Why.
        reason: String,
    },
}

/// Health history of one node.
#[derive(Debug, Clone, Default)]
struct Health {
    /// The node was checked at least once (successfully or not).
    seen: bool,
    /// The last check's result, if it succeeded.
    last: Option<Observation>,
    /// Last check that found it answering as a master.
    last_master: Option<Instant>,
    /// First check of the current run of "not a master" checks.
    bad_since: Option<Instant>,
    /// Length of that run.
    bad_count: u32,
}

/// The observations of every node, in configured order.
#[derive(Debug)]
pub struct Tracker {
    nodes: Vec<(String, Health)>,
    down_after: Duration,
}

impl Tracker {
    /// Tracks `nodes` (the configured order breaks ties).
    pub fn new(nodes: &[String], down_after: Duration) -> Self {
        Tracker {
            nodes: nodes
                .iter()
                .map(|n| (n.clone(), Health::default()))
                .collect(),
            down_after,
        }
    }

    /// Records one check of `addr`.
    pub fn record(&mut self, addr: &str, now: Instant, result: Result<Observation, Error>) {
        let Some((_, h)) = self.nodes.iter_mut().find(|(a, _)| a == addr) else {
            return;
        };
        h.seen = true;
        let good_master = matches!(&result, Ok(o) if o.is_master());
        h.last = result.ok();
        if good_master {
            h.last_master = Some(now);
            h.bad_since = None;
            h.bad_count = 0;
        } else {
            h.bad_since.get_or_insert(now);
            h.bad_count += 1;
        }
    }

    /// The last successful observation of `addr`.
    pub fn last(&self, addr: &str) -> Option<&Observation> {
        self.nodes
            .iter()
            .find(|(a, _)| a == addr)
            .and_then(|(_, h)| h.last.as_ref())
    }

    /// How long `addr` has not been a master, if it is down as a primary.
    fn down_for(&self, addr: &str, now: Instant) -> Option<Duration> {
        let (_, h) = self.nodes.iter().find(|(a, _)| a == addr)?;
        let since = h.bad_since?;
        let reference = match h.last_master {
            Some(t) if t < since => t,
            _ => since,
        };
        let down = now.saturating_duration_since(reference);
        (h.bad_count >= 2 && down >= self.down_after).then_some(down)
    }

    /// What to do now.
    pub fn decide(
        &self,
        now: Instant,
        leader: bool,
        published: Option<&RedisPrimary>,
    ) -> Vec<Action> {
        if !leader {
            return Vec::new();
        }
        let Some(primary) = published else {
            return self.bootstrap().into_iter().collect();
        };
        if !self.nodes.iter().any(|(a, _)| *a == primary.addr) {
            // Published by another deployment's config? Only a node we
            // know can be checked; replace it by one we know.
            return self
                .best_replacement(None)
                .map(|(addr, why)| Action::Promote {
                    addr,
                    epoch: primary.epoch + 1,
                    reason: format!(
                        "published primary {} is not in --redis-nodes; {why}",
                        primary.addr
                    ),
                })
                .into_iter()
                .collect();
        }
        let healthy = self.last(&primary.addr).is_some_and(|o| o.is_master());
        if healthy {
            return self.fencing(&primary.addr);
        }
        let Some(down) = self.down_for(&primary.addr, now) else {
            return Vec::new();
        };
        let state = match self.last(&primary.addr) {
            None => "does not answer".to_string(),
            Some(o) => format!("answers as {:?}", o.role),
        };
        match self.best_replacement(Some(&primary.addr)) {
            Some((addr, why)) => vec![Action::Promote {
                addr,
                epoch: primary.epoch + 1,
                reason: format!(
                    "primary {} (epoch {}) {state} for {} ms; {why}",
                    primary.addr,
                    primary.epoch,
                    down.as_millis()
                ),
            }],
            None => {
                // Nobody else answers: if the old primary itself is back (as
                // a replica, since it is always restarted as one), it is the
                // only copy of the data left; make it the master again.
                if matches!(self.last(&primary.addr), Some(o) if !o.is_master()) {
                    vec![Action::Promote {
                        addr: primary.addr.clone(),
                        epoch: primary.epoch + 1,
                        reason: format!(
                            "primary {} {state} for {} ms and no other node answers; \
                             making it the master again",
                            primary.addr,
                            down.as_millis()
                        ),
                    }]
                } else {
                    vec![Action::Hold {
                        reason: format!(
                            "primary {} {state} for {} ms and no replica answers",
                            primary.addr,
                            down.as_millis()
                        ),
                    }]
                }
            }
        }
    }

    /// The answering replica with the highest offset, other than `except`.
    fn best_replacement(&self, except: Option<&str>) -> Option<(String, String)> {
        let mut best: Option<(&str, u64)> = None;
        for (addr, h) in &self.nodes {
            if Some(addr.as_str()) == except {
                continue;
            }
            let Some(o) = &h.last else { continue };
            if best.is_none_or(|(_, off)| o.offset > off) {
                best = Some((addr, o.offset));
            }
        }
        best.map(|(addr, off)| {
            (
                addr.to_string(),
                format!("promoting {addr}, the answering replica with the highest offset ({off})"),
            )
        })
    }

    fn bootstrap(&self) -> Option<Action> {
        if self.nodes.iter().any(|(_, h)| !h.seen) {
            return None;
        }
        let mut best: Option<(&str, u64)> = None;
        for (addr, h) in &self.nodes {
            if let Some(o) = h.last.as_ref().filter(|o| o.is_master()) {
                if best.is_none_or(|(_, off)| o.offset > off) {
                    best = Some((addr, o.offset));
                }
            }
        }
        if let Some((addr, off)) = best {
            return Some(Action::Bootstrap {
                addr: addr.to_string(),
                reason: format!(
                    "no primary published; {addr} is a master with the highest offset ({off})"
                ),
            });
        }
        let (addr, _) = self.nodes.iter().find(|(_, h)| h.last.is_some())?;
        Some(Action::Bootstrap {
            addr: addr.clone(),
            reason: format!(
                "no primary published and no master answers; {addr} is the first reachable node"
            ),
        })
    }

    fn fencing(&self, primary: &str) -> Vec<Action> {
        let mut out = Vec::new();
        for (addr, h) in &self.nodes {
            if addr == primary {
                continue;
            }
            let reason = match h.last.as_ref().map(|o| &o.role) {
                Some(Role::Master) => format!("{addr} is a master but {primary} is the primary"),
                Some(Role::Replica { master, .. }) if master != primary => {
                    format!("{addr} replicates {master} but {primary} is the primary")
                }
                _ => continue,
            };
            out.push(Action::Fence {
                addr: addr.clone(),
                primary: primary.to_string(),
                reason,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:7401";
    const B: &str = "127.0.0.1:7402";
    const C: &str = "127.0.0.1:7403";
    const MS: Duration = Duration::from_millis(1);

    fn master(offset: u64) -> Result<Observation, Error> {
        Ok(Observation {
            role: Role::Master,
            offset,
            pid: None,
        })
    }
    fn replica_of(m: &str, offset: u64) -> Result<Observation, Error> {
        Ok(Observation {
            role: Role::Replica {
                master: m.into(),
                link_up: true,
            },
            offset,
            pid: None,
        })
    }
    fn down() -> Result<Observation, Error> {
        Err(Error::Unexpected("connection refused".into()))
    }
    fn primary(addr: &str, epoch: u64) -> RedisPrimary {
        RedisPrimary {
            addr: addr.into(),
            epoch,
        }
    }

    /// A, B, C with A the master; `t0` is the last good round.
    fn three(t0: Instant) -> Tracker {
        let mut t = Tracker::new(&[A.into(), B.into(), C.into()], 1000 * MS);
        t.record(A, t0, master(100));
        t.record(B, t0, replica_of(A, 90));
        t.record(C, t0, replica_of(A, 80));
        t
    }

    #[test]
    fn promotes_only_after_down_after() {
        let t0 = Instant::now();
        let mut t = three(t0);
        let p = primary(A, 3);
        for i in 1..=4u32 {
            let now = t0 + 200 * i * MS;
            t.record(A, now, down());
            assert!(t.decide(now, true, Some(&p)).is_empty(), "at {i}");
        }
        let now = t0 + 1000 * MS;
        t.record(A, now, down());
        let d = t.decide(now, true, Some(&p));
        assert!(
            matches!(&d[..], [Action::Promote { addr, epoch: 4, .. }] if addr == B),
            "{d:?}"
        );
    }

    #[test]
    fn a_single_failure_is_not_enough() {
        let t0 = Instant::now();
        let mut t = three(t0);
        // Last good check long ago (e.g. the loop was stalled), one failure.
        let now = t0 + 5000 * MS;
        t.record(A, now, down());
        assert!(t.decide(now, true, Some(&primary(A, 1))).is_empty());
    }

    #[test]
    fn a_recovery_resets_the_timer() {
        let t0 = Instant::now();
        let mut t = three(t0);
        t.record(A, t0 + 600 * MS, down());
        t.record(A, t0 + 800 * MS, master(101));
        t.record(A, t0 + 1000 * MS, down());
        t.record(A, t0 + 1200 * MS, down());
        assert!(t
            .decide(t0 + 1200 * MS, true, Some(&primary(A, 1)))
            .is_empty());
    }

    #[test]
    fn chooses_the_replica_with_the_highest_offset() {
        let t0 = Instant::now();
        let mut t = three(t0);
        let now = t0 + 1200 * MS;
        t.record(A, t0 + 200 * MS, down());
        t.record(A, now, down());
        t.record(B, now, replica_of(A, 90));
        t.record(C, now, replica_of(A, 95));
        let d = t.decide(now, true, Some(&primary(A, 1)));
        assert!(
            matches!(&d[..], [Action::Promote { addr, epoch: 2, .. }] if addr == C),
            "{d:?}"
        );
        // A replica that no longer answers is not a candidate.
        t.record(C, now, down());
        let d = t.decide(now, true, Some(&primary(A, 1)));
        assert!(
            matches!(&d[..], [Action::Promote { addr, .. }] if addr == B),
            "{d:?}"
        );
    }

    #[test]
    fn never_decides_when_not_leader() {
        let t0 = Instant::now();
        let mut t = three(t0);
        t.record(A, t0 + 200 * MS, down());
        t.record(A, t0 + 2000 * MS, down());
        assert!(t
            .decide(t0 + 2000 * MS, false, Some(&primary(A, 1)))
            .is_empty());
        assert!(t.decide(t0 + 2000 * MS, false, None).is_empty());
        // The same state as leader does promote.
        assert!(!t
            .decide(t0 + 2000 * MS, true, Some(&primary(A, 1)))
            .is_empty());
    }

    #[test]
    fn a_dead_replica_causes_no_promotion() {
        let t0 = Instant::now();
        let mut t = three(t0);
        for i in 1..=20u32 {
            let now = t0 + 200 * i * MS;
            t.record(A, now, master(100 + u64::from(i)));
            t.record(B, now, down());
            assert!(t.decide(now, true, Some(&primary(A, 1))).is_empty());
        }
    }

    #[test]
    fn fences_a_returning_old_primary() {
        let t0 = Instant::now();
        let mut t = three(t0);
        // B was promoted (epoch 2); A comes back as a master.
        let p = primary(B, 2);
        let now = t0 + 3000 * MS;
        t.record(B, now, master(200));
        t.record(A, now, master(100));
        t.record(C, now, replica_of(B, 200));
        let d = t.decide(now, true, Some(&p));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            matches!(&d[0], Action::Fence { addr, primary, .. } if addr == A && primary == B),
            "{d:?}"
        );
        // A replica of the wrong master is fenced too.
        t.record(A, now, replica_of(C, 100));
        let d = t.decide(now, true, Some(&p));
        assert!(
            matches!(&d[..], [Action::Fence { addr, .. }] if addr == A),
            "{d:?}"
        );
        // Once it replicates the primary, nothing to do.
        t.record(A, now, replica_of(B, 200));
        assert!(t.decide(now, true, Some(&p)).is_empty());
        // A non-leader never fences.
        t.record(A, now, master(100));
        assert!(t.decide(now, false, Some(&p)).is_empty());
    }

    #[test]
    fn no_fencing_while_the_primary_is_down() {
        let t0 = Instant::now();
        let mut t = three(t0);
        let now = t0 + 400 * MS;
        t.record(A, now, down());
        t.record(B, now, master(90));
        assert!(t.decide(now, true, Some(&primary(A, 1))).is_empty());
    }

    #[test]
    fn a_primary_answering_as_a_replica_is_down() {
        let t0 = Instant::now();
        let mut t = three(t0);
        t.record(A, t0 + 200 * MS, replica_of(B, 100));
        t.record(A, t0 + 1000 * MS, replica_of(B, 100));
        let d = t.decide(t0 + 1000 * MS, true, Some(&primary(A, 1)));
        assert!(
            matches!(&d[..], [Action::Promote { addr, .. }] if addr == B),
            "{d:?}"
        );
    }

    #[test]
    fn the_old_primary_is_promoted_again_when_alone() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&[A.into(), B.into()], 1000 * MS);
        t.record(A, t0, master(10));
        t.record(B, t0, replica_of(A, 10));
        t.record(A, t0 + 200 * MS, down());
        t.record(B, t0 + 200 * MS, down());
        let now = t0 + 1200 * MS;
        t.record(B, now, down());
        t.record(A, now, down());
        assert!(matches!(
            &t.decide(now, true, Some(&primary(A, 1)))[..],
            [Action::Hold { .. }]
        ));
        t.record(A, now, replica_of(B, 10));
        let d = t.decide(now, true, Some(&primary(A, 1)));
        assert!(
            matches!(&d[..], [Action::Promote { addr, epoch: 2, .. }] if addr == A),
            "{d:?}"
        );
    }

    #[test]
    fn bootstrap_waits_for_every_node_then_prefers_a_master() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&[A.into(), B.into()], 1000 * MS);
        t.record(A, t0, replica_of(B, 0));
        assert!(t.decide(t0, true, None).is_empty());
        t.record(B, t0, master(5));
        let d = t.decide(t0, true, None);
        assert!(
            matches!(&d[..], [Action::Bootstrap { addr, .. }] if addr == B),
            "{d:?}"
        );
        // No master anywhere: the first reachable node in configured order.
        t.record(A, t0, down());
        t.record(B, t0, replica_of(A, 0));
        let d = t.decide(t0, true, None);
        assert!(
            matches!(&d[..], [Action::Bootstrap { addr, .. }] if addr == B),
            "{d:?}"
        );
        assert!(t.decide(t0, false, None).is_empty());
    }
}
