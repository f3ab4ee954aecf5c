//! Limits on what one client can make the system do.
//!
//! Failed logins ([`LoginGuard`]): counted per account, per source address
//! and per both, each a leaky bucket. A full bucket answers 429 with
//! `Retry-After` before any password is checked, so guessing costs the
//! guesser time and the system nothing. Only failures fill the buckets:
//! a thousand people behind one office address logging in normally never
//! meet the limit; a thousand failing at once do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agenda_calendar::ApiError;

/// A leaky bucket: each failure adds one; the level drains at `per_sec`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// The size and drain rate of one kind of bucket.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Failures allowed in a burst.
    pub burst: f64,
    /// Failures forgiven per second after that.
    pub per_sec: f64,
}

impl Bucket {
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec;
        (self.level - drained).max(0.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Source(IpAddr),
    Both(String, IpAddr),
}

/// Failed-login limits.
pub struct LoginGuard {
    /// One account from one source: a person mistyping, or one guesser.
    pub both: Rate,
    /// One account from anywhere: guessing spread over many addresses.
    pub account: Rate,
    /// One source for any account: trying many accounts (an office NAT
    /// shares it, hence the size).
    pub source: Rate,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

/// Buckets kept at most; drained ones are dropped first when full.
const MAX_BUCKETS: usize = 100_000;

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard::new(
            Rate {
                burst: 10.0,
                per_sec: 1.0 / 30.0,
            },
            Rate {
                burst: 50.0,
                per_sec: 1.0 / 10.0,
            },
            Rate {
                burst: 200.0,
                per_sec: 2.0,
            },
        )
    }
}

impl LoginGuard {
    pub fn new(both: Rate, account: Rate, source: Rate) -> Self {
        LoginGuard {
            both,
            account,
            source,
            buckets: Mutex::default(),
        }
    }

    fn keys(&self, account: &str, source: IpAddr) -> [(Key, Rate); 3] {
        let account = account.trim().to_lowercase();
        [
            (Key::Both(account.clone(), source), self.both),
            (Key::Account(account), self.account),
            (Key::Source(source), self.source),
        ]
    }

    /// Whether a login for `account` from `source` may be tried now; if
    /// not, the 429 says when.
    pub fn check(&self, account: &str, source: IpAddr) -> Result<(), ApiError> {
        self.check_at(account, source, Instant::now())
    }

    fn check_at(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), ApiError> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for (key, rate) in self.keys(account, source) {
            if let Some(b) = buckets.get(&key) {
                let over = b.level(rate, now) + 1.0 - rate.burst;
                if over > 0.0 {
                    wait = wait.max(Duration::from_secs_f64(over / rate.per_sec));
                }
            }
        }
        if wait.is_zero() {
            return Ok(());
        }
        let secs = wait.as_secs().max(1) + u64::from(wait.subsec_nanos() > 0);
        Err(ApiError::too_many_requests(
            format!("too many failed logins; try again in {secs} s"),
            secs,
        ))
    }

    /// Records the outcome of a login that was tried.
    pub fn record(&self, account: &str, source: IpAddr, failed: bool) {
        self.record_at(account, source, failed, Instant::now());
    }

    fn record_at(&self, account: &str, source: IpAddr, failed: bool, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.keys(account, source);
        if !failed {
            // The person got it right: their own mistypes are forgiven
            // (not the account's or the source's, which others share).
            buckets.remove(&keys[0].0);
            return;
        }
        if buckets.len() >= MAX_BUCKETS {
            let (both, account, source) = (self.both, self.account, self.source);
            buckets.retain(|k, b| {
                let rate = match k {
                    Key::Both(..) => both,
                    Key::Account(_) => account,
                    Key::Source(_) => source,
                };
                b.level(rate, now) > 0.0
            });
            if buckets.len() >= MAX_BUCKETS {
                // Still full of live buckets (a flood of sources): the
                // oldest knowledge goes rather than the memory growing.
                buckets.clear();
            }
        }
        for (key, rate) in keys {
            let b = buckets.entry(key).or_insert(Bucket {
                level: 0.0,
                at: now,
            });
            b.level = b.level(rate, now) + 1.0;
            b.at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        let r = |burst, per_sec| Rate { burst, per_sec };
        LoginGuard::new(r(3.0, 1.0), r(5.0, 1.0), r(8.0, 1.0))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn failures_fill_each_bucket_and_drain_with_time() {
        let g = guard();
        let t = Instant::now();
        for _ in 0..3 {
            g.check_at("Alice", A, t).unwrap();
            g.record_at("alice", A, true, t);
        }
        let e = g.check_at("ALICE", A, t).unwrap_err();
        assert_eq!(
            (e.status, e.details["retry_after"].as_u64()),
            (429, Some(1))
        );
        // Another account from the same source, and the same account from
        // elsewhere, still may try.
        g.check_at("bob", A, t).unwrap();
        g.check_at("alice", B, t).unwrap();
        // A second later one failure has drained.
        g.check_at("alice", A, t + Duration::from_secs(1)).unwrap();
        // The account's own bucket: guesses from many sources.
        g.record_at("alice", B, true, t);
        g.record_at("alice", B, true, t);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(g.check_at("alice", other, t).unwrap_err().status, 429);
    }

    #[test]
    fn a_source_trying_many_accounts_is_stopped_and_success_forgives_the_person() {
        let g = guard();
        let t = Instant::now();
        for i in 0..8 {
            g.record_at(&format!("user{i}"), A, true, t);
        }
        assert_eq!(g.check_at("someone", A, t).unwrap_err().status, 429);
        g.check_at("someone", B, t).unwrap();

        let g = guard();
        for _ in 0..3 {
            g.record_at("carol", B, true, t);
        }
        g.record_at("carol", B, false, t);
        g.check_at("carol", B, t).unwrap();
    }

    #[test]
    fn successes_never_fill_a_bucket() {
        let g = guard();
        let t = Instant::now();
        for _ in 0..1000 {
            g.record_at("dave", A, false, t);
        }
        g.check_at("dave", A, t).unwrap();
        g.check_at("erin", A, t).unwrap();
    }
}
