//! Serving until shutdown: why the gateway may fail to start or serve
//! ([`Error`]), and the deadline on draining what is still open once
//! shutdown is signalled ([`drain`]).

use std::future::IntoFuture;
use std::time::Duration;

use agenda_common::shutdown::CancellationToken;

/// Why the gateway could not start or stopped serving.
///
/// Each message carries its cause (logs print errors with `%`), so no
/// variant also hands the cause out as `source()`: `main`'s anyhow chain
/// would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up a link failed (`what`: the flag or part, e.g. `--db`).
    #[error("{what}: {cause}")]
    Setup {
        /// The flag or part.
        what: &'static str,
        /// Why.
        cause: agenda_common::Error,
    },
    /// The Prometheus metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(prometheus::Error),
    /// The listening socket failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// Runs `server`, which stops accepting when `shutdown` is cancelled and
/// then waits for its open connections, but waits for them at most `grace`
/// past the signal: a client that never finishes (a slow upload, a stream
/// that does not close, a replica that hangs) cannot keep the process from
/// exiting. Whatever is still open then is dropped with the process.
pub async fn drain<S>(server: S, shutdown: CancellationToken, grace: Duration) -> Result<(), Error>
where
    S: IntoFuture<Output = std::io::Result<()>>,
{
    let server = server.into_future();
    tokio::pin!(server);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        // A server that finished in time wins a tie with the deadline.
        biased;
        r = &mut server => r.map_err(Error::Serve),
        () = deadline => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "requests or streams still open when the shutdown grace ran out; exiting anyway"
            );
            Ok(())
        }
    }
}
