//! Every network listener and client of Agenda is built here, so that link
//! settings (and, later, TLS for all links at once) live in one place.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::admission::{Admission, AdmittedServer, Connections};
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
/// sent at once, at most [`crate::admission::DEFAULT_MAX_CONNECTIONS`] open
/// (see [`incoming_admitted`]). (`Server::tcp_nodelay` only reaches
/// sockets tonic binds itself; without this every reply of ours that took
/// two writes waited for the peer's delayed ACK: 40 ms.)
pub fn incoming(listener: TcpListener) -> Connections<TcpIncoming> {
    incoming_admitted(listener, &Admission::default())
}

/// [`incoming`] with `admission`'s connection cap: one connection over it
/// is closed as soon as it is accepted.
pub fn incoming_admitted(listener: TcpListener, admission: &Admission) -> Connections<TcpIncoming> {
    admission.connections(TcpIncoming::from(listener).with_nodelay(Some(true)))
}

/// TLS sessions a public listener remembers for resumption.
const PUBLIC_SESSIONS: usize = 16_384;

/// Most TLS handshakes in progress at once on one listener.
const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections a gRPC server accepts on `listener` (small writes
/// sent at once), with `config` (see [`crate::tls::Identity`]; mutual on
/// internal links), at most [`crate::admission::DEFAULT_MAX_CONNECTIONS`] open
/// (see [`tls_incoming_admitted`]). Handshakes run concurrently, bounded,
/// each within a deadline, so a slow or silent client holds up nobody; a
/// failed one is logged and dropped. tonic hands each request the peer's
/// certificate (`Request::peer_certs`).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> Connections<impl futures::Stream<Item = std::io::Result<TlsStream>>> {
    tls_incoming_admitted(listener, config, &Admission::default())
}

/// [`tls_incoming`] with `admission`'s connection cap: one connection
/// over it is closed as soon as its handshake is done.
pub fn tls_incoming_admitted(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    admission: &Admission,
) -> Connections<impl futures::Stream<Item = std::io::Result<TlsStream>>> {
    admission.connections(accept_tls(listener, config, Accept::default()))
}

/// A server side TLS connection.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How [`accept_tls`] treats each connection before its handshake.
#[derive(Debug, Clone, Copy, Default)]
struct Accept {
    /// The socket's send buffer, in bytes (`None`: the system's).
    send_buffer: Option<usize>,
    /// Answer a plaintext HTTP request with a 400 that says to use
    /// https:// (no data served), instead of a silent close.
    explain_plaintext: bool,
}

