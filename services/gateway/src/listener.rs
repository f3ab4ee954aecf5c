//! The gateway's plaintext listener: every accepted connection gets its
//! socket options, and handlers can learn the local address it arrived on
//! (the VIP fence needs it), also over TLS (`net::TlsListener::public`):
//! `server::serve` hands each request its [`Addrs`] as `ConnectInfo`.

use std::net::SocketAddr;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};

use crate::limits::PerSource;
use crate::shaped::Shaped;

/// A TCP listener that tunes each accepted connection.
pub struct Tuned {
    inner: TcpListener,
    send_buffer: usize,
}

impl Tuned {
    /// Wraps `inner`; each connection gets TCP_NODELAY and a send buffer
    /// of `send_buffer` bytes.
    pub fn new(inner: TcpListener, send_buffer: usize) -> Self {
        Tuned { inner, send_buffer }
    }
}

impl Listener for Tuned {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's own accept loop retries (and logs) accept errors.
        let (tcp, addr) = Listener::accept(&mut self.inner).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(self.send_buffer) {
            tracing::debug!(error = %e, "cannot set the send buffer");
        }
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The addresses of a connection: the local one it arrived on (the VIP
/// or the machine's own) and the client's.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

const UNKNOWN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// What the gateway serves on: connections counted per address, their
/// hyper-made errors in the error shape.
pub type Public<L> = Shaped<PerSource<L>>;

/// The local address a plaintext connection arrived on.
pub fn plain_local(io: &<Public<Tuned> as Listener>::Io) -> SocketAddr {
    io.get_ref().get_ref().local_addr().unwrap_or(UNKNOWN)
}

/// The local address a TLS connection arrived on.
pub fn tls_local(io: &<Public<agenda_common::net::TlsListener> as Listener>::Io) -> SocketAddr {
    io.get_ref()
        .get_ref()
        .get_ref()
        .0
        .local_addr()
        .unwrap_or(UNKNOWN)
}
