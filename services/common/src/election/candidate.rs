//! The rules of a leased election, without I/O: what a candidate asks
//! agenda-db next, and until when it may act. [`super::campaign`] drives a
//! [`Candidate`] over the network, agenda-vip drives one for the VIP
//! lease, and the simulator (`tests/src/sim`) drives one over its
//! simulated cluster, where "never two holders acting at once" is checked
//! under crashes, partitions and pauses.
//!
//! Why it is safe: a lease is extended on the servers no earlier than the
//! first send of the call that granted or renewed it, and it expires a
//! full TTL after that on each server's monotonic clock. A candidate acts
//! only until that send plus the TTL minus a margin (for clock rates and
//! for stopping what it does), whatever happens to its calls; a rival can
//! only create the key after the lease expired and its revoke committed.

use std::time::{Duration, Instant};

use agenda_proto::db::{compare, request_op, Compare, KeyValue, PutRequest, RequestOp, TxnRequest};

/// Timing of one election's lease.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The lease TTL.
    pub ttl: Duration,
    /// Extra wait before taking a key found empty, when the caller asks for
    /// it (agenda-vip: a holder whose lease expired surely let go).
    pub lock_delay: Duration,
}

impl Timing {
    /// A TTL and no lock delay.
    pub fn new(ttl: Duration) -> Self {
        Timing {
            ttl,
            lock_delay: Duration::ZERO,
        }
    }

    /// Renewal period: four keep-alives per TTL, so a failed one has
    /// time for another try before the deadline.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// How long before the lease could expire the holder stops acting.
    pub fn margin(&self) -> Duration {
        self.ttl / 6
    }

    /// The longest any one call may take.
    pub fn call_timeout(&self) -> Duration {
        self.ttl / 4
    }

    /// Pause between two campaign attempts.
    pub fn retry(&self) -> Duration {
        (self.ttl / 6).max(Duration::from_millis(100))
    }
}

/// A call the candidate wants made to agenda-db.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A linearizable read of the key.
    Read,
    /// Grant a lease of this TTL.
    Grant(Duration),
    /// This txn: put key = id under the new lease if the key is as read.
    Acquire(TxnRequest),
    /// Keep this lease alive.
    KeepAlive(i64),
    /// Revoke this lease (its key goes with it).
    Revoke(i64),
}

/// What became of a [`Call`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The key's current value, if any.
    Read(Option<KeyValue>),
    /// The lease granted.
    Granted(i64),
    /// Whether the acquire txn's compare held.
    Acquired(bool),
    /// The keep-alive was applied.
    KeptAlive,
    /// The revoke was applied.
    Revoked,
    /// The lease does not exist (any more).
    Gone,
    /// No answer, or an error worth retrying.
    Failed(String),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Make this call, and answer [`Answer::Failed`] if it has not ended
    /// by `deadline`.
    Call {
        /// The call.
        call: Call,
        /// When to give it up.
        deadline: Instant,
    },
    /// Nothing to do until then (a call in flight is answered earlier).
    Wait(Instant),
    /// Elected: act from now on, until [`Next::Lost`].
    Elected {
        /// The lease the key is attached to.
        lease: i64,
    },
    /// Stop acting now.
    Lost(String),
    /// Someone else holds the key (its value); the campaign goes on.
    Other(String),
    /// This attempt failed (why); the campaign goes on after a pause.
    Failed(String),
}

