//! The CPU budget of a service process: costly steps (password hashing,
//! recurrence expansion, conflict checks) run on the blocking pool, never
//! on the async workers, so one person's heavy request cannot stall the
//! runtime that serves everyone else and renews the registry lease.
//!
//! Two caps: costly steps use all cores but one (a burst queues here, and
//! one core always stays with the async workers), and at most
//! [`PER_PERSON`] at a time for one person, with at most [`PER_PERSON_QUEUE`]
//! more waiting; beyond that the person gets 429 and the others are not
//! slowed by them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Costly steps one person may run at once.
pub const PER_PERSON: usize = 1;

/// Costly steps one person may have waiting for their turn.
pub const PER_PERSON_QUEUE: usize = 16;

/// Costly steps running and waiting: the process's own, or a test's.
struct Budget {
    /// Leaves one core of the machine to the async workers (on two cores,
    /// one costly step at a time).
    cores: Semaphore,
    /// Per person: their own turns, and how many of their steps hold or
    /// wait for one (the entry goes when that falls to zero, so the map
    /// holds only people with work in flight).
    people: Mutex<HashMap<Uuid, (Arc<Semaphore>, usize)>>,
}

fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Budget::new(cores.saturating_sub(1).max(1))
    })
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
            cores: Semaphore::new(slots),
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
        let _core = self.cores.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
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

/// Runs `work` on the blocking pool once a core is free.
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
}