fn accept_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    how: Accept,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = tx.closed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            if let Some(bytes) = how.send_buffer {
                if let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(bytes) {
                    tracing::debug!(error = %e, "cannot set the send buffer");
                }
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = async {
                    if how.explain_plaintext && refuse_plaintext(&tcp).await? {
                        return Ok(None);
                    }
                    acceptor.accept(tcp).await.map(Some)
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(Some(tls))) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Ok(None)) => tracing::debug!(%peer, "plaintext HTTP refused"),
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// If the client spoke plaintext HTTP to a TLS port (its first byte is a
/// letter, where a TLS handshake starts with 0x16), tells it to use
/// https:// and closes: true. Nothing of the service is served.
async fn refuse_plaintext(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 || !first[0].is_ascii_alphabetic() {
        return Ok(false);
    }
    let body = "This port speaks HTTPS only: use https://\n";
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut written = 0;
    while written < reply.len() {
        tcp.writable().await?;
        match tcp.try_write(&reply.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// An HTTP listener (for axum) whose connections are TLS: the same
/// bounded, deadline-bound handshakes as [`tls_incoming`].
pub struct TlsListener {
    local: std::net::SocketAddr,
    incoming: std::pin::Pin<
        Box<
            dyn futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>>
                + Send,
        >,
    >,
}

impl TlsListener {
    /// TLS on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        Ok(TlsListener {
            local: listener.local_addr()?,
            incoming: Box::pin(accept_tls(listener, config, Accept::default())),
        })
    }

    /// A public HTTPS listener (the gateway's): `config` from
    /// [`Links::public_server_config`], each socket's send buffer set to
    /// `send_buffer` bytes, and a plaintext HTTP request answered with a
    /// 400 that says to use https://.
    pub fn public(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        send_buffer: usize,
    ) -> std::io::Result<Self> {
        let how = Accept {
            send_buffer: Some(send_buffer),
            explain_plaintext: true,
        };
        Ok(TlsListener {
            local: listener.local_addr()?,
            incoming: Box::pin(accept_tls(listener, config, how)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt as _;
        loop {
            match self.incoming.next().await {
                Some(Ok(tls)) => {
                    let peer = tls
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (tls, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "TLS accept failed"),
                // The accept task ended (it only does with this listener):
                // nothing will come any more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The role in the certificate a connection to a [`TlsListener`] came
/// with (axum connect info: `into_make_service_with_connect_info`), for
/// handlers that serve some roles only.
#[derive(Debug, Clone)]
pub struct CallerRole(pub Option<String>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for CallerRole
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        CallerRole(crate::tls::caller_role(
            stream.io().get_ref().1.peer_certificates(),
        ))
    }
}

/// A gRPC channel to `addr` (`host:port`) over TLS with `config`, made
/// lazily like [`endpoint`]'s: the server must present a certificate of
/// the cluster CA naming `host`, and this process presents its own.
pub fn tls_channel(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel> {
    let (endpoint, connect) = tls_parts(addr, config)?;
    Ok(endpoint.connect_with_connector_lazy(connect))
}

/// Like [`tls_channel`], but connected (and the handshake done) before it
/// returns, for callers that back off on a failed connection.
pub async fn tls_connect(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel> {
    let (endpoint, connect) = tls_parts(addr, config)?;
    endpoint
        .connect_with_connector(connect)
        .await
        .map_err(|e| Error::Unavailable(format!("{addr}: {e}")))
}

fn tls_parts(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<(Endpoint, TlsConnect)> {
    let addr = addr.trim();
    let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let host_port = host_port.trim_end_matches('/').to_string();
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| Error::Config(format!("bad address {addr:?}: {e}")))?;
    // The scheme stays http: TLS is this connector's, not tonic's.
    let endpoint = endpoint(&host_port)?;
    Ok((
        endpoint,
        TlsConnect {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
            host_port,
        },
    ))
}

/// Opens TCP to one address and runs the TLS handshake (for tonic).
#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    host_port: String,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<tonic::transport::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<TlsIo>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&this.host_port))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp connect timed out")
                })??;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// How one process makes its links: plaintext, or mutual TLS with its
/// identity (`--tls-dir`, `--tls-name`). Built once in `run` and handed
/// to whatever dials or listens, so no link is made another way.
#[derive(Clone, Default)]
pub struct Links {
    identity: Option<Arc<crate::tls::Identity>>,
}

impl Links {
    /// From the process's flags; with TLS the certificate files are
    /// checked for changes until `stop`.
    pub fn from_args(
        args: &crate::args::TlsArgs,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Links> {
        let identity = args.identity()?;
        if let Some(id) = &identity {
            id.spawn_reload(stop.clone());
        }
        Ok(Links { identity })
    }

    /// Whether links are TLS.
    pub fn tls(&self) -> bool {
        self.identity.is_some()
    }

    /// A client of agenda-db.
    pub fn db_client<S: AsRef<str>>(&self, endpoints: &[S]) -> Result<crate::DbClient> {
        let config = self
            .identity
            .as_ref()
            .map(|id| id.client_config())
            .transpose()?;
        crate::DbClient::with_tls(endpoints, config)
    }

    /// How this process reaches Redis (TLS with its certificate when it
    /// has one).
    pub fn redis(&self, password: &str) -> RedisLink {
        RedisLink::new(
            password,
            self.identity.as_ref().map(|id| id.files().clone()),
        )
    }

    /// A lazy gRPC channel to another process.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        match &self.identity {
            Some(id) => tls_channel(addr, id.client_config()?),
            None => Ok(endpoint(addr)?.connect_lazy()),
        }
    }

    /// The server side of the public HTTPS port (the gateway's): this
    /// identity, no client certificate asked, HTTP/1.1 only (WebSockets
    /// upgrade over it); `None` for plaintext.
    pub fn public_server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        let Some(id) = &self.identity else {
            return Ok(None);
        };
        let mut config = rustls::ServerConfig::clone(&*id.server_config(false)?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Room for every client of a busy gateway to resume its session
        // (an abbreviated handshake) instead of the default 256.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(PUBLIC_SESSIONS);
        Ok(Some(Arc::new(config)))
    }

    /// A client of a public HTTPS port of this deployment (agenda-vip's
    /// health check of its gateway): trusts the cluster CA; `None` for
    /// plaintext.
    pub fn public_client_config(&self) -> Result<Option<rustls::ClientConfig>> {
        let Some(id) = &self.identity else {
            return Ok(None);
        };
        let mut config = rustls::ClientConfig::clone(&*id.client_config()?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(config))
    }

    /// The server side of internal links (clients must present a
    /// certificate of the cluster CA); `None` for plaintext.
    pub fn server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        self.identity
            .as_ref()
            .map(|id| id.server_config(true))
            .transpose()
    }
}

/// How a process reaches Redis: with its password and, when it has a
/// certificate, over mutual TLS (`rediss://`, the cluster CA). The PEM
/// files are read at each new connection, so rotated certificates are
/// used from the next one on.
#[derive(Debug, Clone, Default)]
pub struct RedisLink {
    password: Option<String>,
    tls: Option<crate::tls::TlsFiles>,
}

impl RedisLink {
    /// A link with `password` (empty: none) and TLS with `tls`.
    pub fn new(password: &str, tls: Option<crate::tls::TlsFiles>) -> RedisLink {
        RedisLink {
            password: (!password.is_empty()).then(|| password.to_string()),
            tls,
        }
    }

    /// Whether it is TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A client of the Redis node at `addr` (`host:port`); it connects on
    /// first use.
    pub fn client(&self, addr: &str) -> Result<redis::Client> {
        let bad = |e: &dyn std::fmt::Display| Error::Config(format!("Redis node {addr}: {e}"));
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad(&"not host:port"))?;
        let port: u16 = port.parse().map_err(|_| bad(&"not host:port"))?;
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw.clone());
        }
        let Some(files) = &self.tls else {
            let info = redis::IntoConnectionInfo::into_connection_info((host, port))
                .map_err(|e| bad(&e))?
                .set_redis_settings(settings);
            return redis::Client::open(info).map_err(|e| bad(&e));
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("TLS: {}: {e}", p.display())))
        };
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("rediss://{host}:{port}/"))
                .map_err(|e| bad(&e))?
                .set_redis_settings(settings);
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read(&files.cert)?,
                    client_key: read(&files.key)?,
                }),
                root_cert: Some(read(&files.ca)?),
            },
        )
        .map_err(|e| bad(&e))
    }
}

