//! The leader election of `agenda_common::election` in the simulation:
//! three candidates run the real [`Candidate`] rules against the
//! simulated cluster, and may crash (losing everything) or pause (a
//! stalled process that does not see time pass). Checked at every
//! election: no other candidate may still act, that is, lead with a
//! deadline not yet passed ("never two holders acting at once").

use agenda_common::election::{Answer, Call, Candidate, Next, Timing};
use agenda_proto::db::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest,
};
use agenda_proto::raft::{command, command_error, command_result, CommandResult};
use tokio::sync::oneshot;

use super::{range_at, Event, Rng, World, MS, SEC};

/// The election key every candidate campaigns for.
const KEY: &str = "election/sim";
/// Lease TTL of the election.
const TTL_MS: u64 = 2_000;
/// Candidates per run.
pub const ELECTORS: usize = 3;

/// One candidate process.
pub struct Elector {
    id: u64,
    rng: Rng,
    /// None while crashed.
    cand: Option<Candidate>,
    call: Option<InCall>,
    /// Does not run before this (a stalled process).
    paused_until: u64,
    /// Calls made, for request ids.
    n: u64,
}

struct InCall {
    wait: CallWait,
    deadline: u64,
}

enum CallWait {
    Proposal(oneshot::Receiver<agenda_db::Result<CommandResult>>),
    Read(u64, oneshot::Receiver<agenda_db::Result<()>>),
}

impl Elector {
    pub fn new(id: u64, rng: Rng) -> Self {
        Elector {
            id,
            rng,
            cand: None,
            call: None,
            paused_until: 0,
            n: 0,
        }
    }
}

impl World {
    fn instant(&self, t: u64) -> std::time::Instant {
        self.base + std::time::Duration::from_nanos(t)
    }

