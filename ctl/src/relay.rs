//! `agendactl relay`: a plain socket relay. It listens on a port of the
//! host and, for each connection, connects to the target from inside a
//! network namespace (the client namespace, which reaches the VIP), then
//! copies bytes both ways. No address or route is added anywhere.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::netns::Dialer;

/// Relays until SIGINT/SIGTERM.
pub async fn run(listen: &str, netns: &str, to: SocketAddr) -> Result<()> {
    let dialer = Arc::new(if netns.is_empty() {
        Dialer::here()
    } else {
        Dialer::in_namespace(netns).map_err(Error::io("--netns"))?
    });
    let listener = TcpListener::bind(listen)
        .await
        .map_err(Error::io(format!("--listen {listen}")))?;
    tracing::info!(%listen, %netns, %to, "relaying");
    let stop = agenda_common::shutdown::token_on_signal();
    loop {
        let (mut inbound, peer) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match dialer.connect(to).await {
                Ok(mut outbound) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        tracing::debug!(%peer, error = %e, "relayed connection ended");
                    }
                }
                Err(e) => tracing::info!(%peer, %to, error = %e, "cannot reach the target"),
            }
        });
    }
}
