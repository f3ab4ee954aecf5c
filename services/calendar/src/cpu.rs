//! The CPU budget of a service process: costly steps (password hashing,
//! recurrence expansion, conflict checks) run on the blocking pool, never
//! on the async workers, so one person's heavy request cannot stall the
//! runtime that serves everyone else and renews the registry lease.
//!
//! Those threads run at a lower CPU priority ([`COSTLY_NICE`]): the light
//! work of every request (routing, agenda-db calls, the other processes
//! of the machine) always goes first, and costly steps share what is
//! left. A shared queue of cores would not do: a few long steps would
//! hold every slot and a small agenda read would wait behind them.
//!
//! Caps: at most [`PER_PERSON`] costly steps at a time for one person,
//! with at most [`PER_PERSON_QUEUE`] more waiting (then 429), and
//! [`MAX_RUNNING`] in the process (then they wait), so neither the threads
//! nor the memory they hold grow without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Costly steps one person may run at once.
pub const PER_PERSON: usize = 1;

/// Costly steps one person may have waiting for their turn.
pub const PER_PERSON_QUEUE: usize = 16;

/// Costly steps running at once in the process.
pub const MAX_RUNNING: usize = 64;

/// The nice value of the threads that run costly steps (0 is the default,
/// 19 the lowest priority; at 10 a thread gets about a tenth of what a
/// default one gets when both want the CPU).
pub const COSTLY_NICE: i32 = 10;

/// Costly steps running and waiting: the process's own, or a test's.
struct Budget {
    /// Costly steps running (at most [`MAX_RUNNING`]).
    running: Semaphore,
    /// Per person: their own turns, and how many of their steps hold or
    /// wait for one (the entry goes when that falls to zero, so the map
    /// holds only people with work in flight).
    people: Mutex<HashMap<Uuid, (Arc<Semaphore>, usize)>>,
}

fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| Budget::new(MAX_RUNNING))
}

/// One of a person's steps in flight; dropping it gives their place back.
struct InFlight<'a> {
    budget: &'a Budget,
    person: Uuid,
    turns: Arc<Semaphore>,
}

impl Budget {
    fn new(slots: usize) -> Budget {
        Budget {
            running: Semaphore::new(slots),
            people: Mutex::default(),
        }
    }

    fn enter(&self, person: Uuid) -> ApiResult<InFlight<'_>> {
        let mut map = self.people.lock().unwrap_or_else(|e| e.into_inner());
        let (turns, count) = map
            .entry(person)
            .or_insert_with(|| (Arc::new(Semaphore::new(PER_PERSON)), 0));
        if *count >= PER_PERSON + PER_PERSON_QUEUE {
            return Err(ApiError::too_many_requests(
                format!(
                    "you have {count} costly requests (agendas, conflict checks) in progress; \
                     wait for them before sending more"
                ),
                1,
            ));
        }
        *count += 1;
        Ok(InFlight {
            budget: self,
            person,
            turns: turns.clone(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let _slot = self.running.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            lower_priority();
            work()
        })
        .await
        .map_err(ApiError::internal)
    }

    async fn run_for<T: Send + 'static>(
        &self,
        person: Uuid,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let place = self.enter(person)?;
        let _turn = place.turns.acquire().await.map_err(ApiError::internal)?;
        self.run(work).await
    }

    #[cfg(test)]
    fn in_flight(&self, person: Uuid) -> usize {
        let map = self.people.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&person).map_or(0, |(_, count)| *count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.budget.people.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = map.get_mut(&self.person) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.person);
            }
        }
    }
}

/// Lowers this thread's CPU priority to [`COSTLY_NICE`], once per thread
/// (blocking-pool threads are reused, and an unprivileged process may
/// lower a priority but not raise it back).
fn lower_priority() {
    thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    LOWERED.with(|done| {
        if done.replace(true) {
            return;
        }
        // On Linux the nice value is per thread: this names the calling one.
        // SAFETY: plain system calls without pointers.
        // A process started at a lower priority still keeps it.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, now.max(COSTLY_NICE))
        };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a costly-work thread"
            );
        }
    });
}

/// Runs `work` on the blocking pool at a lower priority.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    budget().run(work).await
}

/// Runs `work` for `person`: within their own cap, then as [`run`].
pub async fn run_for<T: Send + 'static>(
    person: Uuid,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    budget().run_for(person, work).await
}

/// Steps of at most this [`weight`] run in place: handing them to a
/// low-priority thread would cost more than doing them, and would queue
/// a small read behind other people's costly steps.
pub const SMALL: usize = 64;

/// A rough bound on the work of expanding `events` in a window: what an
/// event can add at most (one occurrence, or a rule's worth).
pub fn weight<'a>(events: impl IntoIterator<Item = &'a crate::model::EventRecord>) -> usize {
    events.into_iter().map(|e| rule_weight(&e.rrule)).sum()
}

/// [`weight`] for listing `events` in `[from, to)` only: a recurring
/// event counts what its rule can have in that window (a week of a daily
/// stand-up is a handful, not a rule's worth), so a week view stays a
/// small step however long its series run.
pub fn window_weight<'a>(
    events: impl IntoIterator<Item = &'a crate::model::EventRecord>,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> usize {
    events
        .into_iter()
        .map(|e| crate::recurrence::occurrences_at_most(e, from, to))
        .sum()
}

/// The weight of one event's rule: a rule's worth of occurrences, or one.
/// (Checking a request's rule counts as costly too: walking a rule that
/// never occurs costs the crate up to 100 000 periods.)
pub fn rule_weight(rrule: &Option<String>) -> usize {
    if rrule.is_some() {
        usize::from(crate::recurrence::MAX_OCCURRENCES)
    } else {
        1
    }
}

/// [`run_for`], or in place when `weight` is at most [`SMALL`].
pub async fn run_sized<T: Send + 'static>(
    person: Uuid,
    weight: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    if weight <= SMALL {
        return Ok(work());
    }
    run_for(person, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A person gets PER_PERSON steps running and PER_PERSON_QUEUE waiting,
    /// then 429; another person still runs; places come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_person_is_capped_and_others_are_not() {
        let budget: &'static Budget = Box::leak(Box::new(Budget::new(2)));
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        // Steps of `me` hold their turn until this write lock goes.
        let hold = Arc::new(tokio::sync::RwLock::new(()));
        let held = hold.write().await;
        let mut tasks = Vec::new();
        for _ in 0..PER_PERSON + PER_PERSON_QUEUE {
            let hold = hold.clone();
            tasks.push(tokio::spawn(budget.run_for(me, move || {
                drop(hold.blocking_read());
            })));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while budget.in_flight(me) < PER_PERSON + PER_PERSON_QUEUE {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} entered",
                budget.in_flight(me)
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let refused = budget.run_for(me, || ()).await.expect_err("one too many");
        assert_eq!(refused.status, 429);
        assert_eq!(refused.details["retry_after"], 1);
        budget
            .run_for(other, || ())
            .await
            .expect("another person runs meanwhile");
        drop(held);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(budget.in_flight(me), 0);
        budget.run_for(me, || ()).await.expect("places come back");
    }

    /// Costly steps run at the lower priority, the async workers do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn costly_steps_run_at_a_lower_priority() {
        let nice = || unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let before = nice();
        assert_eq!(run(nice).await.unwrap(), COSTLY_NICE.max(before));
        assert_eq!(nice(), before);
    }
}
