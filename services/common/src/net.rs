//! Every network listener and client of Agenda is built here, so that link
//! settings (and, later, TLS for all links at once) live in one place.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};

use crate::error::{Error, Result};

/// How long a client waits for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A gRPC client endpoint for `addr` (`host:port` or a URL). Connections are
/// made lazily, kept alive with HTTP/2 pings, and never delay small writes.
pub fn endpoint(addr: &str) -> Result<Endpoint> {
    let addr = addr.trim();
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("bad address {addr:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// The connections a gRPC server accepts on `listener`, with small writes
/// sent at once. (`Server::tcp_nodelay` only reaches sockets tonic binds
/// itself; without this every reply of ours that took two writes waited
/// for the peer's delayed ACK: 40 ms.)
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A gRPC server builder with the shared link settings.
pub fn grpc_server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
}

/// Binds a listener, with an error that names the flag it came from.
pub async fn bind(addr: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {flag} {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn accepted_grpc_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = accepted.next().await.unwrap().unwrap();
        assert!(conn.nodelay().unwrap(), "TCP_NODELAY must be set");
    }
}