    fn virtual_ns(&self, at: std::time::Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn fresh_candidate(&self, e: usize) -> Candidate {
        let timing = Timing::new(std::time::Duration::from_millis(TTL_MS));
        let mut c = Candidate::new(
            KEY,
            &format!("e{}", e + 1),
            timing,
            self.instant(self.now()),
        );
        c.ignore_deadline = self.cfg.election_ignores_deadline;
        c
    }

    /// Starts the candidates.
    pub(super) fn start_electors(&mut self) {
        for e in 0..self.electors.len() {
            self.electors[e].cand = Some(self.fresh_candidate(e));
            let t = self.now() + self.rng.between(MS, 50 * MS);
            self.at(t, Event::Elector(e));
        }
    }

    /// Stops every candidate (the end of the run): their leases expire.
    pub(super) fn stop_electors(&mut self) {
        for e in &mut self.electors {
            e.cand = None;
            e.call = None;
        }
    }

    /// Whether candidate `e` may act at `now`.
    fn acting(&self, e: usize, now: u64) -> bool {
        let Some(c) = self.electors[e].cand.as_ref() else {
            return false;
        };
        match c.valid_until() {
            None => false,
            Some(_) if c.ignore_deadline => true,
            Some(until) => self.virtual_ns(until) > now,
        }
    }

    /// A fault for the candidates: one crashes and restarts later, or
    /// stalls for a while.
    pub(super) fn elector_fault(&mut self) {
        let e = self.rng.below(self.electors.len() as u64) as usize;
        let now = self.now();
        if self.rng.below(2) == 0 {
            self.trace(format_args!("elector {} crashes", e + 1));
            self.electors[e].cand = None;
            self.electors[e].call = None;
            let t = now + self.rng.between(100 * MS, 3 * SEC);
            self.electors[e].paused_until = t;
            self.at(t, Event::Elector(e));
        } else {
            let t = now + self.rng.between(100 * MS, 4 * SEC);
            self.trace(format_args!(
                "elector {} stalls for {} ms",
                e + 1,
                (t - now) / MS
            ));
            self.electors[e].paused_until = t;
        }
    }

    /// Runs candidate `e` as far as it goes now.
    pub(super) fn elector_step(&mut self, e: usize) {
        let now = self.now();
        if self.stopping {
            return;
        }
        if now < self.electors[e].paused_until {
            let t = self.electors[e].paused_until;
            self.at(t, Event::Elector(e));
            return;
        }
        if self.electors[e].cand.is_none() {
            self.trace(format_args!("elector {} restarts", e + 1));
            self.electors[e].cand = Some(self.fresh_candidate(e));
        }
        if let Some(mut call) = self.electors[e].call.take() {
            match self.call_answer(&mut call) {
                Some(answer) => self.answer(e, answer),
                None if now >= call.deadline => {
                    self.answer(e, Answer::Failed("not answered in time".into()))
                }
                None => {
                    self.electors[e].call = Some(call);
                    let t = (now + self.electors[e].rng.between(MS, 10 * MS))
                        .min(call_deadline(&self.electors[e]));
                    self.at(t, Event::Elector(e));
                    return;
                }
            }
        }
        loop {
            let at = self.instant(now);
            let next = self.electors[e].cand.as_mut().expect("running").next(at);
            match next {
                Next::Call { call, deadline } => {
                    let deadline = self.virtual_ns(deadline);
                    self.trace(format_args!("elector {} calls {call:?}", e + 1));
                    let wait = self.start_call(e, call);
                    self.electors[e].call = Some(InCall { wait, deadline });
                    let t = (now + self.electors[e].rng.between(MS, 10 * MS)).min(deadline);
                    self.at(t, Event::Elector(e));
                    return;
                }
                Next::Wait(at) => {
                    let t = self.virtual_ns(at).max(now + 1);
                    self.at(t, Event::Elector(e));
                    return;
                }
                Next::Elected { lease } => {
                    self.report.elections += 1;
                    self.trace(format_args!("elector {} elected, lease {lease}", e + 1));
                    for o in 0..self.electors.len() {
                        if o != e && self.acting(o, now) {
                            self.fail(format!(
                                "two holders: elector {} was elected while elector {} may still act",
                                e + 1,
                                o + 1
                            ));
                            return;
                        }
                    }
                }
                Next::Lost(why) => self.trace(format_args!("elector {} lost: {why}", e + 1)),
                Next::Other(by) => self.trace(format_args!("elector {} sees {by} leading", e + 1)),
                Next::Failed(why) => self.trace(format_args!("elector {} failed: {why}", e + 1)),
            }
        }
    }

    fn answer(&mut self, e: usize, answer: Answer) {
        let now = self.instant(self.now());
        self.trace(format_args!("elector {} answered {answer:?}", e + 1));
        if let Some(c) = self.electors[e].cand.as_mut() {
            c.answer(now, answer);
        }
    }

    /// Sends a candidate's call to a node picked at random.
    fn start_call(&mut self, e: usize, call: Call) -> CallWait {
        let pick = self.electors[e].rng.next_u64();
        let node = self.pick_node(pick).unwrap_or(1);
        let el = &mut self.electors[e];
        el.n += 1;
        let (client, n) = (100 + el.id, el.n);
        let op = match call {
            Call::Read => {
                let (tx, rx) = oneshot::channel();
                self.poke(
                    node,
                    Some(agenda_db::node::Request::ReadIndex { reply: tx }),
                    false,
                );
                return CallWait::Read(node, rx);
            }
            Call::Grant(ttl) => {
                self.leases.next += 1;
                command::Op::LeaseGrant(LeaseGrantRequest {
                    id: 5_000 + self.leases.next,
                    ttl_ms: ttl.as_millis() as i64,
                    ..Default::default()
                })
            }
            Call::Acquire(txn) => command::Op::Txn(txn),
            Call::KeepAlive(id) => command::Op::LeaseKeepAlive(LeaseKeepAliveRequest {
                id,
                ..Default::default()
            }),
            Call::Revoke(id) => command::Op::LeaseRevoke(LeaseRevokeRequest {
                id,
                ..Default::default()
            }),
        };
        let cmd = self.command(client, n, op);
        CallWait::Proposal(self.propose(node, cmd))
    }

    /// The answer to a call, once there is one.
    fn call_answer(&mut self, call: &mut InCall) -> Option<Answer> {
        match &mut call.wait {
            CallWait::Proposal(rx) => match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Some(Answer::Failed("node gone".into()))
                }
                Ok(Err(e)) => Some(Answer::Failed(e.to_string())),
                Ok(Ok(res)) => Some(match res.result {
                    Some(command_result::Result::LeaseGrant(g)) => Answer::Granted(g.id),
                    Some(command_result::Result::Txn(t)) => Answer::Acquired(t.succeeded),
                    Some(command_result::Result::LeaseKeepAlive(_)) => Answer::KeptAlive,
                    Some(command_result::Result::LeaseRevoke(_)) => Answer::Revoked,
                    Some(command_result::Result::Error(err))
                        if err.code == command_error::Code::NotFound as i32 =>
                    {
                        Answer::Gone
                    }
                    other => Answer::Failed(format!("{other:?}")),
                }),
            },
            CallWait::Read(node, rx) => match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Some(Answer::Failed("node gone".into()))
                }
                Ok(Err(e)) => Some(Answer::Failed(e.to_string())),
                Ok(Ok(())) => {
                    let up = self.nodes[*node as usize - 1].up.as_ref()?;
                    let view = up.view.load();
                    let req = RangeRequest {
                        key: KEY.as_bytes().to_vec(),
                        ..Default::default()
                    };
                    Some(match range_at(&view, &req) {
                        Ok(r) => Answer::Read(r.kvs.into_iter().next()),
                        Err(e) => Answer::Failed(e.to_string()),
                    })
                }
            },
        }
    }
}

fn call_deadline(e: &Elector) -> u64 {
    e.call.as_ref().map_or(u64::MAX, |c| c.deadline)
}
