//! A minimal HTTP/1.1 GET (one request per connection) over a socket
//! from [`crate::netns`]: enough for the JSON status endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::netns::Dialer;

/// Status code and body of `GET url` (`http://host:port/path`, or
/// `https://` with `tls`: mutual TLS with agendactl's certificate).
pub async fn get(
    dialer: &Dialer,
    url: &str,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(u16, String)> {
    tokio::time::timeout(timeout, get_inner(dialer, url, tls))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("GET {url}"),
            after: timeout,
        })?
}

async fn get_inner(
    dialer: &Dialer,
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(u16, String)> {
    let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err(Error::Refused(format!(
                "{url}: only http:// and https:// URLs"
            )))
        }
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| Error::Refused(format!("{url}: host must be ip:port")))?;
    let tcp = dialer
        .connect(addr)
        .await
        .map_err(Error::io(format!("GET {url}: connect")))?;
    let exchange = || Error::io(format!("GET {url}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    if secure {
        let config = tls.ok_or_else(|| {
            Error::Refused(format!(
                "GET {url}: TLS, but no certificate (endpoints.json names no tls_dir)"
            ))
        })?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut s = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(Error::io(format!("GET {url}: TLS handshake")))?;
        s.write_all(request.as_bytes()).await.map_err(exchange())?;
        s.read_to_end(&mut buf).await.map_err(exchange())?;
    } else {
        let mut s = tcp;
        s.write_all(request.as_bytes()).await.map_err(exchange())?;
        s.read_to_end(&mut buf).await.map_err(exchange())?;
    }
    let malformed = |why: &str| Error::Malformed(format!("GET {url}: {why}"));
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("malformed answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("no status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body).map_err(malformed)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// A chunked body joined, or what is wrong with it.
fn dechunk(mut s: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").ok_or("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        if rest.len() < n {
            return Err("truncated chunk");
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
        assert!(super::dechunk("5\r\nab").is_err());
    }
}