/// A gRPC server builder with the shared link settings, its requests
/// capped at [`crate::admission::DEFAULT_MAX_CONCURRENT_REQUESTS`] at once (one
/// more is answered UNAVAILABLE at once); [`Admission::grpc_server`] for
/// other caps.
pub fn grpc_server() -> AdmittedServer {
    Admission::default().grpc_server()
}

/// The shared link settings of every gRPC server, without a cap.
/// Each call carrying a request id (`x-request-id`, see
/// [`crate::telemetry::PassRequestId`]) is served in a span naming it, so
/// every line logged for it names the request.
pub(crate) fn grpc_builder() -> Server {
    Server::builder()
        .trace_fn(|req| {
            match req
                .headers()
                .get(crate::telemetry::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                Some(id) => tracing::info_span!("grpc", request_id = %id),
                None => tracing::Span::none(),
            }
        })
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

    /// A Users service that answers with how many certificates its
    /// caller presented.
    struct CountCerts;

    #[tonic::async_trait]
    impl agenda_proto::calendar::users_server::Users for CountCerts {
        async fn call(
            &self,
            req: tonic::Request<agenda_proto::calendar::CallRequest>,
        ) -> std::result::Result<tonic::Response<agenda_proto::calendar::CallReply>, tonic::Status>
        {
            let n = req.peer_certs().map_or(0, |c| c.len());
            Ok(tonic::Response::new(agenda_proto::calendar::CallReply {
                status: 200,
                body: n.to_string().into_bytes(),
            }))
        }
    }

    #[tokio::test]
    async fn grpc_over_mutual_tls_knows_its_caller_and_refuses_strangers() {
        use agenda_proto::calendar::users_client::UsersClient;
        use agenda_proto::calendar::users_server::UsersServer;
        let ca = crate::tls::tests::Ca::new();
        let server = crate::tls::Identity::load(&ca.leaf("server")).unwrap();
        let client = crate::tls::Identity::load(&ca.leaf("client")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tls_incoming(listener, server.server_config(true).unwrap());
        tokio::spawn(
            grpc_server()
                .add_service(UsersServer::new(CountCerts))
                .serve_with_incoming(incoming),
        );
        let call = |channel: Channel| async move {
            UsersClient::new(channel)
                .call(agenda_proto::calendar::CallRequest::default())
                .await
        };
        let channel = tls_channel(&addr, client.client_config().unwrap()).unwrap();
        let reply = call(channel).await.unwrap().into_inner();
        assert_eq!(
            reply.body, b"1",
            "the caller's certificate reaches the handler"
        );

        // Plain gRPC, or TLS without a certificate: nothing served.
        assert!(call(endpoint(&addr).unwrap().connect_lazy()).await.is_err());
        let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(crate::tls::tests::roots(ca.dir.path()))
        .with_no_client_auth();
        let channel = tls_channel(&addr, Arc::new(anonymous)).unwrap();
        assert!(call(channel).await.is_err());
    }

    #[tokio::test]
    async fn accepted_grpc_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = accepted.next().await.unwrap().unwrap();
        assert!(conn.get_ref().nodelay().unwrap(), "TCP_NODELAY must be set");
    }
}
