//! Sockets inside a network namespace. A socket keeps the namespace it
//! was created in, so one thread per namespace enters it (`setns`) and
//! creates sockets on request; they are then connected and used from the
//! async runtime like any other. Nothing is added to any namespace.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Mutex};

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

type Request = (Domain, oneshot::Sender<io::Result<Socket>>);

/// Makes sockets in one namespace (or the current one).
pub struct Dialer {
    tx: Option<Mutex<mpsc::Sender<Request>>>,
}

impl Dialer {
    /// Sockets in this process's own namespace.
    pub fn here() -> Self {
        Dialer { tx: None }
    }

    /// Sockets in the namespace `name` (`/var/run/netns/NAME`) or at a
    /// path.
    pub fn in_namespace(name: &str) -> io::Result<Self> {
        let path = if name.contains('/') {
            name.to_string()
        } else {
            format!("/var/run/netns/{name}")
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("network namespace {path}: {e}")))?;
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // SAFETY: setns on this thread only, with a valid fd.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let _ = ready_tx.send(Err(io::Error::last_os_error()));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                for (domain, reply) in rx {
                    let _ = reply.send(Socket::new(domain, Type::STREAM, None));
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("namespace thread died"))?
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot enter {path} (root needed): {e}"))
            })?;
        Ok(Dialer {
            tx: Some(Mutex::new(tx)),
        })
    }

    /// Connects to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = Domain::for_address(addr);
        let socket = match &self.tx {
            None => Socket::new(domain, Type::STREAM, None)?,
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.lock()
                    .map_err(|_| io::Error::other("namespace thread lock poisoned"))?
                    .send((domain, reply))
                    .map_err(|_| io::Error::other("namespace thread gone"))?;
                rx.await
                    .map_err(|_| io::Error::other("namespace thread gone"))??
            }
        };
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        let std: std::net::TcpStream = socket.into();
        TcpSocket::from_std_stream(std).connect(addr).await
    }
}

/// One dialer per namespace, made on first use.
#[derive(Default)]
pub struct Dialers {
    by_ns: Mutex<HashMap<String, std::sync::Arc<Dialer>>>,
}

impl Dialers {
    /// The dialer for `ns` ("" is this process's own namespace).
    pub fn get(&self, ns: &str) -> io::Result<std::sync::Arc<Dialer>> {
        let mut map = self
            .by_ns
            .lock()
            .map_err(|_| io::Error::other("dialer map poisoned"))?;
        if let Some(d) = map.get(ns) {
            return Ok(d.clone());
        }
        let d = std::sync::Arc::new(if ns.is_empty() {
            Dialer::here()
        } else {
            Dialer::in_namespace(ns)?
        });
        map.insert(ns.to_string(), d.clone());
        Ok(d)
    }
}
