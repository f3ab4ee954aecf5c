//! The error shape for the answers hyper writes itself.
//!
//! A request hyper cannot parse (a request line over its 64 KiB limit,
//! headers over its buffer, a malformed request line) never reaches the
//! router: hyper answers 414, 431 or 400 with an empty body and closes.
//! [`Shaped`] wraps each connection and rewrites exactly those answers (a
//! 400, 414 or 431 head with `content-length: 0`: the application never
//! sends one, every error of ours has a body) into the DESIGN.md shape.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listener whose connections are [`ShapedIo`].
pub struct Shaped<L>(pub L);

impl<L: Listener> Listener for Shaped<L> {
    type Io = ShapedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (
            ShapedIo {
                inner: io,
                pending: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose hyper-made error answers get a JSON body.
pub struct ShapedIo<IO> {
    inner: IO,
    /// A rewritten answer being written: its bytes, how many are out, and
    /// how many of the caller's bytes it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<IO> ShapedIo<IO> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

/// The JSON-bodied version of a hyper-made error answer, if `buf` is one.
pub fn reshape(buf: &[u8]) -> Option<Vec<u8>> {
    let (code, message) = match buf.get(..13)? {
        b"HTTP/1.1 400 " => ("bad_request", "the request could not be parsed as HTTP"),
        b"HTTP/1.1 414 " => (
            "uri_too_long",
            "the request line is too long (at most 8 KiB)",
        ),
        b"HTTP/1.1 431 " => (
            "headers_too_large",
            "the request headers are too large (at most 16 KiB)",
        ),
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let empty = head
        .split("\r\n")
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !empty || head.to_ascii_lowercase().contains("content-type:") {
        return None;
    }
    let body =
        serde_json::json!({"error": {"code": code, "message": message, "details": {}}}).to_string();
    let head = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.eq_ignore_ascii_case("content-length: 0"));
    let mut out = String::new();
    for line in head {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<IO: AsyncWrite + Unpin> ShapedIo<IO> {
    /// Writes what is pending; Ready(n) once all of it is out, n being the
    /// caller's bytes it stood for.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, done, claimed)) = &mut self.pending {
            if *done == bytes.len() {
                let claimed = *claimed;
                self.pending = None;
                return Poll::Ready(Ok(claimed));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ShapedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ShapedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match reshape(buf) {
                Some(bytes) => self.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.drain(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // An answer of hyper's own is its head alone, in one slice.
        let first = bufs.iter().find(|b| !b.is_empty());
        if self.pending.is_some() || first.is_some_and(|b| reshape(b).is_some()) {
            let first = first.map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            match self.drain(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            match self.drain(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_answers_are_reshaped() {
        let canned = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(reshape(canned).expect("reshaped")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("date: Thu"), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
        for not_ours in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 431 Req",
            b"garbage",
        ] {
            assert!(reshape(not_ours).is_none(), "{:?}", String::from_utf8_lossy(not_ours));
        }
        assert!(reshape(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
        )
        .is_some());
    }

    #[tokio::test]
    async fn a_rewritten_answer_goes_out_whole_and_stands_for_the_callers_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(16);
        let mut io = ShapedIo {
            inner: a,
            pending: None,
        };
        let canned = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let writer = tokio::spawn(async move {
            let n = io.write(canned).await.unwrap();
            io.shutdown().await.unwrap();
            n
        });
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(writer.await.unwrap(), canned.len());
        assert!(
            got.ends_with("\"details\":{}}}") || got.contains("bad_request"),
            "{got}"
        );
        assert!(got.contains("\"code\":\"bad_request\""), "{got}");
    }
}