#[derive(Debug)]
enum State {
    /// Campaign (read the key) at `at`.
    Idle {
        at: Instant,
    },
    AwaitRead {
        deadline: Instant,
    },
    /// Grant a lease at `at` (after the lock delay), then try `compare`.
    Grant {
        at: Instant,
        compare: Compare,
        stale: Option<i64>,
    },
    AwaitGrant {
        compare: Compare,
        stale: Option<i64>,
        sent: Instant,
        deadline: Instant,
    },
    AwaitAcquire {
        lease: i64,
        stale: Option<i64>,
        granted: Instant,
        deadline: Instant,
    },
    Leading(Lead),
    /// Revoke `lease`, then campaign again.
    Revoke {
        lease: i64,
    },
    AwaitRevoke {
        deadline: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Lead {
    lease: i64,
    /// Stop acting at this instant at the latest.
    valid_until: Instant,
    renew_at: Instant,
    /// A lease of ours from before a restart, revoked once elected.
    stale: Option<i64>,
    /// A keep-alive sent then and not yet answered.
    renewing: Option<(Instant, Instant)>,
}

/// One candidate for one key.
#[derive(Debug)]
pub struct Candidate {
    key: String,
    id: String,
    timing: Timing,
    /// Wait the lock delay before taking a key found empty.
    lock_delay: bool,
    state: State,
    /// Announced by the next [`Candidate::next`] before anything else.
    pending: Option<Next>,
    /// Test-only: act until a call says the lease is gone, not until the
    /// deadline (the simulator shows it gives two holders).
    pub ignore_deadline: bool,
}

impl Candidate {
    /// A candidate `id` for `key`, campaigning from `now`.
    pub fn new(key: &str, id: &str, timing: Timing, now: Instant) -> Self {
        Candidate {
            key: key.to_string(),
            id: id.to_string(),
            timing,
            lock_delay: false,
            state: State::Idle { at: now },
            pending: None,
            ignore_deadline: false,
        }
    }

    /// Waits the lock delay before taking a key found empty.
    pub fn with_lock_delay(mut self, on: bool) -> Self {
        self.lock_delay = on;
        self
    }

    /// The timing it runs by.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The lease held while leading.
    pub fn lease(&self) -> Option<i64> {
        match &self.state {
            State::Leading(l) => Some(l.lease),
            _ => None,
        }
    }

    /// Until when a leader may act (None: not leading).
    pub fn valid_until(&self) -> Option<Instant> {
        match &self.state {
            State::Leading(l) => Some(l.valid_until),
            _ => None,
        }
    }

    /// What to do at `now`. Call again after every answer and whenever a
    /// [`Next::Wait`] instant passes.
    pub fn next(&mut self, now: Instant) -> Next {
        if let Some(p) = self.pending.take() {
            return p;
        }
        if let Some(deadline) = self.deadline() {
            if now < deadline {
                return Next::Wait(deadline);
            }
            self.answer(now, Answer::Failed("not answered in time".into()));
            if let Some(p) = self.pending.take() {
                return p;
            }
        }
        let t = self.timing;
        match &mut self.state {
            State::Idle { at } if now < *at => Next::Wait(*at),
            State::Idle { .. } => {
                let deadline = now + t.call_timeout();
                self.state = State::AwaitRead { deadline };
                Next::Call {
                    call: Call::Read,
                    deadline,
                }
            }
            State::Grant { at, .. } if now < *at => Next::Wait(*at),
            State::Grant { compare, stale, .. } => {
                let deadline = now + t.call_timeout();
                self.state = State::AwaitGrant {
                    compare: compare.clone(),
                    stale: *stale,
                    sent: now,
                    deadline,
                };
                Next::Call {
                    call: Call::Grant(t.ttl),
                    deadline,
                }
            }
            State::Leading(l) => {
                if now >= l.valid_until && !self.ignore_deadline {
                    let lease = l.lease;
                    self.state = State::Revoke { lease };
                    return Next::Lost("the lease was not renewed in time".into());
                }
                if let Some(stale) = l.stale.take() {
                    return Next::Call {
                        call: Call::Revoke(stale),
                        deadline: (now + t.call_timeout()).min(l.valid_until),
                    };
                }
                if now < l.renew_at {
                    return Next::Wait(if self.ignore_deadline {
                        l.renew_at
                    } else {
                        l.renew_at.min(l.valid_until)
                    });
                }
                let deadline = if self.ignore_deadline {
                    now + t.call_timeout()
                } else {
                    (now + t.call_timeout()).min(l.valid_until)
                };
                l.renewing = Some((now, deadline));
                Next::Call {
                    call: Call::KeepAlive(l.lease),
                    deadline,
                }
            }
            State::Revoke { lease } => {
                let lease = *lease;
                let deadline = now + t.call_timeout();
                self.state = State::AwaitRevoke { deadline };
                Next::Call {
                    call: Call::Revoke(lease),
                    deadline,
                }
            }
            State::AwaitRead { deadline }
            | State::AwaitGrant { deadline, .. }
            | State::AwaitAcquire { deadline, .. }
            | State::AwaitRevoke { deadline } => Next::Wait(*deadline),
        }
    }

    /// When the call in flight is given up, if one is.
    fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitRead { deadline }
            | State::AwaitGrant { deadline, .. }
            | State::AwaitAcquire { deadline, .. }
            | State::AwaitRevoke { deadline } => Some(*deadline),
            State::Leading(l) => l.renewing.map(|(_, d)| d),
            _ => None,
        }
    }

