//! Background sweeps: work that a request leaves behind a durable marker
//! (an account deletion, the group events of a member who joined or left)
//! and that a replica finishes if the process that began it died.

use std::future::Future;
use std::time::Duration;

use agenda_calendar::error::ApiResult;
use agenda_common::shutdown::{pause, CancellationToken};

/// How often a replica looks for interrupted work.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Runs `job` (it answers how many pieces of interrupted work it
/// finished) at start and then every [`SWEEP_EVERY`] until `shutdown`.
/// Every replica sweeps; finishing a piece twice at once is harmless.
pub async fn sweep<F, Fut>(what: &'static str, shutdown: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<usize>>,
{
    loop {
        match job().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(finished = n, "finished interrupted {what}"),
            Err(e) => {
                tracing::warn!(error = %e.message, "could not finish interrupted {what}; will retry")
            }
        }
        if !pause(&shutdown, SWEEP_EVERY).await {
            return;
        }
    }
}
