//! Serving until shutdown: why the gateway may fail to start or serve
//! ([`Error`]), the connections ([`serve`]: each closed gracefully at
//! shutdown, and the VIP's also when the VIP fence closes), and the
//! deadline on draining what is still open once shutdown is signalled
//! ([`drain`]).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agenda_common::shutdown::CancellationToken;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use crate::listener::Addrs;
use crate::vip::Fence;

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

/// Serves `router` on `listener` (HTTP/1.1, WebSocket upgrades) until
/// `shutdown`, then waits for the open connections (wrap it in [`drain`]
/// for a deadline). Each request carries its connection's [`Addrs`] as
/// `ConnectInfo` (`local_of` tells the address it arrived on).
///
/// A connection is closed gracefully (an idle one at once, a busy one
/// after its answer, keep-alive off) at shutdown, and one that arrived on
/// the VIP also when `fence` says so ([`Fence::closed`]: another machine
/// holds the VIP, or this one's handover has reached its last step): a
/// client's idle keep-alive connection would otherwise outlive the
/// address, and its next request would reach the next holder as a reset.
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    local_of: fn(&L::Io) -> SocketAddr,
    fence: Option<Arc<Fence>>,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    // Each connection's task holds a receiver; the sender sees them
    // all gone once every connection is closed.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            conn = listener.accept() => conn,
        };
        let addrs = Addrs {
            local: local_of(&io),
            peer,
        };
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |req: axum::http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(addrs));
                req
            },
        );
        let (fence, shutdown, open) = (fence.clone(), shutdown.clone(), open_rx.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            let fenced = async {
                match &fence {
                    Some(f) => f.closed(addrs.local.ip()).await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(error = %e, peer = %addrs.peer, "connection ended with an error");
                    }
                    None
                }
                () = shutdown.cancelled() => Some("shutting down"),
                () = fenced => Some("the VIP's connections are closing here"),
            };
            if let Some(why) = why {
                tracing::debug!(peer = %addrs.peer, local = %addrs.local, why, "closing the connection gracefully");
                conn.as_mut().graceful_shutdown();
                if let Err(e) = conn.await {
                    tracing::trace!(error = %e, peer = %addrs.peer, "connection ended with an error");
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