    /// The answer to the call in flight, got at `now`.
    pub fn answer(&mut self, now: Instant, answer: Answer) {
        let t = self.timing;
        let retry = now + t.retry();
        let state = std::mem::replace(&mut self.state, State::Idle { at: retry });
        self.state = match (state, answer) {
            (State::AwaitRead { .. }, Answer::Read(None)) => State::Grant {
                at: if self.lock_delay {
                    now + t.lock_delay
                } else {
                    now
                },
                compare: self.compare(compare::Target::CreateRevision, 0),
                stale: None,
            },
            (State::AwaitRead { .. }, Answer::Read(Some(kv))) if kv.value == self.id.as_bytes() => {
                // Ours from before a restart: take it over in place.
                State::Grant {
                    at: now,
                    compare: self.compare(compare::Target::ModRevision, kv.mod_revision),
                    stale: (kv.lease != 0).then_some(kv.lease),
                }
            }
            (State::AwaitRead { .. }, Answer::Read(Some(kv))) => {
                self.pending = Some(Next::Other(String::from_utf8_lossy(&kv.value).into()));
                State::Idle { at: retry }
            }
            (
                State::AwaitGrant {
                    compare,
                    stale,
                    sent,
                    ..
                },
                Answer::Granted(lease),
            ) => {
                self.pending = Some(Next::Call {
                    call: Call::Acquire(self.acquire(compare, lease)),
                    deadline: now + t.call_timeout(),
                });
                State::AwaitAcquire {
                    lease,
                    stale,
                    granted: sent,
                    deadline: now + t.call_timeout(),
                }
            }
            (
                State::AwaitAcquire {
                    lease,
                    stale,
                    granted,
                    ..
                },
                Answer::Acquired(true),
            ) => {
                let valid_until = granted + t.ttl - t.margin();
                if now >= valid_until && !self.ignore_deadline {
                    // Elected too late to act at all.
                    self.pending = Some(Next::Failed("the acquire was answered too late".into()));
                    State::Revoke { lease }
                } else {
                    self.pending = Some(Next::Elected { lease });
                    State::Leading(Lead {
                        lease,
                        valid_until,
                        renew_at: granted + t.renew_every(),
                        stale: stale.filter(|s| *s != lease),
                        renewing: None,
                    })
                }
            }
            (State::AwaitAcquire { lease, .. }, Answer::Acquired(false)) => {
                // Someone took it between the read and the txn: the next
                // read says who.
                self.pending = Some(Next::Failed("the key changed before the acquire".into()));
                State::Revoke { lease }
            }
            (State::AwaitAcquire { lease, .. }, answer) => {
                self.pending = Some(Next::Failed(match answer {
                    Answer::Failed(why) => why,
                    other => format!("the acquire answered {other:?}"),
                }));
                State::Revoke { lease }
            }
            (State::Leading(mut l), answer) => match (l.renewing.take(), answer) {
                (Some((sent, _)), Answer::KeptAlive) => {
                    l.valid_until = l.valid_until.max(sent + t.ttl - t.margin());
                    l.renew_at = sent + t.renew_every();
                    State::Leading(l)
                }
                (Some(_), Answer::Gone) => {
                    self.pending = Some(Next::Lost("the lease is gone".into()));
                    State::Idle { at: now }
                }
                (Some(_), Answer::Failed(why)) => {
                    tracing::warn!(key = %self.key, lease = l.lease, %why, "keep-alive failed; retrying");
                    l.renew_at = now + Duration::from_millis(50);
                    State::Leading(l)
                }
                // The stale lease's revoke, whatever came of it.
                (renewing, _) => State::Leading(Lead { renewing, ..l }),
            },
            (State::AwaitRevoke { .. }, _) => State::Idle { at: retry },
            (State::AwaitRead { .. } | State::AwaitGrant { .. }, Answer::Failed(why)) => {
                self.pending = Some(Next::Failed(why));
                State::Idle { at: retry }
            }
            // An answer that does not fit the state (late, or a driver
            // mistake): start over.
            (_, answer) => {
                self.pending = Some(Next::Failed(format!("unexpected answer {answer:?}")));
                State::Idle { at: retry }
            }
        };
    }

