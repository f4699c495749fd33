//! Guest stdout/stderr, captured into the attempt's log.
//!
//! A Rust guest's panic message goes to stderr before it traps; without capture the
//! history would only say "unreachable executed". The capture keeps the first bytes up to
//! a cap and silently drops the rest (counting them), so a guest that prints in a loop is
//! bounded by its deadline, not by a trap in the middle of a write.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

/// A capped in-memory sink for one attempt's stdout or stderr.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    cap: usize,
    buf: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    pub fn new(cap: usize) -> Self {
        CapturedOutput { cap, buf: Arc::default() }
    }

    /// The kept text (lossy UTF-8) and how many bytes were dropped past the cap.
    pub fn take(&self) -> (String, usize) {
        match self.buf.lock() {
            Ok(mut b) => {
                let kept = std::mem::take(&mut b.kept);
                (String::from_utf8_lossy(&kept).into_owned(), b.dropped)
            }
            Err(_) => (String::new(), 0),
        }
    }

    /// A copy of the kept text, leaving it in place.
    /// `None` if a writer panicked while holding the buffer.
    pub fn buf_snapshot(&self) -> Option<String> {
        self.buf.lock().ok().map(|b| String::from_utf8_lossy(&b.kept).into_owned())
    }

    fn push(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.buf.lock() {
            let room = self.cap.saturating_sub(b.kept.len());
            let keep = room.min(bytes.len());
            b.kept.extend_from_slice(&bytes[..keep]);
            b.dropped += bytes.len() - keep;
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: what is past the cap is counted and dropped, never an error.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
