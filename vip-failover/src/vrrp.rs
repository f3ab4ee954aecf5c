//! The VRRP-like state machine (RFC 5798's timers and priorities), pure:
//! every input carries its `now`, every output is an [`Action`] for the
//! daemon to carry out. No I/O, no clock.
//!
//! States: `Backup` listens and runs the master-down timer; `Claiming`
//! has asked the daemon to take the VIP lease and address (the only way
//! to become `Master`); `Master` sends adverts; `Fault` (the local gateway
//! is unhealthy) takes no part. The lease in agenda-db is what makes a
//! master: this machine only decides when to try and when to give up.

use std::time::{Duration, Instant};

use crate::advert::Advert;

/// What the daemon must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert at our priority.
    Advert,
    /// Try to become master: commit the VIP lease, add the address,
    /// gratuitous ARP; then report with [`Vrrp::claim_result`].
    /// `lock_delay`: the previous master vanished without releasing, so
    /// wait the lock-delay once the key is free (its lease expired).
    Claim {
        /// Wait the lock-delay before claiming a free key.
        lock_delay: bool,
    },
    /// Give the VIP up, in this order: remove the address, revoke the
    /// lease, send a priority-0 advert.
    Release,
}

/// The daemon's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Listening; takes over when the master is silent.
    Backup,
    /// Taking the lease and the address.
    Claiming,
    /// Holds the lease and the address; sends adverts.
    Master,
    /// The local gateway is unhealthy: no part in the election.
    Fault,
}

impl State {
    /// Lower-case name (logs, metrics, status).
    pub fn name(self) -> &'static str {
        match self {
            State::Backup => "backup",
            State::Claiming => "claiming",
            State::Master => "master",
            State::Fault => "fault",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [State; 4] = [State::Backup, State::Claiming, State::Master, State::Fault];
}

/// Why the state changed (logged and counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The master was silent for the master-down interval.
    MasterDown,
    /// The master sent a priority-0 advert (it gave the VIP up).
    PeerReleased,
    /// A peer with a higher priority (or equal, and a higher id) adverts.
    Preempted(String),
    /// The local gateway became unhealthy.
    HealthLost,
    /// The local gateway is healthy again.
    HealthBack,
    /// The lease and address are ours.
    Claimed,
    /// The claim failed (held by another, or agenda-db unreachable).
    ClaimFailed,
    /// The lease could not be renewed in time.
    LeaseLost,
    /// The daemon is stopping.
    Shutdown,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::MasterDown => {
                f.write_str("master down (no advert within the master-down interval)")
            }
            Reason::PeerReleased => f.write_str("the master released the VIP (priority-0 advert)"),
            Reason::Preempted(by) => write!(f, "preempted by {by} (higher priority)"),
            Reason::HealthLost => f.write_str("local gateway unhealthy"),
            Reason::HealthBack => f.write_str("local gateway healthy again"),
            Reason::Claimed => f.write_str("VIP lease committed, address added"),
            Reason::ClaimFailed => {
                f.write_str("claim failed (lease held elsewhere or agenda-db unreachable)")
            }
            Reason::LeaseLost => f.write_str("VIP lease not renewed in time"),
            Reason::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// After.
    pub to: State,
    /// Why.
    pub reason: Reason,
}

/// Fixed settings.
#[derive(Debug, Clone)]
pub struct Params {
    /// This daemon's id (ties between equal priorities go to the higher id).
    pub id: String,
    /// 1-254.
    pub priority: u8,
    /// Time between two adverts of a master.
    pub advert_interval: Duration,
    /// Take over from a lower-priority master.
    pub preempt: bool,
    /// One peer only (two machines). RFC 5798 has backups wait the skew
    /// after a release so that the highest priority takes over first;
    /// with no other backup to compete, that wait is pure delay (and the
    /// VIP lease would settle any race anyway), so a sole backup takes
    /// over at once.
    pub sole_backup: bool,
}

/// The state machine.
#[derive(Debug)]
pub struct Vrrp {
    p: Params,
    state: State,
    master_down_at: Instant,
    next_advert_at: Instant,
    /// The last advert heard from a master was a release: a claim now
    /// needs no lock-delay.
    peer_released: bool,
    transitions: Vec<Transition>,
}