    /// Gives leadership up (the driver revokes the lease next).
    pub fn resign(&mut self) {
        if let State::Leading(l) = &self.state {
            self.state = State::Revoke { lease: l.lease };
        }
    }

    fn compare(&self, target: compare::Target, number: i64) -> Compare {
        Compare {
            key: self.key.as_bytes().to_vec(),
            target: target as i32,
            result: compare::Result::Equal as i32,
            number,
            ..Default::default()
        }
    }

    fn acquire(&self, compare: Compare, lease: i64) -> TxnRequest {
        TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: self.key.as_bytes().to_vec(),
                    value: self.id.as_bytes().to_vec(),
                    lease,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn call(n: Next) -> Call {
        match n {
            Next::Call { call, .. } => call,
            other => panic!("expected a call, got {other:?}"),
        }
    }

    /// Runs a candidate from `t0` to elected: read at t0, grant sent at
    /// t0 + 10 ms, acquire answered at t0 + 30 ms. Returns its lease.
    fn elect(c: &mut Candidate, t0: Instant) -> i64 {
        assert_eq!(call(c.next(t0)), Call::Read);
        c.answer(t0 + ms(10), Answer::Read(None));
        assert_eq!(call(c.next(t0 + ms(10))), Call::Grant(TTL));
        c.answer(t0 + ms(20), Answer::Granted(7));
        let Call::Acquire(txn) = call(c.next(t0 + ms(20))) else {
            panic!("no acquire")
        };
        assert_eq!(
            txn.compare[0].target,
            compare::Target::CreateRevision as i32
        );
        c.answer(t0 + ms(30), Answer::Acquired(true));
        assert_eq!(c.next(t0 + ms(30)), Next::Elected { lease: 7 });
        7
    }

    #[test]
    fn leads_from_the_grants_send_until_a_ttl_minus_the_margin() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        elect(&mut c, t0);
        let t = c.timing();
        assert_eq!(c.valid_until(), Some(t0 + ms(10) + TTL - t.margin()));
        // First renewal a quarter TTL after the grant was sent.
        assert_eq!(
            c.next(t0 + ms(40)),
            Next::Wait(t0 + ms(10) + t.renew_every())
        );
    }

