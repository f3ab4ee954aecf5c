//! Background rounds: work that a request leaves behind in agenda-db (an
//! account deletion or the group events of a member who joined or left,
//! behind a marker; a reminder filed for later) and that any replica
//! finishes or fires. Each piece is settled by a compared transaction, so
//! every replica may run the same round at once.

use std::future::Future;
use std::time::Duration;

use agenda_calendar::error::ApiResult;
use agenda_calendar::store::Store;
use agenda_common::shutdown::{pause, CancellationToken};

/// How often a replica looks for work a stopped process left halfway.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Runs `round` (it answers how many pieces it settled, logged as
/// `settled` with `what`) at start and then every `every` until
/// `shutdown`. A failed round is logged and tried again next time.
pub async fn every<F, Fut>(
    what: &'static str,
    every: Duration,
    shutdown: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<usize>>,
{
    loop {
        match round().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(settled = n, "{what}"),
            Err(e) => tracing::warn!(error = %e.message, "{what}: the round failed; will retry"),
        }
        if !pause(&shutdown, every).await {
            return;
        }
    }
}

/// [`every`] on a task of its own, each round given its own handle on
/// `store`; await the handle after `shutdown` to let the round end.
pub fn spawn<F, Fut>(
    what: &'static str,
    period: Duration,
    shutdown: CancellationToken,
    store: &Store,
    round: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Store) -> Fut + Send + 'static,
    Fut: Future<Output = ApiResult<usize>> + Send + 'static,
{
    let store = store.clone();
    tokio::spawn(every(what, period, shutdown, move || round(store.clone())))
}