impl Vrrp {
    /// Starts as `Backup` (or `Fault` when the gateway is not healthy yet).
    pub fn new(p: Params, healthy: bool, now: Instant) -> Self {
        let mut v = Vrrp {
            state: if healthy { State::Backup } else { State::Fault },
            master_down_at: now,
            next_advert_at: now,
            peer_released: false,
            transitions: Vec::new(),
            p,
        };
        v.master_down_at = now + v.master_down_interval();
        v
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// RFC 5798: `(256 - priority) * interval / 256`; a higher priority
    /// takes over first.
    pub fn skew(&self) -> Duration {
        self.p.advert_interval * (256 - u32::from(self.p.priority)) / 256
    }

    /// RFC 5798: three adverts missed, plus the skew.
    pub fn master_down_interval(&self) -> Duration {
        self.p.advert_interval * 3 + self.skew()
    }

    /// When [`Vrrp::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backup => Some(self.master_down_at),
            State::Master | State::Claiming => Some(self.next_advert_at),
            State::Fault => None,
        }
    }

    /// State changes since the last call.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    fn go(&mut self, to: State, reason: Reason) {
        if self.state != to {
            self.transitions.push(Transition {
                from: self.state,
                to,
                reason,
            });
            self.state = to;
        }
    }

    fn enter_backup(&mut self, reason: Reason, now: Instant) {
        self.master_down_at = now + self.master_down_interval();
        self.go(State::Backup, reason);
    }

    /// Timers.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backup if now >= self.master_down_at => {
                self.go(
                    State::Claiming,
                    if self.peer_released {
                        Reason::PeerReleased
                    } else {
                        Reason::MasterDown
                    },
                );
                // A claimant adverts too, so a lower-priority master that
                // holds the lease yields to it (preemption).
                self.next_advert_at = now + self.p.advert_interval;
                vec![
                    Action::Advert,
                    Action::Claim {
                        lock_delay: !self.peer_released,
                    },
                ]
            }
            State::Master | State::Claiming if now >= self.next_advert_at => {
                self.next_advert_at = now + self.p.advert_interval;
                vec![Action::Advert]
            }
            _ => Vec::new(),
        }
    }

    /// Does `a` outrank us?
    fn outranks(&self, a: &Advert) -> bool {
        a.priority > self.p.priority || (a.priority == self.p.priority && a.id > self.p.id)
    }

    /// An authenticated advert from a peer.
    pub fn on_advert(&mut self, a: &Advert, now: Instant) -> Vec<Action> {
        if a.id == self.p.id {
            return Vec::new(); // our own, looped back
        }
        match self.state {
            State::Backup | State::Fault => {
                if a.priority == 0 {
                    // The master gave up: take over after the skew only
                    // (at once with nobody else to compete).
                    self.peer_released = true;
                    self.master_down_at = if self.p.sole_backup {
                        now
                    } else {
                        now + self.skew()
                    };
                } else if !self.p.preempt || a.priority >= self.p.priority {
                    self.peer_released = false;
                    self.master_down_at = now + self.master_down_interval();
                }
                // A lower priority master with preemption on: let the
                // timer run out, then claim (and advert, so it yields).
                Vec::new()
            }
            State::Claiming => Vec::new(),
            State::Master => {
                if a.priority != 0 && self.outranks(a) {
                    self.enter_backup(Reason::Preempted(a.id.clone()), now);
                    vec![Action::Release]
                } else if a.priority == 0 {
                    Vec::new()
                } else {
                    // RFC 5798: a lower-priority master is told at once.
                    self.next_advert_at = now + self.p.advert_interval;
                    vec![Action::Advert]
                }
            }
        }
    }

    /// The local gateway's (debounced) health changed.
    pub fn on_health(&mut self, healthy: bool, now: Instant) -> Vec<Action> {
        match (self.state, healthy) {
            (State::Fault, true) => {
                self.enter_backup(Reason::HealthBack, now);
                Vec::new()
            }
            (State::Master | State::Claiming, false) => {
                self.go(State::Fault, Reason::HealthLost);
                vec![Action::Release]
            }
            (State::Backup, false) => {
                self.go(State::Fault, Reason::HealthLost);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The outcome of a [`Action::Claim`].
    pub fn claim_result(&mut self, ok: bool, now: Instant) -> Vec<Action> {
        if self.state != State::Claiming {
            // Health was lost while claiming: give back what was taken.
            return if ok {
                vec![Action::Release]
            } else {
                Vec::new()
            };
        }
        if ok {
            self.go(State::Master, Reason::Claimed);
            self.peer_released = false;
            self.next_advert_at = now + self.p.advert_interval;
            vec![Action::Advert]
        } else {
            // Retry soon unless a master's adverts say otherwise.
            self.go(State::Backup, Reason::ClaimFailed);
            self.master_down_at = now + self.p.advert_interval * 2;
            Vec::new()
        }
    }

    /// The lease could not be renewed in time.
    pub fn lease_lost(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Master | State::Claiming => {
                self.enter_backup(Reason::LeaseLost, now);
                vec![Action::Release]
            }
            _ => Vec::new(),
        }
    }

    /// The daemon is stopping.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let held = matches!(self.state, State::Master | State::Claiming);
        self.enter_backup(Reason::Shutdown, now);
        if held {
            vec![Action::Release]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn vrrp(id: &str, priority: u8, preempt: bool, now: Instant) -> Vrrp {
        Vrrp::new(
            Params {
                id: id.into(),
                priority,
                advert_interval: 100 * MS,
                preempt,
                sole_backup: false,
            },
            true,
            now,
        )
    }

    fn advert(id: &str, priority: u8) -> Advert {
        Advert {
            id: id.into(),
            priority,
            interval_ms: 100,
            counter: 1,
        }
    }

    #[test]
    fn timers_follow_rfc_5798() {
        let t = Instant::now();
        let v = vrrp("a", 100, true, t);
        // skew = (256 - 100) * 100 ms / 256 = 60.9 ms
        assert_eq!(v.skew().as_micros(), 60_937);
        assert_eq!(v.master_down_interval().as_micros(), 360_937);
        assert!(vrrp("b", 254, true, t).skew() < vrrp("c", 1, true, t).skew());
    }

    #[test]
    fn a_silent_master_is_taken_over_after_the_master_down_interval_with_lock_delay() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        v.on_advert(&advert("a", 150), t);
        assert!(v.tick(t + 360 * MS).is_empty(), "not yet");
        assert_eq!(
            v.tick(t + 361 * MS),
            vec![Action::Advert, Action::Claim { lock_delay: true }]
        );
        assert_eq!(v.state(), State::Claiming);
        assert_eq!(v.claim_result(true, t + 370 * MS), vec![Action::Advert]);
        assert_eq!(v.state(), State::Master);
        let tr = v.take_transitions();
        assert_eq!(tr[0].reason, Reason::MasterDown);
        assert_eq!(tr[1].reason, Reason::Claimed);
        // A master adverts every interval.
        assert!(v.tick(t + 400 * MS).is_empty());
        assert_eq!(v.tick(t + 470 * MS), vec![Action::Advert]);
    }

    #[test]
    fn adverts_keep_a_backup_quiet() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        for i in 0..20 {
            let now = t + i * 100 * MS;
            v.on_advert(&advert("a", 150), now);
            assert!(v.tick(now + 50 * MS).is_empty());
        }
        assert_eq!(v.state(), State::Backup);
    }

    #[test]
    fn a_release_is_taken_over_after_the_skew_without_lock_delay() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        v.on_advert(&advert("a", 150), t);
        v.on_advert(&advert("a", 0), t + 10 * MS);
        assert!(v.tick(t + 70 * MS).is_empty());
        assert_eq!(
            v.tick(t + 71 * MS),
            vec![Action::Advert, Action::Claim { lock_delay: false }]
        );
        assert_eq!(v.take_transitions()[0].reason, Reason::PeerReleased);
    }

    #[test]
    fn a_sole_backup_takes_a_release_over_at_once() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        v.p.sole_backup = true;
        v.on_advert(&advert("a", 150), t);
        v.on_advert(&advert("a", 0), t + 10 * MS);
        assert_eq!(
            v.tick(t + 10 * MS),
            vec![Action::Advert, Action::Claim { lock_delay: false }]
        );
        // A master that merely stopped adverting is still waited out.
        let mut w = vrrp("b", 100, true, t);
        w.p.sole_backup = true;
        w.on_advert(&advert("a", 150), t);
        assert!(w.tick(t + 300 * MS).is_empty());
    }

    #[test]
    fn a_failed_claim_retries_soon_unless_a_master_adverts() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        v.tick(t + 400 * MS);
        assert!(v.claim_result(false, t + 410 * MS).is_empty());
        assert_eq!(v.state(), State::Backup);
        assert_eq!(
            v.tick(t + 610 * MS),
            vec![Action::Advert, Action::Claim { lock_delay: true }]
        );
        v.claim_result(false, t + 620 * MS);
        v.on_advert(&advert("a", 150), t + 630 * MS);
        assert!(v.tick(t + 900 * MS).is_empty(), "the master is alive");
    }

    #[test]
    fn a_master_yields_to_a_higher_priority_and_ties_go_to_the_higher_id() {
        let t = Instant::now();
        let mut v = vrrp("b", 100, true, t);
        v.tick(t + 400 * MS);
        v.claim_result(true, t + 400 * MS);
        assert_eq!(
            v.on_advert(&advert("a", 50), t + 450 * MS),
            vec![Action::Advert]
        );
        assert_eq!(v.state(), State::Master);
        assert!(v.on_advert(&advert("a", 100), t + 460 * MS).len() == 1);
        assert_eq!(v.state(), State::Master, "same priority, lower id");
        assert_eq!(
            v.on_advert(&advert("c", 100), t + 470 * MS),
            vec![Action::Release]
        );
        assert_eq!(v.state(), State::Backup);
        assert_eq!(
            v.take_transitions().last().unwrap().reason,
            Reason::Preempted("c".into())
        );
    }

    #[test]
    fn preemption_claims_over_a_lower_master_and_no_preempt_does_not() {
        let t = Instant::now();
        let mut eager = vrrp("a", 150, true, t);
        let mut patient = vrrp("a", 150, false, t);
        for i in 0..10 {
            let now = t + i * 100 * MS;
            eager.on_advert(&advert("b", 100), now);
            patient.on_advert(&advert("b", 100), now);
        }
        // The last advert came at 900 ms: the patient one's master-down
        // timer (341 ms) still runs, the eager one ignored it.
        let later = t + 1200 * MS;
        assert!(eager
            .tick(later)
            .contains(&Action::Claim { lock_delay: true }));
        assert!(patient.tick(later).is_empty());
        assert_eq!(patient.state(), State::Backup);
    }

    #[test]
    fn unhealthy_gateway_releases_at_once_and_sits_out() {
        let t = Instant::now();
        let mut v = vrrp("a", 150, true, t);
        v.tick(t + 400 * MS);
        v.claim_result(true, t + 400 * MS);
        assert_eq!(v.on_health(false, t + 500 * MS), vec![Action::Release]);
        assert_eq!(v.state(), State::Fault);
        assert_eq!(v.next_deadline(), None);
        assert!(v.tick(t + 5000 * MS).is_empty(), "no claim while unhealthy");
        v.on_health(true, t + 6000 * MS);
        assert_eq!(v.state(), State::Backup);
        assert_eq!(
            v.next_deadline(),
            Some(t + 6000 * MS + v.master_down_interval())
        );
    }

    #[test]
    fn health_lost_while_claiming_gives_back_a_claim_that_succeeded() {
        let t = Instant::now();
        let mut v = vrrp("a", 150, true, t);
        v.tick(t + 400 * MS);
        assert_eq!(v.on_health(false, t + 401 * MS), vec![Action::Release]);
        assert_eq!(v.claim_result(true, t + 402 * MS), vec![Action::Release]);
        assert_eq!(v.state(), State::Fault);
    }

    #[test]
    fn lease_loss_and_shutdown_release_only_what_is_held() {
        let t = Instant::now();
        let mut v = vrrp("a", 150, true, t);
        assert!(v.lease_lost(t).is_empty());
        assert!(v.shutdown(t).is_empty());
        v.tick(t + 400 * MS);
        v.claim_result(true, t + 400 * MS);
        assert_eq!(v.lease_lost(t + 500 * MS), vec![Action::Release]);
        assert_eq!(v.state(), State::Backup);
        v.tick(t + 1000 * MS);
        v.claim_result(true, t + 1000 * MS);
        assert_eq!(v.shutdown(t + 1100 * MS), vec![Action::Release]);
    }

    #[test]
    fn own_adverts_are_ignored() {
        let t = Instant::now();
        let mut v = vrrp("a", 150, true, t);
        v.on_advert(&advert("a", 0), t);
        assert!(v.tick(t + 100 * MS).is_empty());
    }
}