    #[test]
    fn a_renewal_extends_from_its_send_not_its_answer() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        elect(&mut c, t0);
        let sent = t0 + ms(800);
        assert_eq!(call(c.next(sent)), Call::KeepAlive(7));
        c.answer(sent + ms(500), Answer::KeptAlive);
        assert_eq!(c.valid_until(), Some(sent + TTL - c.timing().margin()));
    }

    #[test]
    fn failing_renewals_lose_at_the_deadline_and_then_revoke() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        elect(&mut c, t0);
        let until = c.valid_until().unwrap();
        let mut now = t0 + ms(800);
        let mut tries = 0;
        loop {
            match c.next(now) {
                Next::Call {
                    call: Call::KeepAlive(7),
                    deadline,
                } => {
                    assert!(deadline <= until, "a call outlives the lead");
                    tries += 1;
                    now = (now + ms(100)).min(deadline);
                    c.answer(now, Answer::Failed("unreachable".into()));
                }
                Next::Wait(at) => {
                    assert!(at <= until);
                    now = at;
                }
                Next::Lost(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(now, until, "lost exactly at the deadline");
        assert!(tries > 3, "it kept trying: {tries}");
        assert_eq!(call(c.next(now)), Call::Revoke(7));
    }

    #[test]
    fn a_gone_lease_loses_at_once() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        elect(&mut c, t0);
        assert_eq!(call(c.next(t0 + ms(800))), Call::KeepAlive(7));
        c.answer(t0 + ms(810), Answer::Gone);
        assert!(matches!(c.next(t0 + ms(810)), Next::Lost(_)));
        assert_eq!(c.valid_until(), None);
        // And campaigns again.
        assert_eq!(call(c.next(t0 + ms(810))), Call::Read);
    }

    #[test]
    fn another_holder_is_named_and_the_campaign_retries() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        assert_eq!(call(c.next(t0)), Call::Read);
        let kv = KeyValue {
            value: b"b".to_vec(),
            lease: 9,
            ..Default::default()
        };
        c.answer(t0, Answer::Read(Some(kv)));
        assert_eq!(c.next(t0), Next::Other("b".into()));
        assert_eq!(c.next(t0), Next::Wait(t0 + c.timing().retry()));
    }

    #[test]
    fn its_own_key_from_before_a_restart_is_taken_back_and_the_old_lease_revoked() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        assert_eq!(call(c.next(t0)), Call::Read);
        let kv = KeyValue {
            value: b"a".to_vec(),
            lease: 5,
            mod_revision: 42,
            ..Default::default()
        };
        c.answer(t0, Answer::Read(Some(kv)));
        assert_eq!(call(c.next(t0)), Call::Grant(TTL));
        c.answer(t0, Answer::Granted(7));
        let Call::Acquire(txn) = call(c.next(t0)) else {
            panic!()
        };
        assert_eq!(txn.compare[0].target, compare::Target::ModRevision as i32);
        assert_eq!(txn.compare[0].number, 42);
        c.answer(t0, Answer::Acquired(true));
        assert_eq!(c.next(t0), Next::Elected { lease: 7 });
        assert_eq!(call(c.next(t0)), Call::Revoke(5));
    }

    #[test]
    fn the_lock_delay_waits_before_taking_an_empty_key() {
        let t0 = Instant::now();
        let timing = Timing {
            ttl: TTL,
            lock_delay: ms(700),
        };
        let mut c = Candidate::new("k", "a", timing, t0).with_lock_delay(true);
        assert_eq!(call(c.next(t0)), Call::Read);
        c.answer(t0, Answer::Read(None));
        assert_eq!(c.next(t0 + ms(1)), Next::Wait(t0 + ms(700)));
        assert_eq!(call(c.next(t0 + ms(700))), Call::Grant(TTL));
    }

    #[test]
    fn an_acquire_answered_after_the_lease_could_expire_is_given_back() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        assert_eq!(call(c.next(t0)), Call::Read);
        c.answer(t0, Answer::Read(None));
        assert_eq!(call(c.next(t0)), Call::Grant(TTL));
        c.answer(t0, Answer::Granted(7));
        let _ = call(c.next(t0));
        c.answer(t0 + TTL, Answer::Acquired(true));
        assert!(matches!(c.next(t0 + TTL), Next::Failed(_)));
        assert_eq!(call(c.next(t0 + TTL)), Call::Revoke(7));
    }

    #[test]
    fn a_call_not_answered_by_its_deadline_fails() {
        let t0 = Instant::now();
        let mut c = Candidate::new("k", "a", Timing::new(TTL), t0);
        let Next::Call { deadline, .. } = c.next(t0) else {
            panic!()
        };
        assert_eq!(c.next(t0 + ms(1)), Next::Wait(deadline));
        assert!(matches!(c.next(deadline), Next::Failed(_)));
    }
}
