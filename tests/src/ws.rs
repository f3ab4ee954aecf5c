//! A WebSocket client of `GET /v1/stream` for the tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `{"type":"ready"}`: backlog sent, live from now on.
    Ready,
    /// `{"type":"heartbeat"}`.
    Heartbeat,
    /// A notification (the `notification` object).
    Notification(Value),
    /// `{"type":"token_accepted"}`: a fresh token sent in the stream was taken.
    TokenAccepted,
    /// The server closed: code and reason.
    Closed(u16, String),
}

/// One open stream.
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// When the server last sent anything (pongs included).
    heard: Instant,
}

/// Opens `GET /v1/stream` on the gateway at `base` (`http://host:port`),
/// with the token as `?access_token=` when given, and `?last_id=`.
pub async fn connect(base: &str, token: Option<&str>, last_id: Option<&str>) -> Result<Ws> {
    connect_to(base, None, token, last_id).await
}

/// Like [`connect`], to an `https://` gateway (WSS) with `tls` (see
/// `agenda_common::tls::public_client_config`) when given.
pub async fn connect_to(
    base: &str,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    token: Option<&str>,
    last_id: Option<&str>,
) -> Result<Ws> {
    let mut url = format!(
        "{}/v1/stream",
        base.replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let mut sep = '?';
    if let Some(t) = token {
        url.push_str(&format!("{sep}access_token={t}"));
        sep = '&';
    }
    if let Some(l) = last_id {
        url.push_str(&format!("{sep}last_id={l}"));
    }
    let connector = tls.map(|c| tokio_tungstenite::Connector::Rustls(c.clone()));
    let (inner, _) = tokio_tungstenite::connect_async_tls_with_config(&url, None, true, connector)
        .await
        .with_context(|| format!("WebSocket connect {url}"))?;
    Ok(Ws {
        inner,
        heard: Instant::now(),
    })
}

/// Like [`connect`] but over a socket with a tiny receive buffer, for a
/// client that stops reading: the server's sends then block quickly.
pub async fn connect_tiny_buffer(base: &str, token: &str) -> Result<Ws> {
    let addr = base.trim_start_matches("http://");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(2048)?;
    let stream = socket
        .connect(addr.parse().context("gateway address")?)
        .await
        .context("TCP connect")?;
    let url = format!("ws://{addr}/v1/stream?access_token={token}");
    let (inner, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .context("WebSocket handshake")?;
    Ok(Ws {
        inner,
        heard: Instant::now(),
    })
}

impl Ws {
    /// How long since the server last sent anything (pongs included).
    pub fn silent_for(&self) -> Duration {
        self.heard.elapsed()
    }

    /// Sends a ping frame. A client that sent nothing would never notice
    /// that its server's machine lost power (no FIN, no RST ever comes);
    /// once the VIP has moved, a ping reaches the new holder, whose
    /// kernel knows no such connection and resets it at once.
    pub async fn ping(&mut self) -> Result<()> {
        self.inner
            .send(Message::Ping(Vec::new().into()))
            .await
            .context("sending a ping")
    }

    /// Sends a JSON text message (a fresh token, for one).
    pub async fn send_json(&mut self, v: &Value) -> Result<()> {
        self.inner
            .send(Message::Text(v.to_string().into()))
            .await
            .context("sending a message")
    }

    /// The next frame of interest (pings are answered by the library).
    pub async fn next(&mut self, timeout: Duration) -> Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.inner.next()).await {
                Err(_) => bail!("no frame within {timeout:?}"),
                Ok(None) => return Ok(Frame::Closed(1006, "connection ended".into())),
                Ok(Some(Err(e))) => return Ok(Frame::Closed(1006, e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            self.heard = Instant::now();
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).context("frame is not JSON")?;
                    return Ok(match v["type"].as_str() {
                        Some("ready") => Frame::Ready,
                        Some("heartbeat") => Frame::Heartbeat,
                        Some("notification") => Frame::Notification(v["notification"].clone()),
                        Some("token_accepted") => Frame::TokenAccepted,
                        other => bail!("unknown frame type {other:?}: {v}"),
                    });
                }
                Message::Close(c) => {
                    return Ok(match c {
                        Some(f) => Frame::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Frame::Closed(u16::from(CloseCode::Status), String::new()),
                    })
                }
                _ => continue,
            }
        }
    }

    /// Notifications until `n` arrived or `timeout`; heartbeats skipped.
    pub async fn notifications(&mut self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(Frame::Notification(v)) => out.push(v),
                Ok(Frame::Ready | Frame::Heartbeat | Frame::TokenAccepted) => {}
                Ok(Frame::Closed(code, reason)) => {
                    bail!(
                        "closed ({code} {reason}) after {} of {n} notifications",
                        out.len()
                    )
                }
                Err(e) => bail!("{e} after {} of {n} notifications", out.len()),
            }
        }
        Ok(out)
    }

    /// Waits for the ready frame (the backlog, if any, comes first and is
    /// returned).
    pub async fn ready(&mut self, timeout: Duration) -> Result<Vec<Value>> {
        let mut backlog = Vec::new();
        loop {
            match self.next(timeout).await? {
                Frame::Ready => return Ok(backlog),
                Frame::Notification(v) => backlog.push(v),
                Frame::Heartbeat | Frame::TokenAccepted => {}
                Frame::Closed(code, reason) => bail!("closed before ready: {code} {reason}"),
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.inner.send(Message::Close(None)).await;
    }
}
