//! Limits on what one client can make the system do.
//!
//! Failed logins ([`LoginGuard`]): counted per account, per source address
//! and per both, each a leaky bucket. A full bucket answers 429 with
//! `Retry-After` before any password is checked, so guessing costs the
//! guesser time and the system nothing. Only failures fill the buckets:
//! a thousand people behind one office address logging in normally never
//! meet the limit; a thousand failing at once do.
//!
//! Failed and refused logins reach the audit log aggregated per account
//! and source ([`write_failed_logins`]: one entry each per period), so an
//! attack does not become one replicated write per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agenda_calendar::audit::AuditEntry;
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
    /// Failures and refusals not yet in the audit log.
    unlogged: Mutex<HashMap<(String, IpAddr), Unlogged>>,
}

/// Failed (401) and refused (429) logins of one account from one source
/// since the last audit entry.
#[derive(Debug, Clone, Copy)]
struct Unlogged {
    failed: u64,
    refused: u64,
    first: chrono::DateTime<chrono::Utc>,
}

/// Accounts and sources with failures waiting for the audit log, at most;
/// beyond that they are counted under one entry for "others".
const MAX_UNLOGGED: usize = 10_000;

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
            unlogged: Mutex::default(),
        }
    }

    fn note(&self, account: &str, source: IpAddr, refused: bool) {
        let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (account.trim().to_lowercase(), source);
        if unlogged.len() >= MAX_UNLOGGED && !unlogged.contains_key(&key) {
            key = (
                "(others)".into(),
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            );
        }
        let u = unlogged.entry(key).or_insert(Unlogged {
            failed: 0,
            refused: 0,
            first: chrono::Utc::now(),
        });
        if refused {
            u.refused += 1;
        } else {
            u.failed += 1;
        }
    }

    /// The audit entries of the failures noted since the last call.
    pub fn take_audit_entries(&self) -> Vec<AuditEntry> {
        let drained: Vec<_> = {
            let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
            unlogged.drain().collect()
        };
        drained
            .into_iter()
            .map(|((account, source), u)| {
                let mut e = AuditEntry::new(
                    None,
                    &account,
                    "login_failed",
                    serde_json::json!({"failed": u.failed, "refused": u.refused, "since": u.first}),
                );
                if !source.is_unspecified() {
                    e.source = source.to_string();
                }
                e
            })
            .collect()
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
        let checked = self.check_at(account, source, Instant::now());
        if checked.is_err() {
            self.note(account, source, true);
        }
        checked
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
        if failed {
            self.note(account, source, false);
        }
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

/// How often failed logins are written to the audit log.
pub const AUDIT_EVERY: Duration = Duration::from_secs(10);

/// Writes the failed logins `guard` noted to the audit log every
/// [`AUDIT_EVERY`] (and once more at shutdown), one entry per account and
/// source, all in one transaction.
pub async fn write_failed_logins(
    guard: std::sync::Arc<crate::AppState>,
    store: agenda_calendar::store::Store,
    stop: agenda_common::shutdown::CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(AUDIT_EVERY) => false,
        };
        let entries = guard.logins.take_audit_entries();
        if !entries.is_empty() {
            let mut batch = agenda_calendar::store::Batch::default();
            let written = entries
                .iter()
                .try_for_each(|e| agenda_calendar::audit::record(&mut batch, e));
            let committed = match written {
                Ok(()) => store.commit(batch).await.map_err(|e| e.message),
                Err(e) => Err(e.message),
            };
            if let Err(e) = committed {
                tracing::warn!(error = %e, entries = entries.len(), "failed logins not written to the audit log");
            }
        }
        if stopping {
            return;
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
    fn failures_are_aggregated_for_the_audit_log() {
        let g = guard();
        for _ in 0..5 {
            if g.check("Alice", A).is_ok() {
                g.record("alice", A, true);
            }
        }
        g.record("bob", B, true);
        g.record("carol", B, false);
        let mut entries = g.take_audit_entries();
        entries.sort_by(|a, b| a.actor.cmp(&b.actor));
        let counts: Vec<(String, String, u64, u64)> = entries
            .iter()
            .map(|e| {
                let n = |k: &str| e.details[k].as_u64().unwrap();
                (e.actor.clone(), e.source.clone(), n("failed"), n("refused"))
            })
            .collect();
        assert_eq!(
            counts,
            vec![
                ("alice".into(), "10.0.0.1".into(), 3, 2),
                ("bob".into(), "10.0.0.2".into(), 1, 0),
            ]
        );
        assert!(entries.iter().all(|e| e.action == "login_failed"));
        assert!(g.take_audit_entries().is_empty(), "drained");
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
