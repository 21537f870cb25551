//! JSON bodies for the errors hyper answers on its own.
//!
//! When a request head cannot be parsed (too large: 431; URI over hyper's limit: 414;
//! malformed: 400), hyper writes a bare status line with `content-length: 0` and closes,
//! before any service sees a request. Every error of this API has a JSON body, so the
//! connection's writer recognises that one shape (no response of ours is an empty 4xx) and
//! writes the same status with a JSON `{message, detail}` instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct JsonParseErrors<T> {
    io: T,
    /// A replacement response not yet fully written.
    pending: Vec<u8>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = json_replacement(buf) {
            // Report the original as written; the replacement goes out on this and the
            // following polls (hyper flushes and shuts down after it).
            this.pending = replacement;
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }

    /// Writes arrive whole (hyper flattens its buffer), so a response head is seen in one
    /// piece.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Our JSON response for hyper's own empty error response, if `buf` is one.
fn json_replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (status, reason, message) = match status {
        b"400" => (400, "Bad Request", "The request could not be parsed."),
        b"414" => (414, "URI Too Long", "The request URI is too long."),
        b"431" => (
            431,
            "Request Header Fields Too Large",
            "The request header is too large.",
        ),
        _ => return None,
    };
    let head_only =
        buf.ends_with(b"\r\n\r\n") && buf.windows(4).filter(|w| w == b"\r\n\r\n").count() == 1;
    let empty = buf
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !head_only || !empty {
        return None;
    }
    let body = serde_json::json!({
        "message": message,
        "detail": format!("rejected by the HTTP parser; the request head may be at most {} bytes", super::listener::MAX_HEAD_BYTES),
    })
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::json_replacement;

    #[test]
    fn only_hypers_empty_error_responses_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(json_replacement(hyper_431).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 "), "{replaced}");
        let body = replaced.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["message"].is_string());

        let ours = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"message\":\"x\"}    ";
        assert!(json_replacement(ours).is_none());
        assert!(json_replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
