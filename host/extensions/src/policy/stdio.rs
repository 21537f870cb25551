//! A plugin's stdout/stderr: the first few KiB are kept for the log (and for failure
//! messages, e.g. a Rust panic message), the rest is accepted and discarded, so a chatty
//! plugin neither fills memory nor fails its writes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone)]
pub(crate) struct Capture {
    inner: Arc<Mutex<Buf>>,
}

struct Buf {
    kept: Vec<u8>,
    cap: usize,
    discarded: usize,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Buf {
                kept: Vec::new(),
                cap,
                discarded: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.inner.lock() {
            let room = b.cap.saturating_sub(b.kept.len());
            let take = room.min(bytes.len());
            b.kept.extend_from_slice(&bytes[..take]);
            b.discarded += bytes.len() - take;
        }
    }

    /// What was written, on one line, without Rust's "set RUST_BACKTRACE" hint; `None` if
    /// nothing (but whitespace) was written.
    pub fn summary(&self) -> Option<String> {
        let b = self.inner.lock().ok()?;
        let text = String::from_utf8_lossy(&b.kept);
        let mut out = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect::<Vec<_>>()
            .join(" | ");
        if out.is_empty() {
            return None;
        }
        if b.discarded > 0 {
            out.push_str(&format!(" [{} more bytes discarded]", b.discarded));
        }
        Some(out)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_start_and_counts_the_rest() {
        let c = Capture::new(40);
        assert_eq!(c.summary(), None);
        c.push(b"\n");
        assert_eq!(c.summary(), None);
        c.push(b"thread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\n");
        c.push(b"note: run with `RUST_BACKTRACE=1` to display a backtrace\n");
        let s = c.summary().unwrap();
        assert!(
            s.starts_with("thread '<unnamed>' panicked at src/li"),
            "{s}"
        );
        assert!(s.ends_with("more bytes discarded]"), "{s}");
    }
}
