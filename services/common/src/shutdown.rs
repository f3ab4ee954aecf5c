//! The process-wide shutdown signal: SIGINT or SIGTERM, fanned out to
//! every loop through a [`CancellationToken`]; and waiting that gives way
//! to it ([`pause`], [`retry`]).

use std::future::Future;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// How long [`retry`] waits between attempts.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Sleeps for `period` unless `stop` comes first; false when it did.
pub async fn pause(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}

/// Runs `attempt` until it succeeds, every [`RETRY_EVERY`] while it fails
/// with an error that is `retryable` (each logged as `waiting`), so a
/// process waits for agenda-db instead of failing: the processes of a
/// deployment start in any order. `Some(Err)` is the first error that is
/// not retryable; None means `stop` came first.
pub async fn retry<T, E, F, Fut>(
    stop: &CancellationToken,
    waiting: &str,
    retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Option<Result<T, E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Some(Ok(v)),
            Err(e) if retryable(&e) => {
                tracing::warn!(error = %e, "{waiting}; retrying");
                if !pause(stop, RETRY_EVERY).await {
                    return None;
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// A token cancelled when the process is asked to stop.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal().await;
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (the workspace's tokio has no test-util): two pauses.
    #[tokio::test]
    async fn retries_until_it_works_or_fails_for_good() {
        let stop = CancellationToken::new();
        let mut tries = 0;
        let r = retry(
            &stop,
            "not yet",
            |e: &String| e == "later",
            || {
                tries += 1;
                let answer = if tries < 3 {
                    Err("later".to_string())
                } else {
                    Ok(tries)
                };
                async move { answer }
            },
        )
        .await;
        assert_eq!(r, Some(Ok(3)));

        let r: Option<Result<(), String>> = retry(
            &stop,
            "not yet",
            |e: &String| e == "later",
            || async { Err("broken".to_string()) },
        )
        .await;
        assert_eq!(r, Some(Err("broken".to_string())));
    }

    #[tokio::test]
    async fn stopping_ends_the_wait() {
        let stop = CancellationToken::new();
        let waiting = retry(
            &stop,
            "not yet",
            |_: &String| true,
            || async { Err::<(), _>("later".to_string()) },
        );
        let stopper = async {
            tokio::time::sleep(RETRY_EVERY / 5).await;
            stop.cancel();
        };
        let started = std::time::Instant::now();
        let (r, ()) = tokio::join!(waiting, stopper);
        assert_eq!(r, None);
        assert!(started.elapsed() < RETRY_EVERY, "not a whole pause");
        assert!(!pause(&stop, Duration::from_secs(3600)).await);
    }
}
