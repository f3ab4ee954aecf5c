//! A minimal HTTP/1.1 keep-alive client of one connection (TCP, or TLS
//! with our rustls configuration), for `--vs-nginx`'s closed loops: each
//! loop owns one connection, so N loops hold exactly N connections (no
//! pool that may open more, or fewer), and both servers get the same
//! bytes from the same code.
//!
//! It writes a request that is prepared once and reads one answer: the
//! status line, the headers it needs (Content-Length, Transfer-Encoding:
//! chunked, Connection: close) and the body, which it counts (and keeps
//! only when asked).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail, Result};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Where connections go: host, port and, for https://, the TLS client.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// From a base URL (`http://` or `https://`, with a port or the
    /// scheme's); `tls` is required for https://.
    pub fn new(base: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Endpoint> {
        let url = reqwest::Url::parse(base).map_err(|e| anyhow!("{base}: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("{base}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow!("{base}: no port"))?;
        let tls = match (url.scheme(), tls) {
            ("https", Some(config)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| anyhow!("{base}: not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            ("https", None) => bail!("{base}: https needs a TLS client configuration"),
            ("http", _) => None,
            (s, _) => bail!("{base}: scheme {s} (want http or https)"),
        };
        Ok(Endpoint { host, port, tls })
    }

    /// `host:port` as a Host header names it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A new connection (TLS handshake done).
    pub async fn connect(&self) -> io::Result<Conn> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        Ok(Conn {
            stream,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
        })
    }
}

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One answer.
pub struct Reply {
    pub status: u16,
    /// Bytes of the status line and headers (the blank line included).
    pub head_len: usize,
    /// Bytes of the body (after chunked decoding).
    pub body_len: usize,
    /// The body, when asked for.
    pub body: Option<Vec<u8>>,
    /// The server will close the connection (Connection: close, or a body
    /// that ends with the connection).
    pub close: bool,
    /// Content-Type, when given.
    pub content_type: Option<String>,
}

/// One open connection with its read buffer (`buf[pos..len]` is read but
/// not consumed yet).
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Conn {
    /// The TLS version and cipher suite negotiated (`None`: plain TCP).
    pub fn tls_info(&self) -> Option<(String, String)> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(s) => {
                let c = s.get_ref().1;
                Some((
                    c.protocol_version()
                        .map_or("?".into(), |v| format!("{v:?}")),
                    c.negotiated_cipher_suite()
                        .map_or("?".into(), |s| format!("{:?}", s.suite())),
                ))
            }
        }
    }

    /// Writes `request` (a whole HTTP/1.1 request) and reads its answer
    /// (its body kept when `keep_body`, or when the status is not 2xx).
    pub async fn send(&mut self, request: &[u8], keep_body: bool) -> io::Result<Reply> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        loop {
            let reply = self.read_reply(keep_body).await?;
            // 1xx answers (100 Continue) come before the real one.
            if !(100..200).contains(&reply.status) {
                return Ok(reply);
            }
        }
    }

    /// Reads more bytes into the buffer (moving what is unread to its
    /// start first); an error at end of stream.
    async fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            let bigger = self.buf.len() * 2;
            self.buf.resize(bigger, 0);
        }
        let n = self.stream.read(&mut self.buf[self.len..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        self.len += n;
        Ok(())
    }

    /// One line (without its CRLF), consumed.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.len - self.pos > MAX_HEAD {
                return Err(bad("a line longer than 64 KiB"));
            }
            self.fill().await?;
        }
    }

    /// Consumes `n` body bytes, keeping them in `sink` when given.
    async fn take(&mut self, mut n: usize, mut sink: Option<&mut Vec<u8>>) -> io::Result<()> {
        while n > 0 {
            if self.pos == self.len {
                self.fill().await?;
            }
            let k = n.min(self.len - self.pos);
            if let Some(s) = sink.as_deref_mut() {
                s.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            }
            self.pos += k;
            n -= k;
        }
        Ok(())
    }

    async fn read_reply(&mut self, keep_body: bool) -> io::Result<Reply> {
        // The head.
        let end = loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n\r\n") {
                break self.pos + i + 4;
            }
            if self.len - self.pos > MAX_HEAD {
                return Err(bad("headers longer than 64 KiB"));
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[self.pos..end]).into_owned();
        let head_len = end - self.pos;
        self.pos = end;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1 answer: {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("no status in {status_line:?}")))?;
        let (mut length, mut chunked, mut content_type) = (None, false, None);
        let mut close = version == "HTTP/1.0";
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad header line {line:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| bad(format!("Content-Length {value:?}")))?,
                    )
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
                "content-type" => content_type = Some(value.to_string()),
                _ => {}
            }
        }

        // The body (always kept when the status is not 2xx: it says why).
        let mut body = (keep_body || !(200..300).contains(&status)).then(Vec::new);
        let mut body_len = 0usize;
        let no_body = (100..200).contains(&status) || status == 204 || status == 304;
        if no_body {
        } else if chunked {
            loop {
                let line = self.line().await?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| bad(format!("chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                body_len += size;
                if body_len > MAX_BODY {
                    return Err(bad("a body over 256 MiB"));
                }
                self.take(size, body.as_mut()).await?;
                if !self.line().await?.is_empty() {
                    return Err(bad("no CRLF after a chunk"));
                }
            }
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(bad("a body over 256 MiB"));
            }
            body_len = n;
            self.take(n, body.as_mut()).await?;
        } else {
            // The body ends with the connection.
            close = true;
            loop {
                if self.pos < self.len {
                    let k = self.len - self.pos;
                    body_len += k;
                    if let Some(b) = body.as_mut() {
                        b.extend_from_slice(&self.buf[self.pos..self.len]);
                    }
                    self.pos = self.len;
                }
                if body_len > MAX_BODY {
                    return Err(bad("a body over 256 MiB"));
                }
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Reply {
            status,
            head_len,
            body_len,
            body,
            close,
            content_type,
        })
    }
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request with the next canned reply
    /// (closing after the last one).
    async fn serve(replies: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for r in replies {
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(r).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_lengths_chunks_and_close_delimited_bodies() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello",
            b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ])
        .await;
        let ep = Endpoint::new(&base, None).unwrap();
        let mut c = ep.connect().await.unwrap();
        assert!(c.tls_info().is_none());
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

        let r = c.send(req, false).await.unwrap();
        assert_eq!((r.status, r.body_len, r.close), (200, 5, false));
        assert!(r.body.is_none(), "a 2xx body is only counted");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));

        let r = c.send(req, false).await.unwrap();
        assert_eq!((r.status, r.body_len), (429, 5));
        assert_eq!(r.body.as_deref(), Some(&b"abcde"[..]), "kept: it says why");

        let r = c.send(req, true).await.unwrap();
        assert_eq!(r.body.as_deref(), Some(&b"until the end"[..]));
        assert!(r.close);
    }

    #[test]
    fn endpoints_from_urls() {
        let ep = Endpoint::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(ep.authority(), "127.0.0.1:8080");
        assert_eq!(
            Endpoint::new("http://[::1]:81/", None).unwrap().authority(),
            "[::1]:81"
        );
        assert!(Endpoint::new("https://127.0.0.1:1", None).is_err());
        assert!(Endpoint::new("ftp://127.0.0.1:1", None).is_err());
    }
}
